"""Generalization of kernel ridge regression and random-feature models, from the spectrum.

Two ridge conventions are used, and every function says which one it takes:

- ``"mean"`` (the KRR/KARE papers): the loss (1/N)Σ(f(xᵢ) − yᵢ)² + λ‖f‖², so
  f̂_λ(x) = K(x, X)(K + NλI)⁻¹y = (1/N)K(x, X)(K/N + λ)⁻¹y.
- ``"sum"`` (the random-feature paper and its public code): the loss Σ(f(xᵢ) − yᵢ)² + λ‖f‖², so
  f̂_λ(x) = K(x, X)(K + λI)⁻¹y, λ against the unnormalised Gram.

They agree after λ_sum = N·λ_mean. The formulas (docs/generalization.md):

- effective ridge: the root z ≥ λ of z = λ + (z/n)Σᵢ dᵢ/(dᵢ + z), with
  ∂z/∂λ = 1/(1 − (1/n)Σᵢ dᵢ²/(dᵢ + z)²). With n = P features and dᵢ the eigenvalues of the
  unnormalised Gram K(X, X) (sum convention) it is the random-feature λ̃: the average RF
  predictor is close to KRR with ridge λ̃. With n = N samples and dᵢ the eigenvalues of the
  integral operator T_K f = E_x[K(·, x) f(x)] (mean convention) it is the signal-capture
  threshold ϑ of KRR.
- KARE: ρ(λ) = (1/N)yᵀ(K/N + λ)⁻²y / [(1/N)Tr(K/N + λ)⁻¹]² (mean convention), an estimate of
  the test risk from the training set alone; algebraically it is generalized cross-validation.
- SCT risk: R ≈ ∂ϑ/∂λ · (Σₖ (ϑ/(dₖ + ϑ))² cₖ² + ε²), and E f̂_λ ≈ Σₖ dₖ/(dₖ + ϑ)·cₖ φₖ.
- On the sphere, for dot-product kernels with Funk–Hecke eigenvalues: a target of unit-norm
  zonal harmonics with exact coefficients, and the exact risk of any kernel expansion.
- Random features: Gaussian features of covariance K, the RF ridge predictor for any features,
  and our (first-order, [V]) variance law.

Everything is numpy float64 in and out. Eigenvalues of a Gram (PSD up to rounding) are clipped
at 0 where a function computes them itself; eigenvalues passed in must be >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize

from ntk_repro.data import as_generator
from ntk_repro.spectral import multiplicities
from ntk_repro.validation import check_choice, check_int, check_real

CONVENTIONS = ("mean", "sum")


# --- validation (at the edges) ------------------------------------------------------------------


def _vector(x, name: str) -> np.ndarray:
    """``x`` as a finite non-empty float64 1-D array."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a 1-D array of real numbers: {err}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _spectrum(eigenvalues, multiplicities) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, weights) as float64 1-D arrays of one length; both >= 0."""
    d = _vector(eigenvalues, "eigenvalues")
    if (d < 0).any():
        raise ValueError(
            f"eigenvalues must be >= 0, got {d.min():.3g} "
            "(clip the rounding negatives of a PSD Gram with np.clip(values, 0, None))"
        )
    if multiplicities is None:
        return d, np.ones_like(d)
    m = _vector(multiplicities, "multiplicities")
    if m.shape != d.shape:
        raise ValueError(f"multiplicities {m.shape} must have the shape of eigenvalues {d.shape}")
    if (m < 0).any():
        raise ValueError("multiplicities must be >= 0")
    return d, m


def _ridges(ridge, *, positive: bool) -> tuple[np.ndarray, bool]:
    """(ridges as a float64 1-D array, whether ``ridge`` was a scalar)."""
    scalar = np.ndim(ridge) == 0
    if scalar:
        value = check_real(ridge, "ridge", minimum=0.0, exclusive_minimum=positive)
        return np.array([value]), True
    r = _vector(ridge, "ridge")
    if (r <= 0 if positive else r < 0).any():
        raise ValueError(f"ridge must be {'>' if positive else '>='} 0, got {r.min():.3g}")
    return r, False


def _gram(gram, name: str = "gram") -> np.ndarray:
    try:
        k = np.asarray(gram, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a square array of real numbers: {err}") from None
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError(f"{name} contains NaN or inf")
    return k


def _targets(y, n: int, name: str = "y") -> np.ndarray:
    """``y`` as float64 (N,) or (N, k)."""
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an array of real numbers: {err}") from None
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) or ({n}, k), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _gram_eigh(gram) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a PSD Gram: eigenvalues clipped at 0 (negatives are rounding)."""
    k = _gram(gram)
    evals, evecs = np.linalg.eigh(0.5 * (k + k.T))
    return np.maximum(evals, 0.0), evecs


def _shaped(values: np.ndarray, scalar: bool):
    return float(values[0]) if scalar else values


# --- the effective ridge ------------------------------------------------------------------------


def _root(d: np.ndarray, m: np.ndarray, ridge: float, n: float, tail: float) -> float:
    """The z >= ridge with h(z) = ridge, h(z) = z(1 − S(z)/n), S(z) = Σ m d/(d + z) + tail/z.

    h is convex with h(0⁺) = −tail/n <= 0, h(ridge) <= ridge and h(ridge + (Tr + tail)/n) >=
    ridge (as z/(d + z) <= 1), and h − ridge changes sign once on that interval: a bracket.
    """
    pos = d > 0
    d, m = d[pos], m[pos]
    count = float(m.sum())
    trace = float((m * d).sum())
    tol = dict(xtol=1e-300, rtol=4 * np.finfo(float).eps)
    if ridge == 0.0 and tail == 0.0:
        if n >= count:
            return 0.0  # as many samples/features as non-zero eigenvalues: nothing is lost
        # Ridgeless with n < count: z = 0 is a trivial root of h; the one sought solves
        # S(z) = n, where 1 − S(z)/n changes sign on (0, Tr/n].

        def rel(z: float) -> float:
            return 1.0 - (m * (d / (d + z))).sum() / n if z > 0 else 1.0 - count / n

        return scipy.optimize.brentq(rel, 0.0, trace / n, **tol)

    def excess(z: float) -> float:
        return z - (z * (m * (d / (d + z))).sum() + tail) / n - ridge

    lo, hi = ridge, ridge + (trace + tail) / n
    if excess(lo) >= 0.0:  # only without positive eigenvalues and tail: z = ridge
        return lo
    return scipy.optimize.brentq(excess, lo, hi, **tol)


def effective_ridge(eigenvalues, ridge, n, *, multiplicities=None, tail: float = 0.0):
    """The effective ridge z of a spectrum, and its derivative ∂z/∂ridge.

    z is the unique root z >= ridge of z = ridge + (z/n)·Σᵢ mᵢ dᵢ/(dᵢ + z), found by bracketing
    on [ridge, ridge + (Σᵢ mᵢdᵢ + tail)/n]; ∂z/∂ridge = 1/(1 − (1/n)Σᵢ mᵢ dᵢ²/(dᵢ + z)²) >= 1.

    - Random features (sum convention, K + λI): dᵢ the eigenvalues of the unnormalised Gram
      K(X, X), n = P features, ridge λ → λ̃ (the ridge of the KRR the average RF predictor
      matches).
    - KRR (mean convention, K + NλI): dᵢ the eigenvalues of the integral operator of the
      kernel (population spectrum), n = N samples, ridge λ → the signal-capture threshold ϑ.

    ridge = 0: z = 0 when n >= the number of positive eigenvalues (counted with multiplicity;
    the derivative is then n/(n − count), inf at n = count), else the root of
    Σᵢ mᵢ dᵢ/(dᵢ + z) = n.

    Parameters
    ----------
    eigenvalues : (K,) >= 0 (zeros contribute nothing); NaN, inf and negatives are refused.
    ridge : float >= 0 or array (R,) of them.
    n : P or N, a real number > 0.
    multiplicities : optional (K,) weights mᵢ >= 0 (e.g. ``spectral.FunkHecke.multiplicities``),
        default 1 each: eigenvalue dᵢ is repeated mᵢ times.
    tail : trace of a truncated spectrum's remaining eigenvalues (e.g. κ(1) − Σ mₖμₖ on the
        sphere), all assumed ≪ z: they add tail/z to the sum (exact to first order in d/z) and
        nothing to the derivative's (second order). Default 0. With tail > 0 the spectrum has
        infinitely many eigenvalues, so z > 0 even at ridge = 0.

    Returns
    -------
    (value, derivative): floats for a scalar ridge, float64 arrays (R,) otherwise.
    """
    d, m = _spectrum(eigenvalues, multiplicities)
    n = check_real(n, "n", minimum=0.0, exclusive_minimum=True)
    tail = check_real(tail, "tail", minimum=0.0)
    ridges, scalar = _ridges(ridge, positive=False)
    values = np.array([_root(d, m, float(r), n, tail) for r in ridges])
    pos = d > 0
    count = float(m[pos].sum())
    derivs = np.empty_like(values)
    for i, z in enumerate(values):
        if z == 0.0:
            derivs[i] = np.inf if n == count else n / (n - count)
        else:
            frac = d[pos] / (d[pos] + z)
            derivs[i] = 1.0 / (1.0 - (m[pos] * frac * frac).sum() / n)
    return _shaped(values, scalar), _shaped(derivs, scalar)


# --- KRR from one eigendecomposition ------------------------------------------------------------


def kare(gram, y, ridge):
    """Kernel alignment risk estimator ρ(λ) = (1/N)yᵀ(K/N + λ)⁻²y / [(1/N)Tr(K/N + λ)⁻¹]².

    Mean convention (f̂_λ = K(x, X)(K + NλI)⁻¹y). An estimate, from the training set alone, of
    the risk E(f̂_λ(x) − y)² against test labels drawn like the training labels (noise
    included). One ``eigh`` of K serves every ridge. Equal to :func:`gcv` (an identity).

    gram : (N, N) K(X, X).  y : (N,) labels.  ridge : float > 0 or array (R,) of them.
    Returns a float, or (R,) float64 for an array ridge.
    """
    evals, evecs = _gram_eigh(gram)
    n = evals.shape[0]
    y = _targets(y, n)
    if y.ndim != 1:
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    ridges, scalar = _ridges(ridge, positive=True)
    coef2 = (evecs.T @ y) ** 2
    inv = 1.0 / (evals[None, :] / n + ridges[:, None])  # (R, N): spectrum of (K/N + λ)⁻¹
    num = (coef2 * inv**2).sum(axis=1) / n
    den = (inv.sum(axis=1) / n) ** 2
    return _shaped(num / den, scalar)


def gcv(gram, y, ridge):
    """Generalized cross-validation TrainMSE/(1 − df/N)², df = Tr K(K + NλI)⁻¹ (mean convention).

    Computed directly, one linear solve per ridge (no eigendecomposition), as an independent
    check of :func:`kare`. gram (N, N), y (N,), ridge > 0 float or (R,). Returns float / (R,).
    """
    k = _gram(gram)
    n = k.shape[0]
    y = _targets(y, n)
    if y.ndim != 1:
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    ridges, scalar = _ridges(ridge, positive=True)
    out = np.empty_like(ridges)
    eye = np.eye(n)
    for i, r in enumerate(ridges):
        a = k + n * r * eye
        hat = np.linalg.solve(a, k).T  # K(K + NλI)⁻¹ (both symmetric)
        resid = y - hat @ y
        out[i] = (resid @ resid / n) / (1.0 - np.trace(hat) / n) ** 2
    return _shaped(out, scalar)


def loo_risk(gram, y, ridge):
    """Exact leave-one-out error of KRR (mean convention, K + NλI), without refitting:
    (1/N)Σᵢ ([(K + NλI)⁻¹y]ᵢ / [(K + NλI)⁻¹]ᵢᵢ)². KARE/GCV is this with every diagonal entry
    [(K + NλI)⁻¹]ᵢᵢ replaced by their mean: the two differ where the points' leverages do.

    gram (N, N), y (N,), ridge > 0 float or (R,). Returns float / (R,) float64.
    """
    evals, evecs = _gram_eigh(gram)
    n = evals.shape[0]
    y = _targets(y, n)
    if y.ndim != 1:
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    ridges, scalar = _ridges(ridge, positive=True)
    inv = 1.0 / (evals[None, :] + n * ridges[:, None])  # (R, N) spectrum of (K + NλI)⁻¹
    resid = (inv * (evecs.T @ y)[None, :]) @ evecs.T  # (R, N): (K + NλI)⁻¹y
    diag = inv @ (evecs**2).T  # (R, N): diagonal of (K + NλI)⁻¹
    return _shaped(((resid / diag) ** 2).mean(axis=1), scalar)


def empirical_threshold(gram, ridge):
    """Data-driven signal-capture threshold ϑ̂ = 1/[(1/N)Tr(K/N + λ)⁻¹] (mean convention).

    gram (N, N), ridge > 0 float or (R,). Returns float / (R,) float64.
    """
    k = _gram(gram)
    evals = np.maximum(np.linalg.eigvalsh(0.5 * (k + k.T)), 0.0)
    n = evals.shape[0]
    ridges, scalar = _ridges(ridge, positive=True)
    trace = (1.0 / (evals[None, :] / n + ridges[:, None])).sum(axis=1) / n
    return _shaped(1.0 / trace, scalar)


def _ridge_scale(convention: str, n: int) -> float:
    """Factor turning the given ridge into the one added to the unnormalised Gram."""
    check_choice(convention, "convention", CONVENTIONS)
    return float(n) if convention == "mean" else 1.0


def _spectral_filter(evals: np.ndarray, added: np.ndarray) -> np.ndarray:
    """(R, N) spectrum of (K + aI)⁻¹ for each added ridge a; at a = 0 the pseudo-inverse
    (eigenvalues below N·eps·max are the null space of a singular Gram)."""
    floor = evals.shape[0] * np.finfo(float).eps * max(float(evals.max()), 0.0)
    denom = evals[None, :] + added[:, None]
    keep = denom > floor
    return np.where(keep, 1.0 / np.where(keep, denom, 1.0), 0.0)


def krr_coefficients(gram, y, ridge, *, convention: str):
    """Dual coefficients α of kernel ridge regression, f̂(x) = K(x, X)α, for one ridge or a
    grid of ridges from one ``eigh`` of K.

    convention="mean": α = (K + NλI)⁻¹y (loss (1/N)Σ(f − y)² + λ‖f‖²);
    convention="sum":  α = (K + λI)⁻¹y (loss Σ(f − y)² + λ‖f‖², the RF paper's).
    ridge = 0 gives the minimum-norm interpolant (pseudo-inverse of K).

    gram : (N, N).  y : (N,) or (N, k).  ridge : float >= 0 or array (R,).
    convention : "mean" or "sum" (required: the two differ by a factor N in λ).
    Returns (N,) / (N, k) for a scalar ridge, (R, N) / (R, N, k) for an array ridge.
    """
    evals, evecs = _gram_eigh(gram)
    n = evals.shape[0]
    y = _targets(y, n)
    ridges, scalar = _ridges(ridge, positive=False)
    filt = _spectral_filter(evals, _ridge_scale(convention, n) * ridges)  # (R, N)
    coef = evecs.T @ y  # (N,) or (N, k)
    if y.ndim == 1:
        alpha = (filt * coef[None, :]) @ evecs.T  # (R, N)
    else:
        alpha = np.einsum("in,rn,nk->rik", evecs, filt, coef)
    return alpha[0] if scalar else alpha


def krr_predict(gram, y, ridge, cross_gram=None, *, convention: str):
    """Kernel ridge regression predictions f̂(x) = K(x, X)α for one ridge or a grid of ridges.

    convention="mean": f̂(x) = K(x, X)(K + NλI)⁻¹y (loss (1/N)Σ(f − y)² + λ‖f‖²);
    convention="sum":  f̂(x) = K(x, X)(K + λI)⁻¹y (loss Σ(f − y)² + λ‖f‖², the RF paper's).
    ridge = 0 is the minimum-norm interpolant. One ``eigh`` of K serves every ridge
    (:func:`krr_coefficients`).

    Parameters
    ----------
    gram : (N, N) K(X, X).  y : (N,) or (N, k).  ridge : float >= 0 or array (R,).
    cross_gram : (M, N) K(x, X) at the M test points; None predicts on the training points.
    convention : "mean" or "sum" (required).

    Returns
    -------
    (M,) / (M, k) for a scalar ridge, (R, M) / (R, M, k) for an array ridge, float64.
    """
    k = _gram(gram)
    n = k.shape[0]
    cross = k if cross_gram is None else np.asarray(cross_gram, dtype=np.float64)
    if cross.ndim != 2 or cross.shape[1] != n or not np.isfinite(cross).all():
        raise ValueError(f"cross_gram must be a finite (M, {n}) array, got {cross.shape}")
    alpha = krr_coefficients(k, y, ridge, convention=convention)
    if np.ndim(ridge) == 0:
        return cross @ alpha
    return np.einsum("mn,rn...->rm...", cross, alpha)


# --- the SCT prediction -------------------------------------------------------------------------


@dataclass(frozen=True)
class RiskPrediction:
    """Signal-capture-threshold prediction of KRR at N samples (mean convention).

    Arrays have a leading ridge axis (R,) when the ridge was an array, none for a scalar.

    risk : ∂ϑ/∂λ · (bias + ε²), the expected risk against test labels with noise variance ε²
        (subtract ε² for the error against the noiseless target).
    threshold : ϑ, the effective ridge with n = N.  derivative : ∂ϑ/∂λ.
    bias : Σₖ mₖ (ϑ/(dₖ + ϑ))² cₖ², the squared distance of E f̂ from the target.
    coefficients : (K,) or (R, K) dₖ/(dₖ + ϑ)·cₖ, the expected predictor in the eigenbasis.
    """

    risk: np.ndarray | float
    threshold: np.ndarray | float
    derivative: np.ndarray | float
    bias: np.ndarray | float
    coefficients: np.ndarray


def predicted_risk(
    eigenvalues, coefficients, ridge, n, noise=0.0, *, multiplicities=None, tail: float = 0.0
):
    """The SCT risk of KRR from the population spectrum: R ≈ ∂ϑ/∂λ·(Σₖ(ϑ/(dₖ+ϑ))²cₖ² + ε²).

    Mean convention: KRR f̂_λ = K(x, X)(K + NλI)⁻¹y on N samples with labels f*(x) + noise,
    noise variance ε² = ``noise``²; dₖ the eigenvalues of T_K f = E_x[K(·, x)f(x)] and
    cₖ = ⟨f*, φₖ⟩ the target's coefficients in its orthonormal eigenbasis.

    Parameters
    ----------
    eigenvalues : (K,) dₖ >= 0.
    coefficients : (K,) cₖ. With ``multiplicities``, cₖ² is the target's energy in the whole
        eigenspace of dₖ (the bias uses cₖ² once, not mₖ times).
    ridge : λ >= 0, float or (R,).  n : N, the number of samples.
    noise : ε, the standard deviation of the label noise (>= 0).
    multiplicities : optional (K,) mₖ: dₖ counts mₖ times in ϑ.
    tail : trace of the eigenvalues left out of a truncated spectrum (see
        :func:`effective_ridge`); the target has no component there.

    Returns
    -------
    RiskPrediction (see its fields).
    """
    d, m = _spectrum(eigenvalues, multiplicities)
    c = _vector(coefficients, "coefficients")
    if c.shape != d.shape:
        raise ValueError(f"coefficients {c.shape} must have the shape of eigenvalues {d.shape}")
    noise = check_real(noise, "noise", minimum=0.0)
    theta, dtheta = effective_ridge(d, ridge, n, multiplicities=multiplicities, tail=tail)
    theta_arr = np.atleast_1d(np.asarray(theta, dtype=np.float64))
    dtheta_arr = np.atleast_1d(np.asarray(dtheta, dtype=np.float64))
    denom = d[None, :] + theta_arr[:, None]
    # dₖ = 0 at ϑ = 0: nothing captured (the component is lost), shrink 1.
    shrink = np.where(denom > 0, theta_arr[:, None] / np.where(denom > 0, denom, 1.0), 1.0)
    bias = ((shrink * c[None, :]) ** 2).sum(axis=1)
    risk = dtheta_arr * (bias + noise**2)
    expected = (1.0 - shrink) * c[None, :]
    scalar = np.ndim(ridge) == 0
    return RiskPrediction(
        risk=_shaped(risk, scalar),
        threshold=_shaped(theta_arr, scalar),
        derivative=_shaped(dtheta_arr, scalar),
        bias=_shaped(bias, scalar),
        coefficients=expected[0] if scalar else expected,
    )


# --- dot-product kernels on the sphere: exact targets and exact risks ---------------------------


def _unit(points, name: str = "points") -> np.ndarray:
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] < 2 or not np.isfinite(x).all():
        raise ValueError(f"{name} must be a finite (N, d) array with d >= 2, got {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has a zero row: it has no direction on the sphere")
    return x / norms


def zonal_sum(weights, d: int, t) -> np.ndarray:
    """Σₖ wₖ Pₖ(t), Pₖ the degree-k Gegenbauer polynomial of dimension d with Pₖ(1) = 1
    (as :func:`ntk_repro.spectral.sphere_polynomials`), by the three-term recurrence
    (k + d − 2)P_{k+1} = (2k + d − 2)tPₖ − kP_{k−1}, without storing every degree.

    weights : (K+1,).  d >= 2.  t : array of cosines in [−1, 1]. Returns float64 of t's shape.
    """
    w = _vector(weights, "weights")
    d = check_int(d, "d", minimum=2)
    t = np.asarray(t, dtype=np.float64)
    prev, cur = np.ones_like(t), t.copy()
    out = w[0] * prev + (w[1] * cur if w.size > 1 else 0.0)
    for k in range(1, w.size - 1):
        prev, cur = cur, ((2 * k + d - 2) * t * cur - k * prev) / (k + d - 2)
        out = out + w[k + 1] * cur
    return out


def harmonic_target(points, amplitudes) -> np.ndarray:
    """f*(x) = Σₖ aₖ Yₖ(x) with Yₖ(x) = √N(d, k)·Pₖ(x₁/‖x‖), the zonal harmonic of degree k
    around the first axis, normalised to E Yₖ² = 1 under the uniform measure on the sphere.

    Different degrees are orthogonal, so the target's energy in the eigenspace of degree k of
    any dot-product kernel is exactly aₖ² (the coefficient cₖ of :func:`predicted_risk`), and
    ‖f*‖² = Σₖ aₖ².

    points : (N, d), any radius.  amplitudes : (K+1,) aₖ for k = 0 … K. Returns (N,) float64.
    """
    u = _unit(points)
    a = _vector(amplitudes, "amplitudes")
    d = u.shape[1]
    scale = np.sqrt(multiplicities(d, a.size - 1).astype(np.float64))
    return zonal_sum(a * scale, d, u[:, 0])


def sphere_risk(points, alpha, eigenvalues, amplitudes):
    """Exact squared distance ‖f̂ − f*‖² under the uniform measure on the sphere S^{d−1}, of a
    kernel expansion f̂(x) = Σᵢ αᵢ κ(⟨xᵢ, x⟩/‖xᵢ‖‖x‖) from :func:`harmonic_target`'s f*.

    With μₖ the Funk–Hecke eigenvalues of κ (:func:`ntk_repro.spectral.funk_hecke`):
    ‖f̂ − f*‖² = αᵀG₂α − 2αᵀb + Σₖaₖ², G₂ᵢⱼ = Σₖ N(d, k)μₖ² Pₖ(⟨xᵢ, xⱼ⟩) (the kernel of T_K²)
    and b = T_K f* at the xᵢ = Σₖ μₖ aₖ Yₖ(xᵢ). Exact up to truncating G₂ at the last degree
    given (error <= μ_{K+1}·Σ_{k>K} N(d,k)μₖ·‖α‖₁²). Add ε² for test labels with noise ε.

    points : (N, d).  alpha : (N,) or (R, N) (e.g. :func:`krr_coefficients`, either
    convention).  eigenvalues : (K+1,) μₖ, k = 0 … K.  amplitudes : (J+1,) aₖ, J <= K.
    Returns a float, or (R,) float64.
    """
    u = _unit(points)
    n, d = u.shape
    mu = _vector(eigenvalues, "eigenvalues")
    a = _vector(amplitudes, "amplitudes")
    if a.size > mu.size:
        raise ValueError(f"amplitudes has degrees up to {a.size - 1}, eigenvalues {mu.size - 1}")
    alpha = np.asarray(alpha, dtype=np.float64)
    single = alpha.ndim == 1
    alpha = np.atleast_2d(alpha)
    if alpha.ndim != 2 or alpha.shape[1] != n or not np.isfinite(alpha).all():
        raise ValueError(f"alpha must be a finite ({n},) or (R, {n}) array, got {alpha.shape}")
    mults = multiplicities(d, mu.size - 1).astype(np.float64)
    cos = np.clip(u @ u.T, -1.0, 1.0)
    g2 = zonal_sum(mults * mu**2, d, cos)
    b = harmonic_target(u, a * mu[: a.size])
    risk = np.einsum("ri,ij,rj->r", alpha, g2, alpha) - 2.0 * alpha @ b + float(a @ a)
    return float(risk[0]) if single else risk


# --- random features ----------------------------------------------------------------------------


def gaussian_features(covariance, p: int, *, draws: int, seed) -> np.ndarray:
    """``draws`` independent sets of P Gaussian features with covariance K over the points.

    Each feature (column) is N(0, K) on the Q points of ``covariance`` (train and test points
    stacked), so (1/P)FFᵀ → K as P → ∞. K is factored once by ``eigh`` (negative eigenvalues
    of a PSD K are rounding, clipped at 0).

    covariance : (Q, Q).  p : P >= 1.  draws : D >= 1.  seed : int or numpy Generator.
    Returns F: (D, Q, P) float64.
    """
    evals, evecs = _gram_eigh(covariance)
    p = check_int(p, "p", minimum=1)
    draws = check_int(draws, "draws", minimum=1)
    root = evecs * np.sqrt(evals)  # K = root rootᵀ
    g = as_generator(seed).standard_normal((draws, evals.shape[0], p))
    return np.matmul(root, g)


def _stack(x, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or 0 in arr.shape or (n is not None and arr.shape[1] != n):
        rows = "N" if n is None else str(n)
        raise ValueError(f"{name} must have shape ({rows}, P) or (D, {rows}, P), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def rf_predict(features_train, y, ridge, features_test=None, *, convention: str):
    """Random-feature ridge regression f^RF(x) = F̃(x)F̃ᵀ(F̃F̃ᵀ + aI)⁻¹y, F̃ = F/√P.

    convention="sum": a = λ (the RF paper's, against the unnormalised feature Gram F̃F̃ᵀ);
    convention="mean": a = Nλ (as KRR's mean convention). ridge = 0 is the minimum-norm
    least-squares fit (pseudo-inverse). Works for any features: Gaussian ones from
    :func:`gaussian_features` (E F̃F̃ᵀ = K) or real ones, e.g. √2·max(0, Wx) of a random layer.
    The smaller of F̃F̃ᵀ (N×N) and F̃ᵀF̃ (P×P, by F̃ᵀ(F̃F̃ᵀ + a)⁻¹ = (F̃ᵀF̃ + a)⁻¹F̃ᵀ) is solved,
    one batched solve per ridge.

    Parameters
    ----------
    features_train : (N, P) or (D, N, P) raw features F of D independent draws.
    y : (N,) or (N, k) labels (shared by the draws).
    ridge : float >= 0 or array (R,).
    features_test : (M, P) or (D, M, P); None predicts on the training points.
    convention : "sum" or "mean" (required).

    Returns
    -------
    (D, R, M) or (D, R, M, k) float64; the R axis is dropped for a scalar ridge and the D
    axis for 2-D features.
    """
    single = np.ndim(features_train) == 2
    ftr = _stack(features_train, "features_train")
    d, n, p = ftr.shape
    fte = ftr if features_test is None else _stack(features_test, "features_test")
    if fte.shape[0] != d or fte.shape[2] != p:
        raise ValueError(f"features_test {fte.shape} must match features_train {ftr.shape}")
    y = _targets(y, n)
    ridges, scalar = _ridges(ridge, positive=False)
    added = _ridge_scale(convention, n) * ridges
    ftr, fte = ftr / np.sqrt(p), fte / np.sqrt(p)
    yy = np.broadcast_to((y[:, None] if y.ndim == 1 else y)[None], (d, n, y.size // n))
    small_p = p < n
    if small_p:  # weights w = (F̃ᵀF̃ + a)⁻¹F̃ᵀy, prediction F̃(x)w
        gram = ftr.transpose(0, 2, 1) @ ftr
        rhs = ftr.transpose(0, 2, 1) @ yy
    else:  # dual α = (F̃F̃ᵀ + a)⁻¹y, prediction F̃(x)F̃ᵀα
        gram = ftr @ ftr.transpose(0, 2, 1)
        rhs = yy
    eye = np.eye(gram.shape[1])
    out = []
    for a in added:
        if a > 0:
            sol = np.linalg.solve(gram + a * eye, rhs)
        else:  # ridgeless: the minimum-norm solution
            sol = np.linalg.pinv(gram, hermitian=True) @ rhs
        weights = sol if small_p else ftr.transpose(0, 2, 1) @ sol
        out.append(fte @ weights)  # (D, M, k)
    pred = np.stack(out, axis=1)  # (D, R, M, k)
    if y.ndim == 1:
        pred = pred[..., 0]
    if scalar:
        pred = pred[:, 0]
    return pred[0] if single else pred


def rf_variance(gram, cross_gram, test_diagonal, y, ridge, p):
    """Predicted variance over the feature draw of the RF predictor (sum convention, K + λI).

    Var_F f^RF(x) ≈ ∂λ̃/∂λ · yᵀK(K + λ̃)⁻²y / P ·
        [K(x, x) − k_xᵀ(K + λ̃)⁻¹k_x − λ̃ k_xᵀ(K + λ̃)⁻²k_x],
    with λ̃ = :func:`effective_ridge` (dᵢ of K, n = P) and k_x = K(X, x). This formula is the
    project's own derivation, checked by Monte Carlo (docs/generalization.md); it is accurate
    away from P ≈ N at small λ, where it under-predicts.

    gram : (N, N).  cross_gram : (M, N).  test_diagonal : (M,) K(x, x).  y : (N,).
    ridge : λ >= 0 (float).  p : P.  Returns (M,) float64.
    """
    evals, evecs = _gram_eigh(gram)
    n = evals.shape[0]
    y = _targets(y, n)
    if y.ndim != 1:
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    ridge = check_real(ridge, "ridge", minimum=0.0)
    p = check_int(p, "p", minimum=1)
    cross = np.asarray(cross_gram, dtype=np.float64)
    diag = _vector(test_diagonal, "test_diagonal")
    if cross.shape != (diag.shape[0], n):
        raise ValueError(f"cross_gram must have shape ({diag.shape[0]}, {n}), got {cross.shape}")
    lt, dlt = effective_ridge(evals, ridge, p)
    inv = _spectral_filter(evals, np.array([lt]))[0]  # spectrum of (K + λ̃)⁻¹
    coef = evecs.T @ y
    scale = dlt * float((evals * inv**2 * coef**2).sum()) / p
    proj = cross @ evecs  # k_xᵀU
    shape = diag - (proj**2 * inv).sum(axis=1) - lt * (proj**2 * inv**2).sum(axis=1)
    return scale * shape


__all__ = [
    "CONVENTIONS",
    "RiskPrediction",
    "effective_ridge",
    "empirical_threshold",
    "gaussian_features",
    "gcv",
    "harmonic_target",
    "kare",
    "krr_coefficients",
    "krr_predict",
    "loo_risk",
    "predicted_risk",
    "rf_predict",
    "rf_variance",
    "sphere_risk",
    "zonal_sum",
]
