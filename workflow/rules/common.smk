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
    inputs = {
        name: files if exp.job(sources[name]).each else files[0] for name, files in inputs.items()
    }
    return {**inputs, "code": str(exp.source)}


# The one command line of every step. Rules are built in a loop and a rule's shell command is
# evaluated again when its job runs, after the loop has moved on: so the command is the same
# text for every rule, and what differs (experiment, step, inputs) comes through params.
STEP_SHELL = (
    "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
    "python -m ntk_repro.run {params.step} --params {params.cfg} {params.inputs} "
    "--output {output:q} {params.wildcards} 2> {log:q}"
)


def input_args(exp, sources):
    """params function: ``--input NAME FILE...`` per named input of the step."""

    def args(wildcards, input):
        parts = []
        for name in sources:
            files = input[name]
            files = [files] if isinstance(files, str) else list(files)
            parts.append(f"--input {name} " + " ".join(shlex.quote(f) for f in files))
        return " ".join(parts)

    return args


def wildcard_args(wildcards):
    """``--wildcard KEY=VALUE ...`` for the job's wildcards (nothing if it has none)."""
    items = [f"{key}={shlex.quote(value)}" for key, value in wildcards.items()]
    return "--wildcard " + " ".join(items) if items else ""


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

    def resource(value):
        return (lambda wildcards: value(p, wildcards)) if callable(value) else value

    resources = {"mem_mb": resource(job.mem_mb), "runtime": resource(job.runtime)}
    if job.gpu:
        resources["gpu"] = CFG["gpus_per_job"]
    return resources


def log_name(exp, output):
    """logs/<experiment>/<output without its extension>: one log per job."""
    return f"logs/{exp.name}/{output.rsplit('.', 1)[0]}"


def figure_outputs(exp):
    """The figure of an experiment, png (in the report, with its caption) and pdf."""
    png = report(
        f"{RESULTS}/figures/{exp.name}.png",
        caption=f"../report/{exp.name}.rst",
        category="Figures",
    )
    return [png, f"{RESULTS}/figures/{exp.name}.pdf"]
