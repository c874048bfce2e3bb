# One rule per job of every experiment, then its figure and its checks table, all built from
# the EXPERIMENT declaration of src/ntk_repro/experiments/<name>.py.
# Rules are defined inside functions: a rule's shell command is evaluated again when its job
# runs, so it must close over its own experiment and job, not over loop variables.


def job_rule(exp, job):
    rule:
        name:
            f"{exp.name}_{job.name}"
        input:
            **named_inputs(exp, job.inputs),
        output:
            f"{RESULTS}/{exp.name}/{job.output}",
        params:
            cfg=stage_params(exp),
        wildcard_constraints:
            **wildcard_values(exp, job),
        log:
            log_name(exp, job.output) + ".log",
        benchmark:
            log_name(exp, job.output) + ".benchmark.tsv"
        threads: job.threads
        resources:
            **job_resources(exp, job),
        conda:
            "../../envs/ntk.yaml"
        shell:
            step_command(exp, job.name, job.inputs, job.wildcards())


def figure_rules(exp):
    rule:
        name:
            f"{exp.name}_plot"
        input:
            **named_inputs(exp, exp.figure_inputs),
        output:
            png=report(
                f"{RESULTS}/figures/{exp.name}.png",
                caption=f"../report/{exp.name}.rst",
                category="Figures",
            ),
            pdf=f"{RESULTS}/figures/{exp.name}.pdf",
        params:
            cfg=stage_params(exp),
        log:
            f"logs/{exp.name}/plot.log",
        threads: 1
        resources:
            mem_mb=exp.figure_mem_mb,
            runtime=20,
        conda:
            "../../envs/ntk.yaml"
        shell:
            step_command(exp, "plot", exp.figure_inputs)

    rule:
        name:
            f"{exp.name}_check"
        input:
            **named_inputs(exp, exp.figure_inputs),
        output:
            f"{RESULTS}/checks/{exp.name}.csv",
        params:
            cfg=stage_params(exp),
        log:
            f"logs/{exp.name}/check.log",
        threads: 1
        resources:
            mem_mb=exp.figure_mem_mb,
            runtime=20,
        conda:
            "../../envs/ntk.yaml"
        shell:
            step_command(exp, "check", exp.figure_inputs)


for exp in EXPERIMENTS.values():
    for job in exp.jobs:
        job_rule(exp, job)
    figure_rules(exp)
