# Analytic kernels (Θ∞, Σ) and empirical NTK Grams of wide nets.


rule fig1_theta_inf:
    output:
        f"{RESULTS}/fig1/theta_inf.npz",
    params:
        cfg=lambda w: params_for("fig1"),
    log:
        "logs/fig1_theta_inf.log",
    benchmark:
        "benchmarks/fig1_theta_inf.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        stage("kernels", "fig1") + "--output {output} 2> {log}"


rule fig2_limit:
    output:
        f"{RESULTS}/fig2/limit.npz",
    params:
        cfg=lambda w: params_for("fig2"),
    log:
        "logs/fig2_limit.log",
    benchmark:
        "benchmarks/fig2_limit.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        stage("kernels", "fig2") + "--output {output} 2> {log}"


rule fig3_kernel:
    input:
        f"{RESULTS}/data/fig3_inputs.npz",
    output:
        f"{RESULTS}/fig3/kernel.npz",
    params:
        cfg=lambda w: params_for("fig3"),
    log:
        "logs/fig3_kernel.log",
    benchmark:
        "benchmarks/fig3_kernel.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        stage("kernels", "fig3") + "--input {input} --output {output} 2> {log}"
