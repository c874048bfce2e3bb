# Spectra of kernel Gram matrices (kernel PCA).


rule fig3_spectrum:
    input:
        f"{RESULTS}/fig3/kernel.npz",
    output:
        f"{RESULTS}/fig3/spectrum.npz",
    params:
        cfg=lambda w: params_for("fig3"),
    log:
        "logs/fig3_spectrum.log",
    benchmark:
        "benchmarks/fig3_spectrum.tsv"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("spectrum", "fig3") + "--input {input} --output {output} 2> {log}"


rule spectrum_eigen:
    # Funk–Hecke eigenvalues of Θ∞ on the sphere and Gram eigenvalues of uniform points.
    output:
        f"{RESULTS}/spectrum/eigen.npz",
    params:
        cfg=lambda w: params_for("spectrum"),
    log:
        "logs/spectrum_eigen.log",
    benchmark:
        "benchmarks/spectrum_eigen.tsv"
    threads: 1
    resources:
        mem_mb=lambda w: 1000 + 5 * CFG["spectrum"]["n_points"] ** 2 * 8 // 2**20,
        runtime=20,
    conda:
        "../../envs/ntk.yaml"
    shell:
        stage("spectrum", "spectrum") + "--output {output} 2> {log}"
