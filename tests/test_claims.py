"""The claims gate: statuses of a claim, the summary, the exit code, and faults injected into a
result that the gate must catch."""

from __future__ import annotations

import csv
import math

import pytest

from ntk_repro import claims
from ntk_repro.experiments import regimes
from ntk_repro.results import Check, write_checks

NETWORKS = [
    {"name": "freeze", "regime": "freeze", "activation": "scaled_relu", "beta": 0.8},
    {"name": "chaos", "regime": "chaos", "activation": "normalized:relu", "beta": 0.1},
]
REGIMES = {
    "seed": 3,
    "device": "cpu",
    "networks": NETWORKS,
    "depth": 4,
    "circle_points": 12,
    "sphere_points": 10,
    "sphere_dim": 3,
    "angle_points": 19,
}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_status_of_a_claim():
    assert Check("x", "c", 1.0, 1.05, 0.1).status == "pass"
    assert Check("x", "c", 1.0, 1.2, 0.1).status == "fail"
    assert Check("x", "c", 1.0, math.nan, 0.1).status == "fail"  # NaN never passes
    assert Check("x", "c", 0.0, -math.inf, 1.0, "at_most").status == "fail"
    row = Check("x", "c", 1.0, 1.2, 0.1, note="n", not_evaluated="too small")
    assert row.status == "not_evaluated" and row.note.startswith("not evaluated at this size")


def test_gate_summarises_and_fails_on_a_failing_claim(tmp_path, capsys):
    table = tmp_path / "checks.csv"
    write_checks(
        table,
        [
            Check("a", "holds", 1.0, 1.0, 0.1),
            Check("a", "too small here", 1.0, 9.0, 0.1, not_evaluated="why"),
            Check("b", "breaks", 2.0, 3.5, 0.25, "abs"),
        ],
    )
    assert claims.gate(table, tmp_path / "ok.txt") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 of 2 claims hold (1 not evaluated at this preset)"
    assert out[1].startswith("FAILED b: breaks") and "measured 3.5" in out[1]
    assert "tolerance 0.25" in out[1] and len(out) == 2
    assert not (tmp_path / "ok.txt").exists()
    rows = _rows(table)
    assert [r["status"] for r in rows] == ["pass", "not_evaluated", "fail"]
    assert [r["passed"] for r in rows] == ["True", "", "False"]


def test_gate_passes_when_every_evaluated_claim_holds(tmp_path, capsys):
    table = tmp_path / "checks.csv"
    write_checks(
        table,
        [
            Check("a", "holds", 1.0, 1.0, 0.1),
            Check("a", "not here", 1.0, 5.0, 0.1, not_evaluated="why"),
        ],
    )
    assert claims.main(["gate", str(table), "--summary", str(tmp_path / "ok.txt")]) == 0
    assert (tmp_path / "ok.txt").read_text().startswith("1 of 1 claims hold")


@pytest.mark.parametrize("content", ["", "experiment,claim\nx,y\n"])
def test_gate_fails_on_an_empty_or_malformed_table(tmp_path, content, capsys):
    table = tmp_path / "checks.csv"
    table.write_text(content)
    assert claims.gate(table) == 1
    assert claims.gate(tmp_path / "missing.csv") == 1


def test_a_kernel_scaled_by_1_1_turns_the_gate_red(tmp_path, monkeypatch):
    """Fault injection: the analytic Θ∞ behind the regimes figure is off by 10 %."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder in (good, bad):
        folder.mkdir()
    regimes.limit(REGIMES, [str(good / "kernels.npz")])
    regimes.check(REGIMES, [str(good / "checks.csv")], limit=str(good / "kernels.npz"))
    original = regimes.theta_inf
    monkeypatch.setattr(regimes, "theta_inf", lambda *a, **k: 1.1 * original(*a, **k))
    regimes.limit(REGIMES, [str(bad / "kernels.npz")])
    regimes.check(REGIMES, [str(bad / "checks.csv")], limit=str(bad / "kernels.npz"))
    assert {r["status"] for r in _rows(good / "checks.csv")} == {"pass"}
    failed = [r for r in _rows(bad / "checks.csv") if r["status"] == "fail"]
    assert any("Θ(x,x)" in r["claim"] for r in failed), failed
    assert claims.gate(good / "checks.csv") == 0 and claims.gate(bad / "checks.csv") == 1
