"""The commands beyond ``inspect``; each parses nothing and calls the library."""


def add_commands(sub, add_backbone_args) -> None:
    """Register train/tune/export/predict/sample-data/experiment on ``sub``."""
