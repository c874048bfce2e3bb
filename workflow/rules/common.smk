# Helpers shared by the rules (no rules here): what a stage reads, which files a job writes,
# the command line of a step. Everything comes from the experiments' EXPERIMENT declarations.
import json
import re
import shlex

RESULTS = "results"


def stage_params(exp):
    """What the experiment's stages read, as shell-quoted JSON: a change of any of these
    values, and of nothing else, reruns its jobs (Snakemake's params trigger)."""
    return shlex.quote(json.dumps(exp.params(CFG), sort_keys=True))


def job_files(exp, job_name):
    """Every file one job of an experiment writes, for the configured wildcard values."""
    job = exp.job(job_name)
    pattern = f"{RESULTS}/{exp.name}/{job.output}"
    if job.each is None:
        return [pattern]
    return [pattern.format(**values) for values in job.each(exp.params(CFG))]


def named_inputs(exp, sources):
    """Keyword -> file(s) of the jobs named in ``sources``, plus the experiment's module."""
    inputs = {name: job_files(exp, job_name) for name, job_name in sources.items()}
    inputs = {name: files if exp.job(sources[name]).each else files[0]
              for name, files in inputs.items()}
    return {**inputs, "code": str(exp.source)}


def step_command(exp, step, sources, wildcards=()):
    """The shell call of one step; torch and BLAS use exactly the job's threads."""
    parts = [
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}",
        f"python -m ntk_repro.run {exp.name} {step} --params {{params.cfg}}",
    ]
    for name, job_name in sources.items():
        parts.append(f"--input {name} {{input.{name}:q}}")
        if exp.job(job_name).each:
            parts.append(f"--many {name}")
    parts.append("--output {output:q}")
    if wildcards:
        parts.append("--wildcard " + " ".join(f"{w}={{wildcards.{w}}}" for w in wildcards))
    return " ".join(parts) + " 2> {log:q}"


def wildcard_values(exp, job):
    """Each wildcard of a job restricted to its configured values (no ambiguous matches)."""
    if job.each is None:
        return {}
    values = {}
    for combo in job.each(exp.params(CFG)):
        for key, value in combo.items():
            values.setdefault(key, set()).add(str(value))
    return {key: "|".join(re.escape(v) for v in sorted(vals)) for key, vals in values.items()}


def job_resources(exp, job):
    p = exp.params(CFG)
    mem = job.mem_mb
    resources = {
        "mem_mb": (lambda wildcards: mem(p, wildcards)) if callable(mem) else mem,
        "runtime": job.runtime,
    }
    if job.gpu:
        resources["gpu"] = CFG["gpus_per_job"]
    return resources


def log_name(exp, output):
    """logs/<experiment>/<output without its extension>: one log per job."""
    return f"logs/{exp.name}/{output.rsplit('.', 1)[0]}"
