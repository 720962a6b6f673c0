"""The names the command line offers, importable without TensorFlow so that ``--help`` and
argument errors answer at once. Each tuple is the key list of a table elsewhere
(``tests/cli/test_entry_point.py`` checks they agree): backbones.BACKBONES, heads.HEADS,
heads.AUXILIARY_OUTPUTS, recipes.RECIPES."""

BACKBONES = ("vgg16", "vgg19", "inception_v3", "resnet50", "mobilenet_v2", "densenet121", "efficientnet_b0",
             "efficientnet_lite0", "efficientnet_lite1",
             "efficientnet_lite2", "xception")
HEADS = ("gap_dense", "keep_classifier", "binary_auxiliary", "ordinal_auxiliary")
AUXILIARY_HEADS = ("binary_auxiliary", "ordinal_auxiliary")  # heads.AUXILIARY_OUTPUTS: the heads of two outputs
BINARY_WEIGHT = 0.4  # their second output's share of the loss when none is given (heads' builders' default)
RECIPES = ("default", "tutorial", "keras_io")
# recipes.Recipe.l2_sp's bound: l2_sp x the rate is the fraction of the gap to the pretrained weights
# closed each step, so far above 1 / rate it overshoots
MAX_L2_SP = 100.0
# recipes.Recipe.warmup_fraction's bound: a longer warm-up leaves the cosine decay fewer steps than the climb
MAX_WARMUP_FRACTION = 0.5


def check_binary_weight(head, binary_weight, argument="binary_weight") -> None:
    """Refuse a loss share for a head of one output, where it would weigh nothing."""
    if binary_weight is not None and head not in AUXILIARY_HEADS:
        raise ValueError(f"{argument} is the second output's share of the loss of a head of two outputs "
                         f"({', '.join(AUXILIARY_HEADS)}), and the {head} head has one. Choose one of those heads, "
                         f"or leave {argument} out. Received: binary_weight={binary_weight}, head={head!r}")


def check_mixup(heads, mixup) -> None:
    """Refuse mixup for a head of two outputs: its blends are of one output's labels. Here, free of
    TensorFlow, so that the command line refuses it before any image is read."""
    two = [head for head in heads if head in AUXILIARY_HEADS]
    if mixup and two:
        raise ValueError(f"mixup blends the labels of one output, and the {two[0]} head has two. Use another "
                         f"head, or leave mixup out. Received: mixup={mixup}, head='{two[0]}'")
