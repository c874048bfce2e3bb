"""The regimes' speed/generalization experiment: its target, its spectrum bookkeeping and its
measured quantities against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import REPO

from ntk_repro import data
from ntk_repro.experiments import tradeoff
from ntk_repro.freeze_chaos import ntk_of_cosine, parse_networks
from ntk_repro.results import derive_seed

LAPTOP = yaml.safe_load((REPO / "workflow/presets/laptop.yaml").read_text())
NETS = {net.name: net for net in parse_networks(LAPTOP["tradeoff"]["networks"])}


def _params(**changes) -> dict:
    p = dict(LAPTOP["tradeoff"], seed=3, n_train=80, n_test=400, max_degree=40)
    p.update(quadrature_nodes=1024, **changes)
    return p


def test_target_has_unit_norm_per_degree_and_orthogonal_degrees():
    p = _params(target_degrees=[1, 2, 4])
    x = data.sphere_points(200_000, p["sphere_dim"], seed=0)
    axes = tradeoff.target_axes(p)
    whole = tradeoff.target(x, p["target_degrees"], axes)
    parts = [tradeoff.target(x, [k], axes[j : j + 1]) for j, k in enumerate(p["target_degrees"])]
    se = 5.0 / np.sqrt(len(x))  # Monte Carlo: a few standard errors of E f² (f² = O(1))
    for part in parts:
        assert np.mean(part**2) == pytest.approx(1.0, abs=20 * se)
    assert abs(np.mean(parts[0] * parts[1])) < 20 * se
    assert np.mean(whole**2) == pytest.approx(3.0, abs=60 * se)


@pytest.mark.parametrize("name", ["freeze", "edge", "chaos"])
def test_resolved_spectrum_accounts_for_the_whole_trace(name):
    p = _params()
    spec = tradeoff.resolved_spectrum(NETS[name], 10, p)
    total = float((spec["multiplicities"] * spec["mu"]).sum()) + spec["tail"]
    assert total == pytest.approx(spec["kappa1"], rel=1e-9)
    assert (spec["mu"] >= 0).all() and spec["tail"] >= 0
    # Mercer: the Gram of many points has trace N κ(1) and its top eigenvalue/N → μ_0.
    x = data.sphere_points(600, p["sphere_dim"], seed=1)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    gram = ntk_of_cosine(NETS[name], 10, np.clip(unit @ unit.T, -1, 1))
    assert np.trace(gram) / len(x) == pytest.approx(spec["kappa1"], rel=1e-12)


def test_an_unresolved_target_degree_is_not_learned():
    p = _params(target_degrees=[3], max_degree=2)  # degree 3 is beyond the computed degrees
    spec = tradeoff.resolved_spectrum(NETS["edge"], 5, p)
    risk = tradeoff.predicted_curve(spec, [3], [1e-6, 1e-2], p["n_train"], noise=0.0)
    assert (risk >= 1.0).all()  # the whole unit norm stays (times ∂ϑ/∂λ >= 1)


def test_measured_draw_matches_direct_kernel_regression_and_the_ode_limits():
    p = _params(target_degrees=[1, 2])
    net, depth, ridges = NETS["edge"], 4, np.array([1e-3, 1e-1])
    out = tradeoff.measured_draw(net, depth, p, 0, ridges, [0, 10**9])
    # Rebuild the same draw independently and solve (K + NλI)α = y directly.
    n = p["n_train"]
    seed = derive_seed(p["seed"], "tradeoff", "draw", 0)
    x = data.sphere_points(n + p["n_test"], p["sphere_dim"], seed=seed)
    clean = tradeoff.target(x, p["target_degrees"], tradeoff.target_axes(p))
    y = clean[:n] + p["noise"] * np.random.default_rng(seed + 1).standard_normal(n)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    gram = ntk_of_cosine(net, depth, np.clip(unit @ unit.T, -1, 1))
    for j, ridge in enumerate(ridges):
        scaled = ridge * gram[0, 0]  # ridges are relative to Θ(x, x)
        f = gram[n:, :n] @ np.linalg.solve(gram[:n, :n] + n * scaled * np.eye(n), y)
        direct = np.mean((f - clean[n:]) ** 2) + p["noise"] ** 2
        assert out["ridge"][j] == pytest.approx(direct, rel=1e-8)
    # Step 0: nothing learnt; after very many steps: the interpolating kernel regression.
    assert out["train"][0] == pytest.approx(0.5 * np.mean(y**2), rel=1e-12)
    assert out["train"][1] < 1e-12
    f = gram[n:, :n] @ np.linalg.solve(gram[:n, :n], y)
    assert out["stopped"][1] == pytest.approx(np.mean((f - clean[n:]) ** 2) + 0.01, rel=1e-5)


def test_prediction_is_close_to_measurement_at_a_moderate_ridge():
    p = _params(n_train=200, target_degrees=[1, 2])
    spec = tradeoff.resolved_spectrum(NETS["freeze"], 4, p)
    predicted = tradeoff.predicted_curve(spec, p["target_degrees"], [1e-3], 200, p["noise"])
    measured = [tradeoff.measured_draw(NETS["freeze"], 4, p, i, [1e-3], [0]) for i in range(6)]
    risks = np.array([m["ridge"][0] for m in measured])
    se = risks.std(ddof=1) / np.sqrt(len(risks))
    assert abs(predicted[0] - risks.mean()) <= 0.1 * risks.mean() + 3 * se
