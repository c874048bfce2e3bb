"""Benchmark 2: the exact empirical NTK of a depth-4 ReLU MLP (float32) at N points."""

from __future__ import annotations

from .common import EMPIRICAL, NEURAL_TANGENTS, OURS, rss_mb, timed

TORCH_FUNC = "torch.func jacobian contraction"
FORWARD_BACKWARD = "one forward+backward (torch autograd)"
# (N, widths) of the comparison, and (N, width) of the memory case run by ours and fwd+bwd.
SIZES = {
    "full": (256, [256, 1024, 4096], (1024, 4096)),
    "quick": (64, [64, 256], (128, 256)),
    "smoke": (16, [32], None),
}


def empirical_cases(scale: str, nt_python: str | None):
    n, widths, big = SIZES[scale]
    impls = [OURS["empirical"], TORCH_FUNC, NEURAL_TANGENTS, FORWARD_BACKWARD]
    for width in widths:
        for impl in impls:
            # torch.func holds per-sample Jacobians, N·P floats: 34 GB at width 4096, N = 256.
            if impl == TORCH_FUNC and width > 1024:
                continue
            yield {
                "benchmark": "empirical",
                "size": f"N={n},width={width}",
                "_n": width,
                "n": n,
                "width": width,
                "impl": impl,
                "python": nt_python if impl == NEURAL_TANGENTS else None,
            }
    if big is not None:
        big_n, big_w = big
        for impl in (OURS["empirical"], FORWARD_BACKWARD):
            yield {
                "benchmark": "empirical",
                "size": f"N={big_n},width={big_w}",
                "_n": big_w,
                "n": big_n,
                "width": big_w,
                "impl": impl,
                "python": None,
            }


def _torch_run(impl: str, model, x):
    """The call to time for one torch implementation."""
    from ntk_repro.empirical import empirical_ntk

    if impl == OURS["empirical"]:
        return lambda: empirical_ntk(model, x, method="structured")
    if impl == TORCH_FUNC:
        return lambda: empirical_ntk(model, x, method="func")
    if impl == FORWARD_BACKWARD:
        params = list(model.parameters())

        def run():
            for p in params:
                p.grad = None
            model(x).sum().backward()

        return run
    raise ValueError(f"impl: unknown empirical implementation {impl!r}")


def work_empirical(case: dict) -> dict:
    """Time one torch implementation at one (N, width) (in a worker process)."""
    import torch

    from ntk_repro.networks import MLP

    n, width = case["n"], case["width"]
    model = MLP(
        EMPIRICAL["n0"],
        width,
        EMPIRICAL["depth"],
        beta=EMPIRICAL["beta"],
        generator=torch.Generator().manual_seed(0),
    )
    x = torch.randn(n, EMPIRICAL["n0"], generator=torch.Generator().manual_seed(1))
    run = _torch_run(case["impl"], model, x)
    base = rss_mb()
    return timed(run, case["repeats"], warmup=False, min_total_s=case["min_total_s"]) | {
        "base_mem_mb": base,
        "info": {},
    }
