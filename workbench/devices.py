"""Which torch device a command runs on (torch is imported only when a device is asked for, so
``--help`` stays instant)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str | None, label: str = "device") -> torch.device:
    """``auto`` or None (cuda if present), ``cpu``, ``cuda``, ``cuda:1``, ... as a torch device, or
    a one-line error naming ``label`` (the argument, or a command's flag): a typo or a GPU this
    machine does not have must not surface as torch's traceback after the model has loaded."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise WorkbenchError(f"{label} {name}: not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(f"{label} {name}: no CUDA GPU is available here (use {label} cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise WorkbenchError(f"{label} {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device
