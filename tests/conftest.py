"""Shared fixtures: one run of the whole workflow on the tiny `test` preset per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def workflow_env() -> dict:
    env = dict(os.environ)
    # Rules call `python`: make it this interpreter's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake(workdir: Path, *args, check=True, timeout=1800):
    """Run the snakemake CLI on this repository's Snakefile in ``workdir``."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=workflow_env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def new_workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config.yaml", path / "config.yaml")
    return path


@pytest.fixture
def one_intra_op_thread():
    """One torch intra-op thread for the test, restored after it. For files of tiny tensors:
    intra-op threads only add synchronisation there, and on a shared, loaded machine each
    parallel region can wait a whole scheduler slice for a descheduled worker (~10× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """(workdir, seconds) of a complete local run of the `test` preset."""
    workdir = new_workdir(tmp_path_factory.mktemp("run"))
    start = time.perf_counter()
    snakemake(workdir, "--cores", "2", "--config", "preset=test")
    return workdir, time.perf_counter() - start


# --- SLURM (tests/test_slurm.py, tests/test_faults.py) ---------------------------------------


def _cluster_problem() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "SLURM client commands (sbatch, sinfo) are not installed"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install '.[slurm]')"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo failed: {err}"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        return f"no usable SLURM node (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_problem()
    if problem:
        if os.environ.get("NTK_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM is required here but unusable: {problem}")
        pytest.skip(problem)


def result_files(workdir: Path) -> dict[str, bytes]:
    root = workdir / "results"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.suffix in (".npz", ".csv")
    }
