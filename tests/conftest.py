"""Shared fixtures: one run of the whole workflow on the tiny `test` preset per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """(workdir, seconds) of a complete local run of the `test` preset."""
    workdir = new_workdir(tmp_path_factory.mktemp("run"))
    start = time.perf_counter()
    snakemake(workdir, "--cores", "2", "--config", "preset=test")
    return workdir, time.perf_counter() - start
