"""The random_features experiment (ntk_repro.experiments.random_features): the linearised nets
are the trained nets' own, the discrete GD of a linear model against iteration, the claim-row
logic, validation at the edge and on load. The formulas of the RF/KRR library are tested in
test_generalization.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntk_repro.experiments import random_features as rf
from ntk_repro.kernels import loss_rate
from ntk_repro.networks import MLP
from ntk_repro.results import load_arrays, save_arrays
from ntk_repro.training import train_ensemble

NET = {"depth": 2, "beta": 0.1, "activation": "erf"}


def _params(**over) -> dict:
    p = {
        "seed": 3,
        "device": "cpu",
        "dtype": "float32",
        "loss": "mse",
        "sphere_dim": 3,
        "n_train": 8,
        "n_test": 6,
        "net_test": 5,
        "amplitudes": [0.0, 1.0, 0.5],
        "noise": 0.1,
        "network": NET,
        "features": [2, 4, 8, 16, 40],
        "ridges": [1e-3, 1e-1],
        "draws": 40,
        "bootstrap": 10,
        "widths": [32, 64],
        "inits": 4,
        "steps": 20,
        "lr_fraction": 0.5,
    }
    p.update(over)
    return p


def _lr(prob: dict, p: dict) -> tuple[float, float]:
    n = prob["n"]
    rate = loss_rate(p["loss"], n)
    lmax = float(np.linalg.eigvalsh(prob["ntk"][:n, :n])[-1])
    return p["lr_fraction"] * 2.0 / (rate * lmax), rate


def _trained(prob, rows, p, width, seeds, lr, steps):
    """train_ensemble's outputs on the rows after ``steps``, (K, M), float64."""
    res = train_ensemble(
        prob["x"][: prob["n"]],
        prob["y"],
        width=width,
        depth=NET["depth"],
        beta=NET["beta"],
        activation=NET["activation"],
        parametrization=rf.PARAMETRIZATION,
        seeds=seeds,
        steps=steps,
        lr=lr,
        loss=p["loss"],
        x_eval=prob["x"][rows],
        eval_steps=[steps],
        dtype=torch.float32,
    )
    return res.f_eval[:, 0].astype(np.float64)


def test_linearised_member_starts_from_the_trained_net():
    p = _params()
    prob = rf._problem(p)
    rows = rf._rows(prob, "nets")
    lr, rate = _lr(prob, p)
    seeds = [11, 12, 13]
    f0_trained = _trained(prob, rows, p, 64, seeds, lr, 0)
    f0_linear = rf._linearised_members(prob, rows, p, 64, seeds, lr, rate, 0)  # 0 steps: f₀
    scale = np.abs(f0_trained).max()
    assert scale > 0.1
    np.testing.assert_allclose(f0_linear, f0_trained, rtol=0, atol=1e-5 * scale)
    # The bug this guards against: a float64 draw from the same seed is another net.
    x = torch.as_tensor(prob["x"][rows], dtype=torch.float64)
    other = MLP(
        3,
        64,
        2,
        beta=0.1,
        activation="erf",
        generator=torch.Generator().manual_seed(11),
        dtype=torch.float64,
    )
    with torch.no_grad():
        f64 = other(x).reshape(-1).numpy()
    assert np.abs(f64 - f0_trained[0]).max() > 0.1 * scale


def test_linearised_member_follows_its_own_wide_trained_net():
    """At width 4096 a trained net stays near its own linearisation: much nearer than to the
    linearisation of another init."""
    p = _params()
    prob = rf._problem(p)
    rows = rf._rows(prob, "nets")
    lr, rate = _lr(prob, p)
    seeds, steps = [21, 22], 30
    trained = _trained(prob, rows, p, 4096, seeds, lr, steps)
    linear = rf._linearised_members(prob, rows, p, 4096, seeds, lr, rate, steps)
    own = np.abs(trained - linear).max()
    swapped = np.abs(trained - linear[::-1]).max()
    assert own < 0.1 * swapped


def test_linear_gd_matches_iterated_gradient_descent():
    rng = np.random.default_rng(0)
    n, m, steps, lr, rate = 6, 4, 37, 0.3, 2.0 / 6
    a = rng.standard_normal((n + m, n + m + 3))
    theta = a @ a.T / (n + m)
    lr = 1.5 / (rate * np.linalg.eigvalsh(theta[:n, :n])[-1])
    y, f0 = rng.standard_normal(n), rng.standard_normal(n + m)
    f = f0.copy()
    for _ in range(steps):  # f ← f − lr·η·Θ(·, X)(f(X) − y): the linear model's GD
        f = f - lr * rate * theta[:, :n] @ (f[:n] - y)
    out, _ = rf._linear_gd(theta, n, y, f0, lr, rate, steps)
    np.testing.assert_allclose(out, f[n:], rtol=1e-10, atol=1e-10)


def test_rows_rejects_an_unknown_part():
    prob = {"n": 3, "m": 2, "x": np.zeros((7, 2))}
    assert list(rf._rows(prob, "features")) == [3, 4]
    assert list(rf._rows(prob, "nets")) == [5, 6]
    with pytest.raises(ValueError, match="part"):
        rf._rows(prob, "net")


@pytest.mark.parametrize(
    "sizes, match",
    [
        ([2, 8, 4, 16, 40], "strictly increasing"),
        ([2, 4, 4, 16, 40], "strictly increasing"),
        ([5, 8, 16, 40], "P <= n_train/2"),
        ([2, 4, 8, 15], "P >= 2 n_train"),
    ],
)
def test_features_rejects_a_grid_the_claims_cannot_use(tmp_path, sizes, match):
    with pytest.raises(ValueError, match=f"random_features.features .*{match}"):
        rf.features(_params(features=sizes), [str(tmp_path / "f.npz")])


def test_direction_rows():
    shown = rf._direction("c", -1.0, 0.2, -1, "1, 2", "")
    assert shown.status == "pass" and "upper 3-SE" in shown.claim
    assert shown.measured == pytest.approx(-0.4) and shown.tolerance == 0
    unresolved = rf._direction("c", 0.1, 0.2, -1, "1, 2", "")
    assert unresolved.claim.startswith("finding: not resolved at widths 1, 2")
    assert unresolved.status == "pass" and unresolved.measured == pytest.approx(0.5)
    against = rf._direction("c", -1.0, 0.2, +1, "1, 2", "")
    assert against.status == "fail" and "lower 3-SE" in against.claim
    # no effect at all is never shown as an effect
    assert "finding" in rf._direction("c", 0.0, 0.2, +1, "1, 2", "").claim


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny features + nets run (seconds)."""
    d = tmp_path_factory.mktemp("rf")
    p = _params()
    rf.features(p, [str(d / "features.npz")])
    rf.nets(p, [str(d / "nets.npz")])
    return p, d


def test_check_runs_and_uses_the_grid_step(run):
    p, d = run
    out = d / "checks.csv"
    rf.check(p, [str(out)], features=str(d / "features.npz"), nets=str(d / "nets.npz"))
    text = out.read_text()
    assert "random_features" in text and "nan" not in text.lower()
    grid = load_arrays(d / "features.npz")["ridge_grid"]
    assert len(grid) == rf.RIDGE_GRID
    step = np.log10(grid[1] / grid[0])
    assert np.allclose(np.diff(np.log10(grid)), step)
    assert f"the fit grid's step {step:.3g} decade" in text


@pytest.mark.parametrize("key", ["spread", "hat_mean", "variance_law", "fitted", "f_linear"])
def test_load_refuses_non_finite_arrays(run, tmp_path, key):
    _, d = run
    paths = {"features": d / "features.npz", "nets": d / "nets.npz"}
    stage = "nets" if key == "f_linear" else "features"
    arrays = dict(load_arrays(paths[stage]))
    bad = np.array(arrays[key], dtype=np.float64)
    bad.flat[0] = np.nan
    arrays[key] = bad
    paths[stage] = tmp_path / f"{stage}.npz"
    save_arrays(paths[stage], **arrays)
    with pytest.raises(RuntimeError, match=key):
        rf._load(str(paths["features"]), str(paths["nets"]))
