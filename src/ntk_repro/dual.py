"""The layer map of inputs of equal norm as a power series of the correlation (Hermite path).

Write σ(√q z) = Σ_k a_k h_k(z) in the orthonormal Hermite polynomials h_k = He_k/√k! of
z ~ N(0, 1), a_k = E[σ(√q z) h_k(z)]. For (u, v) ~ N(0, [[q, c], [c, q]]) and ρ = c/q,
E[h_j(z₁) h_k(z₂)] = δ_jk ρ^k for unit normals of correlation ρ, so

    E[σ(u)σ(v)]   = Σ_k a_k² ρ^k                    (the "dual activation" of σ at variance q)
    E[σ'(u)σ'(v)] = Σ_k k a_k² ρ^{k−1} / q           (its derivative in c: √q σ'(√q z) has the
                                                     coefficients √(k+1) a_{k+1})

When both inputs of every pair have the same norm (points of a sphere), every unit has the
same variance q_ℓ at layer ℓ, and one layer of the NNGP/NTK recursion is two polynomial
evaluations per pair instead of a 2-D quadrature per pair: the coefficients come from one 1-D
Gauss–Hermite rule per layer. The series converges fast for smooth σ (for tanh(g z),
a_k² decays like exp(−(π/g)·√k)) and slowly for a kink (ReLU: a_k² ∝ k^{−5/2}); the
truncation is checked against the 1-D quadrature of E σ² and E σ'², and an activation whose
series has not converged is refused.

Same contract as :func:`ntk_repro.kernels.kernels_of_cosine`: numpy in, float64 numpy out.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch

from ntk_repro.activations import Activation
from ntk_repro.gauss import expect_1d
from ntk_repro.kernels import check_hyperparameters, weight_gain
from ntk_repro.validation import as_real_tensor, check_int, check_real

# Hermite terms kept and Gauss–Hermite nodes used to compute them (more nodes than terms:
# the rule integrates h_k times a smooth σ, a polynomial of degree k times σ). tanh(0.5z)
# needs ~60 terms for a truncation error of 1e-15 in E σ'², tanh(z) ~170. numpy's rule is
# accurate to rounding up to ~300 nodes (scipy's switches to an asymptotic rule with errors
# of 1e-14 above 150, and numpy's weights overflow above 300); there the largest |h_k|
# (k ≤ 200, |z| ≤ 34) is far from overflow.
TERMS = 200
_NODES = 300
# Largest relative truncation error of E σ² and E σ'² accepted (the float64 noise of the
# 1-D quadrature they are compared with is ~1e-15).
_CONVERGED = 1e-12


@cache
def _hermite_rule() -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of E[f(z)], z ~ N(0, 1), by probabilists' Gauss–Hermite."""
    x, w = np.polynomial.hermite_e.hermegauss(_NODES)
    return x, w / w.sum()  # the weights sum to √(2π) up to rounding


def hermite_coefficients(act: Activation, q: float, terms: int = TERMS) -> np.ndarray:
    """a_k = E[σ(√q z) h_k(z)] for k = 0 … terms (at most TERMS): (terms + 1,) float64."""
    terms = check_int(terms, "terms", minimum=1, maximum=TERMS)
    x, w = _hermite_rule()
    f = act(torch.as_tensor(math.sqrt(q) * x, dtype=torch.float64)).numpy() * w
    coef = np.empty(terms + 1)
    h_prev, h = np.zeros_like(x), np.ones_like(x)
    for k in range(terms + 1):
        coef[k] = f @ h
        # h_{k+1} = (z h_k − √k h_{k−1}) / √(k+1): the recurrence of the orthonormal family.
        h_prev, h = h, (x * h - math.sqrt(k) * h_prev) / math.sqrt(k + 1)
    return coef


def _check_converged(act: Activation, q: float, coef: np.ndarray) -> None:
    """ValueError naming ``activation`` unless Σ a_k² and Σ k a_k² match E σ², q·E σ'²."""
    one = torch.tensor(q, dtype=torch.float64)
    second = float(expect_1d(lambda u: act(u) ** 2, one))
    grad_second = q * float(expect_1d(lambda u: act.derivative(u) ** 2, one))
    k = np.arange(len(coef))
    for name, series, exact in (
        ("E σ²", np.sum(coef**2), second),
        ("E σ'²", np.sum(k * coef**2), grad_second),
    ):
        if abs(series - exact) > _CONVERGED * max(abs(exact), 1e-300):
            raise ValueError(
                f"activation {act.spec!r}: its Hermite series at variance {q:.3g} has not "
                f"converged in {len(coef) - 1} terms ({name}: {series:.16g} vs {exact:.16g}); "
                "use kernels.kernels_of_cosine"
            )


def _polyval(coef: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Σ_k coef_k ρ^k by Horner's rule, elementwise."""
    out = np.full_like(rho, coef[-1])
    for c in coef[-2::-1]:
        out *= rho
        out += c
    return out


def kernels_of_cosine(
    cosine,
    *,
    depth: int,
    beta: float,
    activation: str,
    parametrization: str = "ntk2018",
    sq_norm: float = 1.0,
    all_depths: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Σ(L) and Θ∞(L) at the cosines between inputs of equal norm, by the Hermite series.

    Same arguments and recursion as :func:`ntk_repro.kernels.kernels_of_cosine` (inputs with
    ‖x‖²/n0 = ``sq_norm``). With ``all_depths`` the results of every depth 1 … L are stacked
    along a new first axis: (L, *cosine.shape).

    Raises
    ------
    ValueError
        For a bad argument (naming it), or an activation whose Hermite series has not
        converged (a kinked σ such as ReLU; use the quadrature or closed-form path).
    """
    act = check_hyperparameters(depth, beta, activation, parametrization)
    t = as_real_tensor(cosine, "cosine").to(torch.float64).cpu().numpy().reshape(np.shape(cosine))
    if not np.isfinite(t).all() or np.abs(t).max(initial=0.0) > 1.0 + 1e-12:
        raise ValueError("cosine must be finite and lie in [-1, 1]")
    sq_norm = check_real(sq_norm, "sq_norm", minimum=0.0, exclusive_minimum=True)
    beta = float(beta)
    gain = weight_gain(beta, parametrization)
    sigma = np.clip(t, -1.0, 1.0) * (gain * sq_norm) + beta * beta
    q = gain * sq_norm + beta * beta  # Σ(1)(x, x)
    theta = sigma.copy()
    sigmas, thetas = [sigma], [theta]
    for _ in range(depth - 1):
        coef = hermite_coefficients(act, q)
        _check_converged(act, q, coef)
        power = coef**2
        slope = np.arange(1, len(coef)) * power[1:] / q  # d/dc of Σ a_k² (c/q)^k
        rho = np.clip(sigma / q, -1.0, 1.0)
        sigma = gain * _polyval(power, rho) + beta * beta
        theta = theta * (gain * _polyval(slope, rho)) + sigma
        q = float(gain * _polyval(power, np.ones(1))[0] + beta * beta)  # = Σ at ρ = 1
        sigmas.append(sigma)
        thetas.append(theta)
    if all_depths:
        return np.stack(sigmas), np.stack(thetas)
    return sigma, theta
