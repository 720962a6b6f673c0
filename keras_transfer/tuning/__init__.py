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
tune           ``make_tuner``, ``search`` (the ``tune`` command), its floor, the winner's export
=============  ===========================================================================
"""

from keras_transfer.config import SearchConfig, parse_range  # noqa: F401 - tuning.SearchConfig etc., as before
from keras_transfer.tuning.folder import SEARCH_FILE, check_search_dir  # noqa: F401
from keras_transfer.tuning.hypermodel import TransferHyperModel  # noqa: F401
from keras_transfer.tuning.oracles import GridOracle, HalvingOracle, configurations, default_first  # noqa: F401
from keras_transfer.tuning.results import RESULT_COLUMNS, format_top, trial_rows, write_results  # noqa: F401
from keras_transfer.tuning.tune import judge, make_tuner, removed_range, search, search_floor  # noqa: F401


def fixed_hyperparameters(config: dict):
    """Hyperparameters holding ``config``'s values: ``build``/``fit`` read them instead of sampling."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for name, value in config.items():
        hp.Fixed(name, value)
    return hp
