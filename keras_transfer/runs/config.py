"""What a run or a search is asked to do: groups of settings, each default written once.

    TrainConfig  = data + model + recipe + distribute          (``keras-transfer train``)
    SearchConfig = data + model + recipe + distribute + search  (``keras-transfer tune``)

Every field carries its command-line flag and help in its metadata (:func:`option`); the CLI
builds its options from them (``cli_options``) and is the only code that speaks in flags.
Library code reads the groups and names Python parameters in its errors.
"""

from __future__ import annotations

import dataclasses
import json
import os

from keras_transfer._utils import choices
from keras_transfer import data as data_lib
from keras_transfer.training.distribute import STRATEGIES
from keras_transfer.training.precision import PRECISIONS
from keras_transfer.data.augmentation import MAX_JITTER, VIEW_KINDS, kind_for
import argparse

TUNERS = ("random", "bayesian", "hyperband", "grid", "halving")


def option(default, flag: str | None = None, help: str = "", **argparse_kwargs):
    """A config field with its CLI flag (None: no flag), help text and extra argparse settings."""
    return dataclasses.field(default=default, metadata={"flag": flag, "help": help, "argparse": argparse_kwargs})


MAX_INPUT_SIZE = 1024  # the largest Backbone.max_size: a typo such as 22400 is refused as it is parsed


def ranged(kind, low=None, high=None):
    """An argparse type: ``kind(text)`` checked to lie in [low, high] (either may be open)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}. "
                                             f"Received: {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (f"between {low} and {high}" if low is not None and high is not None
                      else f"at least {low}" if low is not None else f"at most {high}")
            raise argparse.ArgumentTypeError(f"must be {bounds}. Received: {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    parse.kind = kind
    return parse


def _removed(value: str):
    return value if value == "auto" else ranged(int, 0)(value)


def _patience(value: str):
    return None if int(value) < 0 else int(value)


@dataclasses.dataclass
class DataConfig:
    """Where the images come from and how they are split."""

    data_dir: str | None = option(None, "--data", "folder with one sub-folder of images per class",
                                  metavar="DIR", group="source")
    dataset: str | None = option(None, "--dataset", f"built-in dataset: {', '.join(data_lib.BUILTIN_DATASETS)}, or "
                                 "tfds:NAME (already downloaded)", metavar="NAME", group="source")
    input_size: int | None = option(None, "--input-size", "input side in pixels (default: the backbone's ImageNet size)",
                                    type=ranged(int, 1, MAX_INPUT_SIZE))
    limit_per_class: int | None = option(None, "--limit-per-class", "use at most N images of each class",
                                         type=ranged(int, 1))
    validation_split: float = option(0.15, "--val-split", "validation fraction",
                                     type=ranged(float, 0.0, 0.95))
    test_split: float = option(0.15, "--test-split", "test fraction (0: no test images, so no test accuracy)",
                               type=ranged(float, 0.0, 0.95))
    seed: int = option(0, "--seed", "seed for splits, init and shuffling", type=int)
    in_memory: str = option("auto", "--in-memory", "hold the decoded images in memory (yes), or stream them from "
                            "their files (no; files are checked up front, sharded per worker, their features cached "
                            "on disk); auto: stream when the pixels and cached features would take over half the "
                            "memory available, when each image is read once and the pixels pass 512 MiB, or under "
                            "several workers", choices=list(data_lib.IN_MEMORY))

    def size(self, backbone: str, include_top: bool = False) -> int:
        """``input_size``, or the backbone's ImageNet size; one it cannot be built at is refused here,
        before any image is read."""
        from keras_transfer.models.backbones import check_input_size, get_backbone

        return check_input_size(backbone, self.input_size or get_backbone(backbone).default_size, include_top)

    def load(self, backbone: str, progress: bool = True, include_top: bool = False,
             cost: data_lib.RunCost | None = None) -> data_lib.Splits:
        """The splits (``cost``: what the run does with its images, which ``in_memory="auto"`` weighs)."""
        return data_lib.load(self.data_dir, self.dataset, self.size(backbone, include_top), self.validation_split,
                             self.test_split, self.seed, self.limit_per_class, progress=progress,
                             in_memory=self.in_memory, cost=cost)

    @property
    def name(self) -> str:
        return self.dataset or os.path.basename(os.path.normpath(self.data_dir or "data"))


@dataclasses.dataclass
class ModelConfig:
    """The network: backbone, its weights, what is cut off and the head."""

    backbone: str = option("vgg16", "--backbone", "pretrained architecture", choices=list(choices.BACKBONES))
    weights: str | None = option("imagenet", "--weights", "'imagenet' (downloads once), 'hed' (VGG16, offline), a "
                                 "weights file, or 'none'", type=lambda v: None if v.lower() == "none" else v)
    include_top: bool = option(False, "--include-top", "keep the 1000-way ImageNet classifier", action="store_true")
    removed: int | str = option("auto", "--removed", "drop the top N units of the backbone (see inspect), or 'auto': "
                                "where `probe` recommends cutting, scored on the training images", type=_removed)
    head: str = option("gap_dense", "--head", "head on the backbone", choices=list(choices.HEADS))
    width: int | None = option(None, "--width", "hidden units of the head, 0 for none (default: the recipe's)",
                                 type=ranged(int, 0))
    dropout: float | None = option(None, "--dropout", "dropout before the classifier (default: the recipe's)",
                                   type=ranged(float, 0.0, 0.95))
    binary_weight: float | None = option(None, "--binary-weight", "B of the binary_auxiliary or ordinal_auxiliary "
                                         "head's loss: its second output's share (default: "
                                         f"{choices.BINARY_WEIGHT}; refused with another head)",
                                         type=ranged(float, 0.0, 1.0))


# A recipe setting not given: the named recipe's value stands. Not None: None is a value of some
# fields (patience=None: no early stopping; frozen=None: all but the top two units).
RECIPES_OWN = "recipe's"


@dataclasses.dataclass
class RecipeConfig:
    """How training goes: a named recipe and what this run changes in it. Each field is the
    :class:`~keras_transfer.training.Recipe` field of the same name; its default is the named
    recipe's (``RECIPES_OWN``), written once, in the recipe."""

    recipe: str = option("default", "--recipe", "fine-tuning recipe: default, tutorial (seed tutorial: RMSprop head, "
                         "SGD 1e-4), keras_io (keras.io guide)", choices=list(choices.RECIPES))
    head_epochs: int | str = option(RECIPES_OWN, ("--head-epochs", "--epochs"), "stage 1 epochs: the head alone "
                                    "(default: the recipe's)", type=ranged(int, 0))
    fine_tune_epochs: int | str = option(RECIPES_OWN, "--fine-tune-epochs", "stage 2 epochs (default: the recipe's)",
                                         type=ranged(int, 0))
    batch_size: int | str = option(RECIPES_OWN, "--batch-size", "per-replica batch size (default: the recipe's)",
                                   type=ranged(int, 1))
    frozen: int | str | None = option(RECIPES_OWN, "--frozen", "fine-tuning freezes backbone layers [:K] (a count, a "
                                      "layer name, 'unit:J' = through the J-th unit, or 'all'; default: the recipe's, "
                                      "all but the top 2 units; keras_io: none)")
    head_learning_rate: float | str = option(RECIPES_OWN, ("--head-learning-rate", "--learning-rate"), "stage 1 "
                                             "learning rate (default: the recipe's)", type=float)
    fine_tune_learning_rate: float | str = option(RECIPES_OWN, "--fine-tune-learning-rate", "stage 2 learning rate of "
                                                  "the head; unfrozen backbone layers train at 0.1x it in the default "
                                                  "recipe (default: the recipe's)", type=float)
    transferred_lr_scale: float | str | None = option(RECIPES_OWN, "--transferred-lr-scale", "instead of freezing "
                                                      "layers [:K], train them at this fraction of the learning rate "
                                                      "(default: freeze them)", type=float)
    augment: bool | str = option(RECIPES_OWN, "--augment", "train on augmented views, one drawn per image per epoch, "
                                 "their frozen-prefix features cached like the images': top_down (the 8 flips and "
                                 "turns, for solar cells and other views from above), photo (flipped crops, "
                                 "brightness), or auto (top_down for elpv, else photo); test accuracy is then also "
                                 "reported averaged over the views (TTA) (default: none)", nargs="?", const="auto",
                                 choices=["auto", *VIEW_KINDS], metavar="KIND")
    augment_views: int | str = option(RECIPES_OWN, "--augment-views", "how many views --augment draws from (top_down: "
                                      "at most 8; default: the recipe's)", type=ranged(int, 1, 32))
    cache_features: bool | str = option(RECIPES_OWN, "--no-cache", "do not cache frozen-prefix features",
                                        action="store_const", const=False)
    class_weight: bool | str = option(RECIPES_OWN, "--class-weight", "weigh classes to balance an imbalanced dataset",
                                      action="store_const", const=True)
    ema_momentum: float | str | None = option(RECIPES_OWN, "--ema-momentum", "weight averaging: train with an "
                                              "exponential moving average of the weights at this momentum (e.g. "
                                              "0.99), which is validated and kept (default: the recipe's, none)",
                                              type=ranged(float, 0.0, 0.9999))
    mixup: float | str = option(RECIPES_OWN, "--mixup", "train on pairwise blends of the training images (or their "
                                "cached features) and of their labels, the weight drawn from Beta(ALPHA, ALPHA), e.g. "
                                "0.2; 0: off (default: the recipe's, off)", type=ranged(float, 0.0, 10.0),
                                metavar="ALPHA")
    jitter: float | str = option(RECIPES_OWN, "--jitter", "fine-tune on images shifted and zoomed by up to this "
                                 "fraction of their side and their contrast changed by as much, drawn anew every "
                                 f"epoch (e.g. 0.05; at most {MAX_JITTER}); fine-tuning then runs on the images, not on "
                                 "cached features; 0: off (default: the recipe's, off)",
                                 type=ranged(float, 0.0, MAX_JITTER),
                                 metavar="FRACTION")
    drop_path: float | str | None = option(RECIPES_OWN, "--drop-path", "stochastic depth (EfficientNet-Lite backbones): "
                                           "in training each residual block is skipped for a random part of the "
                                           "batch, up to this rate in the deepest block, e.g. 0.2 (default: 0, "
                                           "the models as this package has always built them)",
                                           type=ranged(float, 0.0, 0.9), metavar="RATE")
    l2_sp: float | str = option(RECIPES_OWN, "--l2-sp", "L2-SP: in fine-tuning the backbone's weights decay toward "
                                "their pretrained values at this strength times the learning rate (decoupled, like "
                                "AdamW's weight decay, which the head keeps), e.g. 10; 0: off (default: the recipe's, "
                                "off)", type=ranged(float, 0.0, choices.MAX_L2_SP), metavar="STRENGTH")
    warmup_fraction: float | str = option(RECIPES_OWN, "--warmup-fraction", "each stage's rate climbs linearly from 0 "
                                          "over this fraction of its steps, then decays to 0 along a cosine (the "
                                          "rates' sum is the same whatever the fraction), e.g. 0.25; 0: no warm-up "
                                          "(default: the recipe's, 0.1 in the default recipe; the tutorial and keras_io "
                                          "recipes train at a constant rate and refuse it)",
                                          type=ranged(float, 0.0, choices.MAX_WARMUP_FRACTION), metavar="FRACTION")
    bn_inference: bool | str = option(RECIPES_OWN, ("--no-bn-inference", "--train-batchnorm"), "fine-tuning also "
                                      "trains the unfrozen backbone's BatchNorm layers (scale, offset and batch "
                                      "statistics; default: the recipe's, default and keras_io keep them in inference "
                                      "mode)", action="store_const", const=False)
    patience: int | str | None = option(RECIPES_OWN, "--patience", "early-stopping patience: stop after this many epochs "
                                        "without a lower validation loss and keep the best epoch (so it needs "
                                        "validation images); -1: no early stopping, the last epoch kept (default: "
                                        "the recipe's)", type=_patience)
    tensorboard: str | None = option(RECIPES_OWN, "--tensorboard", "write TensorBoard logs to DIR (default: "
                                     "OUT/tensorboard); tune: one folder per trial, with the HParams dashboard",
                                     nargs="?", const="", metavar="DIR")
    verbose: int | str = option(RECIPES_OWN, None)
    # the recipe's ``seed``; not a flag of its own name: --seed (DataConfig) draws the split and, by default, this too
    init_seed: int | None = option(None, "--init-seed", "seed for the initial weights, the order of the batches and "
                                   "the views drawn (default: --seed); another value trains another model on the "
                                   "same split, e.g. a member of an ensemble", type=int)

    def given(self) -> dict:
        """The recipe fields this run sets (every field but ``recipe`` not left at RECIPES_OWN)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("recipe", "init_seed") and getattr(self, f.name) != RECIPES_OWN}

    def check_drop_path(self, backbone: str) -> None:
        """Refuse ``drop_path`` (--drop-path) for a backbone without stochastic depth, before any work."""
        if self.drop_path not in (RECIPES_OWN, None):
            from keras_transfer.models.backbones import check_drop_path

            check_drop_path(backbone, self.drop_path, argument="drop_path (--drop-path)")

    def make(self, seed: int, width: int | None = None, dropout: float | None = None,
             dataset: str | None = None) -> recipes.Recipe:  # noqa: F821 - imported where it is used
        """The named recipe with the fields given, the head's width/dropout if given, and ``seed``
        (the split's; ``init_seed`` instead, if given) (``dataset``: the built-in dataset, which ``augment="auto"`` picks its views by)."""
        from keras_transfer.training import recipes

        fields = self.given()
        if fields.get("augment") == "auto":
            fields["augment"] = kind_for(dataset)
        if "augment_views" in fields and not fields.get("augment"):
            raise ValueError(f"augment_views sets how many views augmentation draws from; set augment too. "
                             f"Received: augment_views={self.augment_views}, augment={self.augment!r}")
        head = {k: v for k, v in (("width", width), ("dropout", dropout)) if v is not None}
        recipe = recipes.recipe(self.recipe, **fields, **head, seed=seed if self.init_seed is None else self.init_seed)
        recipe.views()  # a count the kind cannot give is refused here, before any data is read
        return recipe


@dataclasses.dataclass
class DistributeConfig:
    """Where and in which precision the computation runs."""

    strategy: str = option("auto", "--strategy", "tf.distribute strategy (default: auto: TF_CONFIG -> multi-worker, "
                           "GPUs -> mirrored)", choices=STRATEGIES)
    devices: str | None = option(None, "--devices", "devices to mirror over, e.g. /gpu:0,/gpu:1")
    precision: str = option("auto", "--precision", "compute precision: auto = float16 on GPUs, bfloat16 on CPUs with "
                            "bf16 instructions, else float32 (softmax and exports stay float32)", choices=PRECISIONS)


def parse_range(text: str | None, name: str = "removed_range") -> tuple[int, int] | str | None:
    """``"a:b"`` -> ``(a, b)``; ``"n"`` -> ``(n, n)``; ``"auto"`` stays ``"auto"``."""
    if not text:
        return None
    if text == "auto":
        return text
    try:
        lo, _, hi = text.partition(":")
        return int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"{name} must be written a:b, e.g. 0:3. Received: {name}={text!r}") from None


def _range(value: str):
    return parse_range(value, "range")


@dataclasses.dataclass
class SearchSpaceConfig:
    """What ``tune`` searches and how."""

    tuner: str = option("random", "--tuner", "random/bayesian (first trial: the default recipe), hyperband; grid: every "
                        "configuration at the full budget, the default recipe's first, then the probe's removed; "
                        "halving: every configuration for 1+1 epochs, the best third at the full budget (all "
                        "Keras Tuner oracles: resumable, distributable)", choices=TUNERS)
    trials: int = option(12, "--trials", "max trials (random, bayesian; grid, halving: configurations)",
                         type=ranged(int, 1))
    removed_range: tuple | str | None = option(None, "--removed-range", "units to remove, inclusive (default 0:3); "
                                               "'auto': the probe's recommendation +-1", type=_range, metavar="A:B")
    frozen_range: tuple | None = option(None, "--frozen-range", "frozen_units to try, inclusive (freeze through the "
                                        "j-th unit; default: all)", type=_range, metavar="A:B")
    widths: tuple = option((0, 256), "--widths", "head widths to try (0: the default recipe's linear head, started "
                           "at the linear probe)", type=ranged(int, 0, 65536), nargs="+")
    dropouts: tuple = option((0.2, 0.5), "--dropouts", "dropout rates to try", type=ranged(float, 0.0, 0.99), nargs="+")
    learning_rates: tuple = option((1e-4, 1e-3), "--learning-rates", "fine-tuning rates to try",
                                   type=ranged(float, 0.0, 1.0), nargs="+")
    head_kinds: tuple = option(("gap_dense",), "--heads", "heads to try", nargs="+",
                               choices=[h for h in choices.HEADS if h != "keep_classifier"])
    retrain_best: bool = option(True, "--no-retrain", "do not export the best trial (with the weights it kept, "
                               "or retrained where its checkpoint is not at hand)", action="store_false")


@dataclasses.dataclass
class TrainConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    recipe: RecipeConfig = dataclasses.field(default_factory=RecipeConfig)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)

    def make_recipe(self) -> recipes.Recipe:  # noqa: F821 - imported where it is used
        return self.recipe.make(self.data.seed, self.model.width, self.model.dropout, self.data.dataset)

    def check(self) -> None:
        """Refuse options that would do nothing together, before any image is read."""
        if self.recipe.patience not in (RECIPES_OWN, None) and self.data.validation_split == 0:
            raise ValueError("patience (--patience) stops training when the validation loss stops improving, and "
                             "validation_split (--val-split) 0 leaves no validation images. Leave patience out (or "
                             "set it to -1), or keep a validation split. Received: "
                             f"patience={self.recipe.patience}, validation_split=0")
        choices.check_mixup([self.model.head], self.recipe.mixup != RECIPES_OWN and self.recipe.mixup)
        choices.check_binary_weight(self.model.head, self.model.binary_weight, "binary_weight (--binary-weight)")
        self.recipe.check_drop_path(self.model.backbone)
        self.make_recipe()  # the recipe's own refusals (views, jitter without fine-tuning) before the data too

    @classmethod
    def read(cls, run_dir: str) -> TrainConfig:
        """The settings a run folder's ``config.json`` records (what ``train`` wrote there)."""
        path = os.path.join(run_dir, "config.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: is {run_dir!r} a `keras-transfer train` run folder? "
                                    f"Received: {run_dir}")
        with open(path) as f:
            saved = json.load(f)
        groups = {"data": DataConfig, "model": ModelConfig, "recipe": RecipeConfig, "distribute": DistributeConfig}
        return cls(**{name: group(**saved[name]) for name, group in groups.items()})


def _search_recipe() -> RecipeConfig:
    return RecipeConfig(head_epochs=2, fine_tune_epochs=3, patience=None)  # each trial's short budget


@dataclasses.dataclass
class SearchConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)  # backbone and weights; the rest is searched
    recipe: RecipeConfig = dataclasses.field(default_factory=_search_recipe)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)
    search: SearchSpaceConfig = dataclasses.field(default_factory=SearchSpaceConfig)

    def __post_init__(self):
        searched = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("backbone", "weights")
                    and getattr(self.model, f.name) != getattr(ModelConfig(), f.name)]
        if searched:
            raise ValueError(f"a search builds its models from the search space; model.{searched[0]} is not used. "
                             f"Set search.* instead. Received: model.{searched[0]}={getattr(self.model, searched[0])!r}")
        choices.check_mixup(self.search.head_kinds, self.recipe.mixup != RECIPES_OWN and self.recipe.mixup)
        self.recipe.check_drop_path(self.model.backbone)
        if self.data.validation_split == 0:
            raise ValueError("a search scores each trial on its validation images, and validation_split (--val-split) "
                             "0 leaves none. Keep a validation split (e.g. 0.15); to train the best trial's settings "
                             "on every image afterwards, pass them to `train` with --val-split 0. "
                             "Received: validation_split=0")
