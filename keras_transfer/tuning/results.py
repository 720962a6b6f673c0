"""A search's trials as a table: ``results.csv``, ``heatmap.png``, the best trial, the top five."""

from __future__ import annotations

import csv
import os

import keras_tuner
import numpy as np

from keras_transfer import plots
from keras_transfer._utils.atomic_files import atomic_path
from keras_transfer.tuning.hypermodel import RUNG, TransferHyperModel

RESULT_COLUMNS = ("trial_id", "status", "rung", "removed", "frozen_units", "frozen_layers", "head", "width", "dropout",
                  "learning_rate", "val_accuracy", "val_loss", "seconds", "message")


def trial_rows(tuner: keras_tuner.Tuner, hypermodel: TransferHyperModel) -> list[dict]:
    """One row per trial (every status), in trial order."""
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        values = trial.hyperparameters.values
        metrics = {name: trial.metrics.get_best_value(name) for name in ("val_accuracy", "val_loss", "seconds")
                   if trial.metrics.exists(name)}
        removed, frozen_units = values.get("removed"), values.get("frozen_units")
        rows.append({
            "trial_id": trial_id, "status": trial.status, "rung": values.get(RUNG, 0), "removed": removed,
            "frozen_units": frozen_units,
            "frozen_layers": hypermodel.frozen_layers(removed, frozen_units) if None not in (removed, frozen_units) else None,
            "head": values.get("head", hypermodel.head_kinds[0]), "width": values.get("width"),
            "dropout": values.get("dropout", hypermodel.dropouts[0]), "learning_rate": values.get("learning_rate"),
            **metrics, "message": (trial.message or "").strip().splitlines()[-1][:200] if trial.message else "",
        })
    return rows


def write_results(rows: list[dict], out_dir: str) -> dict:
    """``results.csv`` and ``heatmap.png`` in ``out_dir``; returns the best completed row (ties: :func:`_preference`)."""
    with atomic_path(os.path.join(out_dir, "results.csv")) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    done = _completed(rows)
    if not done:
        return {}
    best = max(done, key=_preference)
    heatmap_figure(rows, best, os.path.join(out_dir, "heatmap.png"))
    return best


def _completed(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "COMPLETED" and r.get("val_accuracy") is not None]


def heatmap_figure(rows: list[dict], best: dict, path: str | None = None):
    """The best validation accuracy per (removed, frozen units) of the last rung's trials, the
    cell of the trial taken (``best``) boxed, ties and all; a matplotlib Figure."""
    done = _completed(rows)
    top_rung = max(r.get("rung", 0) for r in done)
    cells: dict[tuple[int, int], float] = {}
    for r in done:
        if r.get("rung", 0) == top_rung:
            key = (r["removed"], r["frozen_units"])
            cells[key] = max(cells.get(key, -np.inf), r["val_accuracy"])
    return plots.heatmap(cells, path, x_label="frozen units (0 = none; top = all)", y_label="removed units",
                         title="best validation accuracy per (removed, frozen)",
                         chosen=(best["removed"], best["frozen_units"]))


def _preference(row: dict) -> tuple:
    """The last rung's (halving: the full budget), then the best validation accuracy; among equals
    (common on a few dozen validation images) the cheaper setting: more units removed (a smaller
    model), then more frozen (less to train), then the lower validation loss."""
    return (row.get("rung", 0), row["val_accuracy"], row["removed"], row["frozen_units"],
            -(row.get("val_loss") or 0.0))


def format_top(rows: list[dict], n: int = 5) -> str:
    done = sorted((r for r in rows if r["status"] == "COMPLETED"), key=_preference, reverse=True)[:n]
    lines = [f"{'trial':>6} {'rung':>4} {'removed':>7} {'frozen':>6} {'k':>4} {'width':>5} {'drop':>4} {'lr':>7} "
             f"{'val_acc':>7} {'s':>6}"]
    for r in done:
        lines.append(f"{r['trial_id']:>6} {r.get('rung', 0):>4} {r['removed']:>7} {r['frozen_units']:>6} "
                     f"{r['frozen_layers']:>4} {r['width']:>5} {r['dropout']:>4} {r['learning_rate']:>7.0e} "
                     f"{r['val_accuracy']:>7.3f} {r.get('seconds', float('nan')):>6.1f}")
    return "\n".join(lines)
