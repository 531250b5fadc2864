"""Save and load models as a directory of ``model.safetensors`` + ``config.json``. Never pickle.

A model directory from a stranger can only ever be parsed as numbers and JSON, never run as
code. ``config.json`` records the format version, the kind of object, its configuration and
the SHA-256 of the tensor file, so a truncated or modified file is refused with a clear error.
Writes go to a staging directory swapped into place: an interrupted save leaves either the old
model or the new one, never a mixture, and a directory that is not a densitylab model is never
replaced (see :mod:`densitylab._files`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from densitylab._files import output_directory
from densitylab._schema import (
    MAX_TENSOR_BYTES,
    TensorShapes,
    check_size,
    checked_arguments,
    checked_dtype,
    conforms,
    read_json,
)
from densitylab.runtime import resolve_device

FORMAT = "densitylab-model"
VERSION = 1
CONFIG_FILE = "config.json"
TENSOR_FILE = "model.safetensors"


def save(obj: Any, path: str | os.PathLike) -> Path:
    """Save a flow, a fitted estimator or a baseline to ``path`` (a directory, created or replaced).

    Example:
        >>> import tempfile, torch, densitylab as dl
        >>> flow = dl.flows.realnvp(dim=2, n_layers=2, seed=0)
        >>> folder = tempfile.mkdtemp() + "/model"
        >>> _ = dl.save(flow, folder)
        >>> x = torch.zeros(3, 2)
        >>> torch.equal(dl.load(folder).log_prob(x), flow.log_prob(x))
        True
    """
    kind = _kind_of(obj)
    tensors, config = SAVERS[kind](obj)
    path = Path(path)
    with output_directory(path, "model") as staging:
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
    header = read_json(config_path)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{config_path} is not a densitylab model description")
    if header.get("version") != VERSION:
        raise ValueError(
            f"{path} was saved in format version {header.get('version')}; "
            f"this densitylab reads version {VERSION}"
        )
    if header.get("kind") not in LOADERS:
        raise ValueError(f"{path} holds an unknown kind of model {header.get('kind')!r}")
    size = tensor_path.stat().st_size
    if size > MAX_TENSOR_BYTES:  # before reading a byte of it
        raise ValueError(f"{tensor_path} is {size:,} bytes, more than densitylab loads "
                         f"({MAX_TENSOR_BYTES:,})")
    if _sha256(tensor_path) != header.get("sha256"):
        raise ValueError(
            f"{tensor_path} does not match its checksum: the file is truncated or modified"
        )
    shapes = TensorShapes(tensor_path)
    return LOADERS[header["kind"]](Saved(config_path, header.get("config"), shapes),
                                   resolve_device(device))


@dataclass(frozen=True)
class Saved:
    """What a loader reads: the configuration (untrusted, unchecked) and the tensor file's
    shapes; :meth:`load` builds a checked module and fills it with the saved tensors."""

    where: Path  # the config file, named in every error
    config: Any
    shapes: TensorShapes

    def load(self, factory: Callable[[], torch.nn.Module], device: torch.device,
             prefix: str = "") -> Any:
        check_size(factory, self.shapes, self.where)
        tensor_path = self.where.with_name(TENSOR_FILE)
        try:
            tensors = load_file(tensor_path, device=str(device))
        except SafetensorError as err:
            raise ValueError(f"{tensor_path} is not a readable safetensors file: {err}") from err
        model = factory().to(device)
        try:
            model.load_state_dict(tensors)
        except RuntimeError as err:
            raise ValueError(f"{self.where}: the saved tensors do not fit the configuration") \
                from err
        return model.eval()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:  # in blocks: never the whole file in memory
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _flow_factory(config: Any, saved: Saved) -> Callable[[], Any]:
    """A checked builder call for a saved flow configuration."""
    from densitylab.flows import BUILDERS, build

    if not isinstance(config, dict):
        raise ValueError(f"{saved.where}: the flow configuration is not a JSON object")
    config = dict(config)
    dtype = checked_dtype(config, saved.where)
    config.pop("dtype", None)
    builder = config.pop("builder", None)
    if builder not in BUILDERS:
        raise ValueError(f"{saved.where}: unknown flow builder {builder!r}; "
                         f"densitylab builds {sorted(BUILDERS)}")
    standardize = config.pop("standardize", False)
    if not isinstance(standardize, bool):
        raise ValueError(f"{saved.where}: 'standardize' must be true or false")
    mixture_base = config.pop("mixture_base", 0)
    if not conforms(mixture_base, int) or not 0 <= mixture_base <= saved.shapes.largest:
        raise ValueError(f"{saved.where}: 'mixture_base' must be a small non-negative integer")
    arguments = checked_arguments(BUILDERS[builder], config, saved.shapes, saved.where)
    return lambda: build(builder, standardize=standardize, mixture_base=mixture_base,
                         **arguments).to(dtype=dtype)


def _load_flow(saved: Saved, device: torch.device) -> Any:
    return saved.load(_flow_factory(saved.config, saved), device)


def _save_estimator(estimator) -> tuple[dict[str, torch.Tensor], dict]:
    from densitylab.estimators import check_fitted

    check_fitted(estimator)
    tensors, flow_config = _save_flow(estimator.flow_)
    params = {k: v.item() if isinstance(v, np.generic) else v
              for k, v in estimator.get_params().items()}  # np.float32(1e-3) -> 1e-3
    return tensors, {"params": params, "flow": flow_config, "fitted": estimator.fitted_summary()}


def _estimator_loader(name: str, module: str = "densitylab.estimators") -> Callable:
    """Loader for ``<module>.<name>`` (a flow inside a scikit-learn estimator)."""

    def load_estimator(saved: Saved, device: torch.device) -> Any:
        factory, finish = _estimator_parts(name, saved, module)
        return finish(saved.load(factory, device))

    return load_estimator


def _estimator_parts(name: str, saved: Saved, module: str = "densitylab.estimators"
                     ) -> tuple[Callable, Callable]:
    """The checked flow factory of a saved estimator, and how to wrap the loaded flow."""
    cls = getattr(importlib.import_module(module), name)
    config = saved.config
    if not isinstance(config, dict) or not {"params", "flow", "fitted"} <= set(config):
        raise ValueError(f"{saved.where}: an estimator needs 'params', 'flow' and 'fitted'")
    params = checked_arguments(cls.__init__, config["params"], saved.shapes, saved.where,
                               sized=False)
    fitted = config["fitted"]
    if not (isinstance(fitted, dict) and conforms(fitted.get("best_epoch"), int)
            and conforms(fitted.get("best_val_nll"), float | None)):
        raise ValueError(f"{saved.where}: 'fitted' must hold best_epoch and best_val_nll")

    def finish(flow: Any) -> Any:
        estimator = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
        try:
            estimator.restore(flow, fitted)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{saved.where}: 'fitted' does not fit the estimator: {err}") \
                from None
        return estimator

    return _flow_factory(config["flow"], saved), finish


def estimator_from_tensors(tensors: dict[str, torch.Tensor], config: dict, device: Any,
                           name: str = "FlowDensity") -> Any:
    """An estimator from tensors already in memory (a model nested in another, such as
    AutoDensity's winner), checked as :func:`load` checks a directory."""
    saved = Saved(Path(f"<{name}>"), config, TensorShapes.of(tensors))
    factory, finish = _estimator_parts(name, saved)
    check_size(factory, saved.shapes, saved.where)
    flow = factory().to(resolve_device(device))
    try:
        flow.load_state_dict(tensors)
    except RuntimeError as err:
        raise ValueError(f"{saved.where}: the tensors do not fit the configuration") from err
    return finish(flow.eval())


def _save_baseline(model) -> tuple[dict[str, torch.Tensor], dict]:
    return dict(model.state_dict()), {**model.config,
                                      "dtype": str(model.dtype).removeprefix("torch.")}


def _baseline_loader(name: str) -> Callable:
    """Loader for ``densitylab.baselines.<name>``: check the config, build, fill the tensors."""

    def load_baseline(saved: Saved, device: torch.device) -> Any:
        from densitylab import baselines

        if not isinstance(saved.config, dict):
            raise ValueError(f"{saved.where}: the {name} configuration is not a JSON object")
        config = dict(saved.config)
        dtype = checked_dtype(config, saved.where)
        config.pop("dtype", None)
        cls = getattr(baselines, name)
        arguments = checked_arguments(cls.__init__, config, saved.shapes, saved.where)
        return saved.load(lambda: cls(**arguments).to(dtype=dtype), device)

    return load_baseline


def _save_auto(auto) -> tuple[dict[str, torch.Tensor], dict]:
    from densitylab.auto import to_state

    return to_state(auto, _save_estimator)


def _load_auto(saved: Saved, device: torch.device) -> Any:
    from densitylab.auto import from_state

    if not isinstance(saved.config, dict):
        raise ValueError(f"{saved.where}: the AutoDensity configuration is not a JSON object")
    try:
        tensors = load_file(saved.where.with_name(TENSOR_FILE), device=str(device))
    except SafetensorError as err:
        raise ValueError(f"{saved.where}: the tensor file is not readable: {err}") from err
    try:
        return from_state(tensors, saved.config, device, estimator_from_tensors)
    except ValueError as err:
        raise ValueError(f"{saved.where}: {err}") from None


KINDS: dict[str, tuple[str, tuple[Callable, Callable]]] = {
    "flow": ("densitylab.flows.flow.Flow", (_save_flow, _load_flow)),
    "image-flow": ("densitylab.flows.image_flow.MultiScaleFlow", (_save_flow, _load_flow)),
    "flow-density": ("densitylab.estimators.FlowDensity",
                     (_save_estimator, _estimator_loader("FlowDensity"))),
    "conditional-flow-density": ("densitylab.estimators.ConditionalFlowDensity",
                                 (_save_estimator, _estimator_loader("ConditionalFlowDensity"))),
    "image-flow-density": ("densitylab.image_estimator.ImageFlow",
                           (_save_estimator, _estimator_loader("ImageFlow",
                                                               "densitylab.image_estimator"))),
    "vae": ("densitylab.baselines.vae.VAE", (_save_baseline, _baseline_loader("VAE"))),
    "gan": ("densitylab.baselines.gan.GAN", (_save_baseline, _baseline_loader("GAN"))),
    "auto-density": ("densitylab.auto.AutoDensity", (_save_auto, _load_auto)),
}
SAVERS = {kind: funcs[0] for kind, (_, funcs) in KINDS.items()}
LOADERS = {kind: funcs[1] for kind, (_, funcs) in KINDS.items()}
