"""Smoke run of the benchmarks (``python -m benchmarks --smoke``): every benchmark family at tiny
sizes, each case in its own worker process as in ``make bench``. Checks the CSVs' shape, a row
for every declared case, that every measured time is a finite positive number, the ratios to
ntk-repro's time, and the accuracy the Hessian rows report; no assertion on speed."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COLUMNS = [
    "benchmark",
    "size",
    "implementation",
    "time_s",
    "ratio_to_ours",
    "peak_mem_mb",
    "extra_mem_mb",
    "first_call_s",
    "gflops",
    "load_1min",
    "repeats",
    "note",
    "machine",
]
LIMIT_COLUMNS = ["quantity", "ns_per_element", "threads", "note", "load_1min", "machine"]
OURS = {
    "analytic": "ntk-repro theta_inf",
    "empirical": "ntk-repro empirical_ntk (structured)",
    "training": "ntk-repro train_ensemble (K together)",
    "generalization": "ntk-repro krr_predict (one eigh, all ridges)",
    "hessian": "ntk-repro top_eigenpairs (Lanczos on torch.func HVPs)",
}
HAS_NEURAL_TANGENTS = importlib.util.find_spec("neural_tangents") is not None

pytestmark = pytest.mark.slow  # ~10 worker processes, each importing torch: 20-40 s


def run_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The benchmark CLI from an unrelated working directory (the repo only on PYTHONPATH)."""
    env = dict(os.environ)
    env.pop("NTK_REPRO_NT_PYTHON", None)  # neural-tangents only if this interpreter has it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    proc = run_bench("--smoke", "--out", str(out), cwd=tmp_path_factory.mktemp("elsewhere"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def positive(value: str) -> bool:
    return math.isfinite(float(value)) and float(value) > 0


@pytest.mark.parametrize("bench", ["analytic", "empirical", "training"])
def test_measured_rows_have_positive_times_memory_and_machine(smoke_out, bench):
    columns, rows = read_csv(smoke_out / f"{bench}.csv")
    assert columns == COLUMNS
    assert len({r["implementation"] for r in rows}) >= 3
    for r in rows:
        assert positive(r["time_s"]), r
        assert positive(r["ratio_to_ours"]), r
        assert positive(r["peak_mem_mb"]), r
        assert int(r["repeats"]) >= 3, r
        assert math.isfinite(float(r["load_1min"])), r
        assert "cores" in r["machine"] and "torch" in r["machine"], r
    ours = [r for r in rows if r["implementation"] == OURS[bench]]
    assert ours and all(float(r["ratio_to_ours"]) == 1.0 for r in ours)


def declared_cases(bench: str, monkeypatch) -> set[tuple[str, str]]:
    """(size, implementation) of every case the benchmark module declares at smoke scale."""
    monkeypatch.syspath_prepend(str(REPO))
    module = importlib.import_module(f"benchmarks.{bench}")
    return {(c["size"], c["impl"]) for c in getattr(module, f"{bench}_cases")("smoke")}


def accuracy(note: str, what: str) -> float:
    """The number after ``what`` in a hessian row's note ("…: 3.1e-15")."""
    match = re.search(re.escape(what) + r"[^:]*: ([-+0-9.eE]+|nan|inf)", note)
    assert match, (what, note)
    return float(match.group(1))


@pytest.mark.parametrize("bench", ["generalization", "hessian"])
def test_every_declared_case_has_a_measured_row_and_its_ratio(smoke_out, bench, monkeypatch):
    columns, rows = read_csv(smoke_out / f"{bench}.csv")
    assert columns == COLUMNS
    declared = declared_cases(bench, monkeypatch)
    assert len(rows) == len(declared)
    assert {(r["size"], r["implementation"]) for r in rows} == declared
    ours = {r["size"]: float(r["time_s"]) for r in rows if r["implementation"] == OURS[bench]}
    for r in rows:
        assert r["benchmark"] == bench, r
        # A worker that failed (e.g. a risk curve off a direct solve) leaves time_s empty.
        assert positive(r["time_s"]) and positive(r["first_call_s"]), r
        assert positive(r["peak_mem_mb"]) and int(r["repeats"]) >= 3, r
        assert math.isfinite(float(r["load_1min"])), r
        assert "cores" in r["machine"] and "torch" in r["machine"], r
        ratio = float(r["time_s"]) / ours[r["size"]]
        assert float(r["ratio_to_ours"]) == pytest.approx(ratio, rel=1e-3), r


def test_hessian_rows_report_the_accuracy_of_their_eigenpairs(smoke_out):
    _, rows = read_csv(smoke_out / "hessian.csv")
    reference = "dense autograd Hessian + eigvalsh"
    for r in rows:
        if r["implementation"] != reference:  # compared with the dense eigenvalues
            assert math.isfinite(accuracy(r["note"], "max rel. error of the top-20")), r
    (ours,) = [r for r in rows if r["implementation"] == OURS["hessian"]]
    assert accuracy(ours["note"], "max rel. error of the top-20") < 1e-8, ours
    assert accuracy(ours["note"], "max ‖Hv − λv‖/|λ|") < 1e-8, ours


@pytest.mark.parametrize("bench", ["analytic", "empirical"])
def test_neural_tangents_rows_only_with_the_crosscheck_extra(smoke_out, bench):
    _, rows = read_csv(smoke_out / f"{bench}.csv")
    assert any(r["implementation"] == "neural-tangents" for r in rows) == HAS_NEURAL_TANGENTS


def test_training_rows_report_flops(smoke_out):
    _, rows = read_csv(smoke_out / "training.csv")
    assert all(positive(r["gflops"]) for r in rows)


def test_limits_and_pipeline_csvs_and_plot(smoke_out):
    columns, rows = read_csv(smoke_out / "limits.csv")
    assert columns == LIMIT_COLUMNS
    assert any(r["quantity"].startswith("theta_inf end to end") for r in rows)
    assert all(positive(r["ns_per_element"]) for r in rows)
    columns, rows = read_csv(smoke_out / "pipeline.csv")
    assert columns == COLUMNS
    # The paper preset's estimate is there whenever training measured FLOP/s.
    assert any(r["size"] == "preset=paper,total" and positive(r["time_s"]) for r in rows)
    assert (smoke_out / "bench.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--repeats", "2"], "--repeats"),
        (["--only", "analytic,nonsense"], "--only"),
        (["--quick", "--smoke"], "--smoke"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, args, message):
    proc = run_bench(*args, "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
