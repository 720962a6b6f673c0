"""Figures with matplotlib: training curves, confusion matrices, mistakes, Grad-CAM, the
learning-rate finder, removed x frozen heatmaps, first-layer filters, the experiments' results.

Each function returns a ``matplotlib.figure.Figure`` of its own (a notebook shows it inline;
``path=`` also writes it as a PNG). pyplot is never touched and no backend is set, so the
backend of a notebook or an application using this package stays its own.

```python
>>> fig = confusion_matrix([[3, 1], [0, 4]], ["cat", "dog"])
>>> fig.axes[0].get_title()
'test confusion matrix'

```
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from keras_transfer._utils.atomic_files import atomic_path


def _subplots(*args, figsize=None, **kwargs):
    """``(figure, axes)`` as ``pyplot.subplots`` gives them, on a Figure pyplot does not manage."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _save(fig, path: str | None) -> str | None:
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def _shown(fig, path: str | None) -> Figure:
    """The figure, written to ``path`` too if one is given."""
    _save(fig, path)
    return fig


def read_csv_log(path: str) -> dict[str, list[float]]:
    """A Keras CSVLogger file as ``{column: values}`` (one value per epoch; a column Keras wrote
    as ``NA``, e.g. val_loss of a run without validation images, is left out)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    columns = {k: [r.get(k) for r in rows] for k in (rows[0] if rows else {})}
    return {k: [float(v) for v in values if v not in (None, "")] for k, values in columns.items()
            if not any(v == "NA" for v in values)}


def training_curves(stages: Sequence[tuple[str, dict]], path: str | None = None) -> Figure:
    """Loss and accuracy per epoch, stages one after another, a line where each begins.

    ``stages``: ``[(name, history)]`` with Keras ``History.history`` dicts (what ``fit`` and
    ``Learner.fine_tune`` return). Each line is labelled ``"<train|val> (<stage>)"``;
    :func:`drawn_series` reads them back. A figure with nothing to draw is refused rather than
    drawn blank.

    ```python
    >>> fig = training_curves([("head", {"loss": [0.9, 0.5], "accuracy": [0.6, 0.8]})])
    >>> drawn_series(fig)["loss train (head)"]
    [0.9, 0.5]

    ```
    """
    drawn: dict[str, list[float]] = {}
    fig, axes = _subplots(1, 2, figsize=(11, 4))
    offset = 0
    for stage, history in stages:
        n = len(history.get("loss", []))
        if not n:
            continue
        epochs = np.arange(offset + 1, offset + n + 1)
        for ax, metric in zip(axes, ("loss", "accuracy")):
            key = metric if metric in history else next((k for k in history if k.endswith(metric) and not k.startswith("val_")), None)
            for label, column, style in (("train", key, "o-"), ("val", f"val_{key}" if key else None, "s--")):
                if column in history:
                    ax.plot(epochs, history[column], style, label=f"{label} ({stage})")
                    drawn[f"{metric} {label} ({stage})"] = [float(v) for v in history[column]]
        if offset:
            for ax in axes:
                ax.axvline(offset + 0.5, color="grey", lw=0.8, ls=":")
        offset += n
    if not drawn:
        raise ValueError("training_curves: no stage has a 'loss' history to draw; pass [(stage, history)] with "
                         "Keras History.history dicts. Received: stages with keys "
                         f"{[(name, sorted(h)[:4]) for name, h in stages]}")
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("loss (head training, then fine-tuning)")
    axes[1].set_title("accuracy")
    return _shown(fig, path)


def drawn_series(fig: Figure) -> dict[str, list[float]]:
    """What a :func:`training_curves` figure shows: ``{"<metric> <train|val> (<stage>)": values}``,
    read from its lines (the test that a figure holds the history reads it here)."""
    series = {}
    for ax, metric in zip(fig.axes, ("loss", "accuracy")):
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                series[f"{metric} {line.get_label()}"] = [float(v) for v in line.get_ydata()]
    return series


def confusion_matrix(matrix, class_names: Sequence[str], path: str | None = None,
                     title: str = "test confusion matrix") -> Figure:
    """Counts with row-normalised colour (recall per true class)."""
    m = np.asarray(matrix, dtype=float)
    rates = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = _subplots(figsize=(1.2 + 0.7 * n, 1.0 + 0.6 * n))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="fraction of true class")
    return _shown(fig, path)


def worst_mistakes(labels, probabilities, max_images: int = 16) -> list[int]:
    """Indices of the misclassified images, the most confident mistakes first."""
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(labels))
    return [int(i) for i in wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:max_images]]


def mistakes(labels, probabilities, class_names: Sequence[str], max_images: int = 16,
             names: Sequence[str] | None = None) -> list[dict]:
    """The misclassified images, most confident first: ``index``, ``true``, ``predicted``,
    ``probability`` and ``name`` (its file, if ``names`` are given) of each.

    ```python
    >>> mistakes([0, 1], [[0.2, 0.8], [0.3, 0.7]], ["cat", "dog"])
    [{'index': 0, 'true': 'cat', 'predicted': 'dog', 'probability': 0.8, 'name': None}]

    ```
    """
    return [{"index": i, "true": class_names[int(labels[i])],
             "predicted": class_names[int(np.argmax(probabilities[i]))],
             "probability": float(np.max(probabilities[i])), "name": names[i] if names is not None else None}
            for i in worst_mistakes(labels, probabilities, max_images)]


def misclassified(images, labels, probabilities, class_names: Sequence[str], path: str | None = None,
                  max_images: int = 16, names: Sequence[str] | None = None) -> Figure:
    """The images the model gets wrong, most confident first (:func:`mistakes`), each titled
    with its true and predicted class and the predicted probability."""
    shown = mistakes(labels, probabilities, class_names, max_images, names)
    picks = [row["index"] for row in shown]
    columns = min(4, max(1, len(picks)))
    rows = max(1, -(-len(picks) // columns))
    fig, axes = _subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, row in zip(axes.flat, shown):
        ax.imshow(np.asarray(images[row["index"]]).astype("uint8"))
        ax.set_title(f"true {row['true']}\npredicted {row['predicted']} ({row['probability']:.2f})", fontsize=9,
                     color="red")
    wrong = int(np.sum(np.argmax(probabilities, axis=1) != np.asarray(labels)))
    fig.suptitle(f"{wrong} of {len(labels)} test images misclassified" + (f", the {len(picks)} most confident shown"
                 if wrong > len(picks) else "") if wrong else f"no test image misclassified (of {len(labels)})")
    return _shown(fig, path)


def examples(images, labels, class_names: Sequence[str], per_class: int = 6, path: str | None = None) -> Figure:
    """The first ``per_class`` images of each class, a row per class."""
    labels = np.asarray(labels)
    fig, axes = _subplots(len(class_names), per_class, figsize=(2 * per_class, 2.1 * len(class_names)), squeeze=False)
    for row, name in enumerate(class_names):
        for ax, i in zip(axes[row], list(np.flatnonzero(labels == row)[:per_class]) + [None] * per_class):
            ax.set_axis_off()
            if i is not None:
                ax.imshow(np.asarray(images[i]).astype("uint8"))
        axes[row][0].set_title(name, loc="left")
    fig.tight_layout()
    return _shown(fig, path)


def predictions(images, labels, probabilities, class_names: Sequence[str], path: str | None = None) -> Figure:
    """Images in a row, each titled with its predicted class and probability, green where the
    prediction is right and red where it is wrong."""
    n = len(images)
    fig, axes = _subplots(1, max(n, 1), figsize=(2.2 * max(n, 1), 2.7), squeeze=False)
    for ax, image, label, p in zip(axes[0], images, labels, probabilities):
        ax.imshow(np.asarray(image).astype("uint8"))
        ax.set_axis_off()
        ax.set_title(f"{class_names[int(np.argmax(p))]}\n{np.max(p):.2f}", fontsize=9,
                     color="green" if int(np.argmax(p)) == int(label) else "red")
    return _shown(fig, path)


def grad_cam_figure(image: np.ndarray, overlaid: np.ndarray, title: str, path: str | None = None) -> Figure:
    """An image beside its Grad-CAM overlay (:func:`keras_transfer.export.heatmaps.overlay`)."""
    fig, axes = _subplots(1, 2, figsize=(7, 3.8))
    for ax, picture, label in zip(axes, (image, overlaid), ("image", "Grad-CAM: " + title)):
        ax.imshow(picture)
        ax.set_title(label, fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    return _shown(fig, path)


def grad_cams(overlaid, titles: Sequence[str], path: str | None = None) -> Figure:
    """Images in a row, each with its Grad-CAM heatmap laid over it
    (:func:`keras_transfer.export.heatmaps.overlay`)."""
    n = len(overlaid)
    fig, axes = _subplots(1, max(n, 1), figsize=(3 * max(n, 1), 3.3), squeeze=False)
    for ax, picture, title in zip(axes[0], overlaid, titles):
        ax.imshow(np.asarray(picture))
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return _shown(fig, path)


def lr_finder(rates: Sequence[float], losses: Sequence[float], suggested: float | None = None,
              path: str | None = None, title: str = "learning-rate finder") -> Figure:
    """Loss (smoothed) against the learning rate on a log axis, the suggestion marked."""
    fig, ax = _subplots(figsize=(6.5, 3.8))
    ax.plot(rates, losses, "-", label="loss (smoothed)")
    ax.set_xscale("log")
    if suggested is not None:
        ax.axvline(suggested, color="tab:red", ls="--", lw=1, label=f"suggested {suggested:.1e}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _shown(fig, path)


def heatmap(values: dict[tuple[int, int], float], path: str | None = None, x_label: str = "frozen layers (k)",
            y_label: str = "removed units", title: str = "validation accuracy",
            chosen: tuple[int, int] | None = None) -> Figure:
    """``{(removed, frozen): value}`` as a grid; cells never tried are blank; the ``chosen`` cell
    is boxed (default: the highest value's, the first of equals)."""
    rows = sorted({r for r, _ in values})
    cols = sorted({c for _, c in values})
    grid = np.full((len(rows), len(cols)), np.nan)
    for (r, c), v in values.items():
        grid[rows.index(r), cols.index(c)] = v
    fig, ax = _subplots(figsize=(1.5 + 0.6 * len(cols), 1.2 + 0.5 * len(rows)))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if grid[i, j] > np.nanmean(grid) else "white")
    best = (rows.index(chosen[0]), cols.index(chosen[1])) if chosen in values else \
        np.unravel_index(np.nanargmax(grid), grid.shape)

    ax.add_patch(Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return _shown(fig, path)


def filters(kernel: np.ndarray, path: str, title: str = "first-layer filters", columns: int = 16,
            bgr: bool = False) -> str:
    """A conv kernel ``(h, w, 3, n)`` as ``n`` small RGB tiles, each scaled to its own range.
    ``bgr``: the kernel reads BGR input (Caffe-style backbones such as VGG16), so flip it."""
    n = kernel.shape[-1]
    rows = int(np.ceil(n / columns))
    fig, axes = _subplots(rows, columns, figsize=(columns * 0.55, rows * 0.55 + 0.4))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i < n:
            f = kernel[..., i]
            f = (f - f.min()) / max(f.max() - f.min(), 1e-8)
            ax.imshow(f[..., ::-1] if bgr and f.shape[-1] == 3 else f, interpolation="nearest")
    fig.suptitle(title)
    return _save(fig, path)


def probe_scores(rows, path: str | None = None, recommended: int | None = None, title: str = "where to cut") -> Figure:
    """LogME and linear-probe accuracy against units removed (``rows``: probe.CutScore)."""
    removed = [r.removed for r in rows]
    fig, ax = _subplots(figsize=(7, 3.6))
    ax.plot(removed, [r.probe_accuracy for r in rows], "o-", color="tab:blue", label="linear probe (5-fold)")
    ax.set_xlabel("units removed (0 = the whole backbone)")
    ax.set_ylabel("linear-probe accuracy", color="tab:blue")
    ax.set_xticks(removed, [f"{r.removed}\n{r.layer}" for r in rows], fontsize=6, rotation=90)
    twin = ax.twinx()
    twin.plot(removed, [r.logme for r in rows], "s--", color="tab:orange", label="LogME")
    twin.set_ylabel("LogME (higher is better)", color="tab:orange")
    if recommended is not None:
        ax.axvline(recommended, color="k", ls=":", lw=1)
    ax.set_title(title)
    return _shown(fig, path)


def layer_removal(result: dict, path: str) -> str:
    """Test accuracy (mean +- std over seeds) against units removed, frozen and fine-tuned, with
    the probe's accuracy on the same axes (Zhi et al. 2017's question on the user's data)."""
    fig, ax = _subplots(figsize=(7, 4))
    removed = result["config"]["removed"]
    for mode, style in (("frozen", "o-"), ("fine_tuned", "s-")):
        rows = result["accuracy"].get(mode, {})
        xs = [r for r in removed if str(r) in rows]
        ax.errorbar(xs, [rows[str(r)]["mean"] for r in xs], yerr=[rows[str(r)]["std"] for r in xs], fmt=style,
                    capsize=3, label=f"{mode.replace('_', '-')} (test, mean ± std over seeds)")
    probe_rows = result.get("probe_accuracy", {})
    xs = [r for r in removed if str(r) in probe_rows]
    ax.plot(xs, [probe_rows[str(r)] for r in xs], "^--", color="grey", label="linear probe (5-fold, train)")
    taus = "; ".join(f"tau(probe, {m}) = {t['tau']:+.2f}" for m, t in result.get("kendall_tau", {}).items())
    ax.set_xlabel("units removed from the top")
    ax.set_ylabel("accuracy")
    ax.set_title(f"layer removal: {result['config']['backbone']} on {result['config'].get('dataset') or 'your data'}"
                 + (f"\n{taus}" if taus else ""), fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def transferability(result: dict, path: str) -> str:
    """Accuracy on B against the number of units copied, one panel per A/B split, as Yosinski
    et al.'s Figure 2: BnB, BnB+, AnB, AnB+ (mean ± std over seeds) and baseB at n = 0."""
    splits = list(result["accuracy"])
    fig, axes = _subplots(1, len(splits), figsize=(6 * len(splits), 4), squeeze=False)
    styles = {"BnB": ("o-", "tab:blue"), "BnB+": ("o--", "tab:red"), "AnB": ("D-", "tab:blue"),
              "AnB+": ("D--", "tab:red")}
    for ax, split in zip(axes[0], splits):
        conds = result["accuracy"][split]
        base = conds["baseB"]["0"]
        ax.errorbar([0], [base["mean"]], yerr=[base["std"]], fmt="ks", capsize=3, label="baseB")
        for condition, (fmt, colour) in styles.items():
            rows = conds.get(condition, {})
            ns = sorted(int(n) for n in rows)
            ax.errorbar(ns, [rows[str(n)]["mean"] for n in ns], yerr=[rows[str(n)]["std"] for n in ns], fmt=fmt,
                        color=colour, mfc="white" if condition.startswith("B") else colour, capsize=3, label=condition)
        ax.set_xticks(range(len(result["units"]) + 1), ["base"] + [f"{i}\n{u}" for i, u in enumerate(result["units"], 1)],
                      fontsize=7)
        ax.set_xlabel("units copied from the base network (n)")
        ax.set_ylabel("test accuracy on B")
        ax.set_title(f"{split} split", fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, path)


def keep_classifier_results(result: dict, path: str) -> str:
    """Accuracy on B against frozen depth, source classifier kept vs dropped (Shermin et al.)."""
    fig, ax = _subplots(figsize=(7, 4))
    units = result["units"]
    for head, fmt in (("dropped", "o-"), ("kept", "s-")):
        rows = result["accuracy"].get(head, {})
        xs = sorted(int(f) for f in rows)
        ax.errorbar(xs, [rows[str(f)]["mean"] for f in xs], yerr=[rows[str(f)]["std"] for f in xs], fmt=fmt,
                    capsize=3, label=f"source classifier {head} (mean ± std over seeds)")
    ax.set_xticks(range(len(units) + 1), ["0"] + [f"{i}\n{u}" for i, u in enumerate(units, 1)], fontsize=7)
    ax.set_xlabel("units frozen (the rest fine-tuned)")
    ax.set_ylabel("test accuracy on B")
    ax.set_title("keep the source classifier? (Shermin et al. 2019)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def paired_differences(groups: dict, path: str, title: str, ylabel: str) -> str:
    """One column per condition: each seed's paired difference as a dot, mean ± std as a bar."""
    fig, ax = _subplots(figsize=(1.6 * len(groups) + 2, 4))
    for i, (name, values) in enumerate(groups.items()):
        ax.scatter(np.full(len(values), i, dtype=float) + np.linspace(-0.08, 0.08, len(values)), values, s=14,
                   color="grey", zorder=3)
        ax.errorbar([i], [np.mean(values)], yerr=[np.std(values)], fmt="D", color="tab:red", capsize=5, zorder=4)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
