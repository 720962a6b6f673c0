"""Keras Tuner search over how many pretrained units to remove and to freeze.

Zhi et al. (seed 000): the best number of layers to remove depends on the dataset and must be
tuned. :class:`TransferHyperModel` makes that a Keras Tuner search space (``removed``,
``frozen_units``, the head's ``width`` and ``dropout``, fine-tuning's ``learning_rate``), whose
defaults are the default recipe; every search strategy is a Keras Tuner Oracle
(:mod:`.oracles`: the probe-ordered grid, successive halving, random and Bayesian search that
start at the default recipe; Keras Tuner's Hyperband), so every search resumes after a kill
(``overwrite=False``) and runs distributed from Keras Tuner's ``KERASTUNER_TUNER_ID`` /
``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT``. The data goes through
``tuner.search(splits)`` to ``TransferHyperModel.fit``, as Keras Tuner documents.

Trials share one :class:`~keras_transfer.training.FeatureCache`: every trial whose frozen
prefix is the same (same backbone, weights, input size and cut) reuses its features, and a
deeper prefix extends a shallower one's. Keras Tuner clears the Keras session before each build,
and each trial's traced graphs are let go, so memory does not grow trial after trial.

=============  ===========================================================================
module         one job
=============  ===========================================================================
hypermodel     ``TransferHyperModel``: the space, a trial's recipe, ``fit``
oracles        ``GridOracle``, ``HalvingOracle``, ``default_first``, ``configurations``
results        ``results.csv``, ``heatmap.png``, the best trial, the top-five table
folder         a search folder's checks (``search.json``, ``data.json``)
tune           ``make_tuner``, ``run_search`` (under ``tune``), its floor, the winner's export
searches       ``search``: the same search from Python, a ``SearchResult`` (table, heat map,
               best trial, a ``Learner`` for it)
=============  ===========================================================================
"""

import lazy_loader as _lazy

# Submodules load on first use: importing one module of the package does not import the others
# (nor TensorFlow, where they need it), and `--help` stays fast.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    'folder': ['SEARCH_FILE', 'check_search_dir'],
    'hypermodel': ['SearchSpace', 'TransferHyperModel', 'fixed_hyperparameters'],
    'oracles': ['GridOracle', 'HalvingOracle', 'configurations', 'default_first'],
    'results': ['RESULT_COLUMNS', 'format_top', 'heatmap_figure', 'trial_rows', 'write_results'],
    'searches': ['SearchResult', 'search'],
    'tune': ['judge', 'make_tuner', 'removed_range', 'run_search', 'search_floor'],
})

