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
    shell:
        stage("spectrum", "fig3") + "--input {input} --output {output} 2> {log}"
