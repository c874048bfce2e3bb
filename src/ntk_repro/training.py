"""Gradient-descent training of an ensemble of finite-width MLPs (DESIGN.md §1–2).

K = len(seeds) independent initialisations of one architecture are trained together: the
parameters of layer ℓ are stacked into W(ℓ) of shape (K, n_{ℓ+1}, n_ℓ) and b(ℓ) of shape
(K, n_{ℓ+1}), and every layer is one batched matmul for all members,

    α̃(ℓ+1) = β·b(ℓ) + s_W/√n_ℓ · α(ℓ) W(ℓ)ᵀ        (K, N, n_{ℓ+1}), torch.baddbmm.

Member k starts from exactly (bitwise) the parameters of
``networks.MLP(..., generator=torch.Generator().manual_seed(seeds[k]))`` and sees the same
batches as every other member, so the ensemble is K separately trained nets computed at once.

The backward pass is written out by hand (no autograd): with δ(ℓ+1) = ∂C/∂α̃(ℓ+1),

    ∂C/∂W(ℓ) = s_W/√n_ℓ · δ(ℓ+1)ᵀ α(ℓ),   ∂C/∂b(ℓ) = β Σ_batch δ(ℓ+1),
    δ(ℓ) = σ'(α̃(ℓ)) ⊙ N'ᵀ[s_W/√n_ℓ · δ(ℓ+1) W(ℓ)]       (N' = the optional normalisation),

and the weight gradient is accumulated straight into the weights,
``W.baddbmm_(δᵀ, α, alpha=−lr·s_W/√n)``, so no gradient tensor is ever allocated. A step costs
three batched matmuls per layer (two for the first) and nothing else of size n².

Loss conventions (the strings of :func:`ntk_repro.kernels.loss_rate`, so the kernel prediction
uses the same rate η): ``"mse"`` C = (1/N) Σ_i ‖f(x_i) − y_i‖² (η = 2/N) and ``"half_mse"``
C = 1/(2N) Σ_i ‖f(x_i) − y_i‖² (η = 1/N, the NTK paper's). Then ∂C/∂f = η (f − y) and
C = η/2 · Σ ‖f − y‖², with N the size of the batch in use. Update: θ ← θ − lr ∂C/∂θ.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ntk_repro.kernels import check_hyperparameters, loss_rate, resolve_device
from ntk_repro.networks import MLP, NORM_EPS, NORMS, as_real_tensor

Tensor = torch.Tensor

LOSSES = ("mse", "half_mse")
_MAX_SEED = 2**63


class TrainingDiverged(RuntimeError):
    """The training loss of some member became NaN or inf; the message names run, seed, step."""


# --- result ------------------------------------------------------------------------------------


@dataclass
class EnsembleResult:
    """Outcome of :func:`train_ensemble` (K members, E eval steps, T NTK steps).

    Attributes
    ----------
    name : the run's name.
    seeds : int64 array (K,) of the members' initialisation seeds.
    steps, lr, loss : the number of updates, learning rate and loss convention.
    losses : array (K, steps + 1). ``losses[k, s]`` is member k's loss on the batch of step s
        at the parameters before update s; ``s = steps`` is after the last update. For full
        batch this is the training loss; for mini-batches/sampled batches the loss on that
        step's batch (the batch of step ``steps`` is drawn only to evaluate it).
    eval_steps : int64 array (E,).  f_eval : array (K, E, M) of outputs on ``x_eval`` at
        those steps ((K, E, M, k) for k-dimensional targets).
    ntk_steps : int64 array (T,).  ntk : array (K, T, P, P) of empirical NTKs on
        ``ntk_points`` at those steps ((K, T, P, P, k, k) for k outputs).
    train_seconds : wall time of the training loop (not bitwise reproducible, obviously).
    architecture : keyword arguments that rebuild one member as ``networks.MLP``.
    weights, biases : final stacked parameters, lists over layers of tensors (K, n_out, n_in)
        and (K, n_out), on the training device.

    Arrays are numpy in the training dtype.
    """

    name: str
    seeds: np.ndarray
    steps: int
    lr: float
    loss: str
    losses: np.ndarray
    eval_steps: np.ndarray
    f_eval: np.ndarray
    ntk_steps: np.ndarray
    ntk: np.ndarray
    train_seconds: float
    architecture: dict
    weights: list = field(repr=False)
    biases: list = field(repr=False)
    _shell: MLP = field(repr=False)

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    def member(self, k: int) -> MLP:
        """Member k after training as an independent ``networks.MLP`` (parameters copied)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < self.n_members:
            raise ValueError(f"k must be an integer in [0, {self.n_members}), got {k!r}")
        return _member_model(self._shell, self.weights, self.biases, int(k), copy_params=True)

    def arrays(self) -> dict[str, np.ndarray]:
        """The numeric results as a dict for ``numpy.savez`` (no pickled objects)."""
        return {
            "seeds": self.seeds, "steps": np.int64(self.steps), "lr": np.float64(self.lr),
            "losses": self.losses, "eval_steps": self.eval_steps, "f_eval": self.f_eval,
            "ntk_steps": self.ntk_steps, "ntk": self.ntk,
        }


# --- the stacked ensemble ----------------------------------------------------------------------


def _member_model(shell: MLP, weights: list[Tensor], biases: list[Tensor], k: int,
                  copy_params: bool) -> MLP:
    """An MLP whose parameters are member k's (views into the stacks unless copied)."""
    model = copy.deepcopy(shell)  # the shell's parameters are empty placeholders: cheap
    for p, w in zip(model.weights, weights):
        p.data = w[k].clone() if copy_params else w[k]
    for p, b in zip(model.biases, biases):
        p.data = b[k].clone() if copy_params else b[k]
    return model


class _StackedMLP:
    """K MLPs of one architecture with stacked parameters; forward and fused SGD step."""

    def __init__(self, architecture: dict, seeds: Sequence[int], dtype, device):
        k_members = len(seeds)
        self.weights: list[Tensor] = []
        self.biases: list[Tensor] = []
        net = None
        for k, seed in enumerate(seeds):
            # The member is built by MLP itself, so its initialisation is MLP's by construction.
            net = MLP(**architecture, generator=torch.Generator().manual_seed(int(seed)),
                      device=device, dtype=dtype)
            if k == 0:
                self.weights = [torch.empty((k_members, *w.shape), dtype=dtype, device=device)
                                for w in net.weights]
                self.biases = [torch.empty((k_members, *b.shape), dtype=dtype, device=device)
                               for b in net.biases]
            with torch.no_grad():
                for stack, p in zip(self.weights + self.biases, list(net.weights) + list(net.biases)):
                    stack[k].copy_(p)
        # Keep one MLP without its (large) tensors as a template for rebuilding members.
        for p in list(net.weights) + list(net.biases):
            p.data = torch.empty(0, dtype=dtype, device=device)
        self.shell = net
        self.activation = net.activation
        self.depth = net.depth
        self.beta = net.beta
        self.norm = net.norm
        self.scales = [net.weight_scale / math.sqrt(w.shape[2]) for w in self.weights]
        self.n_members = k_members

    def _norm_dim(self, layer: int) -> int | None:
        """Dimension the output of hidden layer ``layer`` is normalised over, or None."""
        if self.norm == "layer":
            return -1
        if self.norm == "batch_last" and layer == self.depth - 2:
            return 1  # the batch dimension of (K, N, n): each member over its own batch
        return None

    def forward(self, x: Tensor, keep: bool) -> tuple[Tensor, list]:
        """Outputs (K, N, k) on the shared batch x (N, n0); ``keep`` saves what backward needs."""
        h = x.expand(self.n_members, *x.shape)
        saved = []
        last = self.depth - 1
        for layer in range(self.depth):
            pre = torch.baddbmm(self.biases[layer].unsqueeze(1), h, self.weights[layer].mT,
                                beta=self.beta, alpha=self.scales[layer])
            if layer == last:
                if keep:
                    saved.append((h, None, None, None, None))
                return pre, saved
            out = self.activation(pre)
            dim = self._norm_dim(layer)
            normed = std = None
            if dim is not None:
                # As networks._normalize, keeping the std for the backward pass.
                centred = out - out.mean(dim=dim, keepdim=True)
                std = torch.sqrt((centred * centred).mean(dim=dim, keepdim=True) + NORM_EPS)
                out = normed = centred / std
            if keep:
                saved.append((h, pre, normed, std, dim))
            h = out
        raise AssertionError("unreachable")

    def sgd_step(self, saved: list, grad_out: Tensor, lr: float) -> None:
        """θ ← θ − lr ∂C/∂θ given δ(L) = ∂C/∂f (K, N, k) and the forward's saved tensors."""
        delta = grad_out
        for layer in range(self.depth - 1, -1, -1):
            h_in = saved[layer][0]
            weight, scale = self.weights[layer], self.scales[layer]
            if layer > 0:
                grad_h = torch.bmm(delta, weight)  # with W before its update
            weight.baddbmm_(delta.mT, h_in, alpha=-lr * scale)
            if self.beta != 0.0:
                self.biases[layer].add_(delta.sum(dim=1), alpha=-lr * self.beta)
            if layer == 0:
                return
            _, pre, normed, std, dim = saved[layer - 1]
            grad_h.mul_(scale)
            if dim is not None:
                # Backward of y = (a − mean a)/sqrt(var a + ε) along dim:
                # ∂C/∂a = (g − mean g − y·mean(g·y)) / sqrt(var a + ε).
                grad_h = (grad_h - grad_h.mean(dim=dim, keepdim=True)
                          - normed * (grad_h * normed).mean(dim=dim, keepdim=True)).div_(std)
            delta = grad_h.mul_(self.activation.derivative(pre))


# --- validation (at the edge) ------------------------------------------------------------------


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_tensor(x, name: str, dtype, device, ndims: tuple[int, ...]) -> Tensor:
    """``x`` as a finite tensor of dtype/device with ndim in ``ndims`` and no empty axis."""
    t = as_real_tensor(x, name)
    if t.ndim not in ndims or 0 in t.shape:
        raise ValueError(f"{name} must be a non-empty array with ndim in {ndims}, got shape "
                         f"{tuple(t.shape)}")
    # Cast first (a float64 value can overflow in float32), and check where the data already
    # is, so host data costs no device synchronisation.
    t = t.to(dtype=dtype)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf (in {dtype})")
    return t.to(device=device)


def _check_steps_list(values, name: str, steps: int) -> list[int]:
    try:
        items = list(values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of step numbers, got {values!r}") from None
    out = []
    for s in items:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s <= steps:
            raise ValueError(f"{name} must hold integers in [0, steps={steps}], got {s!r}")
        out.append(int(s))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a step, got {out}")
    return out


def _check_seeds(seeds) -> list[int]:
    try:
        items = list(np.asarray(seeds).reshape(-1)) if isinstance(seeds, np.ndarray) else list(seeds)
    except TypeError:
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}") from None
    if not items:
        raise ValueError("seeds must be a non-empty sequence of ints, got an empty one")
    for s in items:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) \
                or not 0 <= s < _MAX_SEED:
            raise ValueError(f"seeds must be ints in [0, 2**63), got {s!r}")
    items = [int(s) for s in items]
    if len(set(items)) != len(items):
        raise ValueError(f"seeds must be unique (the members would be identical), got {items}")
    return items


def _target_matrix(y: Tensor, n: int, name: str) -> Tensor:
    """Targets as (N, k); ``y`` of shape (N,) or (N, k)."""
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} rows but the inputs have {n}")
    return y.unsqueeze(1) if y.ndim == 1 else y


# --- batches -----------------------------------------------------------------------------------


def epoch_permutation(n: int, batch_seed: int, epoch: int) -> np.ndarray:
    """Order of the N training points in an epoch: depends only on (batch_seed, epoch)."""
    return np.random.default_rng([int(batch_seed), int(epoch)]).permutation(int(n))


def minibatch_indices(n: int, batch_size: int, batch_seed: int, step: int) -> np.ndarray:
    """Indices of the mini-batch used at ``step``: the epochs walk through
    :func:`epoch_permutation` in chunks of ``batch_size`` (the last chunk of an epoch is
    smaller when batch_size does not divide N)."""
    per_epoch = -(-int(n) // int(batch_size))
    epoch, j = divmod(int(step), per_epoch)
    return epoch_permutation(n, batch_seed, epoch)[j * batch_size:(j + 1) * batch_size]


def flops_per_step(dims: Sequence[int], n_batch: int, n_members: int = 1) -> int:
    """Multiply–add FLOPs (2 per MAC) of one training step of the batched trainer.

    Per layer: forward and weight gradient, 2·N·n_in·n_out each, plus the input gradient for
    every layer but the first. ``dims`` = [n0, n1, …, n_L].
    """
    total = 0
    for layer, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
        total += (3 if layer > 0 else 2) * 2 * n_batch * n_in * n_out
    return total * n_members


# --- the trainer -------------------------------------------------------------------------------


def train_ensemble(
    x_train=None,
    y_train=None,
    *,
    width: int,
    depth: int,
    beta: float,
    activation: str = "relu",
    parametrization: str = "ntk2018",
    norm: str | None = None,
    seeds: Sequence[int],
    steps: int,
    lr: float,
    loss: str = "mse",
    batch_size: int | None = None,
    batch_seed: int = 0,
    sample_batch: Callable[[int], tuple] | None = None,
    x_eval=None,
    eval_steps: Sequence[int] = (),
    ntk_points=None,
    ntk_steps: Sequence[int] = (),
    dtype: torch.dtype = torch.float32,
    device=None,
    name: str = "run",
) -> EnsembleResult:
    """Train K = len(seeds) MLPs of one architecture by gradient descent, all at once.

    Parameters
    ----------
    x_train : array (N, n0).  y_train : array (N,) or (N, k) (k = the output dimension).
        Both None when ``sample_batch`` provides the data.
    width, depth, beta, activation, parametrization, norm : the architecture, as in
        :class:`ntk_repro.networks.MLP` (``norm`` None, "layer" or "batch_last"; with
        "batch_last" each member normalises over its own copy of the batch).
    seeds : K unique ints; member k is initialised as ``MLP(...,
        generator=torch.Generator().manual_seed(seeds[k]))``.
    steps : number of updates (>= 0).  lr : learning rate (> 0).
    loss : "mse" (1/N Σ‖f − y‖²) or "half_mse" (1/(2N) Σ‖f − y‖²).
    batch_size : None for full-batch GD, or mini-batch SGD with batches of this size drawn
        by :func:`minibatch_indices` from ``batch_seed``.
    sample_batch : callable ``step -> (x (B, n0), y (B,) or (B, k))`` giving a fresh batch
        for every step (e.g. :func:`ntk_repro.data.gaussian_batch_sampler`); called for
        steps 0 … steps (the last batch only to evaluate the final loss).
    x_eval : array (M, n0) where outputs are recorded at ``eval_steps``.
    ntk_points : array (P, n0) where empirical NTKs are recorded at ``ntk_steps`` (by
        :func:`ntk_repro.empirical.empirical_ntk` on each rebuilt member).
    eval_steps, ntk_steps : distinct steps in [0, steps]; step s means the parameters before
        update s (0 = initialisation, ``steps`` = trained).
    dtype : torch floating dtype of parameters and data.  device : None/"cpu"/"cuda"/"auto".
    name : name of the run, used in error messages.

    Returns
    -------
    EnsembleResult (see its attributes; ``result.member(k)`` rebuilds member k as an MLP).

    Raises
    ------
    ValueError : a bad argument; the message names it.
    TrainingDiverged : a member's loss became NaN or inf; names the run, seed and step.
    """
    # --- validate everything before any work ---
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {name!r}")
    check_hyperparameters(depth, beta, activation, parametrization)
    width = _check_int(width, "width", 1)
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r} is unknown; choose one of {list(NORMS)}")
    seeds = _check_seeds(seeds)
    steps = _check_int(steps, "steps", 0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(float(lr)) and float(lr) > 0.0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    lr = float(lr)
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} is unknown; choose one of {list(LOSSES)}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a torch floating dtype, got {dtype!r}")
    dev = resolve_device(device)
    eval_steps = _check_steps_list(eval_steps, "eval_steps", steps)
    ntk_steps = _check_steps_list(ntk_steps, "ntk_steps", steps)
    batch_seed = _check_int(batch_seed, "batch_seed", 0)

    first_batch = None
    if sample_batch is not None:
        if not callable(sample_batch):
            raise ValueError(f"sample_batch must be callable step -> (x, y), got {sample_batch!r}")
        if x_train is not None or y_train is not None:
            raise ValueError("x_train and y_train must be None when sample_batch gives the data")
        if batch_size is not None:
            raise ValueError("batch_size must be None when sample_batch gives the batches")
        first_batch = _sampled(sample_batch, 0, dtype, dev, None, None)
        x_train_t, y_train_t = first_batch[:2]
    else:
        if x_train is None or y_train is None:
            raise ValueError("x_train and y_train are required unless sample_batch is given")
        x_train_t = _as_tensor(x_train, "x_train", dtype, dev, (2,))
        y_given = _as_tensor(y_train, "y_train", dtype, dev, (1, 2))
        y_train_t = _target_matrix(y_given, x_train_t.shape[0], "y_train")
    n_train, in_dim = x_train_t.shape
    out_dim = y_train_t.shape[1]
    # Scalar targets give outputs (…, M), vector targets (…, M, k).
    squeeze_output = first_batch[2] if sample_batch is not None else y_given.ndim == 1
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
        if batch_size > n_train:
            raise ValueError(f"batch_size = {batch_size} exceeds the {n_train} training points")

    x_eval_t = None
    if x_eval is not None:
        x_eval_t = _as_tensor(x_eval, "x_eval", dtype, dev, (2,))
        if x_eval_t.shape[1] != in_dim:
            raise ValueError(f"x_eval has input dimension {x_eval_t.shape[1]}, expected {in_dim}")
    elif eval_steps:
        raise ValueError("x_eval is required when eval_steps is not empty")
    ntk_points_t = None
    if ntk_points is not None:
        ntk_points_t = _as_tensor(ntk_points, "ntk_points", dtype, dev, (2,))
        if ntk_points_t.shape[1] != in_dim:
            raise ValueError(
                f"ntk_points has input dimension {ntk_points_t.shape[1]}, expected {in_dim}")
    elif ntk_steps:
        raise ValueError("ntk_points is required when ntk_steps is not empty")

    architecture = dict(in_dim=int(in_dim), width=width, depth=int(depth), beta=float(beta),
                        activation=activation, parametrization=parametrization,
                        out_dim=int(out_dim), norm=norm)
    ensemble = _StackedMLP(architecture, seeds, dtype, dev)
    k_members = len(seeds)

    # --- batch schedule ---
    def full_batch(step: int):
        return x_train_t, y_train_t

    permutation: dict[int, Tensor] = {}

    def mini_batch(step: int):
        per_epoch = -(-n_train // batch_size)
        epoch, j = divmod(step, per_epoch)
        if epoch not in permutation:
            # One host→device copy per epoch, not per step.
            permutation.clear()
            permutation[epoch] = torch.as_tensor(
                epoch_permutation(n_train, batch_seed, epoch), device=dev)
        index = permutation[epoch][j * batch_size:(j + 1) * batch_size]
        return x_train_t.index_select(0, index), y_train_t.index_select(0, index)

    def sampled_batch(step: int):
        if step == 0:
            return first_batch[0], first_batch[1]
        x, y, _ = _sampled(sample_batch, step, dtype, dev, in_dim, out_dim)
        return x, y

    if sample_batch is not None:
        batch_at = sampled_batch
    elif batch_size is not None:
        batch_at = mini_batch
    else:
        batch_at = full_batch

    # --- outputs, kept on the device until the end ---
    losses = torch.empty((k_members, steps + 1), dtype=dtype, device=dev)
    eval_slot = {s: i for i, s in enumerate(eval_steps)}
    ntk_slot = {s: i for i, s in enumerate(ntk_steps)}
    n_eval = 0 if x_eval_t is None else x_eval_t.shape[0]
    f_eval = torch.empty((k_members, len(eval_steps), n_eval, out_dim), dtype=dtype, device=dev)
    ntk_blocks: list[list[Tensor]] = [[None] * len(ntk_steps) for _ in range(k_members)]
    empirical_ntk = None
    if ntk_steps:
        from ntk_repro.empirical import empirical_ntk  # lazily: only runs that record NTKs

    start = time.perf_counter()
    with torch.no_grad():
        for step in range(steps + 1):
            x_batch, y_batch = batch_at(step)
            update = step < steps
            f, saved = ensemble.forward(x_batch, keep=update)
            resid = f - y_batch  # (K, B, k)
            rate = loss_rate(loss, x_batch.shape[0])
            member_loss = resid.square().sum(dim=(1, 2)).mul_(0.5 * rate)
            losses[:, step] = member_loss
            if not bool(torch.isfinite(member_loss).all()):  # the step's only host sync
                _raise_diverged(name, seeds, step, member_loss, lr)
            if step in eval_slot:
                f_eval[:, eval_slot[step]] = ensemble.forward(x_eval_t, keep=False)[0]
            if step in ntk_slot:
                for k in range(k_members):
                    member = _member_model(ensemble.shell, ensemble.weights, ensemble.biases, k,
                                           copy_params=False)
                    with torch.enable_grad():
                        ntk_blocks[k][ntk_slot[step]] = empirical_ntk(member, ntk_points_t)
            if update:
                ensemble.sgd_step(saved, resid.mul_(rate), lr)
                del saved, resid, f

    losses_np = losses.cpu().numpy()  # the copy synchronises the device: timing ends here
    train_seconds = time.perf_counter() - start
    f_eval_np = f_eval.cpu().numpy()
    if squeeze_output:
        f_eval_np = f_eval_np[..., 0]
    if ntk_steps:
        ntk_np = torch.stack([torch.stack(row) for row in ntk_blocks]).cpu().numpy()
    else:
        p = 0 if ntk_points_t is None else ntk_points_t.shape[0]
        ntk_np = np.empty((k_members, 0, p, p), dtype=losses_np.dtype)
    return EnsembleResult(
        name=name, seeds=np.asarray(seeds, dtype=np.int64), steps=steps, lr=lr, loss=loss,
        losses=losses_np, eval_steps=np.asarray(eval_steps, dtype=np.int64), f_eval=f_eval_np,
        ntk_steps=np.asarray(ntk_steps, dtype=np.int64), ntk=ntk_np,
        train_seconds=train_seconds, architecture=architecture,
        weights=ensemble.weights, biases=ensemble.biases, _shell=ensemble.shell,
    )


def _sampled(sample_batch, step: int, dtype, device, in_dim, out_dim):
    """Call ``sample_batch(step)`` and check its (x, y); returns (x (B, n0), y (B, k), was_1d)."""
    try:
        x, y = sample_batch(step)
    except (TypeError, ValueError) as err:
        raise ValueError(f"sample_batch({step}) must return a pair (x, y): {err}") from None
    x = _as_tensor(x, f"sample_batch({step}) x", dtype, device, (2,))
    y = _as_tensor(y, f"sample_batch({step}) y", dtype, device, (1, 2))
    was_1d = y.ndim == 1
    y = _target_matrix(y, x.shape[0], f"sample_batch({step}) y")
    if in_dim is not None and (x.shape[1] != in_dim or y.shape[1] != out_dim):
        raise ValueError(f"sample_batch({step}) returned x {tuple(x.shape)}, y {tuple(y.shape)}; "
                         f"expected input dimension {in_dim} and {out_dim} target(s) as at step 0")
    return x, y, was_1d


def _raise_diverged(name: str, seeds: list[int], step: int, member_loss: Tensor, lr: float):
    bad = (~torch.isfinite(member_loss)).nonzero().flatten().tolist()
    first = bad[0]
    others = f" (and {len(bad) - 1} more of {len(seeds)} members)" if len(bad) > 1 else ""
    raise TrainingDiverged(
        f"run {name!r}: loss of member seed {seeds[first]} is "
        f"{float(member_loss[first])} at step {step}{others}; lr = {lr} is probably too large"
    )


__all__ = [
    "LOSSES",
    "EnsembleResult",
    "TrainingDiverged",
    "epoch_permutation",
    "flops_per_step",
    "minibatch_indices",
    "train_ensemble",
]
