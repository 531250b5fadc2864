"""The whole state of a run in a directory (tensors in safetensors, the rest in JSON), written
atomically every few epochs, so Ctrl-C or a crash loses at most those epochs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from densitylab._files import atomic_directory
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
            progress = json.loads((self.path / "progress.json").read_text())
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


def _like(tensor: Tensor, example):
    """``tensor`` as the kind of array ``example`` is (a NumPy engine keeps NumPy arrays)."""
    if isinstance(example, np.ndarray):
        return tensor.numpy().copy()
    return tensor.to(device=example.device, dtype=example.dtype)


def _as_state(tensors: dict[str, Tensor], like: dict) -> dict:
    return {k: _like(tensors[k], v) for k, v in like.items()}
