"""Where torch computes: one resolver for every module (kernels, networks, training)."""

from __future__ import annotations

import torch


def resolve_device(device) -> torch.device:
    """``None``/"cpu" → CPU; "auto" → CUDA when torch sees it; "cuda[:k]" must exist."""
    if device is None or device == "auto":
        return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but torch sees no CUDA device")
    return dev
