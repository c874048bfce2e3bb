"""Tests of the loss Hessian H = I + S (ntk_repro.hessian) and of the helpers of its experiments.

1. Exact moments (dense and block-diagonal) against the eigenvalues of a dense
   torch.autograd.functional.hessian of the loss; products, Jacobian products, eigenpairs and
   the orthogonality ratio against dense matrices; the stochastic estimator within its standard
   errors of the exact moments.
2. Finite-width identities: Tr S² = rᵀΥ̂r/N², g = Tr ∇²f, Tr(IS) from its O(N² n1) formula.
3. The limiting kernels: Θ̃, Σ̃ against the kernel module; Φ and Λ against wide nets; Υ against
   Hutchinson estimates for two hidden layers; the reduced quadrature against the default one.
4. The corollary against an independent computation (matrix exponential; Monte Carlo of the
   linear Gaussian dynamics it describes).
5. σ'' and σ''' against autograd; bad inputs raise ValueError naming the argument.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from ntk_repro.activations import get_activation
from ntk_repro.gauss import expect_2d
from ntk_repro.hessian import (
    _SMOOTH_NODES,
    LossHessian,
    OneHiddenLayer,
    corollary,
    hessian_moments,
    limiting_kernels,
    orthogonality,
    propagators,
    top_eigenpairs,
)
from ntk_repro.kernels import kernel_matrices
from ntk_repro.networks import MLP

F64 = torch.float64
ORDERS = (1, 2, 3, 4)


# Every tensor here is tiny (see conftest.one_intra_op_thread).
pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def _mlp(n0, width, depth, activation="softplus", seed=0, beta=0.5, dtype=F64, **kw):
    gen = torch.Generator().manual_seed(seed)
    return MLP(n0, width, depth, beta=beta, activation=activation, generator=gen, dtype=dtype, **kw)


def _data(n, n0, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n0)), rng.standard_normal(n)


def _dense_loss_hessian(model: nn.Module, x, y) -> np.ndarray:
    """∇²C by torch.autograd.functional.hessian over the flat parameters."""
    names = [name for name, _ in model.named_parameters()]
    params = list(model.parameters())
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
    xt, yt = torch.as_tensor(x, dtype=params[0].dtype), torch.as_tensor(y, dtype=params[0].dtype)

    def loss(theta):
        parts = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        f = torch.func.functional_call(model, parts, (xt,)).reshape(-1)
        return 0.5 * ((f - yt) ** 2).mean()

    theta = torch.cat([p.detach().reshape(-1) for p in params])
    return torch.autograd.functional.hessian(loss, theta).double().numpy()


def _power_traces(matrix: np.ndarray) -> np.ndarray:
    ev = np.linalg.eigvalsh(matrix)
    return np.array([np.sum(ev**k) for k in ORDERS])


# --- 1. exact moments, products, eigenpairs ------------------------------------------------------


@pytest.mark.parametrize("activation", ["softplus", "normalized:softplus", "tanh", "erf"])
@pytest.mark.parametrize("shape", [(3, 5, 4), (6, 7, 3)])  # (n0, width, N); N + 1 < n0 + 2 too
def test_block_and_dense_moments_equal_the_autograd_hessian(activation, shape):
    n0, width, n = shape
    model = _mlp(n0, width, 2, activation)
    x, y = _data(n, n0)
    reference = _power_traces(_dense_loss_hessian(model, x, y))
    for method in ("blocks", "dense"):
        moments = hessian_moments(model, x, y, method=method)
        np.testing.assert_allclose(moments["H"], reference, rtol=1e-8, atol=1e-12)
    blocks, dense = (hessian_moments(model, x, y, method=m) for m in ("blocks", "dense"))
    for part in ("I", "S"):
        np.testing.assert_allclose(blocks[part], dense[part], rtol=1e-8, atol=1e-12)


def test_moments_of_prebuilt_blocks_are_those_of_hessian_moments():
    model = _mlp(4, 7, 2, "normalized:softplus", seed=7)
    x, y = _data(6, 4)
    blocks = OneHiddenLayer(model, torch.as_tensor(x), torch.as_tensor(y))
    moments = blocks.moments((1, 2, 3, 4))
    reference = hessian_moments(model, x, y, method="blocks")
    for part in ("H", "I", "S"):  # the same computation: bit for bit
        assert moments[part].tobytes() == reference[part].tobytes()
    np.testing.assert_allclose(  # and against the autograd Hessian
        moments["H"], _power_traces(_dense_loss_hessian(model, x, y)), rtol=1e-8, atol=1e-12
    )
    assert blocks.moments((2,))["S"][0] == pytest.approx(moments["S"][1], rel=1e-12)


def test_dense_parts_are_gauss_newton_and_residual_terms_of_a_generic_module():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4), nn.Softplus(), nn.Linear(4, 1)
    )
    model = model.double()
    x, y = _data(5, 3)
    op = LossHessian(model, x, y)
    assert op.blocks is None
    mats = op.dense()
    jac = np.stack([op.jacobian_transpose_product(np.eye(5)[i]) for i in range(5)])
    np.testing.assert_allclose(mats["I"], jac.T @ jac / 5, atol=1e-12)
    np.testing.assert_allclose(mats["H"], _dense_loss_hessian(model, x, y), atol=1e-12)
    moments = hessian_moments(model, x, y)  # auto: dense for this small P
    np.testing.assert_allclose(moments["H"], _power_traces(mats["H"]), rtol=1e-8)


def test_float32_model_matches_its_float64_copy():
    model = _mlp(4, 6, 2, "softplus")
    x, y = _data(5, 4)
    single = _mlp(4, 6, 2, "softplus", dtype=torch.float32)
    with torch.no_grad():
        for p32, p64 in zip(single.parameters(), model.parameters()):
            p32.copy_(p64)
    for method in ("blocks", "dense"):
        m32, m64 = hessian_moments(single, x, y, method=method), hessian_moments(model, x, y)
        for part in ("H", "I", "S"):
            assert m32[part].dtype == np.float64
            np.testing.assert_allclose(m32[part], m64[part], rtol=1e-4)


@pytest.mark.parametrize("depth", [2, 3])
def test_stochastic_moments_are_within_their_standard_errors(depth):
    model = _mlp(3, 6, depth, "normalized:softplus", seed=3)
    x, y = _data(4, 3)
    exact = hessian_moments(model, x, y, method="dense")
    moments, se = hessian_moments(model, x, y, method="stochastic", probes=400, seed=5, stderr=True)
    np.testing.assert_allclose(moments["I"], exact["I"], rtol=1e-10)  # exact from Θ̂
    assert np.all(se["I"] == 0) and np.all(se["H"] > 0) and np.all(se["S"] > 0)
    for part in ("H", "S"):
        z = np.abs(moments[part] - exact[part]) / se[part]
        assert z.max() < 4.0, (part, z)


def test_products_and_jacobian_products_of_the_two_backends_agree_with_dense_matrices():
    model = _mlp(5, 8, 2, "softplus", seed=2)
    x, y = _data(6, 5)
    blocks, generic = LossHessian(model, x, y), LossHessian(model, x, y, structured=False)
    assert blocks.blocks is not None and generic.blocks is None
    mats = generic.dense()
    v = np.random.default_rng(0).standard_normal((blocks.n_params, 3))
    for part in ("H", "I", "S"):
        np.testing.assert_allclose(blocks.product(part, v), mats[part] @ v, atol=1e-12)
        np.testing.assert_allclose(generic.product(part, v[:, 0]), mats[part] @ v[:, 0], atol=1e-12)
    u = np.random.default_rng(1).standard_normal((6, 2))
    np.testing.assert_allclose(
        blocks.jacobian_transpose_product(u), generic.jacobian_transpose_product(u), atol=1e-12
    )
    np.testing.assert_allclose(blocks.jacobian_product(v), generic.jacobian_product(v), atol=1e-12)


@pytest.mark.parametrize("part", ["I", "S", "H"])
def test_top_eigenpairs_lanczos_exact_and_dense_agree(part):
    model = _mlp(4, 6, 2, "normalized:softplus", seed=4)
    x, y = _data(5, 4)
    mats = LossHessian(model, x, y).dense()
    dense_vals, dense_vecs = top_eigenpairs(model, x, y, part=part, k=3, method="dense")
    methods = ["lanczos"] + (["exact"] if part != "H" else [])
    for method in methods:
        vals, vecs = top_eigenpairs(model, x, y, part=part, k=3, method=method)
        np.testing.assert_allclose(vals, dense_vals, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(mats[part] @ vecs, vecs * vals, atol=1e-9)
        np.testing.assert_allclose(np.abs((vecs * dense_vecs).sum(0)), 1.0, atol=1e-6)


def test_orthogonality_ratio_of_blocks_equals_dense():
    model = _mlp(4, 7, 2, "softplus", seed=5)
    x, y = _data(5, 4)
    blocks, dense = (
        orthogonality(model, x, y, method="blocks"),
        orthogonality(model, x, y, method="dense"),
    )
    for key in ("IS", "I", "S", "ratio"):
        assert blocks[key] == pytest.approx(dense[key], rel=1e-10)


# --- 2. finite-width identities ---------------------------------------------------------------


def test_block_identities_trace_s_squared_g_and_trace_is():
    model = _mlp(4, 9, 2, "normalized:softplus", seed=6)
    x, y = _data(5, 4)
    op = LossHessian(model, x, y)
    b = op.blocks
    mats = op.dense()
    r = b.residual.numpy()
    s2 = r @ b.upsilon().numpy() @ r / 25
    assert s2 == pytest.approx(np.sum(mats["S"] ** 2), rel=1e-10)
    assert b.trace_is() == pytest.approx(np.trace(mats["I"] @ mats["S"]), rel=1e-10)
    xt = torch.as_tensor(x)
    for i in range(5):  # g(xᵢ) = Tr ∇²_θ f(xᵢ)
        single = LossHessian(model, x[i : i + 1], [0.0], structured=False)
        single.residual = torch.ones(1, dtype=F64)  # S = ∇²f(xᵢ)
        assert float(b.output_hessian_trace()[i]) == pytest.approx(
            np.trace(single.dense()["S"]), rel=1e-10
        )
    assert xt.shape == (5, 4)


# --- 3. limiting kernels ------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3])
def test_limiting_ntk_and_nngp_equal_the_kernel_module(depth):
    x, _ = _data(6, 3)
    ours = limiting_kernels(x, depth=depth, beta=0.4, activation="normalized:softplus")
    ref = kernel_matrices(
        x, depth=depth, beta=0.4, activation="normalized:softplus", method="quadrature"
    )
    np.testing.assert_allclose(ours["ntk"], ref["ntk"], rtol=1e-9)
    np.testing.assert_allclose(ours["nngp"], ref["nngp"], rtol=1e-9)
    assert ("phi" in ours) == (depth == 2)


def test_reduced_quadrature_matches_the_default_rule_for_smooth_functions():
    act = get_activation("softplus")
    q1 = torch.tensor([0.7, 1.3, 2.0], dtype=F64)
    q2 = torch.tensor([1.1, 0.9, 2.0], dtype=F64)
    c = torch.tensor([0.5, -0.8, 2.0 - 1e-12], dtype=F64)
    for f, g in ((act, act), (act.second_derivative, act), (act.third_derivative, act.derivative)):
        default = expect_2d(f, g, q1, q2, c)
        reduced = expect_2d(f, g, q1, q2, c, **_SMOOTH_NODES)
        np.testing.assert_allclose(reduced, default, rtol=1e-8, atol=1e-10)


def test_phi_is_the_exact_expectation_of_g_times_f_over_nets():
    # E[g(x) f(x')] = Φ(x, x') at every width: Monte Carlo over many narrow nets.
    x, _ = _data(3, 2)
    phi = limiting_kernels(x, depth=2, beta=0.5, activation="softplus")["phi"]
    act = get_activation("softplus")
    rng = np.random.default_rng(0)
    nets, width = 40000, 4
    w0 = torch.from_numpy(rng.standard_normal((nets, width, 2)))
    b0, w1 = (torch.from_numpy(rng.standard_normal((nets, width))) for _ in range(2))
    b1 = torch.from_numpy(rng.standard_normal(nets))
    xt = torch.as_tensor(x)
    pre = torch.einsum("ni,kji->knj", xt, w0) / math.sqrt(2) + 0.5 * b0[:, None, :]
    f = (act(pre) * w1[:, None, :]).sum(-1) / math.sqrt(width) + 0.5 * b1[:, None]
    diag = (xt * xt).sum(1) / 2 + 0.25
    g = diag * (act.second_derivative(pre) * w1[:, None, :]).sum(-1) / math.sqrt(width)
    prod = (g[:, :, None] * f[:, None, :]).numpy()
    mean, se = prod.mean(0), prod.std(0) / math.sqrt(nets)
    assert np.abs(mean - phi).max() < 4 * se.max()


def test_lambda_and_upsilon_are_the_limits_of_wide_nets():
    x, y = _data(3, 2)
    kern = limiting_kernels(x, depth=2, beta=0.5, activation="softplus")
    model = _mlp(2, 20000, 2, "softplus", seed=7)
    xt = torch.as_tensor(x)
    b = LossHessian(model, x, y).blocks
    np.testing.assert_allclose(b.upsilon().numpy(), kern["upsilon"], rtol=0.05, atol=0.02)
    # Λ(x, x') = ∇_θ g(x) · ∇_θ f(x'), by autograd of g = c Σ₁(x, x) Σ_j W1_j σ''(h_j(x)).
    params = list(model.parameters())
    with torch.enable_grad():
        pre = model.preactivation(0, xt)
        act = model.activation
        diag = (xt * xt).sum(1) / 2 + 0.25
        g = diag * (act.second_derivative(pre) @ model.weights[1][0]) / math.sqrt(20000)
        f = model(xt)[:, 0]
        grads_g = [
            torch.cat(
                [
                    t.reshape(-1)
                    for t in torch.autograd.grad(g[i], params, retain_graph=True, allow_unused=True)
                    if t is not None
                ]
            )
            for i in range(3)
        ]
        grads_f = [torch.autograd.grad(f[i], params, retain_graph=True) for i in range(3)]
    grads_f = [torch.cat([t.reshape(-1) for t in gr[:3]]) for gr in grads_f]  # b1: ∂g = 0
    lam = np.array([[float(grads_g[i] @ grads_f[j]) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(lam, kern["lambda"], rtol=0.05, atol=0.02)


def test_two_hidden_layer_upsilon_against_hutchinson_estimates():
    # Tr(∇²f(x_a) ∇²f(x_b)) = E_z[(∇²f_a z)·(∇²f_b z)] → Υ(x_a, x_b).
    x, _ = _data(2, 3, seed=4)
    x *= 2.0 / np.linalg.norm(x, axis=1, keepdims=True)
    upsilon = limiting_kernels(x, depth=3, beta=0.5, activation="softplus")["upsilon"]
    estimates = []
    for seed in range(3):
        model = _mlp(3, 300, 3, "softplus", seed=seed)
        ops = []
        for a in range(2):
            op = LossHessian(model, x, np.zeros(2))
            op.residual = torch.tensor([2.0 * (a == 0), 2.0 * (a == 1)], dtype=F64)
            ops.append(op)
        z = torch.randint(
            0, 2, (ops[0].n_params, 48), generator=torch.Generator().manual_seed(seed)
        )
        z = z.double() * 2 - 1
        hz = [op.tensor_product("S", z) for op in ops]
        estimates.append(
            [[float((hz[a] * hz[b]).sum(0).mean()) for b in range(2)] for a in range(2)]
        )
    estimates = np.array(estimates)
    np.testing.assert_allclose(estimates.mean(0), upsilon, rtol=0.1)


# --- 4. the corollary ---------------------------------------------------------------------------


def _random_kernels(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    theta = a @ a.T + n * np.eye(n)
    joint = rng.standard_normal((3 * n, 3 * n))
    joint = joint @ joint.T / (3 * n)  # covariance of (G, Y0)
    b = rng.standard_normal((n, n))
    return {
        "ntk": theta,
        "nngp": joint[n : 2 * n, n : 2 * n],
        "phi": joint[:n, n : 2 * n],  # E[G Y0ᵀ]
        "gamma": joint[:n, :n],
        "upsilon": b @ b.T,
        "lambda": rng.standard_normal((n, n)),
    }


def test_corollary_flow_against_the_matrix_exponential():
    n = 5
    k = _random_kernels(n, 0)
    y = np.random.default_rng(1).standard_normal(n)
    times = np.array([0.0, 0.7, 3.0])
    out = corollary({key: k[key] for key in ("ntk", "nngp", "upsilon", "phi", "lambda")}, y, times)
    for t_index, t in enumerate(times):
        e = scipy.linalg.expm(-t * k["ntk"] / n)
        a = np.linalg.solve(k["ntk"] / n, np.eye(n) - e)  # ∫₀ᵗ E_s ds
        s2 = np.trace(e @ k["upsilon"] @ e @ (k["nngp"] + np.outer(y, y))) / n**2
        drift = (
            -(np.trace(a @ k["lambda"].T @ e @ k["nngp"]) + y @ a @ k["lambda"].T @ e @ y) / n**2
        )
        assert out["S2"][t_index] == pytest.approx(s2, rel=1e-10)
        assert out["S"][t_index] == pytest.approx(np.trace(e @ k["phi"].T) / n + drift, rel=1e-9)
        np.testing.assert_allclose(out["mean_output"][t_index], y - e @ y, atol=1e-12)
    np.testing.assert_allclose(
        out["I"], [np.trace(np.linalg.matrix_power(k["ntk"] / n, p)) for p in ORDERS], rtol=1e-12
    )
    flow = propagators(k["ntk"], times)
    descent = propagators(k["ntk"], [0.0, 0.9], lr=0.3)
    for t_index, t in enumerate(times):
        np.testing.assert_allclose(flow[t_index], scipy.linalg.expm(-t * k["ntk"] / n), atol=1e-12)
    step = np.eye(n) - 0.3 * k["ntk"] / n
    np.testing.assert_allclose(descent[1], np.linalg.matrix_power(step, 3), atol=1e-12)


def test_corollary_gradient_descent_against_monte_carlo_of_its_linear_dynamics():
    # Y_{s+1} = Y_s − lr Θ(Y_s − Y*)/N, G_{s+1} = G_s − lr Λ(Y_s − Y*)/N, Tr S_s = G_sᵀ(Y_s − Y*)/N
    # with (G0, Y0) Gaussian: E Tr S_s from samples vs the corollary with the GD propagator.
    n, lr, steps, samples = 4, 0.3, 12, 200000
    k = _random_kernels(n, 2)
    y = np.random.default_rng(3).standard_normal(n)
    cov = np.block([[k["gamma"], k["phi"]], [k["phi"].T, k["nngp"]]])
    draws = np.random.default_rng(4).multivariate_normal(np.zeros(2 * n), cov, size=samples)
    g, out_y = draws[:, :n], draws[:, n:]
    trace_s = []
    for _ in range(steps + 1):
        resid = out_y - y
        trace_s.append((g * resid).sum(1) / n)
        g = g - lr * resid @ k["lambda"].T / n
        out_y = out_y - lr * resid @ k["ntk"] / n
    trace_s = np.array(trace_s)
    kern = {key: k[key] for key in ("ntk", "nngp", "upsilon", "phi", "lambda")}
    out = corollary(kern, y, lr * np.arange(steps + 1), lr=lr)
    se = trace_s.std(1) / math.sqrt(samples)
    assert np.abs(trace_s.mean(1) - out["S"]).max() < 4 * se.max()


# --- 5. activations and bad inputs --------------------------------------------------------------


@pytest.mark.parametrize("spec", ["softplus", "normalized:softplus", "erf", "tanh"])
def test_second_and_third_derivatives_match_autograd(spec):
    act = get_activation(spec)
    assert act.is_smooth
    z = torch.linspace(-4, 4, 41, dtype=F64, requires_grad=True)
    d1 = torch.autograd.grad(act(z).sum(), z, create_graph=True)[0]
    d2 = torch.autograd.grad(d1.sum(), z, create_graph=True)[0]
    d3 = torch.autograd.grad(d2.sum(), z, allow_unused=True)[0]
    d3 = torch.zeros_like(z) if d3 is None else d3
    np.testing.assert_allclose(act.second_derivative(z.detach()), d2.detach(), atol=1e-12)
    np.testing.assert_allclose(act.third_derivative(z.detach()), d3.detach(), atol=1e-12)


def test_kinked_activation_has_no_second_derivative():
    relu = get_activation("relu")
    assert not relu.is_smooth
    with pytest.raises(ValueError, match="not twice differentiable"):
        relu.second_derivative(torch.zeros(2))
    with pytest.raises(ValueError, match="not smooth"):
        limiting_kernels(np.ones((2, 2)), depth=2, beta=0.1, activation="relu")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x, y: hessian_moments("net", x, y), "model"),
        (lambda m, x, y: hessian_moments(m, x, y[:2]), "y"),
        (lambda m, x, y: hessian_moments(m, x[:, :2], y), "x must have shape"),
        (lambda m, x, y: hessian_moments(m, x, y, orders=(0, 2)), "orders"),
        (lambda m, x, y: hessian_moments(m, x, y, orders=(5,), method="blocks"), "orders"),
        (lambda m, x, y: hessian_moments(m, x, y, method="magic"), "method"),
        (lambda m, x, y: hessian_moments(nn.Linear(3, 2).double(), x, y), "scalar output"),
        (
            lambda m, x, y: hessian_moments(nn.Linear(3, 1).double(), x, y, method="blocks"),
            "blocks",
        ),
        (lambda m, x, y: top_eigenpairs(m, x, y, part="X"), "part"),
        (lambda m, x, y: top_eigenpairs(m, x, y, part="I", k=5, method="exact"), "k"),
        (lambda m, x, y: top_eigenpairs(m, x, y, which="BE"), "which"),
        (lambda m, x, y: orthogonality(m, x, y, method="stochastic"), "method"),
        (
            lambda m, x, y: OneHiddenLayer(_mlp(3, 4, 3), torch.as_tensor(x), torch.as_tensor(y)),
            "one hidden layer",
        ),
        (
            lambda m, x, y: OneHiddenLayer(m, torch.as_tensor(x), torch.as_tensor(y)).moments((5,)),
            "orders",
        ),
        (lambda m, x, y: corollary({"ntk": np.eye(4)}, np.ones(3), [0.0]), "y"),
        (lambda m, x, y: corollary({"ntk": np.eye(4)}, np.ones(4), [-1.0]), "times"),
    ],
)
def test_bad_inputs_raise_value_errors(call, message):
    model = _mlp(3, 4, 2)
    x, y = _data(4, 3)
    with pytest.raises((ValueError, RuntimeError), match=message):
        call(model, x, y)


# --- the experiments' helpers -----------------------------------------------------------------


def test_digits_problem_reads_the_same_digits_as_the_data_module():
    from ntk_repro import data
    from ntk_repro.hessian import digits_problem

    x, y = digits_problem(40, seed=3)
    ref, labels = data.digits_inputs(40, seed=3)
    np.testing.assert_array_equal(x, ref)
    np.testing.assert_array_equal(y, np.where(labels < 5, 1.0, -1.0))


def test_batched_init_trace_s_equals_the_block_formula_of_each_net():
    from ntk_repro.experiments.hessian_moments import init_trace_s

    x, y = _data(5, 4)
    batched = init_trace_s(
        x, y, width=6, beta=0.5, activation="softplus", count=3, seed=11, device="cpu"
    )
    rng = np.random.default_rng(11)  # the same draws, in the same order
    w0, b0, w1, b1 = (rng.standard_normal(s) for s in ((3, 6, 4), (3, 6), (3, 6), (3,)))
    for k in range(3):
        model = _mlp(4, 6, 2, "softplus")
        with torch.no_grad():
            model.weights[0].copy_(torch.from_numpy(w0[k]))
            model.biases[0].copy_(torch.from_numpy(b0[k]))
            model.weights[1].copy_(torch.from_numpy(w1[k])[None])
            model.biases[1].copy_(torch.from_numpy(b1[k : k + 1]))
        exact = hessian_moments(model, x, y, orders=(1,), method="dense")["S"][0]
        assert batched[k] == pytest.approx(exact, rel=1e-10)


def test_stacked_training_outputs_equal_each_member_mlp():
    from ntk_repro.experiments.hessian_moments import _outputs, _stack

    nets = [_mlp(4, 5, 2, "softplus", seed=s) for s in range(3)]
    x = torch.as_tensor(_data(6, 4)[0])
    out = _outputs(_stack(nets), x, nets[0].activation, 0.5)
    for k, net in enumerate(nets):
        np.testing.assert_allclose(out[k].detach(), net(x)[:, 0].detach(), atol=1e-13)
