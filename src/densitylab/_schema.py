"""Saved configurations are untrusted input: check them before anything is built.

A model directory may come from anyone. Its ``config.json`` names the keyword arguments of a
builder (a flow builder, a baseline's constructor); each is checked against that function's
own signature and type hints, so a new builder option is validated without a new rule here.
Sizes are checked against the tensor file before any allocation: no integer option may exceed
the largest tensor dimension or the number of tensors saved (a model cannot have more layers
or wider networks than the numbers it stores), and the model is first built on PyTorch's
``meta`` device, which allocates nothing, to compare its parameter count with the file.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

MAX_PARAMETERS = 250_000_000  # one GB of float32: far above any model densitylab trains
MAX_TENSOR_BYTES = MAX_PARAMETERS * 8 + 2**24  # every number in float64, and a header
MAX_JSON_BYTES = 2**24  # a model's or a run's description: kilobytes in practice
MAX_JSON_DEPTH = 32  # nesting of a model's description: a handful of levels in practice
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def read_json(path: Path) -> Any:
    """The JSON value in ``path``, or a one-line ``ValueError``: too large (checked before
    reading), nested deeper than :data:`MAX_JSON_DEPTH` (checked before parsing, so no
    recursion limit is reached), or not valid JSON."""
    import json

    import numpy as np

    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{path} is {size:,} bytes, more than a densitylab description holds "
                         f"({MAX_JSON_BYTES:,})")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    bare = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', raw)  # brackets inside strings do not nest
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = (np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(codes, (ord("]"), ord("}"))))
    if len(steps) and int(np.cumsum(steps).max()) > MAX_JSON_DEPTH:
        raise ValueError(f"{path} nests deeper than a densitylab description "
                         f"({MAX_JSON_DEPTH} levels)")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


class TensorShapes:
    """The shapes in a safetensors file, read from its header alone (no tensor is loaded)."""

    def __init__(self, path: Path, shapes: dict[str, tuple[int, ...]] | None = None) -> None:
        if shapes is None:
            try:
                with safe_open(str(path), framework="pt") as handle:
                    shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
            except (SafetensorError, OSError) as err:
                raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
        self.path, self.shapes = path, shapes
        self.elements = sum(math.prod(shape) for shape in self.shapes.values())
        self.largest = max([len(self.shapes), *(d for s in self.shapes.values() for d in s)])
        if self.elements > MAX_PARAMETERS:
            raise ValueError(
                f"{path} holds {self.elements:,} numbers, more than densitylab loads "
                f"({MAX_PARAMETERS:,})"
            )


    @classmethod
    def of(cls, tensors: Mapping[str, torch.Tensor]) -> TensorShapes:
        """The shapes of tensors already in memory."""
        return cls(Path("<memory>"), {k: tuple(v.shape) for k, v in tensors.items()})


def conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a type hint (int, float, str, bool, None, sequences, unions)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    if origin in (collections.abc.Sequence, list, tuple):
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    return False  # a type a file cannot express is never accepted from one


def _integers(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for item in value for v in _integers(item)]
    return []


def checked_arguments(
    factory: Callable, config: Any, shapes: TensorShapes | None, where: Path | str,
    sized: bool = True,
) -> dict[str, Any]:
    """``config`` as keyword arguments of ``factory``, or a one-line ``ValueError`` naming
    ``where`` and the problem: not a mapping, an unknown or mistyped key, or (``sized``: the
    options size a model) an integer larger than the tensor file could describe. Seeds may be
    any integer, or a list of them (a stack of models)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: the model configuration is not a JSON object")
    parameters = inspect.signature(factory).parameters
    hints = typing.get_type_hints(factory)
    required = [name for name, p in parameters.items()
                if p.default is inspect.Parameter.empty and name != "self"]
    for name in required:
        if name not in config:
            raise ValueError(f"{where}: the model configuration lacks {name!r}")
    for name, value in config.items():
        if name not in parameters or name == "self":
            raise ValueError(f"{where}: unknown model option {name!r}")
        hint = int | list[int] if name == "seed" else hints.get(name, Any)
        if not conforms(value, hint):
            raise ValueError(f"{where}: model option {name!r} has an invalid value {value!r}")
        if (name == "seed" or name in getattr(factory, "unsized_options", ()) or not sized
                or shapes is None):
            continue
        for number in _integers(value):
            if not 0 <= number <= shapes.largest:
                raise ValueError(
                    f"{where}: model option {name!r} = {number} does not fit the saved tensors "
                    f"(at most {shapes.largest})"
                )
    return dict(config)


def checked_dtype(config: Mapping, where: Path) -> torch.dtype:
    """The dtype a configuration names (``float32`` when absent)."""
    name = config.get("dtype", "float32")
    if name not in DTYPES:
        raise ValueError(f"{where}: unknown dtype {name!r}; densitylab saves {sorted(DTYPES)}")
    return DTYPES[name]


def check_size(build: Callable[[], torch.nn.Module], shapes: TensorShapes, where: Path) -> None:
    """Build the model on the ``meta`` device (no memory) and compare it with the tensor file."""
    try:
        with torch.device("meta"):
            state = build().state_dict()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: the model configuration is invalid: {err}") from None
    expected = {k: tuple(v.shape) for k, v in state.items()}
    if expected != shapes.shapes:
        missing = sorted(set(expected) ^ set(shapes.shapes))[:2]
        detail = (f"tensors {missing} differ" if missing else
                  "tensor shapes differ from what the configuration builds")
        raise ValueError(f"{where}: the saved tensors do not fit the saved configuration "
                         f"({detail})")
