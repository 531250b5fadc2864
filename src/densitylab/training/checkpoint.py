"""The whole state of a run in a directory (tensors in safetensors, the rest in JSON), written
atomically every few epochs, so Ctrl-C or a crash loses at most those epochs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from densitylab._files import atomic_directory
from densitylab._schema import read_json
from densitylab.training.result import History


class Checkpoint:
    """Saves and restores a :class:`~densitylab.training.driver.Driver` and its engine."""

    def __init__(self, path: str | Path, every: int, fingerprint: str) -> None:
        self.path, self.every, self.fingerprint = Path(path), every, fingerprint

    def exists(self) -> bool:
        return (self.path / "progress.json").is_file()

    def save(self, driver) -> None:
        engine = driver.engine
        tensors = {f"model.{k}": v for k, v in engine.state().items()}
        tensors |= {f"best.{k}": v for k, v in driver.best_state.items()}
        tensors |= {f"rng.{m}": g.get_state() for m, g in enumerate(driver.generators)}
        if driver.averaged is not None:
            tensors |= {f"ema.{i}": a for i, a in enumerate(driver.averaged)}
        tensors |= {f"adam.{k}": v for k, v in engine.optimizer_state().items()}
        progress = {
            "fingerprint": self.fingerprint, "epoch": driver.epoch, "step": driver.step,
            "wall_time": driver.wall_time, "best_epoch": driver.best_epoch,
            "best_val": driver.best_val.tolist(), "bad_steps": engine.bad_steps.tolist(),
            "stop_reason": driver.stop_reason, "engine": engine.name,
            "histories": [h.to_dict() for h in driver.histories],
        }
        with atomic_directory(self.path) as staging:
            save_file({k: torch.as_tensor(v).detach().cpu().contiguous()
                       for k, v in tensors.items()}, staging / "state.safetensors")
            (staging / "progress.json").write_text(json.dumps(progress))

    def restore(self, driver) -> None:
        """Continue from the checkpoint; a damaged or foreign one is a one-line ``ValueError``."""
        damaged = (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError)
        try:
            progress = read_json(self.path / "progress.json")
            fingerprint = progress["fingerprint"]
        except damaged as err:
            raise self._damaged(err) from err
        if fingerprint != self.fingerprint:
            raise ValueError(
                f"checkpoint {self.path} belongs to other data, model or options; "
                "remove it or start without resume"
            )
        written, running = progress.get("engine", driver.engine.name), driver.engine.name
        if written != running:  # the optimiser states of the engines differ in layout
            raise ValueError(f"checkpoint {self.path} was written by the {written} engine and "
                             f"this run uses the {running} engine; resume with "
                             f"engine={written!r} or start without resume")
        problem = _inconsistent(progress, driver)
        if problem:
            raise ValueError(f"checkpoint {self.path} is damaged or tampered with ({problem}); "
                             "remove it or start without resume")
        try:
            self._restore(driver, progress)
        except damaged as err:
            raise self._damaged(err) from err

    def _damaged(self, err: Exception) -> ValueError:
        return ValueError(f"checkpoint {self.path} is damaged ({type(err).__name__}); "
                          "remove it or start without resume")

    def _restore(self, driver, progress: dict) -> None:
        tensors = load_file(self.path / "state.safetensors")

        def part(prefix: str) -> dict[str, Tensor]:
            return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

        engine = driver.engine
        like = engine.state()
        engine.load_state(_as_state(part("model."), like))
        driver.best_state = _as_state(part("best."), like)
        if "ema.0" in tensors:
            weights = engine.weights()
            driver.averaged = [_like(tensors[f"ema.{i}"], w) for i, w in enumerate(weights)]
        for m, generator in enumerate(driver.generators):
            generator.set_state(tensors[f"rng.{m}"])
        engine.bad_steps = np.asarray(progress["bad_steps"], dtype=np.int64)
        engine.load_optimizer_state(part("adam."))
        driver.epoch, driver.step = progress["epoch"], progress["step"]
        driver.wall_time = progress["wall_time"]
        driver.best_epoch = progress["best_epoch"]
        driver.best_val = np.asarray(progress["best_val"], dtype=np.float64)
        driver.stop_reason = progress["stop_reason"]
        driver.histories = [History.from_dict(h) for h in progress["histories"]]


STOP_REASONS = ("completed", "early-stopping", "diverged", "interrupted")


def _inconsistent(progress: dict, driver) -> str:
    """What in a checkpoint's progress does not fit together or this run (``""`` if nothing):
    counts out of range, lists of the wrong length, histories shorter or longer than the
    epochs they claim. A file edited to claim a finished run is caught here."""
    from densitylab._schema import conforms

    m = driver.n_models
    n_batches = math.ceil(driver.n_train / driver.options.batch_size)
    epoch = progress.get("epoch")
    if not (conforms(epoch, int) and epoch >= 0):
        return "epoch is not a count"
    if progress.get("step") != epoch * n_batches:
        return f"step is not {epoch} epochs of {n_batches} batches"
    if not (conforms(progress.get("wall_time"), float) and progress["wall_time"] >= 0):
        return "wall_time is not a duration"
    def loss(v: object) -> bool:  # a validation loss: a number, +inf before any improvement
        return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)

    lists = {"best_epoch": lambda v: conforms(v, int), "best_val": loss,
             "bad_steps": lambda v: conforms(v, int), "stop_reason": lambda v: conforms(v, str),
             "histories": lambda v: isinstance(v, dict)}
    for name, fits in lists.items():
        value = progress.get(name)
        if not (isinstance(value, list) and len(value) == m and all(fits(v) for v in value)):
            return f"{name} is not one value per model"
    if any(not 0 <= e <= epoch for e in progress["best_epoch"]):
        return "a best epoch lies outside the epochs run"
    if any(r not in STOP_REASONS for r in progress["stop_reason"]):
        return "an unknown stop reason"
    if any(b < 0 for b in progress["bad_steps"]):
        return "a negative count of bad steps"
    for k, history in enumerate(progress["histories"]):
        rows = {len(v) if isinstance(v, list) else -1 for v in history.values()}
        if len(rows) != 1 or "seconds" not in history or -1 in rows:
            return f"the history of model {k} is not a table"
        (length,) = rows
        if length > epoch or (progress["stop_reason"][k] == "completed" and length != epoch):
            return f"the history of model {k} does not hold {epoch} epochs"
    return ""


def _like(tensor: Tensor, example):
    """``tensor`` as the kind of array ``example`` is (a NumPy engine keeps NumPy arrays)."""
    if isinstance(example, np.ndarray):
        return tensor.numpy().copy()
    return tensor.to(device=example.device, dtype=example.dtype)


def _as_state(tensors: dict[str, Tensor], like: dict) -> dict:
    return {k: _like(tensors[k], v) for k, v in like.items()}
