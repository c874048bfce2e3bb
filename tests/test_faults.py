"""Faults, tried: a SLURM job cancelled mid-run, a job over its memory, two runs on one directory.

The SLURM tests use the real one-node cluster of CI (.ci/slurm-up.sh, which also makes SLURM
kill a job step above its --mem) and skip, or fail under NTK_REQUIRE_SLURM=1, like
tests/test_slurm.py. The lock test needs no cluster. Its first run is the uninterrupted local
run that the cancelled-and-resumed SLURM run must equal byte for byte.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, SNAKEMAKE, new_workdir, result_files, snakemake, workflow_env

# One figure whose training jobs are long enough to act on while they run and short enough for
# CI: the local run of 10000 steps takes ~45 s on an idle 2-core machine (1000 steps ended before
# a second run could be refused). Snakemake's --config must come after the targets.
TARGET = "results/figures/fig2.png"
CONFIG = ["--config", "preset=test", "fig2={steps: 10000, widths: [32, 64]}"]
# Rule names, only where Snakemake or SLURM need one: the training rule whose SLURM job is
# cancelled (found by the plugin's job comment "rule_<name>_wildcards_..."), and a rule given
# too little memory together with its output file.
TRAIN_RULE = "fig2_train"
MEMORY_RULE = "fig2_limit"
MEMORY_TARGET = "results/fig2/limit.npz"
# The Python job alone needs ~300 MB; SLURM counts Snakemake's job wrapper in the step too.
TOO_LITTLE_MB = 200

SLURM_ARGS = [
    "--profile",
    str(REPO / "workflow" / "profiles" / "slurm"),
    "--jobs",
    "4",
    "--latency-wait",
    "10",
    "--slurm-status-command",
    "squeue",  # the CI cluster has no accounting database
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--default-resources",
    "slurm_partition=debug",
    "mem_mb=1000",
    "runtime=20",
    # The profile retries a failed job once; a retry would rerun the cancelled (or starved)
    # job inside the same run and hide the failure report these tests are about.
    "--retries",
    "0",
]
LOCK_MESSAGE = "Directory cannot be locked"


def start_snakemake(workdir: Path, args: list[str], out: Path) -> subprocess.Popen:
    """Start the snakemake CLI in the background, its output (both streams) to ``out``."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    with open(out, "w") as fh:
        return subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, env=workflow_env()
        )


def stop(proc: subprocess.Popen) -> None:
    """Interrupt a run left behind by a failed assertion (Snakemake then cancels its jobs)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(condition, what: str, timeout: float, proc: subprocess.Popen, out: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"never saw {what}; snakemake output:\n{out.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    """A local run of TARGET, and a second identical run started while the first one works.

    Returns (workdir, first, second): the two finished processes with their output text.
    """
    workdir = new_workdir(tmp_path_factory.mktemp("locked"))
    args = [TARGET, "--cores", "2", *CONFIG]
    first_out = workdir.parent / "first.out"
    first = start_snakemake(workdir, args, first_out)
    try:
        # A job has started, so the first run holds the lock and has a job to lose.
        wait_until(
            lambda: re.search(r"^(local)?rule \w+:", first_out.read_text(), re.M),
            "a job start",
            120,
            first,
            first_out,
        )
        second = snakemake(workdir, *args, check=False, timeout=600)
        assert first.poll() is None, "the first run ended before the second one was tried"
        first.wait(timeout=900)
    finally:
        stop(first)
    first.output = first_out.read_text()
    return workdir, first, second


@pytest.mark.slow
def test_second_run_on_one_directory_is_refused_and_loses_nothing(uninterrupted_run):
    workdir, first, second = uninterrupted_run
    assert second.returncode != 0
    refusal = [
        line for line in (second.stderr + second.stdout).splitlines() if LOCK_MESSAGE in line
    ]
    assert refusal, second.stderr[-4000:]
    assert first.returncode == 0, first.output[-4000:]
    assert "Error in rule" not in first.output
    assert (workdir / TARGET).is_file()
    # Nothing is left locked, incomplete or to redo.
    assert not list((workdir / ".snakemake" / "locks").glob("*"))
    dry = snakemake(workdir, TARGET, "--cores", "2", "--dry-run", *CONFIG)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    print(refusal[0])


def running_train_job(workdir: Path) -> str | None:
    """SLURM id of a RUNNING job of TRAIN_RULE submitted from ``workdir``, if any."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%Z"],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    for line in out.splitlines():
        job_id, comment, cwd = line.split("|", 2)
        if comment.startswith(f"rule_{TRAIN_RULE}") and Path(cwd) == workdir:
            return job_id
    return None


def command_started(workdir: Path, job_id: str) -> bool:
    """Whether SLURM job ``job_id`` has begun its shell command: its SLURM log shows the
    innermost Snakemake (the one on the node) announcing the job as a local rule."""
    for log in (workdir / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log"):
        if re.search(r"^localrule \w+:", log.read_text(), re.M):
            return True
    return False


def failed_outputs(output: str) -> list[str]:
    """Output files of the jobs Snakemake reports as failed ("Error in rule" blocks)."""
    names = []
    for block in output.split("Error in rule")[1:]:
        listed = re.search(r"^\s+output: (.*)$", block, re.M)
        names += listed.group(1).split(", ") if listed else ["<no output listed>"]
    return names


@pytest.mark.slow
@pytest.mark.slurm
def test_cancelled_slurm_job_is_reported_and_a_rerun_completes(
    cluster, uninterrupted_run, tmp_path
):
    reference = uninterrupted_run[0]
    workdir = new_workdir(tmp_path / "cancelled")
    args = [TARGET, *SLURM_ARGS, *CONFIG]
    out = tmp_path / "interrupted.out"
    start = time.perf_counter()
    proc = start_snakemake(workdir, args, out)
    try:
        job_id = wait_until(
            lambda: running_train_job(workdir), f"a running {TRAIN_RULE} job", 300, proc, out
        )
        wait_until(
            lambda: command_started(workdir, job_id),
            f"job {job_id} start its command",
            300,
            proc,
            out,
        )
        time.sleep(2)  # mid-run: the training process is working
        subprocess.run(["scancel", job_id], check=True, timeout=20)
        proc.wait(timeout=600)
    finally:
        stop(proc)
    interrupted = out.read_text()
    interrupted_seconds = time.perf_counter() - start

    assert proc.returncode != 0
    # One line reports the cancelled job, and it is the only failure.
    cancelled = [line for line in interrupted.splitlines() if "CANCELLED" in line]
    assert len(cancelled) == 1 and f"'{job_id}'" in cancelled[0], interrupted[-4000:]
    lost = failed_outputs(interrupted)
    assert len(lost) == 1, interrupted[-4000:]
    # keep-going: every other result the figure needs was made; the figure waits.
    made, expected = set(result_files(workdir)), set(result_files(reference))
    assert made == expected - {str(Path(lost[0]).relative_to("results"))}
    assert not (workdir / TARGET).exists()

    start = time.perf_counter()
    rerun = snakemake(workdir, *args, timeout=900)
    rerun_seconds = time.perf_counter() - start
    assert "CANCELLED" not in rerun.stdout + rerun.stderr
    ours, theirs = result_files(workdir), result_files(reference)
    assert ours.keys() == theirs.keys()
    differing = [name for name in ours if ours[name] != theirs[name]]
    assert not differing, f"resumed SLURM results differ from an uninterrupted run: {differing}"
    print(
        f"cancelled {cancelled[0].strip()!r}; interrupted run {interrupted_seconds:.0f} s, "
        f"rerun {rerun_seconds:.0f} s, {len(ours)} result files identical"
    )


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_job_over_its_memory_is_killed_and_says_so(cluster, tmp_path):
    workdir = new_workdir(tmp_path / "memory")
    proc = snakemake(
        workdir,
        MEMORY_TARGET,
        *SLURM_ARGS,
        "--set-resources",
        f"{MEMORY_RULE}:mem_mb={TOO_LITTLE_MB}",
        "--config",
        "preset=test",
        check=False,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert failed_outputs(output) == [MEMORY_TARGET], output[-4000:]
    assert not (workdir / MEMORY_TARGET).exists()
    # Snakemake names the job's SLURM log, and SLURM wrote there why it killed the job.
    slurm_logs = re.findall(r"\S*slurm_logs\S*\.log", output)
    assert slurm_logs, output[-4000:]
    reason = Path(slurm_logs[-1]).read_text()
    assert "Exceeded job memory limit" in reason, reason
    print(
        *[line for line in output.splitlines() if "SLURM status" in line],
        *[line for line in reason.splitlines() if "memory limit" in line],
        sep="\n",
    )
