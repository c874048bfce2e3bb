"""Eigenvalues of dot-product kernels on the sphere (Funk–Hecke), and of their Gram matrices.

A kernel K(x, y) = κ(t), t = xᵀy/(‖x‖‖y‖), on the sphere S^{d−1} with the uniform probability
measure is diagonalised by the spherical harmonics: the harmonics of degree k span a space of
dimension N(d, k) (the multiplicity) and share one eigenvalue (Funk–Hecke),

    μ_k = E_t[κ(t) P_k(t)]
        = ∫_{−1}^{1} κ(t) P_k(t) (1 − t²)^{(d−3)/2} dt / ∫_{−1}^{1} (1 − t²)^{(d−3)/2} dt,

where P_k is the Gegenbauer polynomial C_k^{(λ)}, λ = (d − 2)/2, normalised to P_k(1) = 1 (the
Chebyshev polynomial T_k on the circle, d = 2), and the weight (1 − t²)^{(d−3)/2} is the density
of t = ⟨u, v⟩ for independent uniform u, v. The one-variable integral is computed by
Gauss–Jacobi quadrature with exactly that weight (α = β = (d − 3)/2), so it is exact for
polynomial κ of degree p once p + k ≤ 2n − 1 (n nodes), and converges algebraically for
kernels with a (1 − t)^{1/2} singularity at t = ±1 such as those of ReLU nets (error ~ n^{−(d+1)}
for the ReLU NTK). :func:`funk_hecke` estimates its own quadrature error by repeating the
integral with half the nodes.

Mercer's theorem then gives κ(1) = Σ_k N(d, k) μ_k (the trace), and the eigenvalues λ_i of the
Gram matrix [κ(x_iᵀx_j/‖x_i‖‖x_j‖)] of N independent uniform points satisfy λ_i/N → μ_(i), the
eigenvalues sorted with their multiplicities (:func:`expand`).

Everything is numpy float64.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.special

from ntk_repro.validation import check_int, check_points

# Default number of Gauss–Jacobi nodes: the ReLU NTK on the circle (the slowest case, error
# ~ n^−3 for d = 2) is then accurate to ~1e-6 relative in its leading eigenvalues.
DEFAULT_NODES = 4096


def _check_dim(d) -> int:
    return check_int(d, "dimension d", minimum=2)  # the sphere S^(d-1)


def _check_degree(k, name: str = "degree") -> int:
    return check_int(k, name, minimum=0)


def multiplicity(d: int, k: int) -> int:
    """N(d, k): the dimension of the spherical harmonics of degree k on S^{d−1}.

    It is the number of harmonic homogeneous polynomials of degree k in d variables,
    C(k+d−1, d−1) − C(k+d−3, d−1): 1, d, (d+2)(d−1)/2, …; 2 for every k >= 1 on the circle.
    """
    d, k = _check_dim(d), _check_degree(k)
    if k < 2:
        return 1 if k == 0 else d
    return math.comb(k + d - 1, d - 1) - math.comb(k + d - 3, d - 1)


def multiplicities(d: int, max_degree: int) -> np.ndarray:
    """int64 array (max_degree + 1,) of N(d, k) for k = 0 … max_degree."""
    return np.array(
        [multiplicity(d, k) for k in range(_check_degree(max_degree))]
        + [multiplicity(d, max_degree)],
        dtype=np.int64,
    )


def sphere_polynomials(max_degree: int, d: int, t) -> np.ndarray:
    """P_k(t) for k = 0 … max_degree, normalised to P_k(1) = 1: array (max_degree + 1, *t.shape).

    d = 2: Chebyshev T_k; d >= 3: C_k^{((d−2)/2)}(t) / C_k^{((d−2)/2)}(1) (scipy's
    ``eval_gegenbauer``). These are the Legendre polynomials of dimension d: the zonal
    harmonics of degree k, P_k(xᵀy) = (1/N(d,k)) Σ_j Y_kj(x) Y_kj(y) for an orthonormal basis
    Y_kj of the degree-k harmonics in L²(uniform probability) (addition theorem).
    """
    d, max_degree = _check_dim(d), _check_degree(max_degree, "max_degree")
    t = np.asarray(t, dtype=np.float64)
    out = np.empty((max_degree + 1, *t.shape))
    if d == 2:
        for k in range(max_degree + 1):
            out[k] = scipy.special.eval_chebyt(k, t)
        return out
    lam = (d - 2) / 2.0
    for k in range(max_degree + 1):
        at_one = scipy.special.eval_gegenbauer(k, lam, 1.0)
        out[k] = scipy.special.eval_gegenbauer(k, lam, t) / at_one
    return out


def cosine_quadrature(d: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Jacobi rule for the law of t = ⟨u, v⟩, u and v independent uniform on S^{d−1}.

    Returns nodes (n,) in (−1, 1) and weights (n,) summing to 1: Σ w_j f(t_j) ≈ E f(t), the
    weight function being (1 − t²)^{(d−3)/2} divided by its integral B(1/2, (d−1)/2).
    """
    d = _check_dim(d)
    n = check_int(n, "n (quadrature nodes)", minimum=1)
    nodes, weights = _jacobi_rule(int(d), int(n))
    return nodes.copy(), weights.copy()


@functools.lru_cache(maxsize=16)
def _jacobi_rule(d: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    # Cached: scipy takes ~0.5 s for 4096 nodes, and experiments integrate many kernels on
    # one rule.
    alpha = (d - 3) / 2.0
    nodes, weights = scipy.special.roots_jacobi(n, alpha, alpha)
    # ∫_{−1}^{1} (1 − t²)^α dt = B(1/2, α + 1): divide by the exact value, not by Σ w.
    return nodes, weights / scipy.special.beta(0.5, alpha + 1.0)


@dataclass(frozen=True)
class FunkHecke:
    """Eigenvalues of a dot-product kernel on S^{d−1} for the uniform probability measure.

    eigenvalues : (K+1,) μ_k for k = 0 … K.  multiplicities : (K+1,) N(d, k).
    quadrature_error : (K+1,) |μ_k(n nodes) − μ_k(n/2 nodes)|, an upper estimate of the error of
        ``eigenvalues`` (the rule converges, so the coarser rule's error dominates).
    d : the ambient dimension.  nodes : n.
    """

    eigenvalues: np.ndarray
    multiplicities: np.ndarray
    quadrature_error: np.ndarray
    d: int
    nodes: int

    def expanded(self, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The eigenvalues repeated by multiplicity and sorted descending: see :func:`expand`."""
        return expand(self.eigenvalues, self.multiplicities, count)


def _integrate(kappa_values: np.ndarray, polys: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return polys @ (weights * kappa_values)


def funk_hecke(
    kappa: Callable[[np.ndarray], np.ndarray], d: int, max_degree: int, nodes: int = DEFAULT_NODES
) -> FunkHecke:
    """μ_k = E_t[κ(t) P_k(t)] for k = 0 … max_degree, by Gauss–Jacobi quadrature.

    Parameters
    ----------
    kappa : vectorised callable, array of cosines (n,) in [−1, 1] → κ values (n,).
    d : ambient dimension (the sphere S^{d−1}), >= 2.
    max_degree : largest degree k.
    nodes : quadrature nodes n (the error estimate uses n // 2 more).

    Returns
    -------
    FunkHecke with float64 arrays of shape (max_degree + 1,).
    """
    d, max_degree = _check_dim(d), _check_degree(max_degree, "max_degree")
    nodes = check_int(nodes, "nodes", minimum=2)
    results = []
    for n in (int(nodes), int(nodes) // 2):
        t, w = cosine_quadrature(d, n)
        values = np.asarray(kappa(t), dtype=np.float64)
        if values.shape != t.shape or not np.isfinite(values).all():
            raise ValueError(
                f"kappa must return finite values of shape {t.shape}, got shape {values.shape}"
            )
        results.append(_integrate(values, sphere_polynomials(max_degree, d, t), w))
    fine, coarse = results
    return FunkHecke(
        eigenvalues=fine,
        multiplicities=multiplicities(d, max_degree),
        quadrature_error=np.abs(fine - coarse),
        d=d,
        nodes=int(nodes),
    )


def expand(eigenvalues, mults, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues μ_k repeated N(d, k) times, sorted descending (stable: ties keep degree order).

    Returns (values (M,), degrees (M,)) with M = Σ mults, or the first ``count`` of them.
    """
    mu = np.asarray(eigenvalues, dtype=np.float64)
    mults = np.asarray(mults, dtype=np.int64)
    if mu.shape != mults.shape or mu.ndim != 1:
        raise ValueError(
            f"eigenvalues {mu.shape} and multiplicities {mults.shape} must be "
            "1-D arrays of one length"
        )
    degrees = np.repeat(np.arange(len(mu)), mults)
    values = np.repeat(mu, mults)
    order = np.argsort(-values, kind="stable")
    values, degrees = values[order], degrees[order]
    if count is not None:
        values, degrees = values[:count], degrees[:count]
    return values, degrees


def cosines(x) -> np.ndarray:
    """The matrix of cosines x_iᵀx_j/(‖x_i‖‖x_j‖) of points x (N, d), clipped to [−1, 1],
    with an exact 1 on the diagonal: (N, N) float64."""
    x = check_points(x, "x")
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise ValueError("x has a zero row: it has no direction on the sphere")
    u = x / norms[:, None]
    t = np.clip(u @ u.T, -1.0, 1.0)
    t = 0.5 * (t + t.T)
    np.fill_diagonal(t, 1.0)
    return t


def gram_eigenvalues(kappa: Callable[[np.ndarray], np.ndarray], x) -> np.ndarray:
    """Eigenvalues of the Gram matrix [κ(cos(x_i, x_j))] divided by N, sorted descending: (N,)."""
    t = cosines(x)
    gram = np.asarray(kappa(t), dtype=np.float64)
    if gram.shape != t.shape or not np.isfinite(gram).all():
        raise ValueError(f"kappa must return finite values of shape {t.shape}")
    return np.linalg.eigvalsh(0.5 * (gram + gram.T))[::-1] / t.shape[0]


def degree_tolerance(eigenvalues, mults, trace: float, n_points: int) -> np.ndarray:
    """Sampling tolerance of the Gram eigenvalues λ_i/N around μ_k for each degree k: (K+1,).

    With Φ (N, ·) the orthonormal harmonics at N uniform points, Gram/N has the eigenvalues of
    D^{1/2} G D^{1/2}, D = diag(μ) and G = ΦᵀΦ/N, E G = I. Three effects, each derived from G:

    - spread (first order, O(1/√N)): within a group of m degenerate (or nearly so) harmonics the
      eigenvalues are μ times those of an m×m block of G, spread over the Marchenko–Pastur band
      (1 ± √(m/N))², i.e. by μ·(2√(m/N) + m/N). Neighbouring degrees whose single-degree bands
      overlap are merged into one group (their off-diagonal block couples them at first order).
    - coupling to larger eigenvalues (second order): each of the M_above harmonics with a larger
      μ_l shifts μ_k down by μ_k·G_kl² ~ μ_k/N.
    - coupling to smaller eigenvalues (second order): each harmonic with a smaller μ_l shifts μ_k
      up by ~ μ_l·G_kl² ~ μ_l/N; together the mass Σ_{μ_l<μ_k} N(d,l)·μ_l plus the trace beyond
      the largest computed degree, κ(1) − Σ_l N(d,l)·μ_l.

    The second-order terms take 3× their typical size (G_kl² has mean 1/N). ``trace`` is κ(1).
    """
    mu = np.abs(np.asarray(eigenvalues, dtype=np.float64))
    m = np.asarray(mults, dtype=np.float64)
    n = float(n_points)
    mass = m * mu
    beyond = max(float(trace) - float(np.sum(m * np.asarray(eigenvalues))), 0.0)
    order = np.argsort(-mu, kind="stable")
    above = np.empty_like(mu)
    below = np.empty_like(mu)
    above[order] = np.concatenate([[0.0], np.cumsum(m[order])[:-1]])
    below[order] = np.concatenate([np.cumsum(mass[order][::-1])[::-1][1:], [0.0]]) + beyond
    coupling = 3.0 * (mu * above + below) / n
    # One pass: neighbours (in decreasing μ) whose single-degree bands overlap form a group.
    # (Iterating would chain a slowly decaying spectrum into one group, the loose bound of the
    # whole head; a gap wider than both single bands keeps two degrees apart at first order.)
    single = mu * (2.0 * np.sqrt(m / n) + m / n) + coupling
    group = np.arange(len(mu))
    for a, b in zip(order[:-1], order[1:]):
        if mu[a] - single[a] <= mu[b] + single[b]:
            group[group == group[b]] = group[a]
    size = np.array([m[group == g].sum() for g in group])
    tol = mu * (2.0 * np.sqrt(size / n) + size / n) + coupling
    return tol


def sorted_bands(eigenvalues, mults, tolerance, count: int) -> dict[str, np.ndarray]:
    """Where the ``count`` largest eigenvalues λ_i/N of a Gram matrix may lie, sorted.

    If every empirical eigenvalue of degree k lies within μ_k ± tolerance_k, then the i-th
    largest lies between the i-th largest of the lower ends and the i-th largest of the upper
    ends (sorting preserves a one-to-one ordering), whichever degrees get mixed by the sort.

    Returns dict of arrays (count,): ``center`` (μ_(i), the expanded eigenvalues), ``lower``,
    ``upper`` and ``degree`` (the degree of μ_(i)).
    """
    mu = np.asarray(eigenvalues, dtype=np.float64)
    tol = np.asarray(tolerance, dtype=np.float64)
    center, degree = expand(mu, mults, count)
    lower = np.sort(np.repeat(mu - tol, mults))[::-1][:count]
    upper = np.sort(np.repeat(mu + tol, mults))[::-1][:count]
    return {"center": center, "lower": lower, "upper": upper, "degree": degree}


def band_score(values, bands: dict[str, np.ndarray]) -> np.ndarray:
    """Distance of each sorted empirical value from μ_(i) in units of its band's half-width on
    that side: |score| <= 1 iff the value lies inside [lower_i, upper_i]. Shape (count,)."""
    values = np.asarray(values, dtype=np.float64)[: len(bands["center"])]
    center = bands["center"][: len(values)]
    above = values >= center
    width = np.where(
        above, bands["upper"][: len(values)] - center, center - bands["lower"][: len(values)]
    )
    return (values - center) / np.where(width > 0, width, np.inf)


__all__ = [
    "DEFAULT_NODES",
    "FunkHecke",
    "band_score",
    "cosine_quadrature",
    "cosines",
    "degree_tolerance",
    "expand",
    "funk_hecke",
    "gram_eigenvalues",
    "multiplicities",
    "multiplicity",
    "sorted_bands",
    "sphere_polynomials",
]
