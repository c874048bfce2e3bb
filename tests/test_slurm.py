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


# The experiments sent through the cluster: those of the two papers. Every experiment's rules
# come from the same builder, so the thesis experiments take the same path; sending all 21
# through a 2-core CI node (~4 s of Snakefile parsing per SLURM job) would take ~25 min.
SLURM_EXPERIMENTS = (
    "fig1",
    "fig2",
    "fig3",
    "sweeps",
    "normalisation",
    "checkerboard",
    "regimes",
    "phase",
    "speed",
    "spectrum",
    "gan",
)


def _selected(files: dict[str, bytes]) -> dict[str, bytes]:
    return {
        name: data
        for name, data in files.items()
        if name.split("/")[0] in SLURM_EXPERIMENTS
        or (name.startswith("checks/") and name[len("checks/") : -4] in SLURM_EXPERIMENTS)
    }


def test_slurm_profile_matches_local_run(cluster, finished_run, tmp_path):
    local, _ = finished_run
    workdir = new_workdir(tmp_path / "slurm")
    targets = [
        f"results/{kind}/{name}.{ext}"
        for name in SLURM_EXPERIMENTS
        for kind, ext in (("checks", "csv"), ("figures", "png"))
    ]
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
        "--",
        *targets,
        timeout=1800,
    )
    seconds = time.perf_counter() - start
    assert "slurm" in (proc.stdout + proc.stderr).lower()
    ours, theirs = result_files(workdir), _selected(result_files(local))
    assert ours.keys() == theirs.keys()
    differing = [name for name in ours if ours[name] != theirs[name]]
    assert not differing, f"results differ between SLURM and local runs: {differing}"
    for name in SLURM_EXPERIMENTS:
        with open(workdir / "results" / "checks" / f"{name}.csv", newline="") as fh:
            assert len(list(csv.DictReader(fh))) > 0, name
    # Every job logged to logs/<rule>[/<wildcards>].log.
    assert any((workdir / "logs").rglob("*.log"))
    print(f"SLURM run of the test preset: {seconds:.0f} s, {len(ours)} result files identical")
