"""The Hermite-series (dual activation) kernels of equal-norm inputs against the quadrature
and closed-form paths of ntk_repro.kernels, its coefficients against exact cases, and the
refusal of a series that has not converged."""

import math

import numpy as np
import pytest
import torch

from ntk_repro import dual
from ntk_repro.activations import get_activation
from ntk_repro.kernels import kernels_of_cosine

COSINES = np.cos(np.linspace(0.0, math.pi, 9))


@pytest.mark.parametrize(
    "spec, beta, parametrization, sq_norm",
    [
        ("normalized:tanh(0.5z)", 0.5, "balanced", 1.0),
        ("tanh", 0.3, "ntk2018", 1.0),
        ("tanh(0.3z)", 0.1, "ntk2018", 2.5),
        ("softplus", 0.2, "balanced", 0.7),
    ],
)
def test_matches_the_quadrature_path(spec, beta, parametrization, sq_norm):
    kw = dict(depth=4, beta=beta, activation=spec, parametrization=parametrization)
    got = dual.kernels_of_cosine(COSINES, sq_norm=sq_norm, **kw)
    want = kernels_of_cosine(COSINES, sq_norm=sq_norm, method="quadrature", **kw)
    for g, w in zip(got, want):
        # Both paths are accurate to ~1e-15 per layer (measured ≤ 1e-14 relative here).
        assert np.abs(g - w).max() <= 1e-13 * np.abs(w).max(), (spec, np.abs(g - w).max())


def test_matches_the_closed_form_of_normalised_erf():
    kw = dict(depth=6, beta=0.8, activation="normalized:erf", parametrization="balanced")
    got, want = dual.kernels_of_cosine(COSINES, **kw), kernels_of_cosine(COSINES, **kw)
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= 1e-13 * np.abs(w).max()


def test_all_depths_stacks_the_single_depth_results():
    kw = dict(beta=0.5, activation="normalized:tanh(0.5z)", parametrization="balanced")
    cos = COSINES.reshape(3, 3)
    sigmas, thetas = dual.kernels_of_cosine(cos, depth=5, all_depths=True, **kw)
    assert sigmas.shape == thetas.shape == (5, 3, 3)
    for depth in range(1, 6):
        sigma, theta = dual.kernels_of_cosine(cos, depth=depth, **kw)
        assert np.array_equal(sigma, sigmas[depth - 1]) and np.array_equal(theta, thetas[depth - 1])


def test_coefficients_of_exact_cases():
    q = 1.7
    # σ(z) = z: σ(√q z) = √q h_1(z).
    identity = dual.hermite_coefficients(get_activation("identity"), q, terms=6)
    np.testing.assert_allclose(identity, [0, math.sqrt(q), 0, 0, 0, 0, 0], atol=1e-14)
    # An odd σ has only odd coefficients; Parseval: Σ a_k² = E σ(√q z)².
    tanh = dual.hermite_coefficients(get_activation("tanh(0.5z)"), q)
    assert np.abs(tanh[::2]).max() <= 1e-16
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    samples = torch.tanh(0.5 * math.sqrt(q) * z) ** 2
    mc, se = float(samples.mean()), float(samples.std()) / math.sqrt(len(z))
    assert abs(np.sum(tanh**2) - mc) <= 5 * se


@pytest.mark.parametrize("spec", ["relu", "scaled_relu", "erf(2z)"])
def test_a_series_that_has_not_converged_is_refused(spec):
    # ReLU's coefficients fall like k^(-5/4); erf(2z)'s like (8/9)^(k/2): not enough in 200.
    with pytest.raises(ValueError, match="activation .* has not converged"):
        dual.kernels_of_cosine(COSINES, depth=3, beta=0.1, activation=spec)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(cosine=[1.5]), "cosine"),
        (dict(cosine=[float("nan")]), "cosine"),
        (dict(depth=0), "depth"),
        (dict(beta=1.5), "beta"),
        (dict(sq_norm=0.0), "sq_norm"),
        (dict(activation="tanh(-1z)"), "activation"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, word):
    args = dict(cosine=COSINES, depth=3, beta=0.1, activation="tanh") | kwargs
    with pytest.raises(ValueError, match=word):
        dual.kernels_of_cosine(args.pop("cosine"), **args)
    with pytest.raises(ValueError, match="terms"):
        dual.hermite_coefficients(get_activation("tanh"), 1.0, terms=dual.TERMS + 1)
