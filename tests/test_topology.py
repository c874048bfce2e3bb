"""Network density for topology optimisation: embeddings, volume projection, NTK filter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntk_repro import fem
from ntk_repro import topology as T
from ntk_repro.empirical import empirical_ntk

NET = T.Net(width=64, depth=3, beta=0.1, activation="normalized:relu")


def _points(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 12.0, (n, 2))


def test_raw_and_torus_kernels_match_their_closed_forms():
    x, y = _points(7), _points(5, 1)
    for kind in ("raw", "torus"):
        emb = T.make_embedding(kind, 12, 4)
        gram = emb(x) @ emb(y).T / emb.dim
        np.testing.assert_allclose(gram, emb.limit_kernel(x, y), atol=1e-14)
    torus = T.make_embedding("torus", 12, 4)
    assert torus.scale == pytest.approx(math.pi / 24)
    # ‖z‖²/4 = 1 everywhere and z·z' depends on x − x' only: shift both points.
    np.testing.assert_allclose((torus(x) ** 2).sum(1) / 4, 1.0, atol=1e-14)
    np.testing.assert_allclose(torus(x) @ torus(y).T, torus(x + 2.5) @ torus(y + 2.5).T, atol=1e-13)


def test_fourier_features_converge_to_the_gaussian_kernel():
    """(1/m) z·z' = (1/m) Σ cos(w·(x − x')) + sin(w·(x + x')): mean exp(−‖Δ‖²/2ℓ²), each
    term bounded by 2 in absolute value, so the error is below 6·2/√m with overwhelming
    probability."""
    m = 20000
    emb = T.make_embedding("fourier", 12, 4, features=m, length_scale=2.0, seed=3)
    x, y = _points(6), _points(6, 1)
    gram = emb(x) @ emb(y).T / m
    assert np.abs(gram - emb.limit_kernel(x, y)).max() < 12 / math.sqrt(m)
    assert np.abs(gram - emb.limit_kernel(x, y)).max() > 0  # not exact at finite m
    np.testing.assert_allclose(emb.frequencies.std(), 1 / 2.0, rtol=0.02)


def test_the_kernel_core_sees_the_first_layer_covariance_of_the_embedding():
    """A one-layer net is affine: Θ = Σ⁽¹⁾ = (1 − β²) z·z'/n0 + β², what the MLP's first layer
    s_W/√n0 · W z + β b gives, with the embedded points passed as inputs."""
    x = _points(5)
    for kind in T.EMBEDDINGS:
        emb = T.make_embedding(kind, 12, 4, features=32, length_scale=2.0)
        z = emb(x)
        one_layer = T.Net(16, 1, 0.3, "relu").theta(z)
        np.testing.assert_allclose(one_layer, 0.91 * z @ z.T / emb.dim + 0.09, rtol=1e-12)


@pytest.mark.parametrize("kind", T.EMBEDDINGS)
def test_analytic_ntk_of_the_embedded_net_matches_wide_empirical_ntks(kind):
    """Mean over 4 nets of width 4096. One net's relative Frobenius error was measured at
    ≈ 2.4/√width (0.124, 0.053, 0.025 at 512, 2048, 8192; no bias within the noise), so the
    mean's expected error is ≈ 0.019: 0.06 is three times that."""
    emb = T.make_embedding(kind, 12, 4, features=16, length_scale=2.0, seed=1)
    z = emb(_points(6))
    limit = NET.theta(z)
    wide = T.Net(4096, NET.depth, NET.beta, NET.activation)
    mean = np.mean([empirical_ntk(wide.build(emb.dim, s), z).numpy() for s in range(4)], 0)
    assert np.linalg.norm(mean - limit) / np.linalg.norm(limit) < 0.06


def test_fourier_limit_kernel_is_the_large_m_limit():
    x = _points(8)
    limit = NET.theta_fourier_limit(x, length_scale=2.0)
    errors = []
    for m in (250, 16000):
        emb = T.make_embedding("fourier", 12, 4, features=m, length_scale=2.0, seed=5)
        errors.append(np.abs(NET.theta(emb(x)) - limit).max() / limit.max())
    assert errors[1] < 0.05 and errors[1] < errors[0] / 2  # O(m^-1/2): 8 = √64 fewer


def test_volume_bias_meets_the_volume_to_rounding():
    rng = np.random.default_rng(0)
    for volfrac in (0.1, 0.5, 0.93):
        h = rng.normal(0.0, 8.0, 1000)
        b = T.volume_bias(h, volfrac)
        x = 1 / (1 + np.exp(-(h + b)))
        assert abs(x.sum() - volfrac * 1000) < 1e-9
    # A constant field needs b* = logit(V_f) − h.
    assert T.volume_bias(np.full(10, 2.0), 0.25) == pytest.approx(math.log(1 / 3) - 2.0)


def test_implicit_volume_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    h0 = rng.normal(0.0, 1.5, 12)
    w = torch.as_tensor(rng.normal(size=12))

    def loss(h):
        x = T.volume_sigmoid(h, 0.4)
        return (w * x).sum() + (x**2).sum()

    h = torch.tensor(h0, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(h), h)
    assert abs(float(grad.sum())) < 1e-12  # a uniform shift of h changes nothing
    eps = 1e-6
    for j in range(12):
        step = np.zeros(12)
        step[j] = eps
        fd = (float(loss(torch.tensor(h0 + step))) - float(loss(torch.tensor(h0 - step)))) / (
            2 * eps
        )
        assert float(grad[j]) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_compliance_gradient_through_the_fe_solve():
    case = fem.make_case("mbb", 6, 3)
    rng = np.random.default_rng(2)
    h0 = rng.normal(0.0, 1.0, case.grid.n_elem)

    def log_c(h):
        return torch.log(T.compliance(T.volume_sigmoid(h, 0.5), case))

    h = torch.tensor(h0, requires_grad=True)
    (grad,) = torch.autograd.grad(log_c(h), h)
    eps = 1e-5
    for j in (0, 5, 11, 17):
        step = np.zeros_like(h0)
        step[j] = eps
        fd = (float(log_c(torch.tensor(h0 + step))) - float(log_c(torch.tensor(h0 - step)))) / (
            2 * eps
        )
        assert float(grad[j]) == pytest.approx(fd, rel=1e-5)


def test_one_gradient_step_moves_the_field_by_the_empirical_ntk():
    """Δh = J Δθ = −lr J Jᵀ ∂L/∂h = −lr Θ̂ ∂L/∂h to first order in lr: the NTK is the filter."""
    case = fem.make_case("mbb", 8, 3)
    emb = T.make_embedding("fourier", 8, 3, features=16, length_scale=1.5, seed=2)
    z = torch.as_tensor(emb(case.grid.centres))
    model = NET.build(emb.dim, 4)
    before = model(z)[:, 0].detach()
    offset = before - math.log(0.5 / 0.5)
    h = (model(z)[:, 0] - offset).detach().requires_grad_(True)
    (grad_h,) = torch.autograd.grad(torch.log(T.compliance(T.volume_sigmoid(h, 0.5), case)), h)
    result = T.optimise_network(case, emb, NET, volfrac=0.5, steps=1, lr=1e-5, seed=4)
    theta = empirical_ntk(model, z)
    predicted = -1e-5 * theta @ grad_h
    moved = torch.as_tensor(result.x)  # x after one step; compare through h = logit(x) − b
    h_after = torch.log(moved / (1 - moved))
    change = (h_after - h_after.mean()) - (h - h.mean()).detach()
    expected = predicted - predicted.mean()  # b* absorbs the uniform part
    assert torch.linalg.norm(change - expected) / torch.linalg.norm(expected) < 1e-3


def test_kernel_and_network_optimisers_keep_the_volume_and_lower_compliance():
    case = fem.make_case("mbb", 12, 4)
    emb = T.make_embedding("fourier", 12, 4, features=32, length_scale=1.5, seed=0)
    theta = NET.theta(emb(case.grid.centres))
    lr = 0.5 * case.grid.n_elem / T.centred_top_eigenvalue(theta)
    for result in (
        T.optimise_kernel(case, theta, volfrac=0.5, steps=15, lr=lr),
        T.optimise_network(case, emb, NET, volfrac=0.5, steps=15, lr=lr, seed=1),
        T.optimise_network(
            case, emb, NET, volfrac=0.5, steps=15, lr=0.01, optimizer="adam", dtype=torch.float32
        ),
    ):
        assert result.volume_error < 1e-12
        assert result.compliance < 0.8 * result.history[0]
        assert len(result.history) == 16


def test_lines_radius_and_defects():
    offsets = np.linspace(-6, 6, 241)
    sigma = 1.7
    radius = T.half_radius(offsets, np.exp(-(offsets**2) / (2 * sigma**2)))
    assert radius == pytest.approx(sigma * math.sqrt(2 * math.log(2)), rel=1e-3)
    assert math.isnan(T.half_radius(offsets, 1 - 0.01 * np.abs(offsets)))
    base = np.array([[3.0, 2.0], [6.0, 2.0], [9.0, 2.0]])
    line_offsets = np.linspace(-2, 2, 9)
    torus = T.ntk_lines(NET, T.make_embedding("torus", 12, 4), base, line_offsets)
    raw = T.ntk_lines(NET, T.make_embedding("raw", 12, 4), base, line_offsets)
    np.testing.assert_allclose(torus[:, 4], 1.0)
    assert T.invariance_defect(torus) < 1e-12
    assert T.invariance_defect(raw) > 1e-3


def test_asymmetry_and_centred_eigenvalue():
    grid = fem.Grid(4, 2)
    x = np.array([0.1, 0.2, 0.3, 0.9, 0.3, 0.9, 0.1, 0.2])  # mirror-symmetric
    assert T.asymmetry(grid, x) == 0.0
    y = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert T.asymmetry(grid, y) == pytest.approx(4 / 3)  # Σ|y − My| = 4, Σ|y − ȳ| = 3
    theta = np.diag([5.0, 1.0, 1.0]) + 10.0  # the constant part is invisible after centring
    centred = np.eye(3) - 1 / 3
    assert T.centred_top_eigenvalue(theta) == pytest.approx(
        np.linalg.eigvalsh(centred @ theta @ centred)[-1]
    )


def test_bad_input_raises():
    with pytest.raises(ValueError, match="embedding"):
        T.make_embedding("sphere", 4, 2)
    with pytest.raises(ValueError, match="features"):
        T.make_embedding("fourier", 4, 2, features=0, length_scale=1.0)
    with pytest.raises(ValueError, match="length_scale"):
        T.make_embedding("fourier", 4, 2, features=8, length_scale=-1.0)
    with pytest.raises(ValueError, match="points"):
        T.make_embedding("raw", 4, 2)(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="volfrac"):
        T.volume_sigmoid(torch.zeros(4), 1.0)
    case = fem.make_case("mbb", 4, 2)
    with pytest.raises(ValueError, match="theta"):
        T.optimise_kernel(case, np.eye(3), volfrac=0.5, steps=1, lr=1.0)
    emb = T.make_embedding("raw", 4, 2)
    with pytest.raises(ValueError, match="optimizer"):
        T.optimise_network(case, emb, NET, volfrac=0.5, steps=1, lr=1.0, optimizer="rprop")
    with pytest.raises(ValueError, match="uniform"):
        T.asymmetry(case.grid, np.full(8, 0.5))
