# Every figure's claims become rows of results/checks.csv (paper value, ours, tolerance, status).


rule checks:
    input:
        [f"{RESULTS}/checks/{name}.csv" for name in EXPERIMENTS],
    output:
        report(f"{RESULTS}/checks.csv", caption="../report/checks.rst", category="Checks"),
    log:
        "logs/checks.log",
    conda:
        "../../envs/ntk.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "python -m ntk_repro.claims merge --input {input:q} --output {output:q} 2> {log:q}"


rule claims_gate:
    # Last of all, once every figure is drawn: fails the run when an evaluated claim fails.
    input:
        checks=f"{RESULTS}/checks.csv",
        figures=expand(f"{RESULTS}/figures/{{name}}.{{ext}}", name=EXPERIMENTS, ext=["png", "pdf"]),
    output:
        f"{RESULTS}/claims.txt",
    log:
        "logs/claims_gate.log",
    conda:
        "../../envs/ntk.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "python -m ntk_repro.claims gate {input.checks:q} --summary {output:q} 2>&1 | tee {log:q}"
