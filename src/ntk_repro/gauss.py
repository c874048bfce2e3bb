"""The one Gaussian-expectation core: E[f(u) g(v)] for (u, v) ~ N(0, [[q1, c], [c, q2]]).

Quadrature in polar coordinates. With z ~ N(0, I₂) written as z = r(cos φ, sin φ),

    u = √q1 · r cos φ,   v = √q2 · r cos(φ − ψ),   ψ = arccos(c / √(q1 q2)) ∈ [0, π],

so E[f(u)g(v)] = (1/2π) ∫ dφ ∫₀^∞ r e^{−r²/2} f(u) g(v) dr. Activations in this project are
smooth except at 0 (ReLU's kink, the jump of its derivative). In polar coordinates those
non-smooth points sit at r = 0 (an end point of the radial integral) and on the four rays
φ ∈ {π/2, 3π/2, ψ + π/2, ψ + 3π/2}. Splitting the angle at those rays leaves a smooth
integrand on every piece, so Gauss–Legendre converges exponentially on each of them even
for ReLU and its step-function derivative, and also as ρ → ±1 (where a tensor Gauss–Hermite
grid in (z1, z2) would not). The radial half-line is cut at R = 13 (e^{−R²/2} < 1e−36) and
covered by graded Gauss–Legendre panels.

Everything is torch float64 and runs on the device of its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np
import torch

from ntk_repro.activations import correlation

Tensor = torch.Tensor
Fn = Callable[[Tensor], Tensor]

# Radial panels: finer near 0, where a steep activation (large q) varies fastest.
_RADIAL_EDGES = (0.0, 0.35, 0.8, 1.4, 2.2, 3.2, 4.4, 5.8, 7.5, 9.8, 13.0)
_RADIAL_NODES_PER_PANEL = 8
_ANGULAR_NODES_PER_ARC = 32
# Pairs per chunk of the 2-D quadrature: bounds the temporaries to ~100 MB.
_PAIR_CHUNK = 512


@cache
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


@cache
def _radial_rule(n_per_panel: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of Gauss–Legendre panels covering [0, R]."""
    t, w = _gauss_legendre(n_per_panel)
    nodes, weights = [], []
    for a, b in zip(_RADIAL_EDGES[:-1], _RADIAL_EDGES[1:]):
        nodes.append(a + (b - a) * (t + 1.0) / 2.0)
        weights.append(w * (b - a) / 2.0)
    return np.concatenate(nodes), np.concatenate(weights)


def _radial(dtype: torch.dtype, device, n_per_panel: int) -> tuple[Tensor, Tensor]:
    r, w = _radial_rule(n_per_panel)
    return (
        torch.as_tensor(r, dtype=dtype, device=device),
        torch.as_tensor(w, dtype=dtype, device=device),
    )


def expect_1d(f: Fn, q: Tensor, *, n_per_panel: int = _RADIAL_NODES_PER_PANEL) -> Tensor:
    """E[f(u)] for u ~ N(0, q); ``q`` any shape, result of the same shape.

    f must be smooth except at 0: E f(u) = ∫₀^∞ (f(√q r) + f(−√q r)) φ(r) dr.
    """
    q = torch.as_tensor(q)
    r, w = _radial(q.dtype, q.device, n_per_panel)
    density = w * torch.exp(-0.5 * r * r) / math.sqrt(2.0 * math.pi)
    scaled = torch.sqrt(q).unsqueeze(-1) * r
    return ((f(scaled) + f(-scaled)) * density).sum(-1)


def expect_2d(
    f: Fn,
    g: Fn,
    q1: Tensor,
    q2: Tensor,
    c: Tensor,
    *,
    n_per_arc: int = _ANGULAR_NODES_PER_ARC,
    n_per_panel: int = _RADIAL_NODES_PER_PANEL,
) -> Tensor:
    """E[f(u) g(v)] for (u, v) ~ N(0, [[q1, c], [c, q2]]), elementwise over broadcast inputs.

    Parameters
    ----------
    f, g : callables on tensors, smooth except at 0.
    q1, q2, c : broadcastable tensors (variances and covariance), float64 recommended.

    Returns
    -------
    Tensor of the broadcast shape.
    """
    q1, q2, c = torch.broadcast_tensors(*(torch.as_tensor(t) for t in (q1, q2, c)))
    shape = q1.shape
    q1, q2, c = q1.reshape(-1), q2.reshape(-1), c.reshape(-1)
    dtype, device = q1.dtype, q1.device

    r, wr = _radial(dtype, device, n_per_panel)
    radial_weight = wr * r * torch.exp(-0.5 * r * r) / (2.0 * math.pi)  # (R,)
    t, wt = (torch.as_tensor(a, dtype=dtype, device=device) for a in _gauss_legendre(n_per_arc))

    out = torch.empty_like(q1)
    for start in range(0, q1.numel(), _PAIR_CHUNK):
        sl = slice(start, start + _PAIR_CHUNK)
        a1, a2 = torch.sqrt(q1[sl]), torch.sqrt(q2[sl])
        psi = torch.arccos(correlation(q1[sl], q2[sl], c[sl]))  # (P,)
        half = 0.5 * math.pi
        # Four arcs covering [π/2, 5π/2): lengths ψ, π−ψ, ψ, π−ψ.
        lo = torch.stack([half + 0 * psi, psi + half, 3 * half + 0 * psi, psi + 3 * half], -1)
        hi = torch.stack([psi + half, 3 * half + 0 * psi, psi + 3 * half, 5 * half + 0 * psi], -1)
        span = (hi - lo) / 2.0  # (P, 4)
        phi = lo.unsqueeze(-1) + span.unsqueeze(-1) * (t + 1.0)  # (P, 4, A)
        w_phi = (span.unsqueeze(-1) * wt).reshape(len(psi), -1)  # (P, 4A)
        phi = phi.reshape(len(psi), -1)
        cos_u = torch.cos(phi)
        cos_v = torch.cos(phi - psi.unsqueeze(-1))
        u = (a1.unsqueeze(-1) * cos_u).unsqueeze(-1) * r  # (P, 4A, R)
        v = (a2.unsqueeze(-1) * cos_v).unsqueeze(-1) * r
        integrand = f(u) * g(v)
        out[sl] = torch.einsum("par,pa,r->p", integrand, w_phi, radial_weight)
    return out.reshape(shape)
