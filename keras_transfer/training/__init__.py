"""Two-stage fine-tuning, made repeatable, resumable and fast.

Stage 1 trains the head with the whole backbone frozen; stage 2 freezes the first ``k``
backbone layers and trains the rest. What each stage's optimiser, schedule, loss and head are
is a :class:`~keras_transfer.training.recipes.Recipe` (``default``, the seed tutorial's, keras.io's).

When the first layers are frozen and no augmentation runs before them, their output never
changes, so it is computed once (:class:`FeatureCache`) and only the rest of the network is
trained on it: same result, a fraction of the time. A deeper cut's features are extended from
a shallower cut already cached, and a head stage that starts from the same weights, data and
recipe as one trained before is reused (:class:`HeadMemo`, carried by the cache). Models are built and compiled inside the
tf.distribute strategy's scope (see :mod:`keras_transfer.training.distribute`); every strategy trains
through Keras's ``fit``.

=================  =======================================================================
module             what it holds
=================  =======================================================================
recipes            ``Recipe`` and the named recipes; optimisers with per-layer rates
model              ``build_model``, ``load_model``/``load_weights`` (a damaged file named)
lr_finder          ``find_learning_rate`` (the range test, fastai's ``valley`` suggestion), ``RateFinding``
stage              ``Stage``: one stage planned (images or cached features), then fitted;
                   ``train_stage`` = both
two_stage          ``fine_tune``: the stages in order, resumable, keeping the better stage
best_epoch         the one rule for the epoch a stage keeps (``KeepBestEpoch``)
feature_cache      the frozen-prefix ``FeatureCache`` (+ ``HeadMemo``), ``split_model``
_disk_cache        its entries on disk, checked on open
callbacks          ``SeesClassifier`` (callbacks see the classifier), ``Backup``
evaluation         ``predict_classes``, ``evaluate``, ``test_scores``, ``weights_fingerprint``
batched_inference  ``batched_call``: a model over an array, batch by batch, as numpy
cut_probe          LogME and linear probes at every cut: the recommended ``removed``
linear_probe       standardised logistic regression on features (the floor, the probe's head)
precision          mixed precision (``auto`` picks bfloat16 where the CPU has it)
distribute         tf.distribute strategies, multi-worker set-up, gathering rows
=================  =======================================================================
"""

import lazy_loader as _lazy

# Submodules load on first use: importing one module of the package does not import the others
# (nor TensorFlow, where they need it), and `--help` stays fast.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    'batched_inference': ['batched_call'],
    'callbacks': ['SeesClassifier'],
    'evaluation': ['evaluate', 'predict_classes', 'readable', 'test_scores', 'weights_fingerprint'],
    'feature_cache': ['FeatureCache', 'HeadMemo', 'MIN_SAVED_FRACTION', 'prefix_model', 'saved_fraction', 'split_model'],
    'lr_finder': ['RateFinding', 'find_learning_rate', 'valley'],
    'model': ['build_model', 'default_frozen', 'load_model', 'load_weights'],
    'recipes': ['Recipe', 'ScaledSGD'],
    'memory_estimate': ['CacheEstimate', 'cache_estimate', 'estimate_cache', 'run_cost'],
    'stage': ['Stage', 'StagePlan', 'train_stage'],
    'two_stage': ['STATE_FILE', 'fine_tune', 'stages'],
})
