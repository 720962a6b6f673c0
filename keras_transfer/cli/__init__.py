"""The ``keras-transfer`` command line: the only code that speaks in flags.

==========  =============================================================================
module      what it holds
==========  =============================================================================
entry_point ``main`` and ``build_parser``; ``inspect``; logging, errors, the supervisor
commands    ``train``, ``tune``, ``probe``, ``evaluate``, ``predict``, ``explain``, ``export``,
            ``sample-data``, ``resume``: flags to the library's calls
experiments ``experiment NAME``: the seed papers' experiments
serve       ``serve``
options     flags declared once on config fields (``add_group``, ``group_from_args``)
==========  =============================================================================

Importing it (and ``--help``) does not import TensorFlow.
"""

import lazy_loader as _lazy

# Submodules load on first use: importing one module of the package does not import the others
# (nor TensorFlow, where they need it), and `--help` stays fast.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    'entry_point': ['build_parser', 'main'],
})
