# Input data sets written once and shared by the stages that need them.


rule fig3_data:
    output:
        f"{RESULTS}/data/fig3_inputs.npz",
    params:
        cfg=lambda w: params_for("fig3"),
    log:
        "logs/fig3_data.log",
    benchmark:
        "benchmarks/fig3_data.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("data", "fig3") + "--output {output} 2> {log}"
