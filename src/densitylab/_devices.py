"""Turning the user's ``device`` argument into a ``torch.device``."""

from __future__ import annotations

import torch

from densitylab import distributed as distributed_

DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(device: str | torch.device, distributed: bool = False) -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; a CUDA request without CUDA is an error.

    Under data-parallel training a bare ``"cuda"`` means this process's GPU (its local rank).
    """
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise ValueError(f"unknown device {str(device)!r}; choose cpu, cuda, cuda:N or auto")
    device = parsed
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA device is available")
    return distributed_.local_device(device) if distributed else device
