"""One experiment's ``results.json``: its settings and every finished cell, written after each
cell (atomically), so a killed run keeps what it finished and the same command goes on.
Trained source networks are kept beside it (``sources/<name>.keras``) for the same reason."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable

import keras
import numpy as np

from keras_transfer._utils.atomic_files import atomic_path, read_json, write_json
from keras_transfer.training.model import load_model

logger = logging.getLogger(__name__)


def spread(values) -> dict:
    """``{mean, std, seeds}`` of one quantity over seeds (the experiments' summary cell)."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "seeds": len(values)}


def jsonable(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


class Results:
    def __init__(self, out_dir: str, experiment: str, config, total: int):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir, self.experiment, self.total = out_dir, experiment, total
        self.path = os.path.join(out_dir, "results.json")
        self.config = jsonable(config)
        saved = read_json(self.path, {})
        # a setting the saved config lacks (added to the package since) was its default then
        defaults = {f.name: list(f.default) if isinstance(f.default, tuple) else f.default
                    for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
        was = {**defaults, **saved.get("config", {})}
        if saved and (was != self.config or saved.get("experiment", experiment) != experiment):
            raise ValueError(f"{out_dir!r} holds a {saved.get('experiment', 'different')} run with other settings; "
                             "choose another out_dir (nothing was overwritten).")
        self.cells: dict = saved.get("cells", {})
        self.extra: dict = {k: v for k, v in saved.items() if k not in ("experiment", "config", "cells")}

    def cell(self, key: str, compute: Callable[[], float]) -> float:
        """``cells[key]``, computed (and saved at once) if this run has not finished it yet."""
        if key not in self.cells:
            start = time.perf_counter()
            self.cells[key] = compute()
            self.save()
            logger.info("cell %d/%d  %s: %.3f  (%.0f s)", len(self.cells), self.total, key, self.cells[key],
                        time.perf_counter() - start)
        return self.cells[key]

    def source(self, name: str, train: Callable[[], keras.Model]) -> keras.Model:
        """A trained source network: loaded if an earlier run saved it, else trained and saved."""
        path = os.path.join(self.out_dir, "sources", f"{name}.keras")
        if os.path.exists(path):
            return load_model(path, advice="Delete it and run the same command again: the source network is "
                                           "trained again.", compile=False)
        start = time.perf_counter()
        model = train()
        with atomic_path(path) as tmp:
            model.save(tmp)
        logger.info("source %s trained (%.0f s)", name, time.perf_counter() - start)
        return model

    def save(self, **summary) -> dict:
        self.extra.update(summary)
        result = {"experiment": self.experiment, "config": self.config, "cells": self.cells, **self.extra}
        write_json(self.path, result)
        return result
