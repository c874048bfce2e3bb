"""Freeze and chaos of the limiting NTK with depth (Freeze & Chaos, arXiv 1907.05715).

Balanced parametrisation (s_W² = 1 − β²), an activation scaled so that E[σ(z)²] = 1 (z ~ N(0,1))
and inputs on the sphere ‖x‖² = n0. Then Σ(ℓ)(x, x) = 1 at every layer and Σ̇(ℓ)(x, x) equals

    r_{σ,β} = (1 − β²) · E[σ'(z)²],

so Θ∞(L)(x, x) = 1 + r + … + r^{L−1} = (1 − r^L)/(1 − r), and Θ∞(L)(x, y) = κ_L(xᵀy/n0) is a
function of the cosine only (:func:`ntk_of_cosine`). The normalised kernel
Θ(x, y)/Θ(x, x) tends with depth to 1 when r < 1 (freeze), to 0 for x ≠ ±y when r > 1 (chaos);
the scaled ReLU √2·max(0, z) has E σ'² = 1, hence r = 1 − β² (the edge r = 1 at β = 0).

This module holds what the four Freeze & Chaos experiments (regimes, phase, speed, spectrum)
share: the configured networks, r, and Θ∞ as a function of the cosine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from ntk_repro.activations import get_activation, standard_moments
from ntk_repro.gauss import expect_1d
from ntk_repro.kernels import kernels_of_cosine

REGIMES = ("freeze", "edge", "chaos")
PARAMETRIZATION = "balanced"
# |E σ² − 1| allowed: the closed forms and the quadrature core give E σ² to ~1e-15.
_SECOND_MOMENT_TOL = 1e-9
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Activations whose derivative is not Lipschitz (the kink of ReLU at 0): the freeze bound
# 1 − C·L·r^L is proved for twice differentiable σ; for these the deficit decays as r^{L/2}.
_KINKED_BASES = ("relu",)


def order_parameter(activation: str, beta: float) -> float:
    """r_{σ,β} = (1 − β²)·E[σ'(z)²] from the activation's closed form where it has one."""
    return (1.0 - beta * beta) * standard_moments(activation)["grad_second"]


def order_parameter_quadrature(activation: str, beta: float) -> float:
    """r_{σ,β} with E[σ'(z)²] from the Gaussian quadrature core, whatever closed form exists."""
    act = get_activation(activation)
    one = torch.ones((), dtype=torch.float64)
    grad_second = float(expect_1d(lambda u: act.derivative(u) ** 2, one))
    return (1.0 - beta * beta) * grad_second


def is_kinked(activation: str) -> bool:
    """True when σ is not twice differentiable (ReLU and its affine images)."""
    return get_activation(activation).base.name in _KINKED_BASES


def theta_diagonal(r: float, depth: int) -> float:
    """Θ∞(L)(x, x) on the sphere: Σ_{k<L} r^k (= L at r = 1)."""
    if abs(r - 1.0) < 1e-12:
        return float(depth)
    return (1.0 - r**depth) / (1.0 - r)


@dataclass(frozen=True)
class Network:
    """One configured network: a name (used in file names), its regime and its σ, β."""

    name: str
    regime: str
    activation: str
    beta: float

    @property
    def r(self) -> float:
        return order_parameter(self.activation, self.beta)

    @property
    def label(self) -> str:
        return f"{self.regime}: {self.activation}, β = {self.beta:g} (r = {self.r:.3g})"


def parse_networks(entries) -> list[Network]:
    """Networks from the config's ``networks`` list of {name, regime, activation, beta}.

    Raises ValueError (naming the entry) for a duplicate or malformed name, an unknown regime,
    or an activation without E[σ(z)²] = 1 — the analysis needs Σ(x, x) = 1 at every layer.
    """
    nets, seen = [], set()
    for i, entry in enumerate(entries):
        name = entry["name"]
        if not isinstance(name, str) or not _NAME.match(name) or name in seen:
            raise ValueError(f"networks[{i}].name {name!r} must be a new lowercase identifier")
        seen.add(name)
        if entry["regime"] not in REGIMES:
            raise ValueError(f"networks[{i}].regime {entry['regime']!r} is not one of {REGIMES}")
        activation = entry["activation"]
        second = standard_moments(activation)["second"]
        if abs(second - 1.0) > _SECOND_MOMENT_TOL:
            raise ValueError(
                f"networks[{i}].activation {activation!r} has E[σ(z)²] = {second:.6g}, not 1; "
                "use scaled_relu or normalized:<σ> (for odd σ such as erf and tanh that is σ "
                "divided by √E[σ(z)²])"
            )
        beta = float(entry["beta"])
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"networks[{i}].beta must lie in [0, 1], got {beta}")
        nets.append(Network(name, entry["regime"], activation, beta))
    if not nets:
        raise ValueError("networks must not be empty")
    return nets


def ntk_of_cosine(net: Network, depth: int, cosine) -> np.ndarray:
    """Θ∞(L)(x, y) for ‖x‖² = ‖y‖² = n0 and xᵀy/n0 = ``cosine`` (any shape): float64."""
    return kernels_of_cosine(
        cosine,
        depth=depth,
        beta=net.beta,
        activation=net.activation,
        parametrization=PARAMETRIZATION,
        sq_norm=1.0,
    )[1]


def kernels_at_cosine(net: Network, depth: int, cosine) -> tuple[np.ndarray, np.ndarray]:
    """(Σ(L), Θ∞(L)) at the given cosines on the sphere ‖x‖² = n0: float64 arrays."""
    return kernels_of_cosine(
        cosine,
        depth=depth,
        beta=net.beta,
        activation=net.activation,
        parametrization=PARAMETRIZATION,
        sq_norm=1.0,
    )


def float64_resolution(depth: int) -> float:
    """An upper estimate of the rounding error of a normalised kernel value Θ(x,y)/Θ(x,x)
    computed through ``depth`` layers in float64: a few ulps per layer."""
    return 8.0 * depth * np.finfo(np.float64).eps


__all__ = [
    "PARAMETRIZATION",
    "REGIMES",
    "Network",
    "float64_resolution",
    "is_kinked",
    "kernels_at_cosine",
    "ntk_of_cosine",
    "order_parameter",
    "order_parameter_quadrature",
    "parse_networks",
    "theta_diagonal",
]
