"""The whole Snakemake workflow, end to end, through the snakemake command line.

One run of the tiny ``test`` preset into a temporary directory serves several tests: the
outputs and the checks table, a report, determinism and kill-and-resume.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from conftest import REPO, SNAKEMAKE, new_workdir, snakemake, workflow_env

from ntk_repro.experiments import registry

FIG2_JOBS = {"fig2_limit", "fig2_train", "fig2_plot", "fig2_check"}
MERGE_JOBS = {"checks", "claims_gate"}


def _checks(workdir: Path) -> list[dict]:
    with open(workdir / "results" / "checks.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_figure_is_drawn_and_every_evaluated_claim_holds(finished_run):
    workdir, seconds = finished_run
    experiments = list(registry())
    assert sorted(p.stem for p in (workdir / "results" / "checks").glob("*.csv")) == sorted(
        experiments
    )
    for name in experiments:
        for ext in ("png", "pdf"):
            path = workdir / "results" / "figures" / f"{name}.{ext}"
            assert path.stat().st_size > 1000, path
    rows = _checks(workdir)
    assert {r["experiment"] for r in rows} == set(experiments)
    for r in rows:
        float(r["measured"]), float(r["paper_value"]), float(r["tolerance"])
        assert r["status"] in ("pass", "not_evaluated"), r
        if r["status"] == "not_evaluated":
            assert "not evaluated at this size:" in r["note"], r
    evaluated = [r for r in rows if r["status"] == "pass"]
    # The tiny preset still tests the claims: at least 80 % of them are evaluated.
    assert len(evaluated) >= 0.8 * len(rows)
    summary = (workdir / "results" / "claims.txt").read_text()
    assert summary.startswith(f"{len(evaluated)} of {len(evaluated)} claims hold")
    print(f"test preset: {seconds:.0f} s, {len(rows)} claims, {len(evaluated)} evaluated")


def _scheduled(dry_run_stdout: str) -> set[str]:
    """Rule names in the job-stats table of a dry run (empty if nothing is to be done)."""
    if "Job stats:" not in dry_run_stdout:
        return set()
    table = dry_run_stdout.split("Job stats:")[-1].split("Reasons")[0]
    rows = (line.split() for line in table.splitlines())
    return {r[0] for r in rows if len(r) == 2 and r[1].isdigit()} - {"total", "all"}


def test_rerun_does_nothing_and_one_figure_rebuilds_alone(finished_run):
    workdir, _ = finished_run
    dry = snakemake(workdir, "-n", "--config", "preset=test").stdout
    assert "nothing to be done" in dry.lower()
    # Changing one fig2 value reruns only fig2's jobs (and the tables that merge all).
    jobs = _scheduled(
        snakemake(workdir, "-n", "--config", "preset=test", "fig2={steps: 50}").stdout
    )
    assert "fig2_train" in jobs and jobs <= FIG2_JOBS | MERGE_JOBS, jobs


def test_model_values_rerun_only_the_ntk_paper_experiments(finished_run):
    workdir, _ = finished_run
    jobs = _scheduled(
        snakemake(workdir, "-n", "--config", "preset=test", "model={beta: 0.2}").stdout
    )
    touched = {job.split("_")[0] for job in jobs} - {"checks", "claims"}
    assert touched == {"fig1", "fig2", "fig3"}, jobs  # sweeps take β from their own grid


def test_editing_an_experiment_module_reruns_that_experiment_only(finished_run):
    workdir, _ = finished_run
    source = registry()["fig2"].source
    text, stat = source.read_bytes(), source.stat()
    try:
        source.write_bytes(text + b"\n# an edit\n")
        jobs = _scheduled(snakemake(workdir, "-n", "--config", "preset=test").stdout)
    finally:
        source.write_bytes(text)
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert {"fig2_limit", "fig2_train", "fig2_plot"} <= jobs <= FIG2_JOBS | MERGE_JOBS, jobs
    # Snakemake compares checksums: a touch without an edit reruns nothing.
    os.utime(source)
    try:
        assert not _scheduled(snakemake(workdir, "-n", "--config", "preset=test").stdout)
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))


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
    cmd = [
        *SNAKEMAKE,
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(run),
        target,
        "--cores",
        "1",
        "--config",
        "preset=test",
    ]
    proc = subprocess.Popen(
        cmd,
        env=workflow_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # With one core the jobs run one after another: once the second training job has
    # started (its log exists), Snakemake has recorded the first one as finished.
    outputs = {w: run / f"results/fig2/train_w{w}.npz" for w in (32, 256)}
    logs = {w: run / f"logs/fig2/train_w{w}.log" for w in (32, 256)}
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
        assert (run / "results/fig2" / name).read_bytes() == (
            workdir / "results/fig2" / name
        ).read_bytes(), name


def test_bad_config_value_fails_before_any_job_naming_the_key(tmp_path):
    workdir = new_workdir(tmp_path)
    for override, key in (
        ("model={beta: 1.5}", "model.beta"),
        ("fig1={widths: [-5]}", "fig1.widths[0]"),
        (f"fig3={{mnist: {tmp_path / 'missing.idx'}}}", "fig3.mnist"),
        ("fig2={widht: 3}", "fig2.widht"),
        ("model={activation: softsign}", "model.activation"),
        # Relations between keys, from the experiments' own validate.
        ("gan={kernel_codes: 16, latent_dim: 20}", "gan.kernel_codes"),
        ("saddles={singular_values: [3, 2, 1, 0.5, 0.25]}", "saddles.singular_values"),
        (
            "random_features={features: [200, 80, 40, 22, 20, 18, 10, 5, 2]}",
            "random_features.features",
        ),
    ):
        proc = snakemake(workdir, "--cores", "1", "--config", "preset=test", override, check=False)
        assert proc.returncode != 0
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "config error" in ln]
        assert len(lines) == 1 and key in lines[0], proc.stderr[-2000:]
    assert not (workdir / "results").exists()


def test_paper_preset_dry_run_builds_the_full_dag(tmp_path):
    workdir = new_workdir(tmp_path)
    out = snakemake(workdir, "-n", "--config", "preset=paper").stdout
    assert "fig1_train" in out and "sweeps_cell" in out
    # widths 500 and 10000 for fig1, as in the paper
    assert "train_w10000.npz" in out


def test_lint_is_clean(tmp_path):
    workdir = new_workdir(tmp_path)
    proc = snakemake(workdir, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_broken_claim_fails_the_run_after_every_figure_is_drawn(finished_run, tmp_path):
    """Fault injection: too few training steps for fig2. The run goes on, draws the figure,
    writes the failing rows, prints them last and exits non-zero."""
    workdir, _ = finished_run
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken, symlinks=True)  # keeps mtimes: only fig2 reruns
    proc = snakemake(
        broken, "--cores", "2", "--config", "preset=test", "fig2={steps: 2}", check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    rows = _checks(broken)
    failed = [r for r in rows if r["status"] == "fail"]
    assert failed and {r["experiment"] for r in failed} == {"fig2"}, failed
    assert "claims hold" in out and f"FAILED fig2: {failed[0]['claim']}" in out
    assert (broken / "results/figures/fig2.png").stat().st_mtime > (
        workdir / "results/figures/fig2.png"
    ).stat().st_mtime
    assert not (broken / "results/claims.txt").exists()
