# One figure per reproduced result, from the arrays of the stages above.


def figure_inputs(figure):
    """The result files one figure (and its checks) is drawn from."""
    if figure == "fig1":
        return [f"{RESULTS}/fig1/theta_inf.npz"] + expand(
            f"{RESULTS}/fig1/train_w{{width}}.npz", width=CFG["fig1"]["widths"])
    if figure == "fig2":
        return [f"{RESULTS}/fig2/limit.npz"] + expand(
            f"{RESULTS}/fig2/train_w{{width}}.npz", width=CFG["fig2"]["widths"])
    if figure == "fig3":
        return [f"{RESULTS}/fig3/spectrum.npz"] + expand(
            f"{RESULTS}/fig3/train_w{{width}}_t{{trial}}.npz",
            width=CFG["fig3"]["widths"], trial=range(CFG["fig3"]["trials"]))
    if figure == "sweeps":
        s = CFG["sweeps"]
        return expand(f"{RESULTS}/sweeps/cells/w{{width}}_L{{depth}}_b{{beta}}_s{{seed}}.npz",
                      width=s["widths"], depth=s["depths"], beta=s["betas"], seed=s["seeds"])
    raise ValueError(f"unknown figure {figure!r}")


rule figure:
    input:
        lambda w: figure_inputs(w.figure),
    output:
        png=report(f"{RESULTS}/figures/{{figure}}.png", caption="../report/{figure}.rst",
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
    shell:
        stage("figures", "{wildcards.figure}")
        + "--input {input} --output {output.png} {output.pdf} 2> {log}"
