"""The cluster path, proven on a real one-node SLURM: the tiny workflow through the slurm
profile gives the same results as a local run.

CI starts the cluster with .ci/slurm-up.sh before `make test`. Where no SLURM controller
answers, the test is skipped with the reason, unless NTK_REQUIRE_SLURM=1 (set by CI), where a
missing cluster is a failure.
"""

from __future__ import annotations

import csv
import time

import pytest
from conftest import REPO, new_workdir, result_files, snakemake

pytestmark = pytest.mark.slurm


def test_slurm_profile_matches_local_run(cluster, finished_run, tmp_path):
    local, _ = finished_run
    workdir = new_workdir(tmp_path / "slurm")
    start = time.perf_counter()
    proc = snakemake(
        workdir,
        "--profile",
        str(REPO / "workflow" / "profiles" / "slurm"),
        "--jobs",
        "4",
        "--latency-wait",
        "10",
        # The CI cluster has no accounting daemon, so job status comes from squeue.
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "5",
        "--default-resources",
        "slurm_partition=debug",
        "mem_mb=1000",
        "runtime=20",
        "--config",
        "preset=test",
        timeout=1800,
    )
    seconds = time.perf_counter() - start
    assert "slurm" in (proc.stdout + proc.stderr).lower()
    ours, theirs = result_files(workdir), result_files(local)
    assert ours.keys() == theirs.keys()
    differing = [name for name in ours if ours[name] != theirs[name]]
    assert not differing, f"results differ between SLURM and local runs: {differing}"
    with open(workdir / "results" / "checks.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) > 0
    # Every job logged to logs/<rule>[/<wildcards>].log.
    assert any((workdir / "logs").rglob("*.log"))
    print(f"SLURM run of the test preset: {seconds:.0f} s, {len(ours)} result files identical")
