"""Funk–Hecke eigenvalues of dot-product kernels on the sphere: closed forms, Gram matrices,
multiplicities, quadrature."""

import math

import numpy as np
import pytest
import scipy.special

from ntk_repro import spectral
from ntk_repro.data import sphere_points
from ntk_repro.freeze_chaos import Network, ntk_of_cosine


def _recurrence(max_degree, d, t):
    """P_k of dimension d from (k+2λ)P_{k+1} = 2(k+λ)tP_k − kP_{k−1}, λ = (d−2)/2, P_0 = 1,
    P_1 = t: independent of scipy's Gegenbauer routine."""
    lam = (d - 2) / 2.0
    out = [np.ones_like(t), t.copy()]
    for k in range(1, max_degree):
        out.append((2 * (k + lam) * t * out[k] - k * out[k - 1]) / (k + 2 * lam))
    return np.stack(out[: max_degree + 1])


@pytest.mark.parametrize("d", [2, 3, 4, 7])
def test_polynomials_match_recurrence_and_are_orthogonal(d):
    t = np.linspace(-1, 1, 101)
    polys = spectral.sphere_polynomials(12, d, t)
    np.testing.assert_allclose(polys, _recurrence(12, d, t), atol=1e-12)
    np.testing.assert_allclose(spectral.sphere_polynomials(12, d, np.array([1.0]))[:, 0], 1.0)
    # E[P_k P_l] = δ_kl / N(d, k) under the law of t (addition theorem).
    nodes, weights = spectral.cosine_quadrature(d, 64)
    p = spectral.sphere_polynomials(12, d, nodes)
    gram = (p * weights) @ p.T
    np.testing.assert_allclose(gram, np.diag(1.0 / spectral.multiplicities(d, 12)), atol=1e-13)


def test_multiplicities():
    assert [spectral.multiplicity(3, k) for k in range(6)] == [1, 3, 5, 7, 9, 11]
    assert [spectral.multiplicity(2, k) for k in range(5)] == [1, 2, 2, 2, 2]
    assert spectral.multiplicity(5, 2) == (5 + 2) * (5 - 1) // 2
    # Harmonics of degree <= K span the polynomials of degree <= K on the sphere.
    for d, top in ((3, 6), (4, 5), (10, 3)):
        total = int(spectral.multiplicities(d, top).sum())
        assert total == math.comb(top + d - 1, d - 1) + math.comb(top + d - 2, d - 1)


def test_cosine_quadrature_is_the_law_of_the_cosine():
    for d in (2, 3, 8):
        t, w = spectral.cosine_quadrature(d, 40)
        assert abs(w.sum() - 1.0) < 1e-13
        assert abs((w * t * t).sum() - 1.0 / d) < 1e-13  # E t² = 1/d
        assert abs((w * t**4).sum() - 3.0 / (d * (d + 2))) < 1e-13


@pytest.mark.parametrize("d", [2, 3, 5])
def test_known_kernels_closed_forms(d):
    linear = spectral.funk_hecke(lambda t: t, d, 6, nodes=16).eigenvalues
    np.testing.assert_allclose(linear, [0, 1 / d, 0, 0, 0, 0, 0], atol=1e-14)
    square = spectral.funk_hecke(lambda t: t * t, d, 6, nodes=16).eigenvalues
    np.testing.assert_allclose(square, [1 / d, 0, 2 / (d * (d + 2)), 0, 0, 0, 0], atol=1e-14)
    # e^t: μ_k = Γ(d/2) 2^{d/2−1} I_{k+d/2−1}(1).
    fh = spectral.funk_hecke(np.exp, d, 15, nodes=64)
    k = np.arange(16)
    exact = math.gamma(d / 2) * 2 ** (d / 2 - 1) * scipy.special.iv(k + d / 2 - 1, 1.0)
    # Absolute: the sum Σ w κ P of terms up to e cancels down to μ_k, rounding at ~n·eps·e.
    np.testing.assert_allclose(fh.eigenvalues, exact, rtol=1e-12, atol=64 * 2.2e-16 * math.e)
    # Mercer: κ(1) = Σ N(d,k) μ_k (the tail beyond k = 15 is below 1e-16; each μ_k carries a
    # rounding of ~n·eps·e, times its multiplicity).
    rounding = fh.multiplicities.sum() * 64 * 2.2e-16 * math.e
    assert abs((fh.multiplicities * fh.eigenvalues).sum() - math.e) < rounding


def test_circle_eigenvalues_are_the_dft_of_equispaced_points():
    """On a grid of N equispaced circle points the Gram is circulant: its eigenvalues / N are
    the discrete cosine sums, which converge exponentially to μ_k for a smooth κ."""
    n = 64
    gamma = 2 * np.pi * np.arange(n) / n
    column = np.exp(np.cos(gamma))
    dft = np.array([np.mean(column * np.cos(k * gamma)) for k in range(8)])
    fh = spectral.funk_hecke(np.exp, 2, 7, nodes=64)
    np.testing.assert_allclose(fh.eigenvalues, dft, atol=1e-14)
    x = np.stack([np.cos(gamma), np.sin(gamma)], 1) * math.sqrt(2)
    gram = spectral.gram_eigenvalues(np.exp, x)
    values, _ = fh.expanded(15)
    np.testing.assert_allclose(gram[:15], values, atol=1e-13)


def test_polynomial_kernel_gram_has_the_rank_of_its_harmonics():
    x = sphere_points(60, 3, seed=3)
    eig = spectral.gram_eigenvalues(lambda t: t * t, x)
    rank = int((eig > 1e-12 * eig[0]).sum())
    assert rank == spectral.multiplicity(3, 0) + spectral.multiplicity(3, 2)
    # tr(Gram)/N = κ(1) exactly, = Σ N(d,k) μ_k.
    assert abs(eig.sum() - 1.0) < 1e-12


@pytest.mark.parametrize("kernel", ["exp", "relu_ntk", "chaos_ntk"])
def test_gram_eigenvalues_lie_in_the_sampling_bands(kernel):
    d, n = 3, 600
    kappa = {
        "exp": np.exp,
        "relu_ntk": lambda t: ntk_of_cosine(Network("e", "edge", "scaled_relu", 0.0), 4, t),
        "chaos_ntk": lambda t: ntk_of_cosine(Network("c", "chaos", "normalized:relu", 0.1), 4, t),
    }[kernel]
    fh = spectral.funk_hecke(kappa, d, 12, nodes=1024)
    trace = float(kappa(np.array([1.0]))[0])
    tol = spectral.degree_tolerance(fh.eigenvalues, fh.multiplicities, trace, n)
    bands = spectral.sorted_bands(fh.eigenvalues, fh.multiplicities, tol + fh.quadrature_error, 49)
    for seed in range(2):
        eig = spectral.gram_eigenvalues(kappa, sphere_points(n, d, seed=seed))
        score = spectral.band_score(eig, bands)
        assert np.abs(score).max() <= 1.0, (kernel, seed, np.abs(score).max())
    # The bands are O(1/√N): the top eigenvalue is pinned to a few percent.
    assert (bands["upper"][0] - bands["lower"][0]) / bands["center"][0] < 0.5


def test_quadrature_error_estimate_shrinks_for_the_relu_ntk():
    kappa = lambda t: ntk_of_cosine(Network("e", "edge", "scaled_relu", 0.0), 3, t)  # noqa: E731
    coarse = spectral.funk_hecke(kappa, 2, 10, nodes=256)
    fine = spectral.funk_hecke(kappa, 2, 10, nodes=2048)
    assert fine.quadrature_error.max() < 0.05 * coarse.quadrature_error.max()
    # The estimate bounds the actual error of the coarse rule (reference: the fine rule).
    assert np.all(np.abs(coarse.eigenvalues - fine.eigenvalues) <= coarse.quadrature_error * 1.01)


def test_validation():
    with pytest.raises(ValueError, match="dimension d"):
        spectral.multiplicity(1, 2)
    with pytest.raises(ValueError, match="degree"):
        spectral.multiplicity(3, -1)
    with pytest.raises(ValueError, match="kappa"):
        spectral.funk_hecke(lambda t: np.ones(3), 3, 2, nodes=8)
    with pytest.raises(ValueError, match="zero row"):
        spectral.cosines(np.zeros((2, 3)))


def test_cosines_refuse_complex_and_nonfinite_points():
    with pytest.raises(ValueError, match="x must be real"):
        spectral.cosines(np.ones((3, 2)) + 1j)
    with pytest.raises(ValueError, match="x contains NaN"):
        spectral.cosines(np.array([[1.0, np.nan], [0.0, 1.0]]))
