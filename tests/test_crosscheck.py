"""Analytic kernels against neural-tangents (the optional ``crosscheck`` extra).

neural-tangents builds the same net from ``stax`` layers: every Dense layer (hidden ones and
the readout) has ``W_std = s_W`` and ``b_std = β`` in its 'ntk' parameterisation, i.e.
ntk2018: W_std = 1, b_std = β; balanced: W_std = √(1−β²), b_std = β. Its kernel function
accepts the kernel of the previous layer, so one chain Dense → (σ → Dense) × 5 gives the
depth-1 … depth-6 kernels in turn.

Agreement is measured as max |ours − theirs| / max |theirs| over a Gram (shape (N1, N2)).
The one exception is the diagonal of a ReLU-family NTK Gram Θ(x, x): neural-tangents computes
the angle as arctan2(√(k11·k22 − k12²), k12), and the square root of a cancellation of size
~1e-16 gives an angle, hence a relative error, of ~1e-8 there; ours snaps ρ = 1 exactly.
"""

import math
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # tensorflow's C++ start-up chatter
try:
    import jax
    from neural_tangents import stax
except ImportError as err:  # the extra is optional
    pytest.skip(
        f"neural-tangents is not importable ({err}); install the 'crosscheck' extra: "
        "pip install -e '.[crosscheck]'",
        allow_module_level=True,
    )

from ntk_repro.kernels import kernel_matrices

# Must precede the first JAX array: kernels in float64 like ours.
jax.config.update("jax_enable_x64", True)

pytestmark = pytest.mark.crosscheck

REL_TOL = 1e-9
# neural-tangents' own accuracy on the diagonal of a ReLU-family NTK Gram (module docstring).
REL_TOL_NT_RELU_DIAGONAL = 1e-7
MAX_DEPTH = 6
BETAS = (0.0, 0.1, 0.5, 0.9)
ACTIVATIONS = ("relu", "erf", "scaled_relu")


def _nt_activation(name: str):
    if name == "relu":
        return stax.Relu()
    if name == "erf":
        return stax.Erf(a=1.0, b=1.0, c=0.0)
    return stax.ABRelu(0.0, math.sqrt(2.0))  # √2·max(0, x)


def _nt_kernels_by_depth(x1, x2, beta, activation, parametrization):
    """[(nngp, ntk)] for depth 1 … MAX_DEPTH from neural-tangents, float64 (N1, N2) arrays."""
    w_std = 1.0 if parametrization == "ntk2018" else math.sqrt(1.0 - beta * beta)
    dense = stax.Dense(1, W_std=w_std, b_std=beta, parameterization="ntk")[2]
    act = _nt_activation(activation)[2]
    kernel = dense(x1, x2)
    out = []
    for depth in range(1, MAX_DEPTH + 1):
        if depth > 1:
            kernel = dense(act(kernel))
        nngp, ntk = np.array(kernel.nngp), np.array(kernel.ntk)
        assert nngp.dtype == ntk.dtype == np.float64, "jax_enable_x64 was not in effect"
        out.append((nngp, ntk))
    return out


def _rel_err(ours, theirs, mask=None):
    diff = np.abs(ours - theirs)
    if mask is not None:
        diff = diff[mask]
    return diff.max() / np.abs(theirs).max()


@pytest.fixture(scope="module")
def inputs():
    """x1 (25, 10) and x2 (20, 10): Gaussian rows, so norms and angles vary."""
    rng = np.random.default_rng(2018)
    return rng.standard_normal((25, 10)), 1.7 * rng.standard_normal((20, 10))


@pytest.mark.parametrize("parametrization", ["ntk2018", "balanced"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kernels_match_neural_tangents(inputs, activation, parametrization):
    x1, x2 = inputs
    off_diagonal = ~np.eye(x1.shape[0], dtype=bool)
    for beta in BETAS:
        cross = _nt_kernels_by_depth(x1, x2, beta, activation, parametrization)
        gram = _nt_kernels_by_depth(x1, None, beta, activation, parametrization)
        for depth in range(1, MAX_DEPTH + 1):
            where = f"{activation}, {parametrization}, beta={beta}, depth={depth}"
            kw = dict(
                depth=depth, beta=beta, activation=activation, parametrization=parametrization
            )
            ours_cross = kernel_matrices(x1, x2, **kw)
            ours_gram = kernel_matrices(x1, **kw)
            nt_cross, nt_gram = cross[depth - 1], gram[depth - 1]
            for i, name in enumerate(("nngp", "ntk")):
                err = _rel_err(ours_cross[name], nt_cross[i])
                assert err <= REL_TOL, f"{name}(x1, x2) {where}: rel err {err:.1e}"
                relu_ntk = name == "ntk" and activation != "erf"
                err = _rel_err(ours_gram[name], nt_gram[i], off_diagonal if relu_ntk else None)
                assert err <= REL_TOL, f"{name}(x1, x1) {where}: rel err {err:.1e}"
                if relu_ntk:
                    err = _rel_err(np.diag(ours_gram[name]), np.diag(nt_gram[i]))
                    assert err <= REL_TOL_NT_RELU_DIAGONAL, (
                        f"diagonal of {name}(x1, x1) {where}: rel err {err:.1e}"
                    )


def test_depth_convention_is_the_number_of_dense_layers(inputs):
    """Depth 1 is the linear layer alone: Σ = Θ = s_W²·x·y/n0 + β² in both libraries."""
    x1, x2 = inputs
    beta = 0.3
    expected = (1.0 - beta * beta) * x1 @ x2.T / x1.shape[1] + beta * beta
    nngp, ntk = _nt_kernels_by_depth(x1, x2, beta, "relu", "balanced")[0]
    np.testing.assert_allclose(nngp, expected, rtol=1e-13)
    np.testing.assert_allclose(ntk, expected, rtol=1e-13)
    ours = kernel_matrices(x1, x2, depth=1, beta=beta, parametrization="balanced")
    np.testing.assert_allclose(ours["ntk"], expected, rtol=1e-13)
