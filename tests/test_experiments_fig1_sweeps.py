"""The fig1 and sweeps stages on tiny settings: files, claim rows, determinism."""

import csv
import math

import numpy as np
import pytest

from ntk_repro.experiments import fig1, sweeps
from ntk_repro.results import load_arrays

COMMON = dict(
    depth=3,
    beta=0.1,
    activation="relu",
    parametrization="ntk2018",
    loss="half_mse",
    lr=1.0,
    dtype="float32",
    device="cpu",
    seed=11,
)
FIG1 = dict(
    COMMON, widths=[32, 128], inits=3, steps=4, batch_size=8, circle_points=16, init_samples=4
)
SWEEPS = dict(
    COMMON,
    widths=[16, 64],
    depths=[2],
    betas=[0.1],
    seeds=[0, 1],
    inits=2,
    n_train=6,
    n_test=4,
    input_dim=3,
    steps=5,
)


def _read_checks(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_fig1_stages_write_arrays_figure_and_claims(tmp_path):
    limit = tmp_path / "theta_inf.npz"
    fig1.limit(FIG1, [str(limit)])
    runs = [tmp_path / f"train_w{w}.npz" for w in FIG1["widths"]]
    for w, path in zip(FIG1["widths"], runs):
        fig1.train(FIG1, [str(path)], width=str(w))
    inputs = dict(limit=str(limit), runs=[str(p) for p in runs])

    lim = load_arrays(limit)
    assert lim["theta_inf"].shape == (16,) and lim["theta_inf"].dtype == np.float64
    # Θ∞(x0, x) peaks at x = x0 (γ = 0) on the circle.
    assert lim["angles"][np.argmax(lim["theta_inf"])] == pytest.approx(0.0)
    run = load_arrays(runs[0])
    assert run["theta"].shape == (3, 2, 16)  # (inits, t ∈ {0, steps}, circle points)
    assert list(run["ntk_steps"]) == [0, 4]
    assert run["theta_init"].shape == (4, 16)  # init-only nets for the n^-1/2 check
    assert fig1.init_deviation(run, lim["theta_inf"]).shape == (3 + 4,)
    assert np.isfinite(run["theta"]).all()

    png, pdf = tmp_path / "fig1.png", tmp_path / "fig1.pdf"
    fig1.plot(FIG1, [str(png), str(pdf)], **inputs)
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0

    out = tmp_path / "fig1.csv"
    fig1.check(FIG1, [str(out)], **inputs)
    rows = _read_checks(out)
    assert len(rows) == 4
    assert all(r["experiment"] == "fig1" and r["status"] in ("pass", "fail") for r in rows)
    assert float(rows[1]["paper_value"]) == pytest.approx(2.0)  # sqrt(128 / 32)
    assert all(math.isfinite(float(r["measured"])) for r in rows)


def test_fig1_training_is_bitwise_deterministic(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    fig1.train(FIG1, [str(a)], width="32")
    fig1.train(FIG1, [str(b)], width="32")
    assert a.read_bytes() == b.read_bytes()


def test_sweeps_stages_write_cells_table_figure_and_claims(tmp_path):
    cells = []
    for w in SWEEPS["widths"]:
        for s in SWEEPS["seeds"]:
            path = tmp_path / f"w{w}_L2_b0.1_s{s}.npz"
            sweeps.cell(SWEEPS, [str(path)], width=str(w), depth="2", beta="0.1", seed=str(s))
            cells.append(str(path))
    cell = load_arrays(cells[0])
    for key in ("d_init", "change", "gap", "final_loss"):
        assert cell[key].shape == (2,) and np.all(cell[key] > 0)
    assert int(cell["width"]) == 16 and float(cell["beta"]) == 0.1

    table = tmp_path / "summary.csv"
    sweeps.table(SWEEPS, [str(table)], cells=cells)
    columns = sweeps.read_table(table)
    assert len(columns["width"]) == 2 * 2 * 2  # widths × seeds × inits
    assert sorted(set(columns["width"].tolist())) == [16, 64]

    png, pdf = tmp_path / "sweeps.png", tmp_path / "sweeps.pdf"
    sweeps.plot(SWEEPS, [str(png), str(pdf)], table=str(table))
    assert png.stat().st_size > 0

    out = tmp_path / "sweeps.csv"
    sweeps.check(SWEEPS, [str(out)], table=str(table))
    rows = _read_checks(out)
    assert len(rows) == 3  # one (depth, β): init deviation, training change, function gap
    assert [float(r["paper_value"]) for r in rows] == [-0.5, -0.5, -0.5]
    assert [r["comparison"] for r in rows] == ["abs", "at_most", "abs"]
    assert all(float(r["tolerance"]) > 0 for r in rows)


def test_loglog_fit_recovers_slope_and_standard_error():
    rng = np.random.default_rng(0)
    widths = np.repeat([64, 128, 256, 512, 1024], 200)
    noise = 0.3
    values = 2.0 * widths**-0.5 * np.exp(noise * rng.standard_normal(widths.size))
    slope, intercept, se, dof = sweeps.loglog_fit(widths, values)
    x = np.log(widths)
    expected_se = noise / math.sqrt(((x - x.mean()) ** 2).sum())
    assert dof == widths.size - 2
    assert se == pytest.approx(expected_se, rel=0.1)
    assert abs(slope + 0.5) < 4 * expected_se
    assert math.exp(intercept) == pytest.approx(2.0, rel=0.2)


def test_loglog_fit_without_residual_degrees_of_freedom_has_no_se():
    slope, _, se, dof = sweeps.loglog_fit(np.array([10, 40]), np.array([1.0, 0.5]))
    assert slope == pytest.approx(-0.5) and dof == 0 and math.isnan(se)
