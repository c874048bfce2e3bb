"""Exact empirical neural tangent kernel of a finite net.

    Θ(x, y) = Σ_p ∂f(x)/∂θ_p · ∂f(y)/∂θ_p

summed over every parameter of the module. Two ways to compute it:

``structured`` (for :class:`ntk_repro.networks.MLP`)
    No Jacobian is ever materialised. With α̃(ℓ+1) = s_W/√n_ℓ · W(ℓ) α(ℓ) + β b(ℓ) and the
    output sensitivities δ(ℓ+1) = ∂f/∂α̃(ℓ+1) of each sample,

        ∂f/∂W(ℓ) = (s_W/√n_ℓ) δ(ℓ+1) ⊗ α(ℓ),     ∂f/∂b(ℓ) = β δ(ℓ+1),

    so the kernel is a sum of products of per-layer Gram matrices,

        Θ(x, y) = Σ_ℓ [ s_W²/n_ℓ · α(ℓ)(x)·α(ℓ)(y) + β² ] · δ(ℓ+1)(x)·δ(ℓ+1)(y).

    One forward pass stores α(ℓ); an explicit backward recursion gives δ(ℓ) (through
    σ' directly, or through autograd of the normalisation for ``norm="layer"``). Cost
    O(N·L·n²) for the passes plus O(L·N²·n) for the Grams, memory O(L·N·n + N²): about one
    forward + backward pass of the batch.

``func`` (any ``nn.Module``)
    Per-sample Jacobians with :func:`torch.func.vmap` of :func:`torch.func.jacrev` over
    :func:`torch.func.functional_call`, contracted over parameters. Cost O(N²·P) and memory
    O(N·k·P) for P parameters: only for small nets and checks.

Batch-coupled modules (BatchNorm using batch statistics, ``MLP(norm="batch_last")`` or
``"batch"``) have no per-sample Jacobian: f(x_i) depends on the other samples of the batch.
For them the kernel is computed from the Jacobian of the whole batch output on the
concatenated batch [x1; x2] and the (x1, x2) block is returned. That kernel therefore depends
on the batch: Θ(x1, x2) computed alone differs from the same block of a Gram computed together
with other points.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ntk_repro.networks import BATCH_NORMS, MLP
from ntk_repro.validation import as_real_tensor, check_choice, check_tensor

Tensor = torch.Tensor

METHODS = ("auto", "structured", "func")
# BatchNorm layers that use batch statistics couple the samples of a batch.
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


# --- validation (at the edge) ------------------------------------------------------------------


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    raise ValueError("model has no floating-point parameters, so its NTK is empty")


def _as_input(
    x,
    name: str,
    dtype: torch.dtype,
    device: torch.device,
    n0: int | None,
    feature_shape: tuple[int, ...] | None,
) -> Tensor:
    """``x`` as a finite tensor of the model's dtype/device, or raise ValueError naming ``name``.

    The shape is checked here, where the model is known: (N, n0) for an MLP, (N, ...) with
    the per-sample shape of x1 otherwise.
    """
    t = as_real_tensor(x, name)
    if n0 is not None:
        if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] != n0:
            raise ValueError(
                f"{name} must have shape (N, {n0}) with N >= 1 for this MLP, got {tuple(t.shape)}"
            )
    elif t.ndim < 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1, got {tuple(t.shape)}")
    if feature_shape is not None and tuple(t.shape[1:]) != feature_shape:
        raise ValueError(
            f"{name} has per-sample shape {tuple(t.shape[1:])}, expected {feature_shape} as x1"
        )
    return check_tensor(t, name, dtype=dtype, device=device, ndims=(t.ndim,))


def _is_batch_coupled(model: nn.Module) -> bool:
    """Whether a sample's output depends on the other samples of its batch."""
    for module in model.modules():
        if isinstance(module, MLP) and module.norm in BATCH_NORMS:
            return True
        if isinstance(module, _BATCH_NORMS) and (module.training or not module.track_running_stats):
            return True
    return False


# --- public entry point -------------------------------------------------------------------------


def empirical_ntk(
    model: nn.Module, x1, x2=None, *, method: str = "auto", batch_coupled: bool | None = None
) -> Tensor:
    """Exact NTK Θ(x1, x2) = Σ_p ∂f(x1)/∂θ_p ∂f(x2)/∂θ_p of a finite net at its current θ.

    Parameters
    ----------
    model : nn.Module
        Maps a batch (N, ...) to outputs (N, k) (or (N,), or (N, ...) flattened to k per
        sample). Every parameter counts, whether or not it requires grad.
    x1 : Tensor or array (N1, n0)
        For a non-MLP module, (N1, ...) as the module expects. Converted to the model's
        dtype and device.
    x2 : Tensor or array (N2, n0), optional
        Second argument; ``None`` means x1 (the Gram matrix Θ(x1, x1)).
    method : {"auto", "structured", "func"}
        "structured": layer-wise Gram formula, no Jacobian (``MLP`` only). "func": generic
        torch.func Jacobian contraction. "auto": "structured" for an ``MLP``, else "func".
        Batch-coupled models always take the whole-batch Jacobian path (see module notes).
    batch_coupled : bool, optional
        Whether outputs depend on the whole batch (BatchNorm with batch statistics). ``None``
        detects it: ``MLP(norm="batch_last")`` or ``"batch"``, or a BatchNorm layer in
        training mode or without running statistics. If True, the kernel is computed from the
        Jacobian of the output of the concatenated batch [x1; x2] and depends on that batch.

    Returns
    -------
    Tensor (N1, N2) if k == 1, else (N1, N2, k, k) with entry [i, j, a, b] =
    Σ_p ∂f_a(x1_i)/∂θ_p ∂f_b(x2_j)/∂θ_p; detached, in the model's dtype and on its device.

    Raises
    ------
    ValueError
        On a bad ``model``, ``method``, ``batch_coupled``, or an ``x1``/``x2`` of the wrong
        shape or with NaN/inf; the message names the argument.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice(method, "method", METHODS)
    is_mlp = isinstance(model, MLP)
    if method == "structured" and not is_mlp:
        raise ValueError(f"method='structured' needs an ntk_repro MLP, got {type(model).__name__}")
    detected = _is_batch_coupled(model)
    if batch_coupled is None:
        coupled = detected
    elif not isinstance(batch_coupled, bool):
        raise ValueError(f"batch_coupled must be None, True or False, got {batch_coupled!r}")
    elif not batch_coupled and is_mlp and model.norm in BATCH_NORMS:
        raise ValueError(f"batch_coupled=False contradicts norm={model.norm!r} of this MLP")
    else:
        coupled = batch_coupled

    dtype, device = _model_dtype_device(model)
    n0 = model.in_dim if is_mlp else None
    a = _as_input(x1, "x1", dtype, device, n0, None)
    b = None if x2 is None else _as_input(x2, "x2", dtype, device, n0, tuple(a.shape[1:]))

    if coupled:
        return _func_ntk_batch(model, a, b)
    if is_mlp and method in ("auto", "structured"):
        return _structured_ntk(model, a, b)
    return _func_ntk_per_sample(model, a, b)


# --- structured path (MLP) -----------------------------------------------------------------------


def _mlp_factors(model: MLP, x: Tensor) -> tuple[list[Tensor], list[Tensor], list[float]]:
    """Layer inputs α(ℓ) and output sensitivities δ(ℓ+1) of an MLP on a batch.

    Returns
    -------
    inputs : list of L tensors, inputs[ℓ] = α(ℓ) of shape (N, n_ℓ) (inputs[0] = x).
    deltas : list of L − 1 tensors of shape (N·k, n_{ℓ+1}), row i·k + a holding
        ∂f_a/∂α̃(ℓ+1) of sample i up to the factor ``factors[ℓ]``:
        δ(ℓ+1) = factors[ℓ] · deltas[ℓ]. δ(L), the identity on the k outputs, is implicit.
    factors : list of L − 1 floats, the products of the layer scales s_W/√n above ℓ + 1.
        Kept apart so they fold into the scalars of one matmul instead of costing a pass
        over every δ.
    """
    depth, k, n = model.depth, model.out_dim, x.shape[0]
    inputs, pres, graphs = [x], [], []
    h = x
    for layer in range(depth - 1):
        pre = model.preactivation(layer, h)
        last_hidden = layer == depth - 2
        if model.norm is None:
            h = model.hidden(layer, pre, is_last_hidden=last_hidden)
            graphs.append(None)
        else:
            # The normalisation's Jacobian is dense within a sample; autograd gives its
            # vector–Jacobian product exactly without re-deriving it here.
            pre = pre.detach().requires_grad_(True)
            with torch.enable_grad():
                out = model.hidden(layer, pre, is_last_hidden=last_hidden)
            graphs.append(out)
            h = out.detach()
        pres.append(pre)
        inputs.append(h)

    deltas: list[Tensor] = [None] * (depth - 1)  # type: ignore[list-item]
    factors = [1.0] * (depth - 1)
    factor = 1.0
    upstream = None  # deltas of the layer above, (N·k, n_{ℓ+1})
    for layer in range(depth - 1, 0, -1):
        w = model.weights[layer]
        factor *= model.weight_scale / math.sqrt(w.shape[1])
        pre, graph = pres[layer - 1], graphs[layer - 1]
        width = w.shape[1]
        # ∂f_a/∂α(ℓ) up to the factor: the rows of W(L−1) at the top (the same for every
        # sample), then δ(ℓ+1) W(ℓ) below.
        grad_h = w.unsqueeze(0) if upstream is None else torch.mm(upstream, w).view(n, k, width)
        if graph is None:
            delta = model.activation.derivative(pre).unsqueeze(1)
            delta = delta * grad_h if upstream is None else grad_h.mul_(delta)
        else:
            grad_h = grad_h.expand(n, k, width)
            delta = torch.stack(
                [
                    torch.autograd.grad(
                        graph, pre, grad_h[:, out].contiguous(), retain_graph=out < k - 1
                    )[0]
                    for out in range(k)
                ],
                dim=1,
            )
        upstream = delta.reshape(n * k, width)
        deltas[layer - 1] = upstream
        factors[layer - 1] = factor
    return inputs, deltas, factors


@torch.no_grad()
def _structured_ntk(model: MLP, a: Tensor, b: Tensor | None) -> Tensor:
    """Θ = Σ_ℓ [s_W²/n_ℓ α(ℓ)·α(ℓ) + β²] ⊙ [δ(ℓ+1)·δ(ℓ+1)]; see the module docstring."""
    inputs_a, deltas_a, factors = _mlp_factors(model, a)
    inputs_b, deltas_b, _ = (inputs_a, deltas_a, None) if b is None else _mlp_factors(model, b)
    k, n1 = model.out_dim, a.shape[0]
    n2 = n1 if b is None else b.shape[0]
    gain = model.weight_scale**2
    bias_gain = torch.tensor(model.beta**2, dtype=a.dtype, device=a.device)

    def layer_gram(layer: int, factor: float) -> Tensor:
        # factor² · (s_W²/n_ℓ · α(ℓ)·α(ℓ) + β²) in one addmm.
        x, y = inputs_a[layer], inputs_b[layer]
        return torch.addmm(
            bias_gain, x, y.T, beta=factor * factor, alpha=factor * factor * gain / x.shape[1]
        )

    # Output layer: δ(L) is the identity, so its term is the Gram times δ_ab.
    gram = layer_gram(model.depth - 1, 1.0)
    if k == 1:
        theta = gram
    else:
        theta = torch.zeros(n1, k, n2, k, dtype=a.dtype, device=a.device)
        theta.diagonal(dim1=1, dim2=3).copy_(gram.unsqueeze(-1))
    for layer in range(model.depth - 1):
        sens = torch.mm(deltas_a[layer], deltas_b[layer].T)
        gram = layer_gram(layer, factors[layer])
        if k == 1:
            theta.addcmul_(sens, gram)
        else:
            theta.addcmul_(sens.view(n1, k, n2, k), gram.view(n1, 1, n2, 1))
    if k > 1:
        theta = theta.permute(0, 2, 1, 3).contiguous()
    return theta


# --- generic path (torch.func) -------------------------------------------------------------------


def _functional_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    params = {name: p.detach() for name, p in model.named_parameters()}
    # Cloned so that a BatchNorm in training mode cannot update the model's running stats.
    buffers = {name: t.detach().clone() for name, t in model.named_buffers()}
    return params, buffers


def _contract(
    jac_a: dict[str, Tensor], jac_b: dict[str, Tensor], n1: int, n2: int, k: int
) -> Tensor:
    """Σ_p J_a[i, a, p] J_b[j, b, p] over the parameter blocks → (N1, N2) or (N1, N2, k, k)."""
    theta = None
    for name, ja in jac_a.items():
        jb = jac_b[name]
        block = torch.mm(ja.reshape(n1 * k, -1), jb.reshape(n2 * k, -1).T)
        theta = block if theta is None else theta.add_(block)
    theta = theta.view(n1, k, n2, k).permute(0, 2, 1, 3)
    return theta.reshape(n1, n2) if k == 1 else theta.contiguous()


def _func_ntk_per_sample(model: nn.Module, a: Tensor, b: Tensor | None) -> Tensor:
    """Per-sample Jacobians by vmap(jacrev(functional_call)), contracted over parameters."""
    from torch.func import functional_call, jacrev, vmap

    params, buffers = _functional_state(model)

    def output_of_one(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, (p, buffers), (x.unsqueeze(0),)).reshape(-1)

    jacobian = vmap(jacrev(output_of_one), in_dims=(None, 0))
    jac_a = jacobian(params, a)  # name -> (N, k, *parameter shape)
    jac_b = jac_a if b is None else jacobian(params, b)
    k = next(iter(jac_a.values())).shape[1]
    n2 = a.shape[0] if b is None else b.shape[0]
    return _contract(jac_a, jac_b, a.shape[0], n2, k).detach()


def _func_ntk_batch(model: nn.Module, a: Tensor, b: Tensor | None) -> Tensor:
    """Jacobian of the whole output of the batch [a; b]; returns the (a, b) block.

    Plain reverse-mode autograd with one batched vector–Jacobian product per output entry
    (vmap over the backward pass only): a forward pass under a torch.func transform may not
    update buffers in place, which a BatchNorm in training mode does.
    """
    from torch.func import functional_call

    params, buffers = _functional_state(model)
    batch = a if b is None else torch.cat([a, b])
    n_total, n1 = batch.shape[0], a.shape[0]
    with torch.enable_grad():
        leaves = {name: p.requires_grad_(True) for name, p in params.items()}
        out = functional_call(model, (leaves, buffers), (batch,)).reshape(n_total, -1)
        k = out.shape[1]
        basis = torch.eye(n_total * k, dtype=out.dtype, device=out.device)
        grads = torch.autograd.grad(
            out,
            list(leaves.values()),
            basis.view(-1, n_total, k),
            is_grads_batched=True,
            allow_unused=True,
        )
    jac = {  # name -> (N, k, *parameter shape)
        name: (
            torch.zeros((n_total * k, *p.shape), dtype=p.dtype, device=p.device) if g is None else g
        ).view(n_total, k, *p.shape)
        for (name, p), g in zip(leaves.items(), grads)
    }
    theta = _contract(jac, jac, n_total, n_total, k).detach()
    return theta if b is None else theta[:n1, n1:].contiguous()


__all__ = ["METHODS", "empirical_ntk"]
