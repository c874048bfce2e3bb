"""Benchmark 3: ensemble training, K inits together vs one by one vs the bare matmuls."""

from __future__ import annotations

import time

from .common import OURS, TRAINING, rss_mb

SEQUENTIAL = "K sequential runs (K=1 each)"
MATMULS_ONLY = "torch.bmm of the same shapes (matmuls only)"
TRAINING_IMPLS = (OURS["training"], SEQUENTIAL, MATMULS_ONLY)
# (widths, steps per timed run)
SIZES = {"full": ([256, 1000, 2000], 20), "quick": ([64, 256], 3), "smoke": ([32], 2)}


def training_cases(scale: str):
    """One case per width; it measures all of TRAINING_IMPLS, interleaved in one process."""
    widths, steps = SIZES[scale]
    for width in widths:
        yield {
            "benchmark": "training",
            "size": f"width={width},K={TRAINING['members']},N={TRAINING['batch']}",
            "_n": width,
            "width": width,
            "steps": steps,
            "impl": "interleaved",
            "python": None,
        }


def _matmul_buffers(dims: list[int]) -> dict:
    """Random operands and preallocated outputs of one training step's batched matmuls."""
    import torch

    k, batch = TRAINING["members"], TRAINING["batch"]
    g = torch.Generator().manual_seed(0)
    pairs = list(zip(dims[:-1], dims[1:], strict=True))
    return {
        "weights": [torch.randn(k, o, i, generator=g) for i, o in pairs],
        "inputs": [torch.randn(k, batch, i, generator=g) for i in dims[:-1]],
        "deltas": [torch.randn(k, batch, o, generator=g) for o in dims[1:]],
        "outs": [torch.empty(k, batch, o) for o in dims[1:]],
        "grads_in": [torch.empty(k, batch, i) for i in dims[:-1]],
        "grads_w": [torch.empty(k, o, i) for i, o in pairs],
    }


def bmm_step(weights, inputs, deltas, outs, grads_in, grads_w) -> None:
    """The matmuls of one training step, nothing else (see training.flops_per_step)."""
    import torch

    for layer, w in enumerate(weights):
        torch.bmm(inputs[layer], w.mT, out=outs[layer])  # forward
        torch.bmm(deltas[layer].mT, inputs[layer], out=grads_w[layer])  # weight gradient
        if layer > 0:
            torch.bmm(deltas[layer], w, out=grads_in[layer])  # input gradient


def _runs(width: int, steps: int, dims: list[int]) -> dict:
    """implementation -> callable returning the seconds of ``steps`` training steps."""
    import numpy as np

    from ntk_repro.training import train_ensemble

    k = TRAINING["members"]
    x = np.random.default_rng(0).standard_normal((TRAINING["batch"], TRAINING["n0"]))
    x = x.astype(np.float32)
    y = (x[:, 0] * x[:, 1]).astype(np.float32)
    kw = dict(
        width=width,
        depth=TRAINING["depth"],
        beta=TRAINING["beta"],
        steps=steps,
        lr=TRAINING["lr"],
        loss="half_mse",
    )
    buffers = _matmul_buffers(dims)

    # train_seconds: the training loop's own clock, without set-up.
    def together():
        return train_ensemble(x, y, seeds=list(range(k)), **kw).train_seconds

    def sequential():
        return sum(train_ensemble(x, y, seeds=[s], **kw).train_seconds for s in range(k))

    def matmuls_only():
        start = time.perf_counter()
        for _ in range(steps):
            bmm_step(**buffers)
        return time.perf_counter() - start

    return dict(zip(TRAINING_IMPLS, (together, sequential, matmuls_only), strict=True))


def work_training(case: dict) -> dict:
    """All three implementations in one process, interleaved run by run, so that a change of
    the machine's load hits them alike (the ratios are what matters)."""
    from ntk_repro.training import flops_per_step

    width, steps = case["width"], case["steps"]
    dims = [TRAINING["n0"]] + [width] * (TRAINING["depth"] - 1) + [1]
    runs = _runs(width, steps, dims)
    base = rss_mb()
    for run in runs.values():
        run()  # warm-up: allocator, MKL/oneDNN initialisation
    by_impl: dict[str, list[float]] = {impl: [] for impl in runs}
    for _ in range(case["repeats"]):
        for impl, run in runs.items():
            by_impl[impl].append(run() / steps)
    flops = flops_per_step(dims, TRAINING["batch"], TRAINING["members"])
    return {
        "times": by_impl[OURS["training"]],
        "by_impl": by_impl,
        "first_call_s": None,
        "base_mem_mb": base,
        "info": {"flops_per_step": flops},
    }
