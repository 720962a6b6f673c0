"""A training run and its folder: the settings of ``train`` and ``tune``, the run folder that
defends itself, and the train workflow that fills it.

=============  ===========================================================================
module         what it holds
=============  ===========================================================================
config         ``TrainConfig``, ``SearchConfig`` and their groups; the CLI's flags are
               declared on their fields
run_folders    a run or search folder: locked while in use, its data fingerprinted
training_run   ``train``: data -> (probe) -> two stages -> report -> export, resumable
ensembles      ``ensemble``: finished runs on one split averaged into one exported model
=============  ===========================================================================
"""

import lazy_loader as _lazy

# Submodules load on first use: importing one module of the package does not import the others
# (nor TensorFlow, where they need it), and `--help` stays fast.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    'config': ['SearchConfig', 'TrainConfig'],
    'ensembles': ['ensemble_runs'],
    'training_run': ['estimate_run_cost', 'export_run', 'train'],
})
