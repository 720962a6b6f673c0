"""The front door's search: :func:`search` runs ``keras-transfer tune``'s search on images
already loaded, from Python arguments (each named as its flag, each default written once in
:mod:`keras_transfer.runs.config`), and returns a :class:`SearchResult`."""

from __future__ import annotations

import dataclasses

from keras_transfer.learner import Learner
from keras_transfer.runs import config as config_lib
from keras_transfer.tuning.results import heatmap_figure
from keras_transfer.tuning.tune import run_search


@dataclasses.dataclass
class SearchResult:
    """A finished search: ``table`` (one row per trial, as ``results.csv``), ``best`` (the trial
    taken: its ``removed``, ``frozen_units``/``frozen_layers``, ``width``, ``dropout``,
    ``learning_rate``, ``val_accuracy``), ``summary`` (``best.json``: the floor it had to beat, the
    export's own validation and test accuracy) and where it all is.

    ```python
    >>> import tempfile
    >>> splits = kt.load_data(dataset="digits", image_size=32, limit_per_class=5, progress=False)
    >>> found = kt.search(splits, "vgg16", weights="hed", out_dir=tempfile.mkdtemp(), tuner="random", trials=1,
    ...                   removed_range=(3, 3), widths=(0,), head_epochs=1, fine_tune_epochs=0, verbose=0)
    >>> found.best["removed"], found.best["status"], found.export.endswith("export/1")   # exported: kept weights
    (3, 'COMPLETED', True)
    >>> figure = found.plot_heatmap()          # validation accuracy per (removed, frozen units)

    ```
    """

    out_dir: str
    table: list[dict]
    summary: dict
    data: object
    backbone: str
    weights: object
    recipe: config_lib.RecipeConfig
    seed: int

    @property
    def best(self) -> dict:
        return self.summary["best"]

    @property
    def export(self) -> str | None:
        """The best trial's SavedModel version folder (its kept weights), if it was exported."""
        return self.summary.get("export")

    def plot_heatmap(self, path: str | None = None):
        """Validation accuracy per (removed, frozen units), the trial taken boxed; a Figure."""
        return heatmap_figure(self.table, self.best, path)

    def learner(self, data=None, **recipe_fields) -> Learner:
        """A :class:`~keras_transfer.Learner` built as the best trial was (its cut, head, frozen
        layers and rate, on the search's recipe), untrained: ``fine_tune()`` it, e.g. on full-size
        images (``data``, default: the search's). ``recipe_fields`` change its recipe (e.g. more
        epochs than the search's short budget)."""
        best = self.best
        recipe = self.recipe.make(self.seed, best["width"], best["dropout"])
        fields = {"frozen": best["frozen_layers"], "fine_tune_learning_rate": best["learning_rate"], **recipe_fields}
        return Learner(data if data is not None else self.data, self.backbone, self.weights, best["removed"],
                       head=best["head"], include_top=best["head"] == "keep_classifier", recipe=recipe, **fields)


def search(data, backbone: str = "vgg16", weights="imagenet", out_dir: str = "search", tuner: str | None = None,
           trials: int | None = None, recipe: str = "default", seed: int = 0, precision: str = "auto",
           strategy: str = "auto", verbose: int = 1, **settings) -> SearchResult:
    """Search how many units to remove and to freeze (and the head's width, dropout and
    fine-tuning rate) with Keras Tuner on ``data``'s train and validation images, as
    ``keras-transfer tune`` does; the best trial's model is exported under ``out_dir/export``.
    A search folder resumes where it stopped.

    ``tuner``: ``"random"`` (default), ``"bayesian"``, ``"hyperband"``, ``"grid"``, ``"halving"``;
    ``settings``: the search space (``removed_range=(0, 3)`` or ``"auto"``, ``frozen_range``,
    ``widths``, ``dropouts``, ``learning_rates``, ``head_kinds``, ``retrain_best``) and each
    trial's recipe fields (``head_epochs``, ``fine_tune_epochs``, ``batch_size``...; default the
    search's short budget, 2 + 3 epochs).

    ```python
    >>> import tempfile
    >>> splits = kt.load_data(dataset="digits", image_size=32, limit_per_class=5, progress=False)
    >>> found = kt.search(splits, "vgg16", weights="hed", out_dir=tempfile.mkdtemp(), tuner="grid", trials=2,
    ...                   removed_range=(2, 3), frozen_range=(12, 12), widths=(0,), dropouts=(0.2,),
    ...                   learning_rates=(1e-3,), head_epochs=1, fine_tune_epochs=0, retrain_best=False, verbose=0)
    >>> len(found.table), found.best["removed"] in (2, 3)
    (2, True)
    >>> learner = found.learner()          # the best trial's settings, untrained: learner.fine_tune()
    >>> learner.removed == found.best["removed"]
    True

    ```
    """
    space_names = {f.name for f in dataclasses.fields(config_lib.SearchSpaceConfig)}
    recipe_names = {f.name for f in dataclasses.fields(config_lib.RecipeConfig)}
    unknown = sorted(set(settings) - space_names - recipe_names)
    if unknown:
        raise TypeError(f"search() got unknown setting(s) {', '.join(unknown)}; the search space takes "
                        f"{', '.join(sorted(space_names))}, each trial's recipe {', '.join(sorted(recipe_names))}.")
    space = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in space_names}
    space.update({k: v for k, v in (("tuner", tuner), ("trials", trials)) if v is not None})
    trial_recipe = dataclasses.replace(config_lib.SearchConfig().recipe, recipe=recipe,
                                       **{k: v for k, v in settings.items() if k in recipe_names})
    config = config_lib.SearchConfig(data=config_lib.DataConfig(seed=seed),
                                     model=config_lib.ModelConfig(backbone=backbone, weights=weights),
                                     recipe=trial_recipe,
                                     distribute=config_lib.DistributeConfig(strategy=strategy, precision=precision),
                                     search=config_lib.SearchSpaceConfig(**space))
    summary = run_search(config, out_dir, verbose, splits=data)
    table = summary.pop("table", [])  # (a distributed worker gets no summary: the chief reports)
    return SearchResult(out_dir, table, summary, data, backbone, weights, trial_recipe, seed)

