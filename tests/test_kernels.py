"""Analytic kernels: closed form vs quadrature vs Monte Carlo, exact special cases, validation."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

from ntk_repro import kernels
from ntk_repro.activations import get_activation, standard_moments
from ntk_repro.gauss import expect_1d, expect_2d
from ntk_repro.kernels import kernel_matrices, kernels_of_cosine, nngp, theta_inf

CLOSED_FORM = [
    "relu",
    "scaled_relu",
    "erf",
    "identity",
    "normalized:relu",
    "normalized:erf",
    "normalized:identity",
]
ALL = CLOSED_FORM + ["tanh", "normalized:tanh"]


def _covariances(n=400, seed=0):
    """Random 2×2 covariances, including the ill-conditioned ρ = ±1 and ρ → 1 cases."""
    g = torch.Generator().manual_seed(seed)
    q1 = torch.rand(n, generator=g, dtype=torch.float64) * 6 + 0.02
    q2 = torch.rand(n, generator=g, dtype=torch.float64) * 6 + 0.02
    rho = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    rho[:10], rho[10:20], rho[20:30], rho[30:40] = 1.0, -1.0, 1 - 1e-7, -1 + 1e-5
    q2[:20] = q1[:20]
    c = rho * torch.sqrt(q1 * q2)
    c[:10] = q1[:10]  # exactly the diagonal case c = q1 = q2
    return q1, q2, c


@pytest.mark.parametrize("spec", CLOSED_FORM)
def test_closed_form_matches_quadrature(spec):
    act = get_activation(spec)
    q1, q2, c = _covariances()
    for closed, f in ((act.closed_form_cross, act), (act.closed_form_dcross, act.derivative)):
        exact = closed(q1, q2, c)
        quad = expect_2d(f, f, q1, q2, c)
        # Relative to the Cauchy–Schwarz scale √(E f(u)² E f(v)²), which stays meaningful
        # where the expectation itself vanishes (ρ = −1 for ReLU).
        scale = torch.sqrt(closed(q1, q1, q1) * closed(q2, q2, q2))
        err = ((exact - quad).abs() / scale).max().item()
        assert err <= 1e-8, f"{spec}: {err:.2e}"


# With gains (tanh(0.5z): a gain on the pre-activation) the quadrature is the only path.
@pytest.mark.parametrize(
    "spec",
    ["tanh", "normalized:tanh", "relu", "erf", "tanh(0.5z)", "normalized:tanh(0.5z)", "tanh(3z)"],
)
def test_quadrature_matches_monte_carlo(spec):
    act = get_activation(spec)
    q1, q2, c = (
        torch.tensor(v, dtype=torch.float64)
        for v in ([0.7, 2.5, 1.3], [1.1, 0.4, 1.3], [0.5, -0.6, 1.29])
    )
    g = torch.Generator().manual_seed(1)
    n = 400_000
    z = torch.randn(2, n, 1, generator=g, dtype=torch.float64)
    rho = c / torch.sqrt(q1 * q2)
    u = torch.sqrt(q1) * z[0]
    v = torch.sqrt(q2) * (rho * z[0] + torch.sqrt(1 - rho**2) * z[1])
    for f in (act, act.derivative):
        samples = f(u) * f(v)
        mc, se = samples.mean(0), samples.std(0) / math.sqrt(n)
        quad = expect_2d(f, f, q1, q2, c)
        assert ((mc - quad).abs() <= 5 * se + 1e-12).all(), (spec, mc, quad, se)


@pytest.mark.parametrize("spec", ALL)
def test_standard_moments_match_scipy(spec):
    act = get_activation(spec)
    density = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731

    def integral(fn):
        val = lambda z: float(fn(torch.tensor(z, dtype=torch.float64))) * density(z)  # noqa: E731
        return sum(
            scipy.integrate.quad(val, a, b, epsabs=1e-13, epsrel=1e-13)[0]
            for a, b in ((-np.inf, 0), (0, np.inf))
        )

    m = standard_moments(spec)
    assert m["mean"] == pytest.approx(integral(act), abs=1e-10)
    assert m["second"] == pytest.approx(integral(lambda z: act(z) ** 2), rel=1e-10)
    assert m["grad_second"] == pytest.approx(integral(lambda z: act.derivative(z) ** 2), rel=1e-10)
    if spec.startswith("normalized:"):
        assert abs(m["mean"]) < 1e-12 and m["second"] == pytest.approx(1.0, rel=1e-12)


def test_expect_1d_on_variance_grid():
    q = torch.tensor([0.1, 1.0, 7.0], dtype=torch.float64)
    got = expect_1d(lambda u: torch.relu(u) ** 3, q)
    # E relu(u)^3 = q^{3/2} · 2/√(2π)
    np.testing.assert_allclose(
        got.numpy(), q.numpy() ** 1.5 * 2 / math.sqrt(2 * math.pi), rtol=1e-12
    )


@pytest.mark.parametrize("spec", ["relu", "erf", "normalized:relu", "scaled_relu"])
@pytest.mark.parametrize("parametrization", ["ntk2018", "balanced"])
def test_gram_closed_form_matches_quadrature(spec, parametrization):
    x = np.random.default_rng(3).standard_normal((12, 4))
    kw = dict(depth=4, beta=0.3, activation=spec, parametrization=parametrization)
    a = kernel_matrices(x, **kw)
    b = kernel_matrices(x, method="quadrature", **kw)
    for key in ("nngp", "ntk"):
        assert np.abs(a[key] - b[key]).max() <= 1e-8 * np.abs(a[key]).max()


def test_identity_network_has_exact_kernel():
    x = np.random.default_rng(0).standard_normal((7, 3))
    L, beta = 5, 0.4
    lin = x @ x.T / 3
    np.testing.assert_allclose(
        nngp(x, depth=L, beta=beta, activation="identity"), lin + L * beta**2, rtol=1e-13
    )
    np.testing.assert_allclose(
        theta_inf(x, depth=L, beta=beta, activation="identity"),
        L * lin + L * (L + 1) / 2 * beta**2,
        rtol=1e-13,
    )


def test_relu_diagonal_halves_each_layer_and_depth_one_is_linear():
    x = np.random.default_rng(0).standard_normal((5, 3))
    sq = (x**2).sum(1) / 3
    for L in (1, 2, 4):
        np.testing.assert_allclose(
            np.diag(nngp(x, depth=L, beta=0.0)), sq / 2 ** (L - 1), rtol=1e-13
        )
    k1 = theta_inf(x, depth=1, beta=0.2, parametrization="balanced")
    np.testing.assert_allclose(k1, (1 - 0.04) * x @ x.T / 3 + 0.04, rtol=1e-13)


def test_gram_is_symmetric_psd_and_consistent_across_tiles(monkeypatch):
    x = np.random.default_rng(5).standard_normal((40, 6))
    full = kernel_matrices(x, depth=3, beta=0.1)
    cross = kernel_matrices(x, x, depth=3, beta=0.1)
    monkeypatch.setattr(kernels, "_TILE", 7)
    tiled = kernel_matrices(x, depth=3, beta=0.1)
    for key in ("nngp", "ntk"):
        k = full[key]
        assert np.array_equal(k, k.T)
        assert np.linalg.eigvalsh(k).min() > -1e-12 * np.abs(k).max()
        np.testing.assert_allclose(cross[key], k, rtol=1e-12)
        np.testing.assert_allclose(tiled[key], k, rtol=1e-12)


def test_rectangular_block_matches_full_gram():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((9, 3)), rng.standard_normal((4, 3))
    both = theta_inf(np.vstack([x, y]), depth=3, beta=0.2, activation="erf")
    np.testing.assert_allclose(
        theta_inf(x, y, depth=3, beta=0.2, activation="erf"), both[:9, 9:], rtol=1e-12
    )


def test_cosine_form_matches_gram_on_sphere():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 5))
    x *= np.sqrt(5) / np.linalg.norm(x, axis=1, keepdims=True)
    for spec in ("relu", "tanh"):
        kw = dict(depth=4, beta=0.3, activation=spec, parametrization="balanced")
        s, t = kernels_of_cosine(np.clip(x @ x.T / 5, -1, 1), **kw)
        gram = kernel_matrices(x, **kw)
        np.testing.assert_allclose(s, gram["nngp"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(t, gram["ntk"], rtol=1e-10, atol=1e-12)


def test_kernel_ode_prediction_limits():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2))
    xt = rng.standard_normal((3, 2))
    k = theta_inf(x, depth=3, beta=0.1)
    kt = theta_inf(xt, x, depth=3, beta=0.1)
    y, f0, f0t = rng.standard_normal(6), rng.standard_normal(6), rng.standard_normal(3)
    pred0 = kernels.kernel_ode_prediction(kt, k, y, f0, f0t, 0.0)
    np.testing.assert_allclose(pred0, f0t, atol=1e-14)
    # On the training points themselves the prediction is the ODE solution Y − e^{−ηtΘ}(Y − Y0).
    for loss, eta in (("mse", 2 / 6), ("half_mse", 1 / 6)):
        t = 3.7
        on_train = kernels.kernel_ode_prediction(k, k, y, f0, f0, t, loss=loss)
        direct = y - scipy.linalg.expm(-eta * t * k) @ (y - f0)
        np.testing.assert_allclose(on_train, direct, rtol=1e-10, atol=1e-12)
    far = kernels.kernel_ode_prediction(k, k, y, f0, f0, 1e7)
    np.testing.assert_allclose(far, y, atol=1e-8)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(beta=1.5), "beta"),
        (dict(beta=-0.1), "beta"),
        (dict(depth=0), "depth"),
        (dict(depth=2.5), "depth"),
        (dict(activation="softsign"), "activation"),
        (dict(parametrization="standard"), "parametrization"),
        (dict(device="cuda:7"), "device"),
        (dict(method="montecarlo"), "method"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, word):
    if word == "device" and torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    x = np.ones((3, 2))
    args = dict(depth=2, beta=0.1) | kwargs
    with pytest.raises(ValueError, match=word):
        theta_inf(x, **args)


def test_bad_inputs_name_the_input():
    good = np.ones((3, 2))
    with pytest.raises(ValueError, match="x1"):
        theta_inf(np.array([[np.nan, 1.0]]), depth=2, beta=0.1)
    with pytest.raises(ValueError, match="x1"):
        theta_inf(np.ones(3), depth=2, beta=0.1)
    with pytest.raises(ValueError, match="x2"):
        theta_inf(good, np.ones((2, 5)), depth=2, beta=0.1)
    with pytest.raises(ValueError, match="x2"):
        nngp(good, np.full((2, 2), np.inf), depth=2, beta=0.1)


def test_auto_device_equals_cpu():
    x = np.random.default_rng(0).standard_normal((10, 3))
    assert np.array_equal(
        theta_inf(x, depth=3, beta=0.1, device="auto" if not torch.cuda.is_available() else "cpu"),
        theta_inf(x, depth=3, beta=0.1),
    )


@pytest.mark.parametrize(
    "spec", ["relu", "scaled_relu", "normalized:relu", "erf", "normalized:erf"]
)
def test_fused_cpu_path_matches_generic_path(spec, monkeypatch):
    """The fused numpy tile map equals the torch layer map, also for duplicate, antiparallel
    and zero inputs (ρ = ±1 exactly, q = β² at the first layer) and across tile edges."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((30, 4))
    x[3], x[11], x[12], x[20] = x[2], -x[5], 0.0, 3.0 * x[7]
    y = np.vstack([x[:5], rng.standard_normal((6, 4))])
    monkeypatch.setattr(kernels, "_FUSED_TILE", 8)
    for parametrization in ("ntk2018", "balanced"):
        kw = dict(depth=5, beta=0.2, activation=spec, parametrization=parametrization)
        fused = [kernel_matrices(x, **kw), kernel_matrices(x, y, **kw)]
        with monkeypatch.context() as m:
            m.setattr(kernels, "_fused_applies", lambda *args: False)
            generic = [kernel_matrices(x, **kw), kernel_matrices(x, y, **kw)]
        for a, b in zip(fused, generic):
            for key in ("nngp", "ntk"):
                assert np.abs(a[key] - b[key]).max() <= 1e-13 * np.abs(b[key]).max(), (key, kw)
        assert np.array_equal(fused[0]["ntk"], fused[0]["ntk"].T)


def test_overflowing_inputs_raise_naming_the_input():
    """Inputs of norm 1e200 used to give NaN Grams with only a RuntimeWarning."""
    x = np.random.default_rng(0).standard_normal((4, 3))
    for kw in (dict(), dict(activation="erf"), dict(activation="tanh", depth=2)):
        with pytest.raises(ValueError, match="x1: the kernel overflows.*1e\\+200"):
            theta_inf(
                x * 1e200 / np.linalg.norm(x, axis=1, keepdims=True),
                **(dict(depth=3, beta=0.1) | kw),
            )
    with pytest.raises(ValueError, match="x1: the kernel overflows.*x2"):
        nngp(x, x * 1e200, depth=2, beta=0.0)
    # Finite inputs whose Θ (which grows like L·q) overflows in the last layers only.
    big = x * 1e153 / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(3)
    with pytest.raises(ValueError, match="x1: the kernel overflows"):
        theta_inf(big * 10, depth=40, beta=0.0, activation="scaled_relu")
    with pytest.raises(ValueError, match="sq_norm"):
        kernels_of_cosine([0.1, 0.5], depth=40, beta=0.0, activation="scaled_relu", sq_norm=1e307)


def test_complex_inputs_are_refused_not_truncated():
    z = np.ones((3, 2)) + 1j
    with pytest.raises(ValueError, match="x1.*complex"):
        theta_inf(z, depth=2, beta=0.1)
    with pytest.raises(ValueError, match="x2.*complex"):
        nngp(np.ones((3, 2)), z, depth=2, beta=0.1)
    with pytest.raises(ValueError, match="cosine"):
        kernels_of_cosine(np.array([0.5 + 0.1j]), depth=2, beta=0.1)


@pytest.mark.parametrize("spec", ["relu", "scaled_relu", "erf"])
def test_zero_inputs_without_bias_give_finite_kernels(spec, monkeypatch):
    """A zero input with β = 0 has variance 0 at every layer; 0/0 in its correlation used to
    give NaN Grams from depth 3 on. Its kernel row is 0 for ReLU; both paths agree."""
    x = np.random.default_rng(1).standard_normal((9, 3))
    x[4] = 0.0
    kw = dict(depth=5, beta=0.0, activation=spec)
    fused = kernel_matrices(x, **kw)
    monkeypatch.setattr(kernels, "_fused_applies", lambda *args: False)
    generic = kernel_matrices(x, **kw)
    quadrature = kernel_matrices(x, method="quadrature", **kw)
    for key in ("nngp", "ntk"):
        assert np.isfinite(fused[key]).all()
        assert np.abs(fused[key] - generic[key]).max() <= 1e-13 * np.abs(generic[key]).max()
        assert np.abs(fused[key] - quadrature[key]).max() <= 1e-8 * np.abs(generic[key]).max()
        if spec != "erf":
            assert not fused[key][4].any()


def test_layer_step_leaves_its_inputs_and_matches_the_gram():
    x = np.random.default_rng(2).standard_normal((5, 3))
    act = get_activation("erf")
    sigma = torch.as_tensor(x @ x.T / 3 * 0.9 + 0.1)
    q = torch.diagonal(sigma).clone()
    theta = sigma.clone()
    before = (sigma.clone(), theta.clone())
    s2, t2 = kernels.layer_step(
        sigma, theta, q[:, None], q[None, :], act=act, gain=0.9, bias_var=0.1, method="auto"
    )
    assert torch.equal(sigma, before[0]) and torch.equal(theta, before[1])
    gram = kernel_matrices(
        x, depth=2, beta=np.sqrt(0.1), activation="erf", parametrization="balanced"
    )
    np.testing.assert_allclose(s2.numpy(), gram["nngp"], rtol=1e-13)
    np.testing.assert_allclose(t2.numpy(), gram["ntk"], rtol=1e-13)


def test_linearised_flow_clips_negative_eigenvalues():
    """The one guard: a negative eigenvalue of Θ (rounding) is taken as 0: no growing mode,
    and Θ⁻¹(I − e^{−ηtΘ}) takes its λ → 0 limit ηt there."""
    u = np.linalg.qr(np.random.default_rng(3).standard_normal((4, 4)))[0]
    theta = u @ np.diag([2.0, 0.5, 0.0, -1e-14]) @ u.T
    flow = kernels.linearised_flow(theta, 0.25)
    assert (flow.eigenvalues >= 0).all()
    decay = flow.decay(np.array([0.0, 3.0]))
    assert decay.shape == (2, 4) and (decay <= 1.0).all() and (decay[0] == 1.0).all()
    fitted = flow.fitted(3.0)
    np.testing.assert_allclose(
        np.sort(fitted),
        np.sort([(1 - np.exp(-1.5)) / 2.0, (1 - np.exp(-0.375)) / 0.5, 0.75, 0.75]),
        rtol=1e-14,
    )
