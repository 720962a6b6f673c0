"""The removed x frozen search space on one backbone, as a Keras Tuner HyperModel."""

from __future__ import annotations

import dataclasses
import time

import keras
import keras_tuner

from keras_transfer import training
from keras_transfer._utils.atomic_files import atomic_path
from keras_transfer._utils.keras_internals import (
    forget_custom_gradients,
    keras_tuner_bookkeeping,
    keras_tuner_checkpoint,
)
from keras_transfer.models import heads
from keras_transfer.models.backbones import build_base, get_backbone
from keras_transfer.models.surgery import ThroughUnit, max_removed, resolve_frozen, units
from keras_transfer.training import best_epoch
from keras_transfer.training.stage import REUSED_HEAD_IS_FINE

# what a trial of the successive-halving oracle trains for, when it says (else the recipe's epochs)
HEAD_EPOCHS, FINE_TUNE_EPOCHS, RUNG = "tuner/head_epochs", "tuner/fine_tune_epochs", "tuner/rung"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What a search chooses among, on one backbone.

    Args:
        removed_range: ``(lo, hi)`` units to remove, inclusive (default ``(0, min(3, n-1))``).
        frozen_range: ``(lo, hi)`` for ``frozen_units``, inclusive (default: all of ``0..max_frozen_units``).
        widths, dropouts, learning_rates: choices for the head and fine-tuning's rate.
        head_kinds: heads to choose among (``("gap_dense",)`` keeps it fixed).
        default_removed: the ``removed`` of the first trial (default: the range's low end), e.g.
            the probe's recommendation.
    """

    removed_range: tuple[int, int] | None = None
    frozen_range: tuple[int, int] | None = None
    widths: tuple = (0, 256)
    dropouts: tuple = (0.2, 0.5)
    learning_rates: tuple = (1e-4, 1e-3)
    head_kinds: tuple = ("gap_dense",)
    default_removed: int | None = None


class TransferHyperModel(keras_tuner.HyperModel):
    """``build(hp)`` declares the whole space; ``fit(hp, model, splits)`` runs the two-stage recipe.

    - ``removed``: units dropped from the top of the backbone (``chop(removed=)``);
    - ``frozen_units``: fine-tuning freezes the backbone through its j-th remaining unit (0 =
      none frozen; the top value = all frozen, head only), so a block is never split;
    - ``width``, ``dropout``: the head (width 0: the default recipe's linear head, started at the
      converged linear probe); ``learning_rate``: fine-tuning's; optionally ``head``.

    Every hyperparameter's default is the default recipe as ``train`` runs it (at the space's
    ``default_removed``), so a search's first trial (see :mod:`.oracles`) is that recipe.

    Args:
        backbone, weights, input_size: as for ``build_base``.
        num_classes: classes of the data.
        recipe: epochs, batch size... of each trial (``frozen`` and the fine-tuning rate are tuned).
        space: a :class:`SearchSpace` (default: its defaults).
        cache: the shared feature cache (a new one by default).
        strategy: the tf.distribute strategy models are built under.

    ```python
    >>> space = SearchSpace(removed_range=(0, 3), widths=(0,))
    >>> hypermodel = TransferHyperModel("vgg16", 2, training.Recipe(), space, weights="hed", input_size=128)

    ```
    """

    def __init__(self, backbone: str, num_classes: int, recipe: training.Recipe | None = None,
                 space: SearchSpace | None = None, weights="imagenet", input_size: int | None = None,
                 cache: training.FeatureCache | None = None, strategy=None, name: str | None = None):
        super().__init__(name=name or f"transfer_{backbone}", tunable=True)
        space = space or SearchSpace()
        self.backbone, self.weights, self.num_classes = backbone, weights, num_classes
        self.input_size = input_size or get_backbone(backbone).default_size
        self.recipe = recipe or training.Recipe(head_epochs=2, fine_tune_epochs=3, verbose=0)
        # a random-init template gives unit names and layer indices without loading weights; built
        # with the trials' stochastic depth (which adds layers), so that its layer indices are theirs
        self.template = build_base(backbone, weights=None, input_shape=(self.input_size, self.input_size, 3),
                                   drop_path=self.recipe.drop_path)
        self.n_units = len(units(self.template))
        self.removed_range = self._removed_range(space.removed_range)
        self.frozen_range = self._frozen_range(space.frozen_range)
        for name_, values in (("widths", space.widths), ("dropouts", space.dropouts),
                              ("learning_rates", space.learning_rates), ("head kinds", space.head_kinds)):
            if not values:
                raise ValueError(f"{name_} must offer at least one choice.")
        self.widths, self.dropouts = [int(w) for w in space.widths], [float(d) for d in space.dropouts]
        self.learning_rates, self.head_kinds = [float(r) for r in space.learning_rates], list(space.head_kinds)
        self.cache = cache if cache is not None else training.FeatureCache()
        self.strategy = strategy
        lo, hi = self.removed_range
        self.default_removed = min(max(lo if space.default_removed is None else space.default_removed, lo), hi)

    def _removed_range(self, asked) -> tuple[int, int]:
        top = max_removed(self.template)
        lo, hi = asked if asked is not None else (0, min(3, top))
        if not 0 <= lo <= hi <= top:
            raise ValueError(f"removed range {lo}:{hi} must lie in 0:{top} ({self.backbone} has {self.n_units} units).")
        return lo, hi

    def _frozen_range(self, asked) -> tuple[int, int]:
        lo, hi = asked if asked is not None else (0, self.max_frozen_units)
        if not 0 <= lo <= hi <= self.max_frozen_units:
            raise ValueError(f"frozen_range must lie in 0:{self.max_frozen_units} (the top value freezes everything). "
                             f"Received: frozen_range={asked}")
        return lo, hi

    # ---- search space -------------------------------------------------------------------
    @property
    def max_frozen_units(self) -> int:
        """The top ``frozen_units`` value, meaning "all frozen" (units left at the shallowest cut + 1)."""
        return self.n_units - self.removed_range[0] + 1

    def defaults(self) -> dict:
        """The default recipe's point of the space: ``default_removed``, all but the top two units
        frozen, its head width, dropout and fine-tuning rate (each where the space offers it)."""
        def pick(value, options):
            return value if value in options else options[0]

        j = min(max(self.n_units - self.default_removed - 2, self.frozen_range[0]), self.frozen_range[1])
        return {"removed": self.default_removed, "frozen_units": j, "width": pick(self.recipe.width, self.widths),
                "dropout": pick(self.recipe.dropout, self.dropouts), "head": self.head_kinds[0],
                "learning_rate": pick(self.recipe.fine_tune_learning_rate, self.learning_rates)}

    def declare(self, hp: keras_tuner.HyperParameters) -> dict:
        """Declare the whole space in ``hp`` (defaults: :meth:`defaults`); the trial's values."""
        d = self.defaults()
        values = {"removed": hp.Int("removed", *self.removed_range, default=d["removed"]),
                  "frozen_units": hp.Int("frozen_units", *self.frozen_range, default=d["frozen_units"]),
                  "width": hp.Choice("width", self.widths, default=d["width"]),
                  "dropout": hp.Choice("dropout", self.dropouts, default=d["dropout"]),
                  "learning_rate": hp.Choice("learning_rate", self.learning_rates, default=d["learning_rate"])}
        values["head"] = hp.Choice("head", self.head_kinds, default=d["head"]) if len(self.head_kinds) > 1 \
            else self.head_kinds[0]
        return values

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        v = self.declare(hp)
        options = {"width": v["width"], "dropout": v["dropout"], "normalize": self.recipe.normalize}
        if v["head"] == "binary_auxiliary":
            options["seed"] = self.recipe.seed
        keras.utils.set_random_seed(self.recipe.seed)  # the same trial builds the same model, retrained or not
        model = training.build_model(self.backbone, self.num_classes, weights=self.weights,
                                     input_size=self.input_size, removed=v["removed"], head=v["head"],
                                     include_top=v["head"] == "keep_classifier", strategy=self.strategy,
                                     drop_path=self.recipe.drop_path, **options)
        model.compile(optimizer="rmsprop", **heads.compile_args(model))  # for Keras Tuner; each stage recompiles
        return model

    def frozen_layers(self, removed: int, frozen_units: int) -> int:
        """``frozen_units`` as a layer count ``k`` for a backbone with ``removed`` units dropped (a
        value past the units left freezes them all, as the top value does)."""
        return resolve_frozen(self.template, ThroughUnit(min(frozen_units, self.n_units - removed + 1)), removed)

    def trial_recipe(self, hp: keras_tuner.HyperParameters, **fit_kwargs) -> training.Recipe:
        """The recipe a trial trains with: the hypermodel's, with the trial's frozen layers and rate,
        and the budget the oracle gave it (halving's rung, Hyperband's ``epochs``)."""
        v = hp.values
        recipe = dataclasses.replace(self.recipe, frozen=self.frozen_layers(v["removed"], v["frozen_units"]),
                                     fine_tune_learning_rate=v["learning_rate"])
        if FINE_TUNE_EPOCHS in v:
            recipe = dataclasses.replace(recipe, head_epochs=v[HEAD_EPOCHS], fine_tune_epochs=v[FINE_TUNE_EPOCHS])
        if "epochs" in fit_kwargs:  # Hyperband sets the budget; a continued trial skips the head stage
            initial = fit_kwargs.get("initial_epoch", 0)
            recipe = dataclasses.replace(recipe, head_epochs=0 if initial else recipe.head_epochs,
                                         fine_tune_epochs=max(fit_kwargs["epochs"] - initial, 1))
        return recipe

    # ---- training -----------------------------------------------------------------------
    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, splits=None, **kwargs) -> dict:
        """Train on ``splits`` (what ``tuner.search(splits)`` was given) with :meth:`trial_recipe`;
        returns the ``val_accuracy`` and ``val_loss`` of the weights the trial keeps (the epoch
        :mod:`~keras_transfer.training.best_epoch`'s rule keeps, of the stage kept) and ``seconds``.

        Those weights are what Keras Tuner's checkpoint of the trial holds (its best-epoch
        callback is replaced: it would save the epoch of the best accuracy alone, maybe another),
        so ``tuner.get_best_models()`` and the exported winner are the model the score is of."""
        if splits is None:
            raise ValueError("TransferHyperModel.fit needs the data: tuner.search(splits). Received: splits=None")
        recipe = self.trial_recipe(hp, **kwargs)
        callbacks = list(kwargs.get("callbacks") or [])
        checkpoints = [cb for cb in callbacks if keras_tuner_checkpoint(cb)]
        callbacks = [cb for cb in callbacks if cb not in checkpoints]
        # the HParams callback Keras Tuner adds beside a TensorBoard one records one session per
        # trial and refuses a second on_train_begin: a trial's two stages are one session to it
        sessions = [cb for cb in callbacks if type(cb).__module__.startswith("tensorboard.plugins.hparams")]
        for cb in callbacks:  # Keras Tuner's own (its epoch hooks) need not see a reused head
            if keras_tuner_bookkeeping(cb):
                setattr(cb, REUSED_HEAD_IS_FINE, True)
        for cb in sessions:
            cb.set_model(model)
            cb.on_train_begin()
        start = time.perf_counter()
        try:
            with forget_custom_gradients():  # else every trial's traced graphs stay in memory
                # Keras Tuner's callbacks (and the user's) see the classifier even when a stage fits
                # its suffix on cached features
                histories = training.fine_tune(model, splits, recipe, strategy=self.strategy, cache=self.cache,
                                               callbacks=[cb for cb in callbacks if cb not in sessions])
        finally:
            for cb in sessions:
                cb.on_train_end()
        seconds = time.perf_counter() - start
        kept = trial_metrics(histories, recipe.patience is not None)
        if kept is None:
            raise ValueError("tuning needs a validation split (val_accuracy): use a validation fraction > 0.")
        for cb in checkpoints:
            with atomic_path(cb.filepath) as tmp:
                model.save_weights(tmp)
        return {"val_accuracy": kept["val_accuracy"], "val_loss": kept["val_loss"], "seconds": seconds}


def trial_metrics(histories: dict, early_stopping: bool) -> dict | None:
    """The validation metrics of the weights :func:`~keras_transfer.training.fine_tune` ended
    with: the kept epoch of fine-tuning, or of the head stage when fine-tuning was not kept (or not run)."""
    last = histories.get("fine_tune") or histories.get("head") or {}
    if last.get("kept_head_weights"):
        last = histories.get("head") or {}
    return best_epoch.kept_metrics(last, early_stopping)



def fixed_hyperparameters(config: dict):
    """Hyperparameters holding ``config``'s values: ``build``/``fit`` read them instead of sampling."""
    hp = keras_tuner.HyperParameters()
    for name, value in config.items():
        hp.Fixed(name, value)
    return hp
