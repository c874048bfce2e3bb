"""Benchmarks of ntk-repro against what a user would use instead, measured in the same run.

    python -m ntk_repro.bench --out results/bench            # `make bench`, ~35 min on 2 cores
    python -m ntk_repro.bench --out /tmp/bench --quick       # small sizes, ~4 min

Writes ``<out>/{analytic,empirical,training,pipeline}.csv``, ``<out>/limits.csv`` (ns per
element of the passes the analytic Gram is made of) and ``<out>/bench.png``. Each CSV row:
benchmark, size, implementation, time_s (min over ``--repeats`` ≥ 3 runs, more for runs
shorter than 1/3 s), ratio_to_ours (time_s / time_s of ntk-repro for the same benchmark and
size: > 1 means ntk-repro is faster), peak_mem_mb (peak RSS of the measuring process) and
extra_mem_mb (peak RSS minus the RSS after imports and inputs), first_call_s (the call before the timed ones, where an
implementation compiles), load_1min (load average while it ran: the machine may be shared),
note, and the machine string (cores, CPU, library versions).

1. analytic: Θ∞ Gram, float64, depth 4, ReLU, β = 0.1, n0 = 10, N up to 20000:
   ``kernels.theta_inf``; its generic torch path (the pre-fusion implementation); a
   whole-matrix numpy recursion as a user would write it; neural-tangents' jitted ``stax``
   kernel_fn (x64).
2. empirical: exact NTK of a depth-4 ReLU MLP (float32), N = 256, widths 256/1024/4096:
   ``empirical.empirical_ntk`` (structured path); its ``method="func"`` (torch.func Jacobian
   contraction as in PyTorch's NTK tutorial); neural-tangents' ``empirical_ntk_fn`` with
   structured derivatives; one forward + backward pass of the same batch. Plus width 4096 at
   N = 1024 (memory).
3. training: ``training.train_ensemble`` with K = 10 inits together vs K sequential K = 1
   runs, and vs the same step's matmuls alone (torch.bmm of the same shapes): seconds per
   step and FLOP/s by ``training.flops_per_step``. The three run interleaved in one process
   so that the machine's load hits them alike.
4. pipeline: a finished laptop run's Snakemake benchmark TSVs (only if ``results/checks.csv``
   exists), and the paper preset's training cost estimated from the FLOP/s of (3).

Every measurement runs in a fresh subprocess (``--worker``), so peak memory is that of one
implementation and one size, and a run that exceeds ``--mem-cap-gb`` is killed and reported
instead of taking the machine down. neural-tangents runs in the interpreter given by
``--nt-python`` (or $NTK_REPRO_NT_PYTHON), by default this one if it can import it; without
one, its rows are left out and the log says so.
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULT_TAG = "BENCH_RESULT "
COLUMNS = ("benchmark", "size", "implementation", "time_s", "ratio_to_ours", "peak_mem_mb",
           "extra_mem_mb", "first_call_s", "gflops", "load_1min", "repeats", "note", "machine")
OURS = {
    "analytic": "ntk-repro theta_inf",
    "empirical": "ntk-repro empirical_ntk (structured)",
    "training": "ntk-repro train_ensemble (K together)",
}
# The analytic benchmark's architecture (shared by every implementation).
ANALYTIC = dict(depth=4, beta=0.1, n0=10)
EMPIRICAL = dict(depth=4, beta=0.1, n0=10)
TRAINING = dict(depth=4, beta=0.1, n0=2, batch=100, members=10, lr=0.5)


# =============================================================================================
# worker side: one implementation at one size, in its own process
# =============================================================================================


def _rss_mb() -> float:
    """Current resident set size of this process in MB (Linux; 0 where unavailable)."""
    return _proc_rss_mb("self")


def _peak_rss_mb() -> float:
    scale = 1024.0 if sys.platform != "darwin" else 1024.0 * 1024.0  # ru_maxrss: KB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


_MIN_TOTAL_S, _MAX_RUNS = 1.0, 100


def _timed(run, repeats: int, warmup: bool) -> dict:
    """Min-of-``repeats`` wall time of ``run()``; the result of a call is freed before the next
    (an N = 20000 Gram is 3.2 GB). ``warmup``: one untimed call first (jit compilation)."""
    first = None
    if warmup:
        start = time.perf_counter()
        out = run()
        first = time.perf_counter() - start
        del out
        gc.collect()
    times = []
    # At least ``repeats`` runs, and for short ones more (up to 1 s of runs, at most 100): the
    # min over runs spread in time is robust to a burst of load from other processes.
    while len(times) < repeats or (sum(times) < _MIN_TOTAL_S and len(times) < _MAX_RUNS):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
        del out
        gc.collect()
    # Without a warm-up the first timed call is the first call (it pays e.g. the OS's first
    # provisioning of a multi-GB output); the min over all of them is the time reported.
    return {"times": times, "first_call_s": times[0] if first is None else first}


def _numpy_theta(x, depth: int, beta: float):
    """Θ∞ of a ReLU net (ntk2018) as a user would write it: whole N×N numpy arrays per layer."""
    import numpy as np

    n0 = x.shape[1]
    sigma = x @ x.T / n0 + beta * beta
    theta = sigma.copy()
    for _ in range(depth - 1):
        diag = np.sqrt(np.diag(sigma))
        norms = np.outer(diag, diag)
        rho = np.clip(sigma / norms, -1.0, 1.0)
        angle = np.arccos(rho)
        sigma = norms * (np.sin(angle) + (np.pi - angle) * rho) / (2 * np.pi) + beta * beta
        theta = theta * (np.pi - angle) / (2 * np.pi) + sigma
    return theta


def _nt_import(x64: bool):
    """neural_tangents with TF's log chatter silenced and JAX precision set before any array."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jax

    jax.config.update("jax_enable_x64", x64)
    import neural_tangents as nt

    return jax, nt


def _nt_mlp(nt, width: int, depth: int, beta: float):
    stax = nt.stax
    layers = []
    for _ in range(depth - 1):
        layers += [stax.Dense(width, W_std=1.0, b_std=beta, parameterization="ntk"), stax.Relu()]
    layers.append(stax.Dense(1, W_std=1.0, b_std=beta, parameterization="ntk"))
    return stax.serial(*layers)


def _patch_jax_for_structured_derivatives(jax) -> None:
    """neural-tangents 0.6.5's structured-derivatives NTK reads names that jax 0.4.30 moved
    from ``jax.interpreters.ad`` to ``jax._src.interpreters.ad`` (AttributeError otherwise):
    expose them again. Agrees with NTK_VECTOR_PRODUCTS to ~1e-15 in float64."""
    import jax._src.interpreters.ad as private_ad
    import jax.interpreters.ad as public_ad

    for name in dir(private_ad):
        if not name.startswith("__") and not hasattr(public_ad, name):
            setattr(public_ad, name, getattr(private_ad, name))
    public_ad.config = jax.config  # read as ad.config.jax_enable_checks


def _work_analytic(case: dict, repeats: int) -> dict:
    import numpy as np

    n, impl = case["n"], case["impl"]
    x = np.random.default_rng(0).standard_normal((n, ANALYTIC["n0"]))
    depth, beta = ANALYTIC["depth"], ANALYTIC["beta"]
    warmup, info = False, {}
    if impl in (OURS["analytic"], "ntk-repro generic torch path"):
        from ntk_repro import kernels

        if impl != OURS["analytic"]:
            kernels._fused_applies = lambda *args: False  # this process only

        def run():
            return kernels.theta_inf(x, depth=depth, beta=beta)
    elif impl == "numpy whole-matrix recursion":
        def run():
            return _numpy_theta(x, depth, beta)
    elif impl == "neural-tangents":
        jax, nt = _nt_import(x64=True)
        kernel_fn = jax.jit(_nt_mlp(nt, 512, depth, beta)[2], static_argnames="get")
        warmup = True
        info = {"jax": jax.__version__, "neural_tangents": nt.__version__}

        def run():
            out = np.asarray(kernel_fn(x, None, get="ntk"))
            assert out.dtype == np.float64 and out.shape == (n, n)
            return out
    else:
        raise ValueError(f"unknown analytic implementation {impl!r}")
    base = _rss_mb()
    result = _timed(run, repeats, warmup)
    return result | {"base_mem_mb": base, "info": info}


def _work_empirical(case: dict, repeats: int) -> dict:
    n, width, impl = case["n"], case["width"], case["impl"]
    depth, beta, n0 = EMPIRICAL["depth"], EMPIRICAL["beta"], EMPIRICAL["n0"]
    warmup, info = False, {}
    if impl == "neural-tangents":
        import numpy as np

        jax, nt = _nt_import(x64=False)
        init_fn, apply_fn, _ = _nt_mlp(nt, width, depth, beta)
        _, params = init_fn(jax.random.PRNGKey(0), (-1, n0))
        x = np.random.default_rng(0).standard_normal((n, n0)).astype(np.float32)
        try:
            _patch_jax_for_structured_derivatives(jax)
            implementation = nt.NtkImplementation.STRUCTURED_DERIVATIVES
        except Exception as err:  # noqa: BLE001 - fall back to the next-fastest that works
            implementation = nt.NtkImplementation.NTK_VECTOR_PRODUCTS
            info["fallback"] = repr(err)
        ntk_fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,),
                                             implementation=implementation))
        warmup = True
        info |= {"jax": jax.__version__, "neural_tangents": nt.__version__,
                 "nt_implementation": implementation.name}

        def run():
            out = np.asarray(ntk_fn(x, None, params))
            assert out.shape == (n, n)
            return out
    else:
        import torch

        from ntk_repro.empirical import empirical_ntk
        from ntk_repro.networks import MLP

        model = MLP(n0, width, depth, beta=beta, generator=torch.Generator().manual_seed(0))
        x = torch.randn(n, n0, generator=torch.Generator().manual_seed(1))
        if impl == OURS["empirical"]:
            def run():
                return empirical_ntk(model, x, method="structured")
        elif impl == "torch.func jacobian contraction":
            def run():
                return empirical_ntk(model, x, method="func")
        elif impl == "one forward+backward (torch autograd)":
            params = list(model.parameters())

            def run():
                for p in params:
                    p.grad = None
                model(x).sum().backward()
        else:
            raise ValueError(f"unknown empirical implementation {impl!r}")
    base = _rss_mb()
    result = _timed(run, repeats, warmup)
    return result | {"base_mem_mb": base, "info": info}


def _bmm_step(weights, inputs, deltas, outs, grads_in, grads_w) -> None:
    """The matmuls of one training step, nothing else (see training.flops_per_step)."""
    import torch

    for layer, w in enumerate(weights):
        torch.bmm(inputs[layer], w.mT, out=outs[layer])         # forward
        torch.bmm(deltas[layer].mT, inputs[layer], out=grads_w[layer])  # weight gradient
        if layer > 0:
            torch.bmm(deltas[layer], w, out=grads_in[layer])    # input gradient


TRAINING_IMPLS = (OURS["training"], "K sequential runs (K=1 each)",
                  "torch.bmm of the same shapes (matmuls only)")


def _work_training(case: dict, repeats: int) -> dict:
    """All three training implementations in one process, interleaved run by run, so that
    a change of the machine's load hits them alike (the ratios are what matters)."""
    import numpy as np
    import torch

    from ntk_repro.training import flops_per_step, train_ensemble

    width, steps = case["width"], case["steps"]
    k, batch, n0, depth = TRAINING["members"], TRAINING["batch"], TRAINING["n0"], TRAINING["depth"]
    dims = [n0] + [width] * (depth - 1) + [1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, n0)).astype(np.float32)
    y = (x[:, 0] * x[:, 1]).astype(np.float32)
    kw = dict(width=width, depth=depth, beta=TRAINING["beta"], steps=steps, lr=TRAINING["lr"],
              loss="half_mse")

    def together():
        return train_ensemble(x, y, seeds=list(range(k)), **kw).train_seconds

    def sequential():
        return sum(train_ensemble(x, y, seeds=[s], **kw).train_seconds for s in range(k))

    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(k, o, i, generator=g) for i, o in zip(dims[:-1], dims[1:])]
    inputs = [torch.randn(k, batch, i, generator=g) for i in dims[:-1]]
    deltas = [torch.randn(k, batch, o, generator=g) for o in dims[1:]]
    outs = [torch.empty(k, batch, o) for o in dims[1:]]
    grads_in = [torch.empty(k, batch, i) for i in dims[:-1]]
    grads_w = [torch.empty(k, o, i) for i, o in zip(dims[:-1], dims[1:])]

    def matmuls_only():
        start = time.perf_counter()
        for _ in range(steps):
            _bmm_step(weights, inputs, deltas, outs, grads_in, grads_w)
        return time.perf_counter() - start

    runs = dict(zip(TRAINING_IMPLS, (together, sequential, matmuls_only)))
    base = _rss_mb()
    for run in runs.values():
        run()  # warm-up: allocator, MKL/oneDNN initialisation
    by_impl = {impl: [] for impl in runs}
    for _ in range(repeats):
        for impl, run in runs.items():
            # train_seconds: the training loop's own clock, without set-up.
            by_impl[impl].append(run() / steps)
    return {"times": by_impl[OURS["training"]], "by_impl": by_impl, "first_call_s": None,
            "base_mem_mb": base, "info": {"flops_per_step": flops_per_step(dims, batch, k)}}


def _best_seconds(fn, reps: int = 20) -> float:
    fn()
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _work_limits(case: dict, repeats: int) -> dict:
    """Per-element costs that bound the fused Gram: cache vs memory passes, arccos, sqrt."""
    import numpy as np
    import torch

    from ntk_repro import kernels

    torch.set_num_threads(1)  # this process only: single-core rates
    t = kernels._FUSED_TILE
    rng = np.random.default_rng(0)
    tile_in = rng.uniform(-1.0, 1.0, (t, t))
    tile_out = np.empty_like(tile_in)
    vec = rng.uniform(0.5, 1.5, t)
    big_in = rng.uniform(-1.0, 1.0, (4096, 4096))
    big_out = np.empty_like(big_in)
    torch_in, torch_out = torch.from_numpy(tile_in), torch.from_numpy(tile_out)
    n_tile, n_big = t * t, big_in.size
    out = {}

    def rate(name, fn, n):
        out[name] = _best_seconds(fn) / n * 1e9

    rate(f"copy, {t}² tile in L2 (numpy)", lambda: np.copyto(tile_out, tile_in), n_tile)
    rate("copy, 4096² arrays through memory (numpy)", lambda: np.copyto(big_out, big_in), n_big)
    rate(f"multiply two {t}² tiles in L2 (numpy)",
         lambda: np.multiply(tile_in, tile_in, out=tile_out), n_tile)
    rate(f"outer product into a {t}² tile (numpy)",
         lambda: np.multiply.outer(vec, vec, out=tile_out), n_tile)
    rate("arccos float64 (numpy)", lambda: np.arccos(tile_in, out=tile_out), n_tile)
    rate("sqrt float64 (numpy)", lambda: np.sqrt(np.abs(tile_in, out=tile_out), out=tile_out),
         n_tile)
    rate("acos float64 (torch)", lambda: torch.acos(torch_in, out=torch_out), n_tile)
    rate("sqrt float64 (torch)", lambda: torch.sqrt(torch_in.abs(), out=torch_out), n_tile)
    # One layer of the fused ReLU map on one in-cache tile: (depth 9 − depth 1) / 8 layers.
    x = rng.standard_normal((t, 10))
    deep = _best_seconds(lambda: kernels.theta_inf(x, depth=9, beta=0.1))
    shallow = _best_seconds(lambda: kernels.theta_inf(x, depth=1, beta=0.1))
    out["fused ReLU layer (Σ and Θ), per element"] = (deep - shallow) / 8 / n_tile * 1e9
    # Writing finished tiles into an N×N output and mirroring them (memory already mapped),
    # and the first touch of fresh output memory.
    n = 4096
    gram = np.empty((n, n))
    gram.fill(0.0)

    def write_tiles():
        for rows, cols in kernels._tiles(n, n, True, t):
            block = tile_in[: rows.stop - rows.start, : cols.stop - cols.start]
            gram[rows, cols] = block
            if rows != cols:
                gram[cols, rows] = block.T

    out["write + mirror finished tiles, per output element"] = \
        _best_seconds(write_tiles, 3) / (n * n) * 1e9

    def first_touch():
        fresh = np.empty((n, n))
        fresh.fill(0.0)

    out["first touch of a fresh output (page faults + write), per element"] = \
        _best_seconds(first_touch, 3) / (n * n) * 1e9
    return {"times": [0.0], "first_call_s": None, "base_mem_mb": _rss_mb(),
            "info": {"limits_ns": out}}


def worker_main(case: dict) -> None:
    repeats = case["repeats"]
    work = {"analytic": _work_analytic, "empirical": _work_empirical,
            "training": _work_training, "limits": _work_limits}[case["benchmark"]]
    result = work(case, repeats)
    result["peak_mem_mb"] = _peak_rss_mb()
    result["threads"] = _torch_threads()
    print(RESULT_TAG + json.dumps(result), flush=True)


def _torch_threads():
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


# =============================================================================================
# parent side: cases, subprocesses, CSVs, plot
# =============================================================================================


def machine_string() -> str:
    import numpy as np
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores, {model}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}), "
            f"numpy {np.__version__}, python {platform.python_version()}")


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _proc_rss_mb(pid) -> float:
    """Resident set size of process ``pid`` ("self" for this one) in MB; 0 where unavailable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def run_case(case: dict, python: str, mem_cap_mb: float, timeout_s: float) -> dict:
    """Run one case in a subprocess; returns its result dict or {"error": ...}."""
    env = dict(os.environ)
    # A foreign interpreter (the neural-tangents one) finds this package through PYTHONPATH.
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cmd = [python, "-m", "ntk_repro.bench", "--worker", json.dumps(case)]
    load_start = _load()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    start, peak_seen, killed = time.monotonic(), 0.0, None
    while proc.poll() is None:
        rss = _proc_rss_mb(proc.pid)
        peak_seen = max(peak_seen, rss)
        if rss > mem_cap_mb:
            killed = f"killed: RSS {rss / 1024:.1f} GB exceeded the {mem_cap_mb / 1024:.1f} GB cap"
        elif time.monotonic() - start > timeout_s:
            killed = f"killed: exceeded the {timeout_s:.0f} s time limit"
        if killed:
            proc.kill()
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    load = max(load_start, _load())
    if killed:
        return {"error": killed, "load_1min": load}
    for line in stdout.splitlines():
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
            result["load_1min"] = load
            return result
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"failed (exit {proc.returncode}): {tail}", "load_1min": load}


def _row(case: dict, result: dict, machine: str) -> dict:
    info = result.get("info", {})
    versions = ", ".join(f"{k} {v}" for k, v in info.items()
                         if k in ("jax", "neural_tangents"))
    note = case.get("note", "")
    if "nt_implementation" in info:
        note = (note + f" {info['nt_implementation']}").strip()
    if "fallback" in info:
        note = (note + f" (structured derivatives failed: {info['fallback']})").strip()
    if "error" in result:
        return {"benchmark": case["benchmark"], "size": case["size"],
                "implementation": case["impl"], "time_s": "", "ratio_to_ours": "",
                "peak_mem_mb": "", "extra_mem_mb": "", "first_call_s": "", "gflops": "",
                "load_1min": f"{result['load_1min']:.1f}", "repeats": 0,
                "note": (note + " " + result["error"]).strip(), "machine": machine}
    best = min(result["times"])
    peak, base = result["peak_mem_mb"], result["base_mem_mb"]
    flops = info.get("flops_per_step")
    return {
        "benchmark": case["benchmark"], "size": case["size"], "implementation": case["impl"],
        "time_s": f"{best:.6g}", "ratio_to_ours": "", "peak_mem_mb": f"{peak:.0f}",
        "extra_mem_mb": f"{peak - base:.0f}",
        "first_call_s": "" if result["first_call_s"] is None else f"{result['first_call_s']:.3g}",
        "gflops": "" if flops is None else f"{flops / best / 1e9:.4g}",
        "load_1min": f"{result['load_1min']:.1f}", "repeats": len(result["times"]),
        "note": note, "machine": machine + (f", {versions}" if versions else ""),
        "threads": result.get("threads", ""),
    }


def _fill_ratios(rows: list[dict]) -> None:
    ours = {(r["benchmark"], r["size"]): float(r["time_s"]) for r in rows
            if r["implementation"] == OURS.get(r["benchmark"]) and r["time_s"]}
    for r in rows:
        key = (r["benchmark"], r["size"])
        if r["time_s"] and key in ours:
            r["ratio_to_ours"] = f"{float(r['time_s']) / ours[key]:.4g}"


def _read_rows(path: Path) -> list[dict]:
    """Rows of an earlier run's CSV (for --only pipeline), with the numeric size restored."""
    if not path.exists():
        return []
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        size = r["size"]
        key = "width=" if "width=" in size else "N=" if size.startswith("N=") else None
        r["_n"] = int(size.split(key)[1].split(",")[0]) if key else 0
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _predicted_mem_mb(rows: list[dict], impl: str, n: int) -> float | None:
    """Extra memory of ``impl`` at size n, scaled ∝ n² from its largest measured size."""
    measured = [(r["_n"], float(r["extra_mem_mb"])) for r in rows
                if r["implementation"] == impl and r.get("extra_mem_mb")]
    if not measured:
        return None
    n_prev, mem = max(measured)
    return mem * (n / n_prev) ** 2


def analytic_cases(quick: bool, nt_python: str | None):
    sizes = [500, 1000, 2000] if quick else [1000, 2000, 4000, 8000, 20000]
    impls = [(OURS["analytic"], None, max(sizes)),
             ("ntk-repro generic torch path", None, 2000 if quick else 4000),
             ("numpy whole-matrix recursion", None, 2000 if quick else 8000),
             ("neural-tangents", nt_python, max(sizes))]
    for n in sizes:
        for impl, python, max_n in impls:
            if n <= max_n:
                yield {"benchmark": "analytic", "size": f"N={n}", "_n": n, "n": n,
                       "impl": impl, "python": python}


def empirical_cases(quick: bool, nt_python: str | None):
    n = 64 if quick else 256
    widths = [64, 256] if quick else [256, 1024, 4096]
    impls = [OURS["empirical"], "torch.func jacobian contraction", "neural-tangents",
             "one forward+backward (torch autograd)"]
    for width in widths:
        for impl in impls:
            # torch.func holds per-sample Jacobians, N·P floats: 34 GB at width 4096, N = 256.
            if impl.startswith("torch.func") and width > 1024:
                continue
            yield {"benchmark": "empirical", "size": f"N={n},width={width}", "_n": width,
                   "n": n, "width": width, "impl": impl,
                   "python": nt_python if impl == "neural-tangents" else None}
    big_n, big_w = (128, 256) if quick else (1024, 4096)
    for impl in (OURS["empirical"], "one forward+backward (torch autograd)"):
        yield {"benchmark": "empirical", "size": f"N={big_n},width={big_w}", "_n": big_w,
               "n": big_n, "width": big_w, "impl": impl, "python": None}


def training_cases(quick: bool):
    widths = [64, 256] if quick else [256, 1000, 2000]
    steps = 3 if quick else 20
    for width in widths:
        # One case measures all of TRAINING_IMPLS, interleaved (see _work_training).
        yield {"benchmark": "training",
               "size": f"width={width},K={TRAINING['members']},N={TRAINING['batch']}",
               "_n": width, "width": width, "steps": steps, "impl": "interleaved",
               "python": None}


def run_benchmark(cases, args, machine: str, log) -> list[dict]:
    rows: list[dict] = []
    for case in cases:
        case = dict(case, repeats=args.repeats)
        python = case.pop("python") or sys.executable
        if case["impl"] == "neural-tangents" and not args.nt_python:
            log(f"skip {case['benchmark']} {case['size']} neural-tangents: no interpreter that "
                "imports it (install the 'crosscheck' extra or pass --nt-python)")
            continue
        predicted = _predicted_mem_mb(rows, case["impl"], case["_n"]) \
            if case["benchmark"] == "analytic" else None
        if predicted is not None and predicted > args.mem_cap_gb * 1024:
            case["note"] = (f"not run: predicted {predicted / 1024:.1f} GB (∝ N² from the "
                            f"largest measured size) exceeds the {args.mem_cap_gb:g} GB cap")
            rows.append(_row(case, {"error": "", "load_1min": _load()}, machine) | {"_n": case["_n"]})
            log(f"{case['benchmark']:9s} {case['size']:22s} {case['impl']:45s} {case['note']}")
            continue
        worker_case = {k: v for k, v in case.items() if not k.startswith("_") and k != "note"}
        result = run_case(worker_case, python, args.mem_cap_gb * 1024, args.timeout)
        if case["impl"] == "interleaved":
            parts = [(dict(case, impl=impl, note="interleaved with the other rows of this size "
                                                   "in one process (peak memory shared)"),
                      dict(result, times=times) if "error" not in result else result)
                     for impl, times in result.get("by_impl", dict.fromkeys(TRAINING_IMPLS)).items()]
        else:
            parts = [(case, result)]
        for part_case, part_result in parts:
            row = _row(part_case, part_result, machine) | {"_n": case["_n"]}
            rows.append(row)
            log(f"{case['benchmark']:9s} {case['size']:22s} {part_case['impl']:45s} "
                f"t={row['time_s'] or '-':>10s} s  peak={row['peak_mem_mb'] or '-':>6s} MB  "
                f"load={row['load_1min']}  {row['note']}")
    _fill_ratios(rows)
    return rows


# --- limits of the analytic Gram -----------------------------------------------------------------

LIMIT_COLUMNS = ("quantity", "ns_per_element", "threads", "note", "load_1min", "machine")


def limits_rows(analytic: list[dict], args, machine: str, log) -> list[dict]:
    """ns per element of the passes the fused Gram is made of, single core, and the end-to-end
    ns per computed element per layer of theta_inf from the analytic rows."""
    from ntk_repro import kernels

    case = {"benchmark": "limits", "repeats": 3, "size": "", "impl": "limits"}
    result = run_case(case, sys.executable, args.mem_cap_gb * 1024, args.timeout)
    rows = []
    if "error" in result:
        log(f"limits: {result['error']}")
    else:
        load = f"{result['load_1min']:.1f}"
        for name, ns in result["info"]["limits_ns"].items():
            rows.append({"quantity": name, "ns_per_element": f"{ns:.3g}", "threads": 1,
                         "note": "", "load_1min": load, "machine": machine})
    layers = ANALYTIC["depth"] - 1
    for r in analytic:
        if r["implementation"] == OURS["analytic"] and r["time_s"]:
            n = r["_n"]
            computed = sum((rs.stop - rs.start) * (cs.stop - cs.start)
                           for rs, cs in kernels._tiles(n, n, True, kernels._FUSED_TILE))
            rows.append({
                "quantity": f"theta_inf end to end at N={n}, per computed element per layer",
                "ns_per_element": f"{float(r['time_s']) / computed / layers * 1e9:.3g}",
                "threads": r.get("threads", ""),
                "note": (f"wall time / ({computed} elements of the upper tiles × {layers} "
                         "layers); includes the first layer, output writes and page faults"),
                "load_1min": r["load_1min"], "machine": machine})
    for r in rows:
        log(f"limits    {r['quantity']:75s} {r['ns_per_element']:>8s} ns")
    return rows


# --- pipeline -----------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict:
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def pipeline_rows(root: Path, training_rows: list[dict], machine: str, log) -> list[dict]:
    """A finished laptop run's job times, and the paper preset's estimated training cost."""
    rows = []
    checks, bench_dir = root / "results" / "checks.csv", root / "benchmarks"
    preset = "laptop"
    if (root / "config.yaml").exists():
        preset = _read_yaml(root / "config.yaml").get("preset", preset)
    tsvs = sorted(bench_dir.rglob("*.tsv")) if bench_dir.exists() else []
    if checks.exists() and tsvs and preset == "laptop":
        seconds, ends, starts = 0.0, [], []
        for tsv in tsvs:
            with open(tsv) as fh:
                job = next(csv.DictReader(fh, delimiter="\t"))
            s = float(job["s"])
            seconds += s
            ends.append(tsv.stat().st_mtime)
            starts.append(tsv.stat().st_mtime - s)
        span = max(ends) - min(starts)
        rows.append({"benchmark": "pipeline", "size": "preset=laptop",
                     "implementation": "snakemake run, sum of job times", "time_s": f"{seconds:.1f}",
                     "note": f"{len(tsvs)} jobs; wall span from the TSV times ≈ {span:.0f} s",
                     "machine": machine})
    else:
        log("pipeline: no finished laptop run (results/checks.csv with benchmarks/*.tsv under "
            f"{root}, preset laptop): its row is left out")
    measured = [(r["_n"], float(r["gflops"])) for r in training_rows
                if r["implementation"] == OURS["training"] and r.get("gflops")]
    paper = root / "workflow" / "presets" / "paper.yaml"
    if measured and paper.exists():
        width, gflops = max(measured)
        rows.extend(_paper_estimate(_read_yaml(paper), gflops, width, machine))
    else:
        log("pipeline: no training FLOP/s measured or no paper preset: no paper estimate")
    for r in rows:
        for col in COLUMNS:
            r.setdefault(col, "")
    return rows


def _paper_estimate(cfg: dict, gflops: float, width_measured: int, machine: str) -> list[dict]:
    """Training cost of the paper preset: Σ steps · flops_per_step / measured FLOP/s."""
    from ntk_repro.training import flops_per_step

    depth = cfg.get("model", {}).get("depth", 4)
    jobs = []  # (experiment, dims, batch, members, steps, count)
    f1, f2, f3, sw = (cfg.get(k, {}) for k in ("fig1", "fig2", "fig3", "sweeps"))
    for w in f1.get("widths", []):
        jobs.append(("fig1", [2] + [w] * (depth - 1) + [1], f1.get("batch_size", 100),
                     f1.get("inits", 10), f1.get("steps", 0), 1))
    for w in f2.get("widths", []):
        jobs.append(("fig2", [2] + [w] * (depth - 1) + [1], 4, f2.get("inits", 10),
                     f2.get("steps", 0), 1))
    for w in f3.get("widths", []):
        jobs.append(("fig3", [64] + [w] * (depth - 1) + [1], f3.get("n_points", 512),
                     f3.get("trials", 2), f3.get("steps", 0), 1))
    cells = len(sw.get("betas", [])) * len(sw.get("seeds", []))
    for w in sw.get("widths", []):
        for d in sw.get("depths", []):
            jobs.append(("sweeps", [sw.get("input_dim", 8)] + [w] * (d - 1) + [1],
                         sw.get("n_train", 16), sw.get("inits", 4), sw.get("steps", 0), cells))
    rows = []
    for exp in ("fig1", "fig2", "fig3", "sweeps"):
        flops = sum(flops_per_step(dims, batch, k) * steps * count
                    for e, dims, batch, k, steps, count in jobs if e == exp)
        if flops:
            rows.append({
                "benchmark": "pipeline", "size": f"preset=paper,{exp}",
                "implementation": "estimate: training FLOPs / measured FLOP/s",
                "time_s": f"{flops / (gflops * 1e9):.4g}", "gflops": f"{gflops:.4g}",
                "note": (f"{flops / 1e12:.3g} TFLOP of training (∝ width² × steps × inits × "
                         f"batch); at the {gflops:.3g} GFLOP/s train_ensemble reached at width "
                         f"{width_measured}; excludes empirical-NTK recordings and analytic "
                         "Grams; small widths run below that rate"),
                "machine": machine})
    if rows:
        total = sum(float(r["time_s"]) for r in rows)
        rows.append(dict(rows[-1], size="preset=paper,total", time_s=f"{total:.4g}",
                         note=f"sum of the rows above ≈ {total / 3600:.2g} h of training on this "
                              "machine (same caveats)"))
    return rows


# --- plot ----------------------------------------------------------------------------------------


def _size_ticks(ax, rows: list[dict]) -> None:
    """Plain tick labels at the measured sizes (log axes otherwise label 3×10² etc.)."""
    sizes = sorted({r["_n"] for r in rows})
    if sizes:
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()


def plot(rows_by_bench: dict[str, list[dict]], out: Path) -> None:
    from ntk_repro.results import new_figure, save_figure

    fig, axes = new_figure(2, 2, width=12, height=10)
    panels = [("analytic", axes[0, 0], "N", "Θ∞ Gram, float64, depth 4: time [s]"),
              ("empirical", axes[0, 1], "width", "empirical NTK, N = 256, float32: time [s]")]
    for bench, ax, xlabel, title in panels:
        rows = [r for r in rows_by_bench.get(bench, []) if r["time_s"]]
        if bench == "empirical":
            rows = [r for r in rows if r["size"].startswith("N=256") or "N=64," in r["size"]]
        for impl in dict.fromkeys(r["implementation"] for r in rows):
            pts = sorted((r["_n"], float(r["time_s"])) for r in rows if r["implementation"] == impl)
            ax.loglog(*zip(*pts), marker="o", label=impl)
        _size_ticks(ax, rows)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=9)
        if ax.lines:
            ax.legend(fontsize=7)
    ax = axes[1, 0]
    rows = [r for r in rows_by_bench.get("training", []) if r["gflops"]]
    for impl in dict.fromkeys(r["implementation"] for r in rows):
        pts = sorted((r["_n"], float(r["gflops"])) for r in rows if r["implementation"] == impl)
        ax.semilogx(*zip(*pts), marker="o", label=impl)
    _size_ticks(ax, rows)
    ax.set_xlabel("width")
    ax.set_title("training, K = 10, N = 100, float32: GFLOP/s", fontsize=9)
    if ax.lines:
        ax.legend(fontsize=7)
    ax = axes[1, 1]
    bars = []
    for bench in ("analytic", "empirical", "training"):
        for r in rows_by_bench.get(bench, []):
            if r["ratio_to_ours"] and r["implementation"] != OURS[bench]:
                bars.append((f"{bench} {r['size']}: {r['implementation']}",
                             float(r["ratio_to_ours"])))
    if bars:
        labels, values = zip(*bars)
        ax.barh(range(len(values)), values, color=["C0" if v >= 1 else "C3" for v in values])
        ax.set_yticks(range(len(values)), labels, fontsize=5)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", lw=0.8)
        ax.invert_yaxis()
    ax.set_title("time of alternative / time of ntk-repro (> 1: ntk-repro faster)", fontsize=9)
    save_figure(fig, [out])


# --- entry point ---------------------------------------------------------------------------------


def _default_nt_python() -> str | None:
    env = os.environ.get("NTK_REPRO_NT_PYTHON")
    if env:
        return env
    return sys.executable if importlib.util.find_spec("neural_tangents") else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ntk_repro.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/bench", help="output directory")
    parser.add_argument("--only", default="analytic,empirical,training,pipeline",
                        help="comma-separated subset of analytic,empirical,training,pipeline")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (min taken)")
    parser.add_argument("--nt-python", default=_default_nt_python(),
                        help="python interpreter that imports neural_tangents (default: "
                             "$NTK_REPRO_NT_PYTHON, else this one if it can)")
    parser.add_argument("--mem-cap-gb", type=float, default=12.0,
                        help="kill a measurement whose RSS exceeds this")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    parser.add_argument("--root", default=".", help="project directory (pipeline benchmark)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(json.loads(args.worker))
        return 0
    if args.repeats < 3:
        parser.error("--repeats must be >= 3")
    only = set(args.only.split(","))
    unknown = only - {"analytic", "empirical", "training", "pipeline"}
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {sorted(unknown)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_string()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    machine_run = machine + f"; load average at start {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(machine_run)
    log(f"neural-tangents interpreter: {args.nt_python or 'none'}")
    rows_by_bench: dict[str, list[dict]] = {}
    if "analytic" in only:
        rows_by_bench["analytic"] = run_benchmark(
            analytic_cases(args.quick, args.nt_python), args, machine_run, log)
    if "empirical" in only:
        rows_by_bench["empirical"] = run_benchmark(
            empirical_cases(args.quick, args.nt_python), args, machine_run, log)
    if "training" in only:
        rows_by_bench["training"] = run_benchmark(training_cases(args.quick), args,
                                                  machine_run, log)
    if "analytic" in only:
        limits = limits_rows(rows_by_bench["analytic"], args, machine_run, log)
        with open(out / "limits.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LIMIT_COLUMNS)
            writer.writeheader()
            writer.writerows(limits)
    if "pipeline" in only:
        training_rows = rows_by_bench.get("training") or _read_rows(out / "training.csv")
        rows_by_bench["pipeline"] = pipeline_rows(Path(args.root), training_rows, machine_run, log)
    for bench, rows in rows_by_bench.items():
        write_csv(out / f"{bench}.csv", [{k: r.get(k, "") for k in COLUMNS} for r in rows])
    written = [f"{b}.csv" for b in rows_by_bench] + (["limits.csv"] if "analytic" in only else [])
    # The plot also shows benchmarks measured by an earlier run into the same directory.
    for bench in ("analytic", "empirical", "training"):
        if bench not in rows_by_bench:
            rows_by_bench[bench] = _read_rows(out / f"{bench}.csv")
    plot(rows_by_bench, out / "bench.png")
    log(f"wrote {', '.join(written)} and bench.png to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
