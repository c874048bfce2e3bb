"""Freeze & Chaos analytic experiments (regimes, phase, speed, spectrum): the shared helpers,
the analysis behind the claims, and every stage run by hand on tiny settings."""

import csv
import math

import numpy as np
import pytest
import scipy.linalg

from ntk_repro import freeze_chaos as fc
from ntk_repro.experiments import phase, regimes, spectrum, speed
from ntk_repro.kernels import kernel_matrices, loss_rate
from ntk_repro.results import load_arrays

NETWORKS = [
    {"name": "freeze", "regime": "freeze", "activation": "scaled_relu", "beta": 0.8},
    {"name": "freeze_smooth", "regime": "freeze", "activation": "normalized:erf", "beta": 0.8},
    {"name": "edge", "regime": "edge", "activation": "scaled_relu", "beta": 0.0},
    {"name": "chaos", "regime": "chaos", "activation": "normalized:relu", "beta": 0.1},
]
BASE = {"seed": 3, "device": "cpu", "networks": NETWORKS, "loss": "half_mse", "dtype": "float64"}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --- helpers -----------------------------------------------------------------------------------


def test_parse_networks_rejects_unscaled_activations_and_bad_names():
    with pytest.raises(ValueError, match="normalized"):
        fc.parse_networks([{"name": "a", "regime": "freeze", "activation": "erf", "beta": 0.5}])
    with pytest.raises(ValueError, match="name"):
        fc.parse_networks([NETWORKS[0], NETWORKS[0]])
    with pytest.raises(ValueError, match="regime"):
        fc.parse_networks([{**NETWORKS[0], "regime": "order"}])
    nets = fc.parse_networks(NETWORKS)
    assert [n.name for n in nets] == ["freeze", "freeze_smooth", "edge", "chaos"]


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.8, 1.0])
def test_order_parameter_of_scaled_relu_is_one_minus_beta_squared(beta):
    assert abs(fc.order_parameter("scaled_relu", beta) - (1 - beta * beta)) < 1e-15
    assert abs(fc.order_parameter_quadrature("scaled_relu", beta) - (1 - beta * beta)) < 1e-13
    # erf: closed form E erf'² / E erf² = (4/(π√5)) / ((2/π) arcsin(2/3)).
    expected = (1 - beta * beta) * (4 / (math.pi * math.sqrt(5))) / (2 / math.pi * math.asin(2 / 3))
    assert abs(fc.order_parameter("normalized:erf", beta) - expected) < 1e-13


@pytest.mark.parametrize("entry", NETWORKS)
def test_diagonal_is_geometric_sum_of_r(entry):
    net = fc.parse_networks([entry])[0]
    for depth in (1, 2, 5, 11):
        theta = fc.ntk_of_cosine(net, depth, np.array([1.0]))[0]
        assert abs(theta - fc.theta_diagonal(net.r, depth)) < 1e-12 * theta
    # The cosine path is the Gram path on the sphere ‖x‖² = n0.
    x = np.random.default_rng(0).standard_normal((7, 4))
    x *= 2.0 / np.linalg.norm(x, axis=1, keepdims=True)
    gram = kernel_matrices(
        x,
        depth=5,
        beta=net.beta,
        activation=net.activation,
        parametrization="balanced",
        get=("ntk",),
    )["ntk"]
    cos = np.clip(x @ x.T / 4.0, -1, 1)
    np.fill_diagonal(cos, 1.0)
    np.testing.assert_allclose(fc.ntk_of_cosine(net, 5, cos), gram, rtol=1e-6, atol=1e-9)


def test_scaled_spec_and_normalised_derivative_moment():
    assert phase.scaled_spec("relu") == "scaled_relu"
    assert phase.scaled_spec("tanh") == "normalized:tanh"
    for name in ("relu", "erf", "tanh"):
        assert fc.order_parameter_quadrature(f"normalized:{name}", 0.0) > 1.0
    assert abs(fc.order_parameter_quadrature("normalized:identity", 0.0) - 1.0) < 1e-12


def test_depth_analysis_helpers_on_synthetic_sequences():
    depths = np.arange(1, 41, dtype=float)
    # v(L) = 0.25 + 1/L − 2/L²: the 1/L fit recovers the limit exactly.
    v = 0.25 + 1 / depths - 2 / depths**2
    assert abs(phase.extrapolate(v, 20, 40) - 0.25) < 1e-12
    # d_L = 2 L r^L: per-layer rate of d_L/L is r; the smallest valid C is 2.
    r = 0.5
    d = 2 * depths * r**depths
    assert abs(phase.window_rate(d / depths, 10, 20) - r) < 1e-12
    assert abs(phase.bound_constant(d, r, 20) - 2.0) < 1e-12
    (a, b), (c, e) = phase._windows(40)
    assert (a, b, c, e) == (10, 20, 20, 40)


def test_expected_ode_loss_matches_matrix_exponential():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 6))
    theta = a @ a.T + 0.1 * np.eye(6)
    b = rng.standard_normal((6, 6))
    sigma = b @ b.T
    y = rng.standard_normal(6)
    rate = loss_rate("half_mse", 6)
    times = np.array([0.0, 0.7, 5.0])
    got = speed.expected_ode_loss(theta, sigma, y, rate, times)
    for t, value in zip(times, got):
        e = scipy.linalg.expm(-rate * t * theta)
        expected = 0.5 * rate * (np.sum((e @ y) ** 2) + np.trace(e @ sigma @ e))
        assert abs(value - expected) < 1e-12 * max(expected, 1)


# --- stages on tiny settings --------------------------------------------------------------------


def test_regimes_stages(tmp_path):
    p = {
        **BASE,
        "depth": 4,
        "circle_points": 12,
        "sphere_points": 10,
        "sphere_dim": 3,
        "angle_points": 19,
    }
    out = tmp_path / "regimes.npz"
    regimes.limit(p, [str(out)])
    first = out.read_bytes()
    regimes.limit(p, [str(out)])
    assert out.read_bytes() == first  # bit-for-bit regeneration
    res = load_arrays(out)
    assert res["circle_gram"].shape == (4, 12, 12) and res["curve"].shape == (4, 19)
    normalised = res["circle_gram"] / np.diagonal(res["circle_gram"], axis1=1, axis2=2)[:, :, None]
    off = ~np.eye(12, dtype=bool)
    # Freeze: nearly constant; chaos: smallest off-diagonal values.
    assert normalised[0][off].min() > 0.85  # 1 - d_4, d_L ≈ 0.9·r^(L/2) with r = 0.36
    assert normalised[3][off].mean() < normalised[2][off].mean() < normalised[0][off].mean()
    regimes.plot(p, [str(tmp_path / "r.png")], limit=str(out))
    regimes.check(p, [str(tmp_path / "r.csv")], limit=str(out))
    rows = _rows(tmp_path / "r.csv")
    assert len(rows) == 5 and all(r["status"] == "pass" for r in rows)


# Small phase sizes shared by the phase stage tests.
PHASE_SIZES = {
    "beta_points": 11,
    "max_depth": 12,
    "cosine_points": 201,
    "sphere_points": 12,
    "sphere_dim": 8,
    "gain_range": [0.1, 10.0],
    "gain_points": 5,
    "gain_betas": [0.0, 0.5],
}


def test_phase_stages(tmp_path):
    p = {**BASE, **PHASE_SIZES, "activations": ["relu", "erf", "tanh"]}
    out = tmp_path / "phase.npz"
    phase.limit(p, [str(out)])
    res = load_arrays(out)
    np.testing.assert_allclose(res["r_quad_scaled_relu"], 1 - res["betas"] ** 2, atol=1e-13)
    # Odd σ: the rescaled σ is the normalised σ̄.
    np.testing.assert_allclose(res["r_quad_scaled_erf"], res["r_quad_normalized_erf"])
    assert (np.diff(np.abs(res["min_ratio"][3])) < 0).all()  # chaos: |min ratio| decays to 0
    assert (res["share"][0][-1] > 0.99) and (res["share"][3][-1] < 0.2)
    phase.plot(p, [str(tmp_path / "p.png")], limit=str(out))
    phase.check(p, [str(tmp_path / "p.csv")], limit=str(out))
    rows = {r["claim"]: r for r in _rows(tmp_path / "p.csv")}
    assert len(rows) == 14  # 11 and the three rows of normalised tanh(g z) over the gain
    for claim, row in rows.items():
        if "E[σ̄'" in claim or "scaled ReLU" in claim or "C·L·r^L" in claim or "g z" in claim:
            assert row["status"] == "pass", claim


TANH_NETWORK = {
    "name": "freeze_tanh",
    "regime": "freeze",
    "activation": "normalized:tanh(0.5z)",
    "beta": 0.5,
}


def test_regimes_and_phase_with_a_tanh_of_small_gain(tmp_path):
    # σ without a closed form: the stages take the Hermite series and check it against the
    # quadrature path; r = 0.75·E σ̄'² = 0.775 is a freeze.
    p = {
        **BASE,
        "networks": [NETWORKS[1], TANH_NETWORK],
        "depth": 4,
        "circle_points": 12,
        "sphere_points": 10,
        "sphere_dim": 3,
        "angle_points": 19,
    }
    regimes.limit(p, [str(tmp_path / "r.npz")])
    res = load_arrays(tmp_path / "r.npz")
    assert list(res["series_path"]) == [False, True]
    regimes.check(p, [str(tmp_path / "r.csv")], limit=str(tmp_path / "r.npz"))
    rows = _rows(tmp_path / "r.csv")
    assert len(rows) == 4 and all(r["status"] == "pass" for r in rows), rows
    assert "closed form" in rows[2]["claim"] and "Hermite" in rows[3]["claim"]
    p = {**BASE, **PHASE_SIZES, "networks": [TANH_NETWORK], "activations": ["tanh(0.5z)"]}
    phase.limit(p, [str(tmp_path / "p.npz")])
    res = load_arrays(tmp_path / "p.npz")
    assert 0.77 < res["r"][0] < 0.78
    # The deficit of the freeze shrinks with depth.
    assert (np.diff(1 - res["min_ratio"][0]) < 0).all()
    phase.check(p, [str(tmp_path / "p.csv")], limit=str(tmp_path / "p.npz"))
    rows = _rows(tmp_path / "p.csv")
    evaluated = [r for r in rows if r["status"] != "not_evaluated"]
    assert all(r["status"] == "pass" for r in evaluated), rows
    assert sum("Monte Carlo" in r["claim"] or "Hermite" in r["claim"] for r in rows) == 2


def test_speed_stages(tmp_path):
    p = {
        **BASE,
        "depth": 3,
        "n_train": 8,
        "sphere_dim": 3,
        "width": 16,
        "inits": 2,
        "steps": 30,
        "lr_fraction": 0.5,
    }
    limit = tmp_path / "limit.npz"
    speed.limit(p, [str(limit)])
    lim = load_arrays(limit)
    # lr·η·λmax = 2·lr_fraction for every network.
    rate = loss_rate("half_mse", 8)
    np.testing.assert_allclose(lim["lr"] * rate * lim["spectrum"][:, 0], 1.0)
    assert (np.diff(lim["ode_loss"], axis=1) <= 1e-15).all()  # the expected loss decreases
    runs = []
    for entry in NETWORKS:
        path = tmp_path / f"train_{entry['name']}.npz"
        speed.train(p, [str(path)], limit=str(limit), network=entry["name"])
        runs.append(str(path))
    with pytest.raises(ValueError, match="not configured"):
        speed.train(p, [str(tmp_path / "x.npz")], limit=str(limit), network="nope")
    speed.plot(p, [str(tmp_path / "s.png")], limit=str(limit), runs=runs)
    speed.check(p, [str(tmp_path / "s.csv")], limit=str(limit), runs=runs)
    assert len(_rows(tmp_path / "s.csv")) == 3


def test_spectrum_stages(tmp_path):
    p = {
        **BASE,
        "depth": 3,
        "sphere_dim": 3,
        "max_degree": 8,
        "quadrature_nodes": 256,
        "n_points": 160,
        "draws": 1,
        "decay_degree": 4,
    }
    out = tmp_path / "eigen.npz"
    spectrum.eigen(p, [str(out)])
    res = load_arrays(out)
    # Mercer: the trace κ(1) against Σ N(d,k) μ_k, the missing tail beyond degree 8 positive.
    partial = (res["multiplicities"] * res["eigenvalues"]).sum(axis=1)
    assert (partial <= res["trace"] * (1 + 1e-9)).all() and (partial > 0.8 * res["trace"]).all()
    spectrum.plot(p, [str(tmp_path / "e.png")], eigen=str(out))
    spectrum.check(p, [str(tmp_path / "e.csv")], eigen=str(out))
    rows = _rows(tmp_path / "e.csv")
    assert len(rows) == 6 and all(r["status"] == "pass" for r in rows)
