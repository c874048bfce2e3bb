# Every figure's claims become rows of results/checks.csv (paper value, ours, tolerance, pass).


rule figure_checks:
    input:
        lambda w: figure_inputs(w.figure),
    output:
        f"{RESULTS}/checks/{{figure}}.csv",
    params:
        cfg=lambda w: params_for(w.figure),
    log:
        "logs/checks/{figure}.log",
    benchmark:
        "benchmarks/checks/{figure}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("checks", "{wildcards.figure}") + "--input {input} --output {output} 2> {log}"


rule checks:
    input:
        expand(f"{RESULTS}/checks/{{figure}}.csv", figure=FIGURES),
    output:
        report(f"{RESULTS}/checks.csv", caption="../report/checks.rst", category="Checks"),
    log:
        "logs/checks/all.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/ntk.yaml"
    shell:
        "python -m ntk_repro.pipeline.merge_checks --input {input} --output {output} 2> {log}"
