"""Two-stage fine-tuning, made repeatable, resumable and fast.

Stage 1 trains the head with the whole backbone frozen; stage 2 freezes the first ``k``
backbone layers and trains the rest. What each stage's optimiser, schedule, loss and head are
is a :class:`~keras_transfer.recipes.Recipe` (``default``, the seed tutorial's, keras.io's).

When the first layers are frozen and no augmentation runs before them, their output never
changes, so it is computed once (:class:`FeatureCache`) and only the rest of the network is
trained on it: same result, a fraction of the time. A deeper cut's features are extended from
a shallower cut already cached, and a head stage that starts from the same weights, data and
recipe as one trained before is reused (:class:`HeadMemo`, carried by the cache). Models are built and compiled inside the
tf.distribute strategy's scope (see :mod:`keras_transfer.distribute`); every strategy trains
through Keras's ``fit``.

=============  ===========================================================================
module         one job
=============  ===========================================================================
model          ``build_model``, ``load_model``/``load_weights`` (a damaged file named); ``resolve_frozen``
cache          the frozen-prefix ``FeatureCache`` (+ ``HeadMemo``), ``split_model``
callbacks      ``SeesClassifier`` (callbacks see the classifier), ``Backup`` (a damaged backup named)
stage          ``plan_stage`` then ``fit_stage`` (``train_stage`` = both): one stage on images or cached features
two_stage      ``fine_tune``: the stages in order, resumable, keeping the better stage
evaluate       ``predict_classes``, ``evaluate``, ``test_scores``, ``weights_fingerprint``
=============  ===========================================================================
"""

from keras_transfer.recipes import Recipe, ScaledSGD  # noqa: F401 - part of this package's API
from keras_transfer.training.cache import (  # noqa: F401
    MIN_SAVED_FRACTION, FeatureCache, HeadMemo, prefix_model, saved_fraction, split_model)
from keras_transfer.inference import _compiled_calls, batched_call  # noqa: F401
from keras_transfer.training.callbacks import SeesClassifier  # noqa: F401
from keras_transfer.training.evaluate import (evaluate, predict_classes, readable, test_scores,  # noqa: F401
                                             weights_fingerprint)
from keras_transfer.training.model import (build_model, default_frozen, load_model, load_weights,  # noqa: F401
                                          resolve_frozen)
from keras_transfer.training.stage import (  # noqa: F401
    CacheEstimate, StagePlan, cache_estimate, estimate_cache, fit_stage, freeze_for_stage, init_head, lr_scales,
    plan_stage, run_cost, train_stage)
from keras_transfer.training.two_stage import STATE_FILE, fine_tune, stages  # noqa: F401
