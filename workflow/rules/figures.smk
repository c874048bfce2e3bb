# One figure per reproduced result, from the arrays of the stages above.


rule sweeps_table:
    input:
        sweep_cells(),
    output:
        f"{RESULTS}/sweeps/summary.csv",
    params:
        cfg=lambda w: params_for("sweeps"),
    log:
        "logs/sweeps_table.log",
    benchmark:
        "benchmarks/sweeps_table.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("tables", "sweeps") + "--input {input} --output {output} 2> {log}"


rule figure:
    input:
        lambda w: figure_inputs(w.figure),
    output:
        png=report(f"{RESULTS}/figures/{{figure}}.png", caption="../report/figure.rst",
                   category="Figures"),
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
    params:
        cfg=lambda w: params_for(w.figure),
    log:
        "logs/figure/{figure}.log",
    benchmark:
        "benchmarks/figure/{figure}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("figures", "{wildcards.figure}")
        + "--input {input} --output {output.png} {output.pdf} 2> {log}"
