# Finite-width training: ensembles of inits trained together, one job per width (and cell).


rule fig1_train:
    output:
        f"{RESULTS}/fig1/train_w{{width}}.npz",
    params:
        cfg=lambda w: params_for("fig1"),
    log:
        "logs/fig1_train/w{width}.log",
    benchmark:
        "benchmarks/fig1_train/w{width}.tsv"
    threads: 2
    resources:
        gpu=CFG["gpus_per_job"],
        mem_mb=lambda w: 2000 + int(w.width) ** 2 * 12 * CFG["fig1"]["inits"] // 2**20 * 4,
        runtime=120,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("training", "fig1") + "--output {output} --wildcard width={wildcards.width} 2> {log}"


rule fig2_train:
    output:
        f"{RESULTS}/fig2/train_w{{width}}.npz",
    params:
        cfg=lambda w: params_for("fig2"),
    log:
        "logs/fig2_train/w{width}.log",
    benchmark:
        "benchmarks/fig2_train/w{width}.tsv"
    threads: 2
    resources:
        gpu=CFG["gpus_per_job"],
        mem_mb=lambda w: 2000 + int(w.width) ** 2 * 12 * CFG["fig2"]["inits"] // 2**20 * 4,
        runtime=120,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("training", "fig2") + "--output {output} --wildcard width={wildcards.width} 2> {log}"


rule fig3_train:
    input:
        data=f"{RESULTS}/data/fig3_inputs.npz",
        spectrum=f"{RESULTS}/fig3/spectrum.npz",
    output:
        f"{RESULTS}/fig3/train_w{{width}}_t{{trial}}.npz",
    params:
        cfg=lambda w: params_for("fig3"),
    log:
        "logs/fig3_train/w{width}_t{trial}.log",
    benchmark:
        "benchmarks/fig3_train/w{width}_t{trial}.tsv"
    threads: 2
    resources:
        gpu=CFG["gpus_per_job"],
        mem_mb=lambda w: 2000 + int(w.width) ** 2 * 12 // 2**20 * 4,
        runtime=240,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("training", "fig3")
        + "--input {input.data} {input.spectrum} --output {output}"
        + " --wildcard width={wildcards.width} trial={wildcards.trial} 2> {log}"


rule sweep_cell:
    output:
        f"{RESULTS}/sweeps/cells/w{{width}}_L{{depth}}_b{{beta}}_s{{seed}}.npz",
    params:
        cfg=lambda w: params_for("sweeps"),
    log:
        "logs/sweep_cell/w{width}_L{depth}_b{beta}_s{seed}.log",
    benchmark:
        "benchmarks/sweep_cell/w{width}_L{depth}_b{beta}_s{seed}.tsv"
    threads: 1
    resources:
        gpu=CFG["gpus_per_job"],
        # The stacked float32 weights of `inits` members, twice (updates, NTK factors).
        mem_mb=lambda w: 1000 + int(w.width) ** 2 * int(w.depth) * CFG["sweeps"]["inits"] * 8 // 2**20,
        runtime=60,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("training", "sweeps") + "--output {output} --wildcard width={wildcards.width}"
        " depth={wildcards.depth} beta={wildcards.beta} seed={wildcards.seed} 2> {log}"


rule speed_train:
    # `inits` finite-width nets of one Freeze & Chaos network, at the lr of speed_limit.
    input:
        f"{RESULTS}/speed/limit.npz",
    output:
        f"{RESULTS}/speed/train_{{network}}.npz",
    wildcard_constraints:
        network=r"[a-z][a-z0-9_]*",
    params:
        cfg=lambda w: params_for("speed"),
    log:
        "logs/speed_train/{network}.log",
    benchmark:
        "benchmarks/speed_train/{network}.tsv"
    threads: 1
    resources:
        mem_mb=lambda w: 1000 + CFG["speed"]["width"] ** 2 * CFG["speed"]["depth"]
        * CFG["speed"]["inits"] * 8 // 2**20,
        runtime=60,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("training", "speed")
        + "--input {input} --output {output} --wildcard network={wildcards.network} 2> {log}"


rule gan_train:
    # `seeds` GANs whose generator is in the freeze, the chaos, or the freeze with BN-last.
    output:
        f"{RESULTS}/gan/{{net}}.npz",
    wildcard_constraints:
        net="freeze|chaos|bn",
    params:
        cfg=lambda w: params_for("gan"),
    log:
        "logs/gan_train/{net}.log",
    benchmark:
        "benchmarks/gan_train/{net}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=60,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("training", "gan") + "--output {output} --wildcard net={wildcards.net} 2> {log}"
