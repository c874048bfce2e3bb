# One figure per reproduced result, from the arrays of the stages above.


# The one result file of each analytic Freeze & Chaos experiment (results/<figure>/<name>.npz).
FREEZE_CHAOS_RESULT = {"regimes": "kernels", "phase": "depth", "spectrum": "eigen"}


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
        return [f"{RESULTS}/sweeps/summary.csv"]  # one row per net of every cell
    if figure == "normalisation":
        n = CFG["normalisation"]
        return ([f"{RESULTS}/normalisation/limit.npz"]
                + expand(f"{RESULTS}/normalisation/layer_w{{width}}.npz", width=n["widths"])
                + expand(f"{RESULTS}/normalisation/batch_last_w{{width}}.npz",
                         width=n["bn_widths"]))
    if figure == "checkerboard":
        return [f"{RESULTS}/checkerboard/limit.npz"] + expand(
            f"{RESULTS}/checkerboard/{{net}}.npz", net=["freeze", "chaos", "bn"])
    if figure == "gan":
        return expand(f"{RESULTS}/gan/{{net}}.npz", net=["freeze", "chaos", "bn"])
    if figure in ("regimes", "phase", "spectrum"):  # Freeze & Chaos, analytic
        return [f"{RESULTS}/{figure}/{FREEZE_CHAOS_RESULT[figure]}.npz"]
    if figure == "speed":
        return [f"{RESULTS}/speed/limit.npz"] + expand(
            f"{RESULTS}/speed/train_{{network}}.npz",
            network=[n["name"] for n in CFG["speed"]["networks"]])
    raise ValueError(f"unknown figure {figure!r}")


def sweep_cells():
    s = CFG["sweeps"]
    return expand(f"{RESULTS}/sweeps/cells/w{{width}}_L{{depth}}_b{{beta}}_s{{seed}}.npz",
                  width=s["widths"], depth=s["depths"], beta=s["betas"], seed=s["seeds"])


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
    shell:
        stage("tables", "sweeps") + "--input {input} --output {output} 2> {log}"


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
