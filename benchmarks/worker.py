"""One implementation at one size, in its own process:
``python -m benchmarks.worker CASE_JSON``.

Prints one line ``BENCH_RESULT <json>`` with the times, memory and info. The runner starts it
under this interpreter, or under the neural-tangents one for that implementation's cases.
"""

from __future__ import annotations

import json
import sys

from .common import NEURAL_TANGENTS, peak_rss_mb

RESULT_TAG = "BENCH_RESULT "


def _work(case: dict):
    """The measuring function of the case's benchmark and implementation (imported lazily:
    the neural-tangents interpreter need not have torch, nor the torch one jax)."""
    bench, nt = case["benchmark"], case["impl"] == NEURAL_TANGENTS
    if bench == "analytic":
        if nt:
            from .nt_impl import work_analytic_nt as work
        else:
            from .analytic import work_analytic as work
    elif bench == "empirical":
        if nt:
            from .nt_impl import work_empirical_nt as work
        else:
            from .empirical import work_empirical as work
    elif bench == "training":
        from .training import work_training as work
    elif bench == "generalization":
        from .generalization import work_generalization as work
    elif bench == "hessian":
        from .hessian import work_hessian as work
    elif bench == "limits":
        from .limits import work_limits as work
    else:
        raise ValueError(f"benchmark: unknown benchmark {bench!r}")
    return work


def _torch_threads() -> int | None:
    """torch's intra-op threads, if this worker used torch (the neural-tangents one not)."""
    torch = sys.modules.get("torch")
    return None if torch is None else torch.get_num_threads()


def worker_main(case: dict) -> None:
    result = _work(case)(case)
    result["peak_mem_mb"] = peak_rss_mb()
    result["threads"] = _torch_threads()
    print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks.worker CASE_JSON")
    worker_main(json.loads(sys.argv[1]))
