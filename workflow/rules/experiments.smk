# One rule per job of every experiment, then its figure and its checks table, all built from
# the EXPERIMENT declaration of src/ntk_repro/experiments/<name>.py.


for exp in EXPERIMENTS.values():
    for job in exp.jobs:

        rule:
            name:
                f"{exp.name}_{job.name}"
            input:
                **named_inputs(exp, job.inputs),
            output:
                f"{RESULTS}/{exp.name}/{job.output}",
            log:
                log_name(exp, job.output) + ".log",
            benchmark:
                log_name(exp, job.output) + ".benchmark.tsv"
            wildcard_constraints:
                **wildcard_values(exp, job),
            conda:
                "../../envs/ntk.yaml"
            threads: job.threads
            resources:
                **job_resources(exp, job),
            params:
                step=f"{exp.name} {job.name}",
                cfg=stage_params(exp),
                inputs=input_args(exp, job.inputs),
                wildcards=wildcard_args,
            shell:
                STEP_SHELL

    for step in ("plot", "check"):

        rule:
            name:
                f"{exp.name}_{step}"
            input:
                **named_inputs(exp, exp.figure_inputs),
            output:
                figure_outputs(exp) if step == "plot" else f"{RESULTS}/checks/{exp.name}.csv",
            log:
                f"logs/{exp.name}/{step}.log",
            conda:
                "../../envs/ntk.yaml"
            threads: 1
            resources:
                mem_mb=exp.figure_mem_mb,
                runtime=20,
            params:
                step=f"{exp.name} {step}",
                cfg=stage_params(exp),
                inputs=input_args(exp, exp.figure_inputs),
                wildcards="",
            shell:
                STEP_SHELL
