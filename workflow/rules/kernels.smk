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
    conda:
        "../../envs/ntk.yaml"
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
    conda:
        "../../envs/ntk.yaml"
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
        gpu=CFG["gpus_per_job"],
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("kernels", "fig3") + "--input {input} --output {output} 2> {log}"


rule normalisation_limit:
    output:
        f"{RESULTS}/normalisation/limit.npz",
    params:
        cfg=lambda w: params_for("normalisation"),
    log:
        "logs/normalisation_limit.log",
    benchmark:
        "benchmarks/normalisation_limit.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("kernels", "normalisation") + "--output {output} 2> {log}"


rule normalisation_nets:
    # Empirical NTK Grams of `seeds` nets of one width, with LayerNorm or BN after the last layer.
    output:
        f"{RESULTS}/normalisation/{{norm}}_w{{width}}.npz",
    wildcard_constraints:
        norm="layer|batch_last",
    params:
        cfg=lambda w: params_for("normalisation"),
    log:
        "logs/normalisation_nets/{norm}_w{width}.log",
    benchmark:
        "benchmarks/normalisation_nets/{norm}_w{width}.tsv"
    threads: 1
    resources:
        # float64 weights; the BN path holds the whole-batch Jacobian (N x parameters) twice.
        mem_mb=lambda w: 1000 + int(w.width) ** 2 * CFG["normalisation"]["depth"] * 8 * (
            2 * CFG["normalisation"]["n_points"] if w.norm == "batch_last" else 4) // 2**20,
        runtime=30,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("kernels", "normalisation")
        + "--output {output} --wildcard norm={wildcards.norm} width={wildcards.width} 2> {log}"


rule checkerboard_limit:
    output:
        f"{RESULTS}/checkerboard/limit.npz",
    params:
        cfg=lambda w: params_for("checkerboard"),
    log:
        "logs/checkerboard_limit.log",
    benchmark:
        "benchmarks/checkerboard_limit.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("kernels", "checkerboard") + "--output {output} 2> {log}"


rule checkerboard_nets:
    # Empirical pixel NTKs of `inits` deconvolution nets in the freeze, the chaos or with BN.
    output:
        f"{RESULTS}/checkerboard/{{net}}.npz",
    wildcard_constraints:
        net="freeze|chaos|bn",
    params:
        cfg=lambda w: params_for("checkerboard"),
    log:
        "logs/checkerboard_nets/{net}.log",
    benchmark:
        "benchmarks/checkerboard_nets/{net}.tsv"
    threads: 1
    resources:
        # The BN rows hold one gradient per row: rows x parameters in float64.
        mem_mb=lambda w: 1500 + CFG["checkerboard"]["depth"] * CFG["checkerboard"]["width"] ** 2
        * CFG["checkerboard"]["stride"] * 8 * (
            4 * CFG["checkerboard"]["bn_batch"] * CFG["checkerboard"]["bn_reference_pixels"]
            if w.net == "bn" else 4) // 2**20,
        runtime=60,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("kernels", "checkerboard")
        + "--output {output} --wildcard net={wildcards.net} 2> {log}"


# Freeze & Chaos (balanced parametrisation): analytic kernels, one job per experiment.


rule regimes_kernels:
    # Θ∞ Grams on the circle and the sphere at one depth, freeze / edge / chaos networks.
    output:
        f"{RESULTS}/regimes/kernels.npz",
    params:
        cfg=lambda w: params_for("regimes"),
    log:
        "logs/regimes_kernels.log",
    benchmark:
        "benchmarks/regimes_kernels.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("kernels", "regimes") + "--output {output} 2> {log}"


rule phase_kernels:
    # r_{σ,β} over β, and the normalised NTK, condition number, constant mode over depth.
    output:
        f"{RESULTS}/phase/depth.npz",
    params:
        cfg=lambda w: params_for("phase"),
    log:
        "logs/phase_kernels.log",
    benchmark:
        "benchmarks/phase_kernels.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("kernels", "phase") + "--output {output} 2> {log}"


rule speed_limit:
    # Θ∞/Σ Grams on the training points, learning rates and the kernel-ODE loss curves.
    output:
        f"{RESULTS}/speed/limit.npz",
    params:
        cfg=lambda w: params_for("speed"),
    log:
        "logs/speed_limit.log",
    benchmark:
        "benchmarks/speed_limit.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("kernels", "speed") + "--output {output} 2> {log}"
