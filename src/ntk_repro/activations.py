"""Activations σ with their derivatives and, where they exist, closed-form Gaussian moments.

An activation is parsed from a spec string:

- ``relu``, ``scaled_relu`` (√2·relu), ``erf``, ``tanh``, ``identity``, ``softplus``
  (log(1 + eᶻ), a smooth ReLU);
- ``normalized:<name>``: σ̄ = (σ − E[σ(z)]) / sqrt(Var[σ(z)]), z ~ N(0, 1);
- ``<name>(<g>z)``, e.g. ``tanh(0.5z)`` or ``normalized:erf(2z)``: a gain g > 0 on the
  pre-activation, σ_g(z) = σ(g·z) (the same as scaling the layer's weights and bias by g);
  ``normalized:`` then normalises σ_g. A bare name has g = 1.

Every activation is an affine image ``a·base(g·z) + b`` of a base function. The closed-form
Gaussian expectations of the base (arc-cosine kernel for ReLU, arcsin formula for erf) carry
through the affine map, so ``scaled_relu`` and ``normalized:relu`` have closed forms too, and
through the gain: (g u, g v) is Gaussian with covariance g²·C when (u, v) has C.
Expectations of activations without a closed form (``tanh``) go through the quadrature core in
:mod:`ntk_repro.gauss`; every activation can be sent through that path, which is how the two
are tested against each other.

All functions take and return torch tensors so they run on any device.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch

Tensor = torch.Tensor

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


# --- base functions ---------------------------------------------------------------------------
# Each base provides: the function, its derivative, and optionally closed forms of
#   mean(q)          = E[σ(u)],                          u ~ N(0, q)
#   pair(q1,q2,c)    = (E[σ(u) σ(v)], E[σ'(u) σ'(v)]),   (u, v) ~ N(0, [[q1, c], [c, q2]])
# Arguments are broadcastable tensors.


# |ρ| within this of 1 is taken as exactly ±1. arccos is ill-conditioned there
# (arccos(1 − ε) ≈ √(2ε)): a rounding error of 1e-16 in ρ, e.g. from computing xᵀx by a
# matrix product and ‖x‖² by a sum, would otherwise become an error of 1e-8 in the kernel.
# Snapping moves a genuine |ρ| of 1 − 1e-15 by no more than that same rounding noise.
_RHO_SNAP = 8 * torch.finfo(torch.float64).eps


def _correlation(c: Tensor, norm: Tensor) -> Tensor:
    """ρ = c / norm (norm = √(q1 q2)), clipped to [−1, 1], rounding-level deviations from ±1
    removed, and 0 where a variance is 0 (a zero-variance unit is constant: any ρ gives the
    same expectations, and 0/0 would spread NaN through every later layer)."""
    rho = torch.clamp(torch.where((norm == 0) & (c == 0), 0.0, c / norm), -1.0, 1.0)
    return torch.where(rho.abs() > 1.0 - _RHO_SNAP, torch.sign(rho), rho)


def correlation(q1: Tensor, q2: Tensor, c: Tensor) -> Tensor:
    """ρ = c / √(q1 q2), clipped to [−1, 1], with rounding-level deviations from ±1 removed."""
    return _correlation(c, torch.sqrt(q1 * q2))


# The closed forms, each written once. They return (E[σ(u)σ(v)], E[σ'(u)σ'(v)]) together since
# the two share their work; the single-expectation methods of Activation take one of the pair.
# (The fused numpy Gram path in ntk_repro.kernels evaluates the same two formulas in its own
# in-place operation order; tests hold the two to 1e-13.)


def _relu_pair(q1: Tensor, q2: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    # Arc-cosine kernels of degree 1 and 0 (the latter is P(u > 0, v > 0)), θ = arccos ρ.
    norm = torch.sqrt(q1 * q2)
    rho = _correlation(c, norm)
    rest = math.pi - torch.arccos(rho)  # π − θ
    sin = torch.sqrt(1.0 - rho * rho)  # sin θ, θ ∈ [0, π]
    return norm * (sin + rest * rho) / (2.0 * math.pi), rest / (2.0 * math.pi)


def _erf_pair(q1: Tensor, q2: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    # E[erf erf] = (2/π) arcsin(2c/√((1+2q1)(1+2q2))); E[erf' erf'] is its derivative in c.
    root = torch.sqrt((1.0 + 2.0 * q1) * (1.0 + 2.0 * q2))
    arg = torch.clamp(2.0 * c / root, -1.0, 1.0)
    return (
        (2.0 / math.pi) * torch.arcsin(arg),
        (4.0 / math.pi) / (root * torch.sqrt(1.0 - arg * arg)),
    )


def _identity_pair(q1: Tensor, q2: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    return c * torch.ones_like(q1 * q2), torch.ones_like(q1 * q2 * c)


def _sigmoid_derivative(z: Tensor, order: int) -> Tensor:
    """d^order/dz^order of sigmoid(z) for order 1, 2: s(1 − s) and s(1 − s)(1 − 2s)."""
    s = torch.sigmoid(z)
    out = s * (1.0 - s)
    return out if order == 1 else out * (1.0 - 2.0 * s)


def _tanh_grad2(z: Tensor) -> Tensor:
    t = torch.tanh(z)
    return -2.0 * t * (1.0 - t * t)


def _tanh_grad3(z: Tensor) -> Tensor:
    t2 = torch.tanh(z) ** 2
    return -2.0 * (1.0 - t2) * (1.0 - 3.0 * t2)


@dataclass(frozen=True)
class _Base:
    name: str
    fn: Callable[[Tensor], Tensor]
    grad: Callable[[Tensor], Tensor]
    mean: Callable[[Tensor], Tensor] | None = None
    pair: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
    # σ'' and σ''' of a smooth base (the Hessian of the loss needs them); None for a kink.
    grad2: Callable[[Tensor], Tensor] | None = None
    grad3: Callable[[Tensor], Tensor] | None = None


_BASES: dict[str, _Base] = {
    "relu": _Base(
        "relu",
        fn=torch.relu,
        grad=lambda z: (z > 0).to(z.dtype),
        mean=lambda q: torch.sqrt(q) / _SQRT_2PI,
        pair=_relu_pair,
    ),
    "erf": _Base(
        "erf",
        fn=torch.erf,
        grad=lambda z: _TWO_OVER_SQRT_PI * torch.exp(-z * z),
        mean=torch.zeros_like,
        pair=_erf_pair,
    ),
    "tanh": _Base(
        "tanh",
        fn=torch.tanh,
        grad=lambda z: 1.0 - torch.tanh(z) ** 2,
    ),
    "identity": _Base(
        "identity",
        fn=lambda z: z,
        grad=torch.ones_like,
        mean=torch.zeros_like,
        pair=_identity_pair,
    ),
    # softplus(z) = log(1 + e^z): a smooth ReLU with four bounded derivatives (σ' = sigmoid).
    "softplus": _Base(
        "softplus",
        fn=torch.nn.functional.softplus,
        grad=torch.sigmoid,
        grad2=lambda z: _sigmoid_derivative(z, 1),
        grad3=lambda z: _sigmoid_derivative(z, 2),
    ),
}


# σ'' and σ''' of the smooth bases defined above (ReLU has none: its σ'' is a Dirac mass).
_HIGHER = {
    "erf": (
        lambda z: -2.0 * z * _TWO_OVER_SQRT_PI * torch.exp(-z * z),
        lambda z: (4.0 * z * z - 2.0) * _TWO_OVER_SQRT_PI * torch.exp(-z * z),
    ),
    "tanh": (_tanh_grad2, _tanh_grad3),
    "identity": (torch.zeros_like, torch.zeros_like),
}
for _name, (_g2, _g3) in _HIGHER.items():
    _BASES[_name] = dataclasses.replace(_BASES[_name], grad2=_g2, grad3=_g3)

# Named affine images of a base: name -> (base, scale, shift).
_ALIASES: dict[str, tuple[str, float, float]] = {
    "scaled_relu": ("relu", math.sqrt(2.0), 0.0),
}

NORMALIZED_PREFIX = "normalized:"
# "<name>(<g>z)": a positive decimal or scientific number g directly followed by "z".
_GAIN_SPEC = re.compile(r"^([a-z_]+)\(((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)z\)$")


def available() -> list[str]:
    """Names accepted by :func:`get_activation` (each also under ``normalized:``)."""
    return sorted([*_BASES, *_ALIASES])


@dataclass(frozen=True)
class Activation:
    """σ(z) = scale · base(gain · z) + shift, with closed-form moments when the base has them.

    Use :func:`get_activation` to build one from a spec string. Every multiplication by the
    gain is skipped at gain 1, so an activation without a gain computes exactly what it did
    before gains existed.
    """

    spec: str
    base: _Base
    scale: float = 1.0
    shift: float = 0.0
    gain: float = 1.0

    def _inner(self, z: Tensor) -> Tensor:
        return z * self.gain if self.gain != 1.0 else z

    def _chain(self, out: Tensor, order: int) -> Tensor:
        """scale · gain^order · out: the chain rule of the k-th derivative of base(g·z)."""
        factor = self.scale * self.gain**order if self.gain != 1.0 else self.scale
        return out * factor if factor != 1.0 else out

    def __call__(self, z: Tensor) -> Tensor:
        out = self.base.fn(self._inner(z))
        if self.scale != 1.0:
            out = out * self.scale
        if self.shift != 0.0:
            out = out + self.shift
        return out

    def derivative(self, z: Tensor) -> Tensor:
        return self._chain(self.base.grad(self._inner(z)), 1)

    def second_derivative(self, z: Tensor) -> Tensor:
        """σ''(z); ValueError for an activation with a kink (ReLU: σ'' is a Dirac mass)."""
        if self.base.grad2 is None:
            raise ValueError(f"activation {self.spec!r} is not twice differentiable")
        return self._chain(self.base.grad2(self._inner(z)), 2)

    def third_derivative(self, z: Tensor) -> Tensor:
        """σ'''(z); ValueError for an activation with a kink."""
        if self.base.grad3 is None:
            raise ValueError(f"activation {self.spec!r} is not three times differentiable")
        return self._chain(self.base.grad3(self._inner(z)), 3)

    @property
    def is_smooth(self) -> bool:
        """Whether σ'' and σ''' exist (the theory of the loss Hessian needs them)."""
        return self.base.grad2 is not None and self.base.grad3 is not None

    @property
    def has_closed_form(self) -> bool:
        return self.base.pair is not None and (self.base.mean is not None or self.shift == 0.0)

    def closed_form_cross(self, q1: Tensor, q2: Tensor, c: Tensor) -> Tensor:
        """E[σ(u)σ(v)] for (u, v) ~ N(0, [[q1, c], [c, q2]]), closed form."""
        return self.closed_form_pair(q1, q2, c)[0]

    def closed_form_dcross(self, q1: Tensor, q2: Tensor, c: Tensor) -> Tensor:
        """E[σ'(u)σ'(v)], closed form."""
        return self.closed_form_pair(q1, q2, c)[1]

    def closed_form_mean(self, q: Tensor) -> Tensor:
        """E[σ(u)] for u ~ N(0, q), closed form (for a base with a closed-form mean)."""
        if self.gain != 1.0:
            q = (self.gain * self.gain) * q
        out = self.base.mean(q)
        if self.scale != 1.0:
            out = out * self.scale
        return out + self.shift if self.shift != 0.0 else out

    def closed_form_pair(self, q1: Tensor, q2: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """(E[σ(u)σ(v)], E[σ'(u)σ'(v)]), closed form: the base's pair carried through the
        gain (at covariance g²·C, and a factor g² on the derivatives) and through the affine
        map σ = a·base + b."""
        a, b, g = self.scale, self.shift, self.gain
        if g != 1.0:
            q1, q2, c = (g * g) * q1, (g * g) * q2, (g * g) * c
        cross, dcross = self.base.pair(q1, q2, c)
        cross = (a * a) * cross
        if b != 0.0:
            cross = cross + (a * b) * (self.base.mean(q1) + self.base.mean(q2)) + b * b
        dcross = (a * a) * dcross
        return cross, (dcross * (g * g) if g != 1.0 else dcross)


@cache
def _standard_moments(base_name: str, gain: float = 1.0) -> tuple[float, float]:
    """(E[base(g z)], E[base(g z)^2]) for z ~ N(0,1), closed form or 1-D quadrature."""
    from ntk_repro.gauss import expect_1d

    base = _BASES[base_name]
    one = torch.ones((), dtype=torch.float64)
    if base.mean is not None and base.pair is not None:
        q = one if gain == 1.0 else one * (gain * gain)  # g z ~ N(0, g²)
        return float(base.mean(q)), float(base.pair(q, q, q)[0])
    if gain == 1.0:
        m1 = expect_1d(lambda u: base.fn(u), one)
        m2 = expect_1d(lambda u: base.fn(u) ** 2, one)
    else:
        m1 = expect_1d(lambda u: base.fn(u * gain), one)
        m2 = expect_1d(lambda u: base.fn(u * gain) ** 2, one)
    return float(m1), float(m2)


def _parse_gain(spec: str, name: str) -> tuple[str, float]:
    """Split "<name>(<g>z)" into (name, g); a name without parentheses has g = 1."""
    if "(" not in name and ")" not in name:
        return name, 1.0
    match = _GAIN_SPEC.match(name)
    gain = float(match.group(2)) if match else math.nan
    if not (match and math.isfinite(gain) and gain > 0.0):
        raise ValueError(
            f"activation {spec!r}: a gain must be written '<name>(<g>z)' with a positive "
            "finite number g, e.g. 'tanh(0.5z)'"
        )
    return match.group(1), gain


@cache
def get_activation(spec: str) -> Activation:
    """Parse an activation spec (see module docstring).

    Raises
    ------
    ValueError
        If the spec names no known activation; the message names ``activation``.
    """
    if not isinstance(spec, str):
        raise ValueError(f"activation must be a string, got {type(spec).__name__}")
    name = spec.strip()
    normalized = name.startswith(NORMALIZED_PREFIX)
    if normalized:
        name = name[len(NORMALIZED_PREFIX) :]
    name, gain = _parse_gain(spec, name)
    if name in _ALIASES:
        base_name, scale, shift = _ALIASES[name]
    elif name in _BASES:
        base_name, scale, shift = name, 1.0, 0.0
    else:
        raise ValueError(
            f"activation {spec!r} is unknown; choose one of {available()} "
            f"or '{NORMALIZED_PREFIX}<name>', each optionally with a gain '<name>(<g>z)'"
        )
    if normalized:
        mean, second = _standard_moments(base_name, gain)
        base_mean, base_var = mean, second - mean * mean
        # σ = scale·base + shift, so σ̄ = (base − E base)/sd(base) whatever scale/shift were.
        sd = math.sqrt(base_var)
        scale, shift = 1.0 / sd, -base_mean / sd
    return Activation(
        spec=spec.strip(), base=_BASES[base_name], scale=scale, shift=shift, gain=gain
    )


def standard_moments(spec: str) -> dict[str, float]:
    """Moments of σ under z ~ N(0, 1), in float64.

    Returns a dict with ``mean`` = E[σ(z)], ``second`` = E[σ(z)²] and
    ``grad_second`` = E[σ'(z)²] (the latter enters r_{σ,β} = (1−β²)·E[σ'(z)²]).
    """
    from ntk_repro.gauss import expect_1d

    act = get_activation(spec)
    one = torch.ones((), dtype=torch.float64)
    if act.has_closed_form:
        if act.base.mean is None:
            mean = act.shift
        elif act.gain == 1.0:
            mean = float(act.scale * act.base.mean(one) + act.shift)
        else:
            mean = float(act.closed_form_mean(one))
        second = float(act.closed_form_cross(one, one, one))
        grad_second = float(act.closed_form_dcross(one, one, one))
    else:
        mean = float(expect_1d(act, one))
        second = float(expect_1d(lambda u: act(u) ** 2, one))
        grad_second = float(expect_1d(lambda u: act.derivative(u) ** 2, one))
    return {"mean": mean, "second": second, "grad_second": grad_second}
