"""The neural-tangents implementations of benchmarks 1 and 2.

Imported only by a worker process running the neural-tangents interpreter (``--nt-python``),
never by the runner or the torch workers, so jax, its settings and the compatibility patch
below stay inside that one process.
"""

from __future__ import annotations

import os

from .analytic import analytic_inputs
from .common import ANALYTIC, EMPIRICAL, rss_mb, timed


def import_neural_tangents(x64: bool):
    """(jax, neural_tangents) with TF's log chatter silenced and the precision set before
    any jax array exists (it cannot change afterwards)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jax

    jax.config.update("jax_enable_x64", x64)
    import neural_tangents as nt

    return jax, nt


def nt_mlp(nt, width: int, depth: int, beta: float):
    """The benchmarks' ReLU MLP as neural-tangents ``stax`` layers, NTK parameterisation."""
    stax = nt.stax
    layers = []
    for _ in range(depth - 1):
        layers += [stax.Dense(width, W_std=1.0, b_std=beta, parameterization="ntk"), stax.Relu()]
    layers.append(stax.Dense(1, W_std=1.0, b_std=beta, parameterization="ntk"))
    return stax.serial(*layers)


def expose_jax_ad_internals_for_neural_tangents(jax) -> None:
    """Why: neural-tangents 0.6.5's STRUCTURED_DERIVATIVES empirical NTK (its fastest for an
    MLP, the fair opponent) reads names that jax 0.4.30 moved from ``jax.interpreters.ad`` to
    the private ``jax._src.interpreters.ad``, and fails with AttributeError. Copy the missing
    names back onto the public module. Only ever called in the neural-tangents worker process;
    its result agrees with NTK_VECTOR_PRODUCTS to ~1e-15 in float64."""
    import jax._src.interpreters.ad as private_ad
    import jax.interpreters.ad as public_ad

    for name in dir(private_ad):
        if not name.startswith("__") and not hasattr(public_ad, name):
            setattr(public_ad, name, getattr(private_ad, name))
    # Read as ad.config.jax_enable_checks: the Config object, not the private config module.
    public_ad.config = jax.config


def work_analytic_nt(case: dict) -> dict:
    """neural-tangents' jitted infinite-width kernel_fn in float64 at one N."""
    import numpy as np

    jax, nt = import_neural_tangents(x64=True)
    n = case["n"]
    x = analytic_inputs(n)
    kernel_fn = jax.jit(
        nt_mlp(nt, 512, ANALYTIC["depth"], ANALYTIC["beta"])[2], static_argnames="get"
    )

    def run():
        out = np.asarray(kernel_fn(x, None, get="ntk"))
        assert out.dtype == np.float64 and out.shape == (n, n)
        return out

    base = rss_mb()
    result = timed(run, case["repeats"], warmup=True, min_total_s=case["min_total_s"])
    info = {"jax": jax.__version__, "neural_tangents": nt.__version__}
    return result | {"base_mem_mb": base, "info": info}


def _empirical_ntk_fn(jax, nt, apply_fn, info: dict):
    """Jitted empirical_ntk_fn, structured derivatives if they work, else vector products."""
    try:
        expose_jax_ad_internals_for_neural_tangents(jax)
        implementation = nt.NtkImplementation.STRUCTURED_DERIVATIVES
    except Exception as err:  # noqa: BLE001 - fall back to the next-fastest that works
        implementation = nt.NtkImplementation.NTK_VECTOR_PRODUCTS
        info["fallback"] = repr(err)
    info["nt_implementation"] = implementation.name
    return jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), implementation=implementation))


def work_empirical_nt(case: dict) -> dict:
    """neural-tangents' jitted empirical NTK in float32 at one (N, width)."""
    import numpy as np

    jax, nt = import_neural_tangents(x64=False)
    n, width, n0 = case["n"], case["width"], EMPIRICAL["n0"]
    init_fn, apply_fn, _ = nt_mlp(nt, width, EMPIRICAL["depth"], EMPIRICAL["beta"])
    _, params = init_fn(jax.random.PRNGKey(0), (-1, n0))
    x = np.random.default_rng(0).standard_normal((n, n0)).astype(np.float32)
    info = {"jax": jax.__version__, "neural_tangents": nt.__version__}
    ntk_fn = _empirical_ntk_fn(jax, nt, apply_fn, info)

    def run():
        out = np.asarray(ntk_fn(x, None, params))
        assert out.shape == (n, n)
        return out

    base = rss_mb()
    result = timed(run, case["repeats"], warmup=True, min_total_s=case["min_total_s"])
    return result | {"base_mem_mb": base, "info": info}
