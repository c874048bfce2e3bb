"""Argument checks shared by the whole library, used once at each public edge.

Every check raises ``ValueError`` with one line that names the argument, so a user sees which
value is wrong before any compute starts. numpy in, numpy out: arrays come back as float64
numpy arrays, tensors as real torch tensors of the requested dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

_INT_TYPES = (int, np.integer)
_REAL_TYPES = (int, float, np.integer, np.floating)


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int in [minimum, maximum]; bools and floats are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, _INT_TYPES):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {value!r}")
    return int(value)


def check_real(
    value,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
) -> float:
    """``value`` as a finite float in the given range (``exclusive_minimum``: > minimum)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, _REAL_TYPES):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and (v <= minimum if exclusive_minimum else v < minimum):
        relation = ">" if exclusive_minimum else ">="
        raise ValueError(f"{name} must be {relation} {minimum}, got {value!r}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return v


def check_choice(value, name: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} {value!r} is unknown; choose one of {choices}")
    return value


def _real_array(x, name: str) -> np.ndarray:
    """``x`` as a numpy float64 array; complex, boolean and non-numeric input are refused."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        raw = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array: {err}") from None
    if raw.dtype.kind == "c":
        raise ValueError(f"{name} must be real, got complex dtype {raw.dtype}")
    if raw.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a numeric array, got dtype {raw.dtype}")
    return raw.astype(np.float64, copy=False)


def check_points(
    x, name: str, *, dim: int | None = None, min_dim: int = 1, finite: bool = True
) -> np.ndarray:
    """``x`` as a float64 (N, n0) array with N >= 1 and n0 >= min_dim (== dim if given)."""
    arr = _real_array(x, name)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < min_dim:
        raise ValueError(
            f"{name} must have shape (N, n0) with N >= 1 and n0 >= {min_dim}, got {arr.shape}"
        )
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has input dimension {arr.shape[1]}, expected {dim}")
    if finite and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def as_real_tensor(x, name: str) -> torch.Tensor:
    """``x`` (array or tensor) as a detached real tensor, or raise ValueError naming ``name``.

    Shape, dtype and finiteness are left to :func:`check_tensor` or the caller.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a numeric array or tensor: {err}") from None
        if arr.dtype.kind == "c":
            raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr).reshape(arr.shape))  # keeps 0-d
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be real numbers, got dtype {t.dtype}")
    return t


def check_tensor(
    x, name: str, *, dtype: torch.dtype, device, ndims: tuple[int, ...] = (2,)
) -> torch.Tensor:
    """``x`` as a finite, non-empty tensor of ``dtype`` on ``device`` with ndim in ``ndims``.

    Finiteness is checked after the cast (a float64 value can overflow in float32) and before
    the move, so host data costs no device synchronisation.
    """
    t = as_real_tensor(x, name)
    if t.ndim not in ndims or 0 in t.shape:
        raise ValueError(
            f"{name} must be a non-empty array with ndim in {ndims}, got shape {tuple(t.shape)}"
        )
    t = t.to(dtype=dtype)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf (in {dtype})")
    return t.to(device=device)
