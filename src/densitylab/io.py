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
from functools import partial
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
        names = getattr(obj, "feature_names_in_", None)
        if names is not None:  # a model fitted on a DataFrame keeps its column names
            header["feature_names"] = [str(name) for name in names]
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
    model = LOADERS[header["kind"]](Saved(config_path, header.get("config"), shapes),
                                    resolve_device(device))
    if "feature_names" in header:
        _restore_names(model, header["feature_names"], config_path)
    return model


def _restore_names(model: Any, names: Any, where: Path) -> None:
    """Give a loaded estimator back the column names it was fitted with."""
    width = getattr(model, "n_features_in_", None)
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)
            and len(names) == width):
        raise ValueError(f"{where}: 'feature_names' must list one name per column")
    model.feature_names_in_ = np.asarray(names, dtype=object)


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
    from densitylab.auto import BY_CATEGORY, to_state

    if getattr(auto, "best_name_", None) != BY_CATEGORY:
        return to_state(auto, _save_estimator)
    tensors, config = _save_categorical(auto.best_estimator_)  # a table with categories
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in auto.get_params().items()}
    return ({f"best.{k}": v for k, v in tensors.items()},
            {"params": params, "best_name": BY_CATEGORY, "best": config})


def _load_auto(saved: Saved, device: torch.device) -> Any:
    if not isinstance(saved.config, dict):
        raise ValueError(f"{saved.where}: the AutoDensity configuration is not a JSON object")
    try:
        tensors = load_file(saved.where.with_name(TENSOR_FILE), device=str(device))
    except SafetensorError as err:
        raise ValueError(f"{saved.where}: the tensor file is not readable: {err}") from err
    try:
        return _auto_in_memory(tensors, saved.config, device, saved.where)
    except ValueError as err:
        raise ValueError(f"{saved.where}: {err}") from None


def _save_categorical(model) -> tuple[dict[str, torch.Tensor], dict]:
    from densitylab.categorical import to_state

    return to_state(model, _save_auto, _save_estimator)


def _load_categorical(saved: Saved, device: torch.device) -> Any:
    try:
        return _categorical_in_memory(_read_tensors(saved), saved.config, device, saved.where)
    except ValueError as err:
        raise ValueError(f"{saved.where}: {err}") from None


def _numpy_saver(name: str) -> Callable:
    """A saver from the NumPy estimator ``name``'s state (arrays + JSON, as AutoDensity saves
    them; :data:`densitylab.auto.STATES`, imported on use: scikit-learn takes a second)."""

    def save_numpy(obj: Any) -> tuple[dict[str, torch.Tensor], dict]:
        from sklearn.utils.validation import check_is_fitted

        from densitylab.auto import STATES

        check_is_fitted(obj)
        tensors, config = STATES[name][0](obj)
        return {k: torch.as_tensor(np.asarray(v)) for k, v in tensors.items()}, config

    return save_numpy


def _numpy_loader(name: str) -> Callable:
    def load_numpy(saved: Saved, device: torch.device) -> Any:
        from densitylab.auto import STATES

        return _restore_numpy(STATES[name][1], _read_tensors(saved), saved.config, saved.where)

    return load_numpy


def _restore_numpy(restore: Callable, tensors: dict[str, torch.Tensor], config: Any,
                   where: Path) -> Any:
    if not isinstance(config, dict):
        raise ValueError(f"{where}: the configuration is not a JSON object")
    try:
        return restore({k: v.cpu().double().numpy() for k, v in tensors.items()}, config, None)
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{where}: the saved state is incomplete: {err}") from None


def _read_tensors(saved: Saved) -> dict[str, torch.Tensor]:
    try:
        return load_file(saved.where.with_name(TENSOR_FILE), device="cpu")
    except SafetensorError as err:
        raise ValueError(f"{saved.where}: the tensor file is not readable: {err}") from err


def _save_detector(detector) -> tuple[dict[str, torch.Tensor], dict]:
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(detector)
    kind = _kind_of(detector.estimator_)
    if kind not in IN_MEMORY:
        raise ValueError(f"cannot save an OutlierDetector around a {kind}")
    tensors, config = SAVERS[kind](detector.estimator_)
    tensors = {f"estimator.{k}": v for k, v in tensors.items()}
    tensors["training_scores"] = torch.as_tensor(detector.training_scores_)
    params = {k: v for k, v in detector.get_params(deep=False).items() if k != "estimator"}
    names = getattr(detector.estimator_, "feature_names_in_", None)
    return tensors, {"params": params, "estimator_kind": kind, "estimator": config,
                     "feature_names": None if names is None else [str(n) for n in names]}


def _load_detector(saved: Saved, device: torch.device) -> Any:
    from densitylab.outliers import OutlierDetector, outlier_offset

    config = saved.config
    if not isinstance(config, dict) or config.get("estimator_kind") not in IN_MEMORY:
        raise ValueError(f"{saved.where}: an OutlierDetector needs a known 'estimator_kind'")
    tensors = _read_tensors(saved)
    inner = {k.removeprefix("estimator."): v for k, v in tensors.items()
             if k.startswith("estimator.")}
    params = checked_arguments(OutlierDetector.__init__, config.get("params"), saved.shapes,
                               saved.where, sized=False)
    estimator = IN_MEMORY[config["estimator_kind"]](inner, config.get("estimator"), device,
                                                    saved.where)
    detector = OutlierDetector(estimator, prefit=True, **{k: v for k, v in params.items()
                                                          if k != "prefit"})
    if config.get("feature_names") is not None:
        _restore_names(estimator, config["feature_names"], saved.where)
    detector.estimator_, detector.n_features_in_ = estimator, estimator.n_features_in_
    if "training_scores" not in tensors:
        raise ValueError(f"{saved.where}: the training scores are missing")
    detector.training_scores_ = tensors["training_scores"].double().numpy()
    detector.offset_ = outlier_offset(detector.training_scores_, detector.contamination)
    return detector


def _auto_in_memory(tensors: dict, config: Any, device: Any, where: Path) -> Any:
    from densitylab.auto import BY_CATEGORY, adopting, from_state

    if not isinstance(config, dict):
        raise ValueError(f"{where}: the AutoDensity configuration is not a JSON object")
    if config.get("best_name") != BY_CATEGORY:
        return from_state(tensors, config, device, estimator_from_tensors)
    if set(config) != {"params", "best_name", "best"} or not all(
            k.startswith("best.") for k in tensors):
        raise ValueError(f"{where}: the AutoDensity of a table with categories needs params, "
                         "best_name and best, and tensors best.*")
    model = _categorical_in_memory({k.removeprefix("best."): v for k, v in tensors.items()},
                                   config["best"], device, where)
    return adopting(config["params"], model)


def _categorical_in_memory(tensors: dict, config: Any, device: Any, where: Path) -> Any:
    from densitylab.categorical import from_state

    try:
        return from_state(tensors, config, device,
                          lambda t, c, d: _auto_in_memory(t, c, d, where),
                          partial(estimator_from_tensors, name="ConditionalFlowDensity"))
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where}: the saved state is incomplete: {err}") from None


def _numpy_in_memory(name: str) -> Callable:
    def restore(tensors: dict, config: Any, device: Any, where: Path) -> Any:
        from densitylab.auto import STATES

        return _restore_numpy(STATES[name][1], tensors, config, where)

    return restore


IN_MEMORY: dict[str, Callable] = {
    "kde": _numpy_in_memory("kde"),
    "gaussian-mixture": _numpy_in_memory("gaussian-mixture"),
    "flow-density": lambda tensors, config, device, where: estimator_from_tensors(
        tensors, config, device),
    "auto-density": _auto_in_memory,
    "categorical-density": _categorical_in_memory,
}
"""Kinds that can be rebuilt from tensors already in memory (nested in an OutlierDetector)."""


def _numpy_kind(name: str) -> tuple[Callable, Callable]:
    return _numpy_saver(name), _numpy_loader(name)


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
    "kde": ("densitylab.kde.estimator.KDE", _numpy_kind("kde")),
    "gaussian-mixture": ("densitylab.auto.GaussianMixtureBIC", _numpy_kind("gaussian-mixture")),
    "outlier-detector": ("densitylab.outliers.OutlierDetector", (_save_detector, _load_detector)),
    "categorical-density": ("densitylab.categorical.CategoricalDensity",
                            (_save_categorical, _load_categorical)),
}
SAVERS = {kind: funcs[0] for kind, (_, funcs) in KINDS.items()}
LOADERS = {kind: funcs[1] for kind, (_, funcs) in KINDS.items()}
