"""The whole Snakemake workflow, end to end, through the snakemake command line.

One run of the tiny ``test`` preset into a temporary directory serves several tests: the
outputs and the checks table, a report, determinism and kill-and-resume.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import REPO, SNAKEMAKE, new_workdir, snakemake, workflow_env


def _checks(workdir: Path) -> list[dict]:
    with open(workdir / "results" / "checks.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_figure_and_claim_is_produced(finished_run):
    workdir, seconds = finished_run
    figures = sorted(p.stem for p in (workdir / "results" / "checks").glob("*.csv"))
    assert {"fig1", "fig2", "fig3", "sweeps"} <= set(figures)
    for name in figures:
        for ext in ("png", "pdf"):
            path = workdir / "results" / "figures" / f"{name}.{ext}"
            assert path.stat().st_size > 1000, path
    rows = _checks(workdir)
    assert {r["experiment"] for r in rows} >= set(figures)
    for r in rows:
        assert r["passed"] in ("True", "False")
        float(r["measured"]), float(r["paper_value"]), float(r["tolerance"])
    print(f"test preset: {seconds:.0f} s, {len(rows)} claims, "
          f"{sum(r['passed'] == 'True' for r in rows)} pass")


def test_rerun_does_nothing_and_one_figure_rebuilds_alone(finished_run):
    workdir, _ = finished_run
    dry = snakemake(workdir, "-n", "--config", "preset=test").stdout
    assert "Nothing to be done" in dry or "nothing to be done" in dry.lower()
    # Changing one fig2 value reruns only fig2's jobs.
    dry = snakemake(workdir, "-n", "--config", "preset=test", "fig2={steps: 50}").stdout
    assert "fig2_train" in dry and "fig1_train" not in dry and "sweep_cell" not in dry


def test_report_is_written(finished_run):
    workdir, _ = finished_run
    snakemake(workdir, "--report", "results/report.html", "--config", "preset=test")
    assert (workdir / "results" / "report.html").stat().st_size > 10_000


def test_same_target_regenerates_bit_for_bit(finished_run, tmp_path):
    workdir, _ = finished_run
    other = new_workdir(tmp_path / "again")
    target = "results/fig2/train_w32.npz"
    snakemake(other, target, "--cores", "2", "--config", "preset=test")
    assert (other / target).read_bytes() == (workdir / target).read_bytes()


def test_killed_run_resumes_without_redoing_finished_jobs(finished_run, tmp_path):
    workdir, _ = finished_run
    run = new_workdir(tmp_path / "killed")
    first = run / "results/fig2/limit.npz"
    snakemake(run, str(first.relative_to(run)), "--cores", "1", "--config", "preset=test")
    stamp = first.stat().st_mtime_ns
    target = "results/figures/fig2.png"
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(run), target, "--cores", "1",
           "--config", "preset=test"]
    proc = subprocess.Popen(cmd, env=workflow_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    # With one core the jobs run one after another: once the second training job has
    # started (its log exists), Snakemake has recorded the first one as finished.
    outputs = {w: run / f"results/fig2/train_w{w}.npz" for w in (32, 256)}
    logs = {w: run / f"logs/fig2_train/w{w}.log" for w in (32, 256)}
    deadline = time.time() + 300
    done = None
    while done is None and time.time() < deadline and proc.poll() is None:
        for w, other in ((32, 256), (256, 32)):
            if outputs[w].exists() and logs[other].exists() and not outputs[other].exists():
                done = outputs[w]
        time.sleep(0.1)
    assert done is not None, "never caught the run between its two training jobs"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_stamp = done.stat().st_mtime_ns
    # A hard kill leaves Snakemake's lock behind: unlock, then the same command again.
    snakemake(run, "--unlock", "--config", "preset=test")
    out = snakemake(run, target, "--cores", "2", "--rerun-incomplete", "--config", "preset=test")
    log = out.stdout + out.stderr
    assert first.stat().st_mtime_ns == stamp and done.stat().st_mtime_ns == done_stamp
    assert "fig2_limit" not in log.split("Job stats:")[-1].split("Reasons")[0]
    for name in ("train_w32.npz", "train_w256.npz", "limit.npz"):
        assert (run / "results/fig2" / name).read_bytes() == \
            (workdir / "results/fig2" / name).read_bytes(), name


def test_bad_config_value_fails_before_any_job_naming_the_key(tmp_path):
    workdir = new_workdir(tmp_path)
    for override, key in (("model={beta: 1.5}", "model.beta"),
                          ("fig1={widths: [0, 10]}", "fig1.widths[0]"),
                          ("fig2={widht: 3}", "fig2.widht"),
                          ("model={activation: softsign}", "model.activation")):
        proc = snakemake(workdir, "--cores", "1", "--config", "preset=test", override, check=False)
        assert proc.returncode != 0
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "config error" in ln]
        assert len(lines) == 1 and key in lines[0], proc.stderr[-2000:]
    assert not (workdir / "results").exists()


def test_paper_preset_dry_run_builds_the_full_dag(tmp_path):
    workdir = new_workdir(tmp_path)
    out = snakemake(workdir, "-n", "--config", "preset=paper").stdout
    assert "fig1_train" in out and "sweep_cell" in out
    # widths 500 and 10000 for fig1, as in the paper
    assert "train_w10000.npz" in out


def test_lint_is_clean(tmp_path):
    workdir = new_workdir(tmp_path)
    proc = snakemake(workdir, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
