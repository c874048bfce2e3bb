"""Activations with a gain, σ_g(z) = σ(g·z): closed forms vs quadrature vs Monte Carlo,
derivatives vs autograd, the homogeneity of ReLU, normalisation, the small-gain asymptote of
normalised tanh, and strict parsing of the spec."""

import math

import numpy as np
import pytest
import torch

from ntk_repro import kernels
from ntk_repro.activations import get_activation, standard_moments
from ntk_repro.gauss import expect_1d, expect_2d
from ntk_repro.kernels import kernel_matrices, theta_inf

F64 = torch.float64
GAINS = (0.3, 0.5, 2.0)
CLOSED_FORM_FAMILIES = ("erf", "relu", "normalized:erf", "scaled_relu", "normalized:relu")


def _gained(spec: str, gain: float) -> str:
    return f"{spec}({gain}z)"


def _covariances():
    """(q1, q2, c) at a few variances and correlations, including ρ = ±1 and ρ → 1."""
    q1 = torch.tensor([0.3, 1.0, 2.5, 1.0, 0.7, 4.0, 1.3], dtype=F64)
    q2 = torch.tensor([1.7, 1.0, 0.4, 1.0, 0.7, 0.2, 1.3], dtype=F64)
    rho = torch.tensor([0.3, 1.0, -0.6, -1.0, 1 - 1e-7, 0.9, 0.0], dtype=F64)
    return q1, q2, rho * torch.sqrt(q1 * q2)


@pytest.mark.parametrize("family", CLOSED_FORM_FAMILIES)
@pytest.mark.parametrize("gain", GAINS)
def test_closed_form_pair_matches_quadrature(family, gain):
    act = get_activation(_gained(family, gain))
    assert act.gain == gain and act.has_closed_form
    q1, q2, c = _covariances()
    cross, dcross = act.closed_form_pair(q1, q2, c)
    for exact, f in ((cross, act), (dcross, act.derivative)):
        quad = expect_2d(f, f, q1, q2, c)
        # Relative to the Cauchy–Schwarz scale √(E f(u)² E f(v)²) (see test_kernels).
        scale = torch.sqrt(expect_2d(f, f, q1, q1, q1) * expect_2d(f, f, q2, q2, q2))
        err = ((exact - quad).abs() / scale).max().item()
        assert err <= 1e-8, (family, gain, err)


@pytest.mark.parametrize("family", CLOSED_FORM_FAMILIES)
def test_closed_form_mean_matches_quadrature(family):
    act = get_activation(_gained(family, 2.0))
    q = torch.tensor([0.1, 1.0, 3.0], dtype=F64)
    np.testing.assert_allclose(act.closed_form_mean(q), expect_1d(act, q), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "spec, orders",
    [
        ("tanh(0.5z)", 3),
        ("normalized:tanh(0.5z)", 3),
        ("erf(2z)", 3),
        ("normalized:erf(0.3z)", 3),
        ("softplus(3z)", 3),
        ("relu(2z)", 1),
        ("normalized:relu(0.5z)", 1),
    ],
)
def test_derivatives_match_autograd(spec, orders):
    act = get_activation(spec)
    # Points away from 0, where ReLU's derivative jumps.
    z = torch.linspace(-3.0, 3.0, 40, dtype=F64) + 0.0123
    z.requires_grad_(True)
    methods = (act.derivative, act.second_derivative, act.third_derivative)
    out = act(z)
    for order in range(orders):
        (grad,) = torch.autograd.grad(out.sum(), z, create_graph=True)
        np.testing.assert_allclose(
            methods[order](z).detach(), grad.detach(), rtol=1e-12, atol=1e-12
        )
        out = grad


@pytest.mark.parametrize("parametrization", ["ntk2018", "balanced"])
def test_relu_with_gain_is_relu_times_gain(parametrization):
    # relu(g z) = g·relu(z): relu(√2 z) is scaled_relu. The gained spec runs through the torch
    # layer map, scaled_relu through the fused numpy tiles: two code paths, one kernel.
    x = np.random.default_rng(0).standard_normal((12, 4))
    kw = dict(depth=4, beta=0.3, parametrization=parametrization)
    gained = kernel_matrices(x, activation=f"relu({math.sqrt(2.0)!r}z)", **kw)
    scaled = kernel_matrices(x, activation="scaled_relu", **kw)
    for key in ("nngp", "ntk"):
        np.testing.assert_allclose(gained[key], scaled[key], rtol=1e-12)
    # and the Gaussian pair of relu(g·) is g² times that of relu.
    q1, q2, c = _covariances()
    for g in GAINS:
        pair = get_activation(_gained("relu", g)).closed_form_pair(q1, q2, c)
        base = get_activation("relu").closed_form_pair(q1, q2, c)
        np.testing.assert_allclose(pair[0], g * g * base[0], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(pair[1], g * g * base[1], rtol=1e-13)


@pytest.mark.parametrize("spec", ["erf(2z)", "normalized:relu(0.5z)", "scaled_relu(3z)"])
def test_gain_leaves_the_fused_path_and_matches_quadrature(spec):
    act = get_activation(spec)
    assert not kernels._fused_applies(act, "auto", torch.device("cpu"))
    x = np.random.default_rng(1).standard_normal((10, 3))
    kw = dict(depth=3, beta=0.2, activation=spec, parametrization="balanced")
    closed = kernel_matrices(x, **kw)
    quad = kernel_matrices(x, method="quadrature", **kw)
    for key in ("nngp", "ntk"):
        assert np.abs(closed[key] - quad[key]).max() <= 1e-8 * np.abs(closed[key]).max()


@pytest.mark.parametrize("spec", ["relu", "normalized:erf", "tanh", "normalized:tanh"])
def test_gain_one_computes_exactly_what_the_bare_name_does(spec):
    assert get_activation(f"{spec}(1z)").gain == 1.0
    assert standard_moments(f"{spec}(1.0z)") == standard_moments(spec)
    x = np.random.default_rng(2).standard_normal((6, 3))
    kw = dict(depth=3, beta=0.4, parametrization="balanced")
    assert np.array_equal(
        theta_inf(x, activation=f"{spec}(1z)", **kw), theta_inf(x, activation=spec, **kw)
    )


@pytest.mark.parametrize("gain", [0.1, 0.5, 3.0])
def test_normalized_tanh_with_gain_is_standardised(gain):
    m = standard_moments(f"normalized:tanh({gain}z)")
    assert abs(m["mean"]) < 1e-15
    assert m["second"] == pytest.approx(1.0, rel=1e-12)
    # Gaussian Poincaré: E σ̄'² > Var σ̄ = 1 for a non-affine σ.
    assert m["grad_second"] > 1.0


def test_small_gain_asymptote_of_normalised_tanh():
    # tanh x = x − x³/3 + 2x⁵/15 − …: the Gaussian moments of σ = tanh(g z) and its derivative,
    # E σ² = g² − 2g⁴ + 17g⁶/3 − … and E σ'² = g² − 2g⁴ + 7g⁶ − …, give
    #   E σ̄'² − 1 = E σ'²/E σ² − 1 = (4/3)g⁴ − 8g⁶ + (2324/45)g⁸ − …
    # (in Hermite terms, 2c₃²/c₁² with c₁ ≈ g, c₃ ≈ −2g³/√6 at leading order).
    gains = np.array([0.2, 0.1, 0.05, 0.025])
    excess = np.array(
        [standard_moments(f"normalized:tanh({g}z)")["grad_second"] - 1 for g in gains]
    )
    leading = 4.0 / 3.0 * gains**4
    rel = np.abs(excess / leading - 1.0)
    # The relative error of the leading term is 6g² at leading order: it shrinks 4× per halving.
    np.testing.assert_allclose(rel, 6.0 * gains**2, rtol=0.35)
    assert all(a > b for a, b in zip(rel, rel[1:]))
    # With the next two terms the remainder is of order g¹⁰ (coefficient −1112/3).
    three_terms = leading - 8.0 * gains**6 + 2324.0 / 45.0 * gains**8
    assert (np.abs(excess - three_terms) <= 1112.0 / 3.0 * gains**10).all()


def test_empirical_gain_equals_scaling_the_weights():
    # σ(g·(Wx + b)) is the layer with weights g·W and bias g·b: the definition of a gain.
    gen = torch.Generator().manual_seed(5)
    w, b, x = (torch.randn(*s, generator=gen, dtype=F64) for s in ((4, 3), (4,), (7, 3)))
    act, plain = get_activation("tanh(0.5z)"), get_activation("tanh")
    np.testing.assert_allclose(act(x @ w.T + b), plain(x @ (0.5 * w).T + 0.5 * b), rtol=1e-14)


@pytest.mark.parametrize(
    "spec",
    [
        "tanh(0z)",
        "tanh(-0.5z)",
        "tanh(z)",
        "tanh(0.5)",
        "tanh(0.5x)",
        "tanh(1e999z)",
        "tanh(nanz)",
        "tanh(infz)",
        "tanh (0.5z)",
        "tanh(0.5z",
        "tanh(0.5z)(2z)",
        "normalized:(0.5z)",
        "foo(2z)",
        "tanh(0.5 z)",
    ],
)
def test_bad_specs_raise_naming_activation(spec):
    with pytest.raises(ValueError, match="activation") as info:
        get_activation(spec)
    assert "\n" not in str(info.value)
