"""What a fine-tuning recipe is, and the named ones: ``default``, ``tutorial``, ``keras_io``.

A recipe is the head's shape plus the two stages' optimisers and schedules. One row per
recipe (``RECIPES``), like timm's configs: ``recipe("tutorial", head_epochs=3)`` is the seed
tutorial's with three head epochs. ``benchmarks/bench_quality.py`` compares them on real data;
the default is the one that measured best (the numbers are in README and the notebook).

- ``tutorial`` (seed 002): GAP -> Dense(1024, relu) -> softmax; RMSprop 1e-3 for the head,
  then SGD(1e-4, momentum 0.9) with all but the top two units frozen.
- ``keras_io`` (the keras.io "Transfer learning & fine-tuning" guide): GAP -> Dropout(0.2) ->
  softmax; Adam 1e-3 with the base frozen, then the whole base unfrozen at Adam 1e-5 with
  BatchNorm kept in inference mode.
- ``default``: the pooled features are standardised with the training images' statistics (as
  a logistic regression on them would be; variances floored, see ``heads.adapt_feature_norm``);
  a linear classifier that starts at the converged, validation-regularised logistic regression
  on those features (LP-FT, Kumar et al. 2022), then AdamW with warm-up, cosine decay, dropout
  and label smoothing; in stage 2 the unfrozen backbone layers train at 0.1x the head's rate
  (1e-4), BatchNorm in inference mode; if no fine-tuning epoch beats the head stage's
  validation loss, the head stage's weights are kept. Raw VGG features (mean |x| 5-10, max in
  the hundreds) make the tutorial's RMSprop head diverge (first-epoch loss 46-52 on the
  synthetic guitars, where chance is 1.1); here training starts at or below chance.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from keras_transfer._utils.choices import MAX_L2_SP, MAX_WARMUP_FRACTION
from keras_transfer.data.augmentation import Views, check_jitter


@dataclasses.dataclass
class Recipe:
    """What :func:`keras_transfer.training.fine_tune` does (and the head it expects).

    ```python
    >>> kt.Recipe().fine_tune_learning_rate, kt.recipe("tutorial").head_optimizer
    (0.0001, 'rmsprop')

    ```
    """

    name: str = "default"
    # the head (read by build_model through head_options())
    width: int = 0  # hidden units before the classifier; 0: a linear classifier on the pooled features
    dropout: float = 0.2
    normalize: bool = True  # standardise the pooled features with the training images' statistics
    linear_probe: bool = True  # a linear head starts at the converged logistic regression (LP-FT)
    # the two stages
    head_epochs: int = 5
    fine_tune_epochs: int = 5
    frozen: int | str | None = None  # stage 2 freezes backbone layers [:frozen]; None: all but the top 2 units
    head_optimizer: str = "adamw"
    head_learning_rate: float = 1e-3
    fine_tune_optimizer: str = "adamw"
    fine_tune_learning_rate: float = 1e-4  # the head's rate in stage 2
    backbone_lr_scale: float = 0.1  # unfrozen backbone layers train at fine_tune_learning_rate x this
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4  # AdamW only
    # L2-SP (Li et al. 2018): in fine-tuning the backbone's trained weights decay toward their values
    # at the stage's start (the pretrained ones) instead of toward 0, decoupled like AdamW's decay
    # (w -= l2_sp x rate x (w - w_start), at each variable's own rate); the head keeps weight_decay; 0: off
    l2_sp: float = 0.0
    # linear warm-up from 0 over this fraction of each stage's steps, then cosine decay to 0 (the rates
    # summed over a stage are the peak x steps / 2 whatever the fraction); decay=False: constant, no warm-up
    warmup_fraction: float = 0.1
    decay: bool = True
    label_smoothing: float = 0.1
    # stochastic depth (Huang et al. 2016): in training each residual block of an EfficientNet-Lite
    # backbone is skipped for a random part of the batch, up to this rate in the deepest block;
    # None: the architecture's default (0 for the Lite models, as they were always built here)
    drop_path: float | None = None
    bn_inference: bool = True  # BatchNorm layers stay in inference mode (and keep their statistics)
    keep_best: bool = True  # keep the head stage's weights if fine-tuning never beats its val_loss
    # Borthakur & Einhorn (seed 004): instead of freezing layers [:frozen] in stage 2, train
    # them at fine_tune_learning_rate * transferred_lr_scale.
    transferred_lr_scale: float | None = None
    batch_size: int = 32
    # augmented views (see keras_transfer.data.augmentation): "top_down", "photo", or False; True means "photo"
    augment: bool | str = False
    augment_views: int = 8
    cache_features: bool = True
    patience: int | None = 3  # early stopping on val_loss, the best epoch restored (training.best_epoch); None: off
    class_weight: bool = False
    # weight averaging (Polyak): each stage keeps an exponential moving average of its weights at this
    # momentum (e.g. 0.99: about the last 100 steps) and validates, checkpoints and ends with it; None: off
    ema_momentum: float | None = None
    # mixup (Zhang et al. 2018): each training batch's rows blended pairwise, inputs and one-hot
    # labels alike, the weight drawn from Beta(mixup, mixup) (e.g. 0.2); 0: off
    mixup: float = 0.0
    # random shifts, zooms and contrast changes of up to this fraction, drawn anew every epoch
    # (data.augmentation.jitter), in the fine-tuning stage only; the stage then trains on the images,
    # as cached features cannot move; 0: off
    jitter: float = 0.0
    seed: int = 0
    tensorboard: str | None = None  # "": RUN_DIR/tensorboard
    verbose: int | str = "auto"

    def __post_init__(self):
        if self.jitter:
            check_jitter(self.jitter)
        if not 0 <= self.l2_sp <= MAX_L2_SP:
            raise ValueError(f"l2_sp pulls the fine-tuned backbone toward its pretrained weights at this strength "
                             f"times the learning rate; use 0 (off) to {MAX_L2_SP}, e.g. 10. Received: l2_sp={self.l2_sp}")
        if not 0 <= self.warmup_fraction <= MAX_WARMUP_FRACTION:
            raise ValueError(f"warmup_fraction (--warmup-fraction) is the share of each stage's steps the rate climbs "
                             f"from 0 before its cosine decay; use 0 (no warm-up) to {MAX_WARMUP_FRACTION}, e.g. 0.1. "
                             f"Received: warmup_fraction={self.warmup_fraction}")
        if self.warmup_fraction and not self.decay:
            raise ValueError("warmup_fraction (--warmup-fraction) warms up the decaying schedule, and this recipe "
                             "trains at a constant rate (decay=False): use the default recipe, or leave it out. "
                             f"Received: warmup_fraction={self.warmup_fraction}, decay=False")

    def views(self):
        """The :class:`~keras_transfer.data.augmentation.Views` training draws from, or None without augmentation."""
        if not self.augment:
            return None

        return Views("photo" if self.augment is True else self.augment, self.augment_views, self.seed)

    def head_options(self) -> dict:
        """Keyword arguments for the ``gap_dense`` head this recipe trains."""
        return {"width": self.width, "dropout": self.dropout, "normalize": self.normalize}


_TUTORIAL = dict(width=1024, dropout=0.0, normalize=False, head_optimizer="rmsprop", head_learning_rate=1e-3,
                 fine_tune_optimizer="sgd", fine_tune_learning_rate=1e-4, backbone_lr_scale=1.0,
                 warmup_fraction=0.0, decay=False, label_smoothing=0.0, bn_inference=False, keep_best=False,
                 linear_probe=False)
_KERAS_IO = dict(width=0, dropout=0.2, normalize=False, head_optimizer="adam", head_learning_rate=1e-3,
                 fine_tune_optimizer="adam", fine_tune_learning_rate=1e-5, backbone_lr_scale=1.0, frozen=0,
                 warmup_fraction=0.0, decay=False, label_smoothing=0.0, bn_inference=True, keep_best=False,
                 linear_probe=False)
RECIPES: dict[str, dict] = {"default": {}, "tutorial": _TUTORIAL, "keras_io": _KERAS_IO}


def recipe(name: str = "default", **overrides) -> Recipe:
    """The named recipe with the fields given overridden; a field left out keeps the recipe's value.

    ``None`` is a value where a field has one: ``patience=None`` switches early stopping off,
    ``frozen=None`` freezes all but the top two units, ``transferred_lr_scale=None`` freezes
    rather than slowing, ``tensorboard=None`` writes no logs. Elsewhere it is refused.

    ```python
    >>> recipe("default", patience=None, head_epochs=3).patience is None
    True
    >>> recipe("keras_io").frozen
    0

    ```
    """
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; choose one of {', '.join(RECIPES)}. Received: recipe={name!r}")
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TypeError(f"Recipe has no field(s) {', '.join(unknown)}.")
    not_values = sorted(k for k, v in overrides.items() if v is None and "None" not in str(fields[k].type))
    if not_values:
        raise TypeError(f"None is not a value of {', '.join(not_values)}: leave it out to keep the {name!r} recipe's. "
                        f"Received: {', '.join(f'{k}=None' for k in not_values)}")
    made = Recipe(name=name, **{**RECIPES[name], **overrides})
    if made.jitter and made.fine_tune_epochs == 0:
        raise ValueError("jitter applies while fine-tuning, and fine_tune_epochs=0 leaves no fine-tuning. Give "
                         f"fine-tuning epochs, or leave jitter out. Received: jitter={made.jitter}, fine_tune_epochs=0")
    return made


# ---------------------------------------------------------------- optimisers

class _PerVariableRate:
    """Mixin: variables named in ``lr_scales`` (path -> factor) update at ``learning_rate x factor``;
    those named in ``anchored`` decay toward their values when the optimiser is built (L2-SP) at
    ``anchor_decay`` instead of toward 0 at ``weight_decay``.

    Scaling the *rate*, not the gradient, so it means the same for Adam (whose update does not
    change when its gradient is scaled) as for SGD. The decays are decoupled (AdamW's form) for the
    same reason: an L2 term in the loss would be divided away by Adam's second moment.
    """

    def __init__(self, lr_scales=None, anchored=None, anchor_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.lr_scales = {str(k): float(v) for k, v in (lr_scales or {}).items()}
        self.anchored = sorted(str(p) for p in (anchored or ()))
        self.anchor_decay = float(anchor_decay)

    def build(self, variables):
        super().build(variables)
        self._scale_by_index = [self.lr_scales.get(v.path, 1.0) for v in variables]
        anchored = set(self.anchored) if self.anchor_decay else set()
        self._anchor_by_index = []
        for v in variables:
            if v.path in anchored:  # the weights the stage starts from: training reads them, never updates them
                # initialised from the variable, not assigned: Keras may build inside the traced train step,
                # where an assign would not run (the anchor would stay at zeros)
                start = ops.convert_to_tensor(v)
                self._anchor_by_index.append(self.add_variable(
                    v.shape, initializer=lambda shape, dtype, start=start: ops.cast(start, dtype), dtype=v.dtype,
                    name=f"{v.path.replace('/', '_')}_anchor"))
            else:
                self._anchor_by_index.append(None)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        scale = self._scale_by_index[index]
        rate = learning_rate * scale if scale != 1.0 else learning_rate
        anchor = self._anchor_by_index[index]
        if anchor is not None and scale:
            self.assign_sub(variable, (variable - anchor) * ops.cast(self.anchor_decay * rate, variable.dtype))
        elif self.weight_decay is not None and scale and super()._use_weight_decay(variable):
            # AdamW's decoupled decay, at this variable's own rate (Keras applies it at the base rate)
            self.assign_sub(variable, variable * ops.cast(self.weight_decay, variable.dtype) * ops.cast(rate, variable.dtype))
        return super().update_step(gradient, variable, rate)

    def _use_weight_decay(self, variable):
        return False  # applied in update_step instead, scaled with the rate

    def get_config(self):
        return {**super().get_config(), "lr_scales": self.lr_scales, "anchored": self.anchored,
                "anchor_decay": self.anchor_decay}


@keras.saving.register_keras_serializable(package="keras_transfer")
class ScaledSGD(_PerVariableRate, keras.optimizers.SGD):
    """SGD with per-variable learning-rate factors (``lr_scales``)."""


@keras.saving.register_keras_serializable(package="keras_transfer")
class ScaledAdam(_PerVariableRate, keras.optimizers.Adam):
    """Adam with per-variable learning-rate factors (``lr_scales``)."""


@keras.saving.register_keras_serializable(package="keras_transfer")
class ScaledAdamW(_PerVariableRate, keras.optimizers.AdamW):
    """AdamW with per-variable learning-rate factors (``lr_scales``)."""


@keras.saving.register_keras_serializable(package="keras_transfer")
class ScaledRMSprop(_PerVariableRate, keras.optimizers.RMSprop):
    """RMSprop with per-variable learning-rate factors (``lr_scales``)."""


_OPTIMIZERS = {"sgd": ScaledSGD, "adam": ScaledAdam, "adamw": ScaledAdamW, "rmsprop": ScaledRMSprop}


def schedule(rate: float, steps: int, warmup_fraction: float, decay: bool):
    """A constant rate, or linear warm-up over ``warmup_fraction`` of ``steps`` then cosine decay."""
    if not decay or steps <= 1:
        return rate
    warmup = int(round(warmup_fraction * steps))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else rate, decay_steps=max(steps - warmup, 1), alpha=0.0,
        warmup_target=rate if warmup else None, warmup_steps=warmup)


def optimizer(recipe: Recipe, stage: str, steps: int, lr_scales: dict | None = None, learning_rate=None,
              backbone: list | tuple = ()):
    """The optimiser of ``stage`` (``"head"`` or ``"fine_tune"``) for ``steps`` training steps
    (``learning_rate``: a rate or schedule in place of the recipe's, as the learning-rate finder sweeps).
    Under the recipe's ``ema_momentum`` it keeps the weights' moving average (Keras's ``use_ema``),
    except in a sweep, whose losses are the raw weights'. Under its ``l2_sp`` the variables named in
    ``backbone`` (paths) decay toward their values at the stage's start, in fine-tuning."""
    kind = recipe.head_optimizer if stage == "head" else recipe.fine_tune_optimizer
    rate = recipe.head_learning_rate if stage == "head" else recipe.fine_tune_learning_rate
    if kind not in _OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {kind!r}; choose one of {', '.join(_OPTIMIZERS)}. "
                         f"Received: {stage}_optimizer={kind!r}")
    options = {"lr_scales": lr_scales}
    if recipe.l2_sp and stage == "fine_tune":
        options.update(anchored=list(backbone), anchor_decay=recipe.l2_sp)
    if learning_rate is None:
        learning_rate = schedule(rate, steps, recipe.warmup_fraction, recipe.decay)
        if recipe.ema_momentum is not None:
            options.update(use_ema=True, ema_momentum=recipe.ema_momentum)
    options["learning_rate"] = learning_rate
    if kind == "sgd":
        options["momentum"] = recipe.momentum
    if kind == "adamw":
        options["weight_decay"] = recipe.weight_decay
    return _OPTIMIZERS[kind](**options)


