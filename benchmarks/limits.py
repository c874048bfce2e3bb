"""What bounds the analytic Gram: ns per element of the passes the fused ReLU map is made of
(single core), and theta_inf's end-to-end ns per computed element per layer."""

from __future__ import annotations

from .common import ANALYTIC, OURS, best_seconds, rss_mb

LIMIT_COLUMNS = ("quantity", "ns_per_element", "threads", "note", "load_1min", "machine")
# Side of the arrays that go through memory, and calls per timing (min taken).
SIZES = {"full": (4096, 20), "quick": (4096, 20), "smoke": (512, 3)}


def fused_tiling():
    """(tile side, tile iterator) of ntk-repro's fused Gram path. Private to kernels.py:
    the benchmark measures that implementation's own tiles, so it reads them there."""
    from ntk_repro import kernels

    return kernels._FUSED_TILE, kernels._tiles


def limits_case(scale: str) -> dict:
    return {"benchmark": "limits", "size": "", "impl": "limits", "scale": scale}


def _elementwise_rates(tile: int, big: int, reps: int) -> dict:
    """ns per element of copies, products and the transcendental passes, numpy and torch."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    tile_in = rng.uniform(-1.0, 1.0, (tile, tile))
    tile_out = np.empty_like(tile_in)
    vec = rng.uniform(0.5, 1.5, tile)
    big_in = rng.uniform(-1.0, 1.0, (big, big))
    big_out = np.empty_like(big_in)
    torch_in, torch_out = torch.from_numpy(tile_in), torch.from_numpy(tile_out)
    n_tile = tile * tile
    passes = {
        f"copy, {tile}² tile in L2 (numpy)": (lambda: np.copyto(tile_out, tile_in), n_tile),
        f"copy, {big}² arrays through memory (numpy)": (
            lambda: np.copyto(big_out, big_in),
            big_in.size,
        ),
        f"multiply two {tile}² tiles in L2 (numpy)": (
            lambda: np.multiply(tile_in, tile_in, out=tile_out),
            n_tile,
        ),
        f"outer product into a {tile}² tile (numpy)": (
            lambda: np.multiply.outer(vec, vec, out=tile_out),
            n_tile,
        ),
        "arccos float64 (numpy)": (lambda: np.arccos(tile_in, out=tile_out), n_tile),
        "sqrt float64 (numpy)": (
            lambda: np.sqrt(np.abs(tile_in, out=tile_out), out=tile_out),
            n_tile,
        ),
        "acos float64 (torch)": (lambda: torch.acos(torch_in, out=torch_out), n_tile),
        "sqrt float64 (torch)": (lambda: torch.sqrt(torch_in.abs(), out=torch_out), n_tile),
    }
    return {name: best_seconds(fn, reps) / n * 1e9 for name, (fn, n) in passes.items()}


def _gram_rates(tile: int, tiles, big: int, reps: int) -> dict:
    """ns per element of one fused layer, of writing finished tiles, of fresh output memory."""
    import numpy as np

    from ntk_repro import kernels

    rng = np.random.default_rng(1)
    out = {}
    # One layer of the fused ReLU map on one in-cache tile: (depth 9 − depth 1) / 8 layers.
    x = rng.standard_normal((tile, 10))
    deep = best_seconds(lambda: kernels.theta_inf(x, depth=9, beta=0.1), reps)
    shallow = best_seconds(lambda: kernels.theta_inf(x, depth=1, beta=0.1), reps)
    out["fused ReLU layer (Σ and Θ), per element"] = (deep - shallow) / 8 / tile**2 * 1e9
    finished = rng.uniform(-1.0, 1.0, (tile, tile))
    gram = np.empty((big, big))
    gram.fill(0.0)  # memory already mapped: the write alone

    def write_tiles():
        for rows, cols in tiles(big, big, True, tile):
            block = finished[: rows.stop - rows.start, : cols.stop - cols.start]
            gram[rows, cols] = block
            if rows != cols:
                gram[cols, rows] = block.T

    def first_touch():
        np.empty((big, big)).fill(0.0)

    out["write + mirror finished tiles, per output element"] = (
        best_seconds(write_tiles, 3) / big**2 * 1e9
    )
    out["first touch of a fresh output (page faults + write), per element"] = (
        best_seconds(first_touch, 3) / big**2 * 1e9
    )
    return out


def work_limits(case: dict) -> dict:
    """The single-core rates (in a worker process: the thread setting stays there)."""
    import torch

    torch.set_num_threads(1)
    big, reps = SIZES[case["scale"]]
    tile, tiles = fused_tiling()
    rates = _elementwise_rates(tile, big, reps) | _gram_rates(tile, tiles, big, reps)
    return {
        "times": [0.0],
        "first_call_s": None,
        "base_mem_mb": rss_mb(),
        "info": {"limits_ns": rates},
    }


def limits_rows(result: dict, analytic: list[dict], machine: str, log) -> list[dict]:
    """Rows of limits.csv: the worker's rates, then theta_inf's end-to-end ns per computed
    element per layer at each N of the analytic rows."""
    rows = []
    if "error" in result:
        log(f"limits: {result['error']}")
    else:
        load = f"{result['load_1min']:.1f}"
        for name, ns in result["info"]["limits_ns"].items():
            rows.append(
                {
                    "quantity": name,
                    "ns_per_element": f"{ns:.3g}",
                    "threads": 1,
                    "note": "",
                    "load_1min": load,
                    "machine": machine,
                }
            )
    rows.extend(_end_to_end_rows(analytic, machine))
    for r in rows:
        log(f"limits    {r['quantity']:75s} {r['ns_per_element']:>8s} ns")
    return rows


def _end_to_end_rows(analytic: list[dict], machine: str) -> list[dict]:
    tile, tiles = fused_tiling()
    layers = ANALYTIC["depth"] - 1
    rows = []
    for r in analytic:
        if r["implementation"] != OURS["analytic"] or not r["time_s"]:
            continue
        n = r["_n"]
        computed = sum(
            (rs.stop - rs.start) * (cs.stop - cs.start) for rs, cs in tiles(n, n, True, tile)
        )
        rows.append(
            {
                "quantity": f"theta_inf end to end at N={n}, per computed element per layer",
                "ns_per_element": f"{float(r['time_s']) / computed / layers * 1e9:.3g}",
                "threads": r.get("threads", ""),
                "note": (
                    f"wall time / ({computed} elements of the upper tiles × {layers} "
                    "layers); includes the first layer, output writes and page faults"
                ),
                "load_1min": r["load_1min"],
                "machine": machine,
            }
        )
    return rows
