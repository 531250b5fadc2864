"""Save and load models as a directory of ``model.safetensors`` + ``config.json``. Never pickle.

A model directory from a stranger can only ever be parsed as numbers and JSON, never run as
code. ``config.json`` records the format version, the kind of object, its configuration and
the SHA-256 of the tensor file, so a truncated or modified file is refused with a clear error.
Writes go to a temporary sibling directory renamed into place: an interrupted save leaves
either the old model or the new one, never a mixture.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from densitylab._files import atomic_directory

FORMAT = "densitylab-model"
VERSION = 1
CONFIG_FILE = "config.json"
TENSOR_FILE = "model.safetensors"


def save(obj: Any, path: str | os.PathLike) -> Path:
    """Save a flow, a fitted estimator or a baseline to ``path`` (a directory, created or replaced).

    Example:
        >>> dl.save(estimator, "model/")
    """
    kind = _kind_of(obj)
    tensors, config = SAVERS[kind](obj)
    path = Path(path)
    if path.exists() and not _is_model_dir(path):
        raise ValueError(f"{path} exists and is not a densitylab model; not overwriting it")
    with atomic_directory(path) as staging:
        tensor_path = staging / TENSOR_FILE
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tensor_path)
        header = {"format": FORMAT, "version": VERSION, "kind": kind, "config": config,
                  "sha256": _sha256(tensor_path)}
        (staging / CONFIG_FILE).write_text(json.dumps(header, indent=2))
    return path


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    """Load what :func:`save` wrote; ``ValueError`` for corrupt, tampered or foreign files."""
    path = Path(path)
    config_path, tensor_path = path / CONFIG_FILE, path / TENSOR_FILE
    if not config_path.is_file() or not tensor_path.is_file():
        raise FileNotFoundError(
            f"{path} is not a model directory (needs {CONFIG_FILE} and {TENSOR_FILE})"
        )
    try:
        header = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{config_path} is not a densitylab model description")
    if header.get("version") != VERSION:
        raise ValueError(
            f"{path} was saved in format version {header.get('version')}; "
            f"this densitylab reads version {VERSION}"
        )
    if header.get("kind") not in LOADERS:
        raise ValueError(f"{path} holds an unknown kind of model {header.get('kind')!r}")
    if _sha256(tensor_path) != header.get("sha256"):
        raise ValueError(
            f"{tensor_path} does not match its checksum: the file is truncated or modified"
        )
    try:
        tensors = load_file(tensor_path, device=str(device))
    except SafetensorError as err:
        raise ValueError(f"{tensor_path} is not a readable safetensors file: {err}") from err
    return LOADERS[header["kind"]](tensors, header["config"], device)


def _is_model_dir(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- what can be saved: one saver and one loader per kind ------------------------------------
def _kind_of(obj: Any) -> str:
    for kind, (cls_path, _) in KINDS.items():
        module, name = cls_path.rsplit(".", 1)
        if type(obj).__name__ == name and type(obj).__module__ == module:
            return kind
    names = ", ".join(path.rsplit(".", 1)[1] for path, _ in KINDS.values())
    raise ValueError(f"cannot save a {type(obj).__name__}; densitylab saves: {names}")


def _save_flow(flow) -> tuple[dict[str, torch.Tensor], dict]:
    return dict(flow.state_dict()), {**flow.config, "dtype": str(flow.dtype).removeprefix("torch.")}


def _load_flow(tensors: dict[str, torch.Tensor], config: dict, device) -> Any:
    from densitylab.flows import build

    config = dict(config)
    dtype = getattr(torch, config.pop("dtype", "float32"))
    flow = build(**config).to(dtype=dtype, device=device)
    try:
        flow.load_state_dict(tensors)
    except RuntimeError as err:
        raise ValueError(f"the saved tensors do not fit the saved configuration: {err}") from err
    return flow.eval()


def _save_estimator(estimator) -> tuple[dict[str, torch.Tensor], dict]:
    from densitylab.estimators import check_fitted

    check_fitted(estimator)
    tensors, flow_config = _save_flow(estimator.flow_)
    return tensors, {"params": estimator.get_params(), "flow": flow_config,
                     "fitted": estimator.fitted_summary()}


def _load_estimator(tensors: dict[str, torch.Tensor], config: dict, device) -> Any:
    from densitylab.estimators import FlowDensity

    params = {k: tuple(v) if isinstance(v, list) else v for k, v in config["params"].items()}
    estimator = FlowDensity(**params)
    estimator.restore(_load_flow(tensors, config["flow"], device), config["fitted"])
    return estimator


def _save_baseline(model) -> tuple[dict[str, torch.Tensor], dict]:
    return dict(model.state_dict()), {**model.config,
                                      "dtype": str(model.dtype).removeprefix("torch.")}


def _baseline_loader(name: str) -> Callable:
    """Loader for ``densitylab.baselines.<name>``: rebuild from the config, then the tensors."""

    def load_baseline(tensors: dict[str, torch.Tensor], config: dict, device) -> Any:
        from densitylab import baselines

        config = dict(config)
        dtype = getattr(torch, str(config.pop("dtype", "float32")), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"the saved {name} names an unknown dtype")
        try:
            model = getattr(baselines, name)(**config).to(dtype=dtype, device=device)
            model.load_state_dict(tensors)
        except (TypeError, RuntimeError) as err:
            raise ValueError(f"the saved {name} does not match its configuration: {err}") from err
        return model.eval()

    return load_baseline


def _save_auto(auto) -> tuple[dict[str, torch.Tensor], dict]:
    from densitylab.auto import to_state

    return to_state(auto)


def _load_auto(tensors: dict[str, torch.Tensor], config: dict, device) -> Any:
    from densitylab.auto import from_state

    return from_state(tensors, config, device)


KINDS: dict[str, tuple[str, tuple[Callable, Callable]]] = {
    "flow": ("densitylab.flows.flow.Flow", (_save_flow, _load_flow)),
    "flow-density": ("densitylab.estimators.FlowDensity", (_save_estimator, _load_estimator)),
    "vae": ("densitylab.baselines.vae.VAE", (_save_baseline, _baseline_loader("VAE"))),
    "gan": ("densitylab.baselines.gan.GAN", (_save_baseline, _baseline_loader("GAN"))),
    "auto-density": ("densitylab.auto.AutoDensity", (_save_auto, _load_auto)),
}
SAVERS = {kind: funcs[0] for kind, (_, funcs) in KINDS.items()}
LOADERS = {kind: funcs[1] for kind, (_, funcs) in KINDS.items()}
