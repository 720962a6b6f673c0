"""Pretrained backbones, model surgery and heads.

=================  ======================================================================
module             what it holds
=================  ======================================================================
backbones          the backbone table (constructor, preprocessing, sizes, units, weight
                   sources), ``build_base``; the offline ``hed`` weights
efficientnet_lite  EfficientNet-Lite0/1/2 and their ImageNet weights, read offline
_torch_pickle      a restricted reader of legacy PyTorch pickles (no PyTorch, no ``pickle.load``)
surgery            cut points from the layer graph; THE resolvers for removed (``cut_index``)
                   and frozen (``resolve_frozen``); ``chop``, ``freeze``, ``describe``
heads              the heads put on a chopped base (``gap_dense``, ``keep_classifier``,
                   ``binary_auxiliary``, ``ordinal_auxiliary``), their targets and compile arguments
ensemble           ``ensemble``: classifiers averaged into one (exported, served, explained
                   like any); ``members``
layers             the package's Keras layers (preprocessing inside the model, ...)
losses             the package's Keras losses
=================  ======================================================================

The words (layer index, cut point, unit, removed, frozen, weights) are defined in
``docs/design.md``.
"""

import lazy_loader as _lazy

# Submodules load on first use: importing one module of the package does not import the others
# (nor TensorFlow, where they need it), and `--help` stays fast.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    'backbones': ['BACKBONES', 'Backbone', 'build_base', 'get_backbone', 'list_backbones'],
    'ensemble': ['ensemble', 'members'],
    'heads': ['HEADS', 'binary_auxiliary', 'build_classifier', 'gap_dense', 'keep_classifier', 'ordinal_auxiliary'],
    'surgery': ['backbone_of', 'chop', 'cut_points', 'describe', 'format_table', 'freeze', 'freeze_points',
                'resolve_frozen', 'units'],
})
