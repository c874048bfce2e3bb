"""The saddles experiment (ntk_repro.experiments.saddles): Haar targets against the Haar law,
the configuration checks, the signed escape-time differences, and claim rows that never vanish
(set-up failures and unconverged nets give a failing row naming them)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ntk_repro.experiments import saddles as sd

DRAWS = 4000


def _mean_abs_z(mean, var, n):
    """|mean| in standard errors of an MC mean of n draws of variance var."""
    return np.abs(mean) / np.sqrt(var / n)


def test_haar_orthogonal_follows_the_haar_law():
    """Haar on O(3): E Q = 0 entrywise (Var Q_ij = 1/3) and Q₁₁ ~ Uniform(−1, 1) (its density is
    ∝ (1 − x²)^((d−3)/2)). The raw QR factor (no sign fix) fails both."""
    rng = np.random.default_rng(0)
    fixed = np.stack([sd.haar_orthogonal(3, rng) for _ in range(DRAWS)])
    raw = np.stack([np.linalg.qr(rng.standard_normal((3, 3)))[0] for _ in range(DRAWS)])
    np.testing.assert_allclose(fixed[0] @ fixed[0].T, np.eye(3), atol=1e-12)
    assert _mean_abs_z(fixed.mean(0), 1 / 3, DRAWS).max() < 4.5  # 9 entries, 4.5 SE
    assert _mean_abs_z(raw.mean(0), 1 / 3, DRAWS).max() > 10
    ks = np.sort(fixed[:, 0, 0])
    ecdf = np.arange(1, DRAWS + 1) / DRAWS
    assert np.abs(ecdf - (ks + 1) / 2).max() < 1.63 / math.sqrt(DRAWS)  # KS at the 1% level
    ks_raw = np.sort(raw[:, 0, 0])
    assert np.abs(ecdf - (ks_raw + 1) / 2).max() > 3 / math.sqrt(DRAWS)


def test_haar_target_has_the_values_zero_mean_and_names_the_key():
    targets = np.stack([sd.haar_target(3, [2.0, 1.0], seed) for seed in range(2000)])
    np.testing.assert_allclose(np.linalg.svd(targets[0], compute_uv=False), [2, 1, 0], atol=1e-12)
    # E A* = E U diag(s) E Vᵀ = 0; Var of an entry = Σ s_i² Var U Var V = 5/9.
    assert _mean_abs_z(targets.mean(0), 5 / 9, 2000).max() < 4.5
    with pytest.raises(ValueError, match=r"^saddles\.singular_values: 4 singular values"):
        sd.haar_target(3, [4, 3, 2, 1], 0, name="saddles.singular_values")


def _config(**changes):
    p = {
        "dim": 3,
        "singular_values": [2.0, 1.0],
        "completion_dim": 4,
        "completion_singular_values": [1.0],
        "staircase": [{"depth": 2, "gamma": 20, "time": 1, "lr": 0.1}],
        "escape": [{"depth": 3, "gammas": [2, 3, 4, 5], "lr": 0.1, "time": 1}],
    }
    return p | changes


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"singular_values": [3, 2, 1, 0.5]}, r"^saddles\.singular_values: 4 values, more than"),
        ({"completion_singular_values": [1] * 5}, r"^saddles\.completion_singular_values"),
        ({"escape": [{"depth": 3, "gammas": [2, 3, 5, 6], "lr": 1, "time": 1}]}, "equally"),
        ({"staircase": [{"depth": 2, "gamma": 3, "time": 1, "lr": 1}] * 2}, "listed twice"),
    ],
)
def test_bad_config_raises_when_the_workflow_validates_it(changes, match):
    with pytest.raises(ValueError, match=match):
        sd.EXPERIMENT.validate(_config(**changes))
    assert sd.EXPERIMENT.job("escape").each(_config()) == [{"depth": 3}]


def test_standard_error_needs_two_values():
    assert sd._se([1.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 2 values"):
        sd._se([1.0])


def test_escape_slope_checks_the_sign_of_the_differences():
    sigmas = 50 ** (-np.array([2.0, 2.5, 3.0, 3.5]) / 2)
    good = 0.03 / sigmas
    flat = good.copy()
    flat[2] = flat[1]  # two σ escaping together: a zero difference
    swapped = good.copy()
    swapped[[1, 2]] = swapped[[2, 1]]  # a larger σ escaping later: a negative difference
    with np.errstate(all="raise"):  # no log of 0 or of a negative number
        slopes, drift = sd.escape_slope(sigmas, np.stack([good, flat, swapped]), depth=3)
    np.testing.assert_allclose(slopes[0], -1.0, rtol=1e-10)
    assert np.isnan(slopes[1:]).all() and np.isnan(drift[1:]).all()
    slopes, _ = sd.escape_slope(sigmas, np.stack([good, np.where(good > 2, np.nan, good)]), 3)
    assert np.isfinite(slopes[0]) and np.isnan(slopes[1])


def _escape_result(t1):
    sigmas = 50 ** (-np.array([2.0, 2.5, 3.0, 3.5]) / 2)
    return {
        "depth": np.int64(3),
        "gammas": np.array([2.0, 2.5, 3.0, 3.5]),
        "sigmas": sigmas,
        "width": np.int64(50),
        "s1": np.float64(5.0),
        "horizon": np.float64(20.0),
        "t1_lr": t1 * 1.001,
        "t1_half": t1,
        "lr_lr": np.float64(0.01),
        "lr_half": np.float64(0.005),
    }


def test_escape_rows_never_vanish_and_name_what_did_not_escape():
    sigmas = 50 ** (-np.array([2.0, 2.5, 3.0, 3.5]) / 2)
    t1 = np.stack([c / sigmas - 0.08 for c in (0.03, 0.031, 0.029)])
    rows = sd._escape_rows(_escape_result(t1))
    assert [r.status for r in rows] == ["pass", "pass"]
    t1[1, 3] = np.nan
    rows = sd._escape_rows(_escape_result(t1))
    assert [r.status for r in rows] == ["fail", "fail"]
    assert "did not escape by t = 20 at γ = 3.5 (1 of 3 seeds)" in rows[0].note
    t1[1, 3], t1[0, [1, 2]] = 1.0, t1[0, [2, 1]]
    rows = sd._escape_rows(_escape_result(t1))
    assert rows[0].status == "fail" and "not decreasing in σ" in rows[0].note


def _ntk_result(final_ratio=1e-8):
    widths = np.array([50, 100, 200])
    lazy = 0.2 * (widths / 50.0) ** -1.0
    change = np.stack(
        [
            np.stack([lazy * (1 + 0.01 * i), np.full(3, 2.5), 100 * widths / 50.0], 1)
            for i in range(3)
        ],
        1,
    )  # (widths, seeds, gammas)
    return {
        "widths": widths,
        "gammas": np.array([0.5, 1.0, 1.5]),
        "depth": np.int64(3),
        "change": change,
        "final_loss": np.full(change.shape, final_ratio * 27.5),
        "horizon": np.ones(change.shape),
        "initial_loss": np.float64(27.5),
    }


def test_ntk_rows_state_the_threshold_and_need_converged_nets():
    rows = sd._ntk_rows(_ntk_result())
    assert [r.status for r in rows] == ["pass", "pass", "pass"]
    assert all(">= 1" in r.claim and "threshold 1" in r.note for r in rows[1:])
    res = _ntk_result()
    res["final_loss"][2, 1, 0] = 1e-2 * 27.5  # one lazy net at w = 200 not converged
    rows = sd._ntk_rows(res)
    assert [r.status for r in rows] == ["fail", "pass", "pass"]
    assert "γ = 0.5 not converged" in rows[0].note and "w = 200 (1 seeds)" in rows[0].note


def _dynamics_run(tmp_path, time):
    p = {
        "seed": 3,
        "device": "cpu",
        "dim": 3,
        "singular_values": [2.0, 1.0],
        "width": 8,
        "lr_fraction": 0.5,
        "seeds": 3,
        "records": 50,
        "loss_dt": 0.05,
        "gammas": [0.5, 1.5],
        "staircase": [{"depth": 2, "gamma": 12, "time": time, "lr": 0.02}],
    }
    sd.dynamics(p, [tmp_path / "run.npz"], depth="2")
    return dict(np.load(tmp_path / "run.npz"))


def test_dynamics_rows_never_vanish(tmp_path):
    """A horizon too short for γ > 1 to finish: the NTK row is still there, failing, saying
    it is the set-up; long enough: every row passes."""
    rows = sd._dynamics_rows(_dynamics_run(tmp_path, 30.0))
    assert len(rows) == 5 and all(r.status == "pass" for r in rows), [r.note for r in rows]
    assert "mean over seeds" in rows[1].note
    short = sd._dynamics_rows(_dynamics_run(tmp_path, 2.0))
    assert len(short) == 5
    assert short[-1].status == "fail" and "set-up failure" in short[-1].note
    assert "the first seed's" in short[1].note and "no seed has 2 plateaus" in short[1].note
