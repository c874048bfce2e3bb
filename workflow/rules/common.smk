# Helpers shared by the rules (no rules here): config sections as job parameters, the stage
# command line, and the result files each figure is drawn from.
import json
import shlex

RESULTS = "results"
# Jobs import the library from this checkout, in a venv, a conda env or on a cluster node.
SRC = shlex.quote(str(Path(workflow.basedir) / "src"))


def params_for(section):
    """The resolved settings one experiment sees, shell-quoted JSON. Only a change of these
    values reruns that experiment's jobs (Snakemake's params rerun trigger)."""
    merged = {**CFG["model"], **CFG["training"], **CFG[section],
              "device": CFG["device"], "seed": CFG["seed"]}
    return shlex.quote(json.dumps(merged, sort_keys=True))


def stage(name, experiment):
    """Thin shell call of a stage entry point; torch uses exactly the job's threads."""
    return (f"OMP_NUM_THREADS={{threads}} MKL_NUM_THREADS={{threads}} PYTHONPATH={SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}} "
            f"python -m ntk_repro.pipeline.{name} {experiment} --params {{params.cfg}} ")


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
