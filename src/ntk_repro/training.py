"""Gradient-descent training of an ensemble of finite-width MLPs (docs/design.md §1.4, §2).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ntk_repro.device import resolve_device
from ntk_repro.empirical import empirical_ntk
from ntk_repro.kernels import check_hyperparameters, loss_rate
from ntk_repro.networks import MLP, NORM_EPS, NORMS
from ntk_repro.validation import check_choice, check_int, check_real, check_tensor

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
        k = check_int(k, "k", minimum=0, maximum=self.n_members - 1)
        return _member_model(self._shell, self.weights, self.biases, k, copy_params=True)

    def arrays(self) -> dict[str, np.ndarray]:
        """The numeric results as a dict for ``numpy.savez`` (no pickled objects)."""
        return {
            "seeds": self.seeds,
            "steps": np.int64(self.steps),
            "lr": np.float64(self.lr),
            "losses": self.losses,
            "eval_steps": self.eval_steps,
            "f_eval": self.f_eval,
            "ntk_steps": self.ntk_steps,
            "ntk": self.ntk,
        }


# --- the stacked ensemble ----------------------------------------------------------------------


def _member_model(
    shell: MLP, weights: list[Tensor], biases: list[Tensor], k: int, copy_params: bool
) -> MLP:
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
            net = MLP(
                **architecture,
                generator=torch.Generator().manual_seed(int(seed)),
                device=device,
                dtype=dtype,
            )
            if k == 0:
                self.weights = [
                    torch.empty((k_members, *w.shape), dtype=dtype, device=device)
                    for w in net.weights
                ]
                self.biases = [
                    torch.empty((k_members, *b.shape), dtype=dtype, device=device)
                    for b in net.biases
                ]
            with torch.no_grad():
                for stack, p in zip(
                    self.weights + self.biases, list(net.weights) + list(net.biases)
                ):
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
        if self.norm == "batch" or (self.norm == "batch_last" and layer == self.depth - 2):
            return 1  # the batch dimension of (K, N, n): each member over its own batch
        return None

    def forward(self, x: Tensor, keep: bool) -> tuple[Tensor, list]:
        """Outputs (K, N, k) on the shared batch x (N, n0); ``keep`` saves what backward needs."""
        h = x.expand(self.n_members, *x.shape)
        saved = []
        last = self.depth - 1
        for layer in range(self.depth):
            pre = torch.baddbmm(
                self.biases[layer].unsqueeze(1),
                h,
                self.weights[layer].mT,
                beta=self.beta,
                alpha=self.scales[layer],
            )
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
                grad_h = (
                    grad_h
                    - grad_h.mean(dim=dim, keepdim=True)
                    - normed * (grad_h * normed).mean(dim=dim, keepdim=True)
                ).div_(std)
            delta = grad_h.mul_(self.activation.derivative(pre))


# --- batches -----------------------------------------------------------------------------------


def epoch_permutation(n: int, batch_seed: int, epoch: int) -> np.ndarray:
    """Order of the N training points in an epoch: depends only on (batch_seed, epoch)."""
    return np.random.default_rng([int(batch_seed), int(epoch)]).permutation(int(n))


def _minibatch_position(n: int, batch_size: int, step: int) -> tuple[int, slice]:
    """The epoch of ``step`` and the chunk of that epoch's permutation it uses."""
    per_epoch = -(-int(n) // int(batch_size))
    epoch, j = divmod(int(step), per_epoch)
    return epoch, slice(j * batch_size, (j + 1) * batch_size)


def minibatch_indices(n: int, batch_size: int, batch_seed: int, step: int) -> np.ndarray:
    """Indices of the mini-batch used at ``step``: the epochs walk through
    :func:`epoch_permutation` in chunks of ``batch_size`` (the last chunk of an epoch is
    smaller when batch_size does not divide N)."""
    epoch, chunk = _minibatch_position(n, batch_size, step)
    return epoch_permutation(n, batch_seed, epoch)[chunk]


def flops_per_step(dims: Sequence[int], n_batch: int, n_members: int = 1) -> int:
    """Multiply–add FLOPs (2 per MAC) of one training step of the batched trainer.

    Per layer: forward and weight gradient, 2·N·n_in·n_out each, plus the input gradient for
    every layer but the first. ``dims`` = [n0, n1, …, n_L].
    """
    total = 0
    for layer, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
        total += (3 if layer > 0 else 2) * 2 * n_batch * n_in * n_out
    return total * n_members


# --- the checked arguments, grouped -------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """One member's architecture as in :class:`ntk_repro.networks.MLP`, without the input and
    output dimensions (those come from the data)."""

    width: int
    depth: int
    beta: float
    activation: str = "relu"
    parametrization: str = "ntk2018"
    norm: str | None = None

    def mlp_kwargs(self, in_dim: int, out_dim: int) -> dict:
        """Keyword arguments that build one member as ``networks.MLP(**kwargs)``."""
        return dict(
            in_dim=in_dim,
            width=self.width,
            depth=self.depth,
            beta=self.beta,
            activation=self.activation,
            parametrization=self.parametrization,
            out_dim=out_dim,
            norm=self.norm,
        )


@dataclass(frozen=True)
class Schedule:
    """``steps`` updates θ ← θ − lr ∂C/∂θ of the loss convention ``loss``; with ``batch_size``
    on the mini-batches of :func:`minibatch_indices` drawn from ``batch_seed``."""

    steps: int
    lr: float
    loss: str = "mse"
    batch_size: int | None = None
    batch_seed: int = 0


@dataclass(frozen=True)
class Recording:
    """Outputs on ``x_eval`` (M, n0) at ``eval_steps`` and empirical NTKs on ``ntk_points``
    (P, n0) at ``ntk_steps``; points are checked tensors on the training device."""

    x_eval: Tensor | None = None
    eval_steps: tuple[int, ...] = ()
    ntk_points: Tensor | None = None
    ntk_steps: tuple[int, ...] = ()


@dataclass
class BatchSource:
    """The batch (x (B, n0), y (B, k)) of every step, on the training device.

    Full batch: ``x``, ``y`` themselves. With ``batch_size``: the rows
    :func:`minibatch_indices` gives. With ``sample_batch``: its batch of the step (``x``, ``y``
    are its batch of step 0, drawn while checking the arguments).
    """

    x: Tensor
    y: Tensor
    scalar_targets: bool  # the targets were given as (N,): outputs drop the k axis
    batch_size: int | None = None
    batch_seed: int = 0
    sample_batch: Callable[[int], tuple] | None = None
    # The permutation of the current epoch on the device: one host→device copy (and one
    # shuffle) per epoch, not per step.
    _epoch: int = field(default=-1, init=False, repr=False)
    _permutation: Tensor | None = field(default=None, init=False, repr=False)

    @property
    def in_dim(self) -> int:
        return int(self.x.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.y.shape[1])

    def at(self, step: int) -> tuple[Tensor, Tensor]:
        if self.sample_batch is not None and step > 0:
            x, y, _ = _sampled(
                self.sample_batch, step, self.x.dtype, self.x.device, self.in_dim, self.out_dim
            )
            return x, y
        if self.batch_size is None:
            return self.x, self.y
        # As minibatch_indices, with the epoch's permutation kept.
        n = self.x.shape[0]
        epoch, chunk = _minibatch_position(n, self.batch_size, step)
        if epoch != self._epoch:
            self._permutation = torch.as_tensor(
                epoch_permutation(n, self.batch_seed, epoch), device=self.x.device
            )
            self._epoch = epoch
        index = self._permutation[chunk]
        return self.x.index_select(0, index), self.y.index_select(0, index)


@dataclass(frozen=True)
class _Run:
    """Everything :func:`train_ensemble` was asked to do, checked."""

    name: str
    architecture: Architecture
    seeds: list[int]
    schedule: Schedule
    batches: BatchSource
    recording: Recording
    dtype: torch.dtype
    device: torch.device


# --- argument checks (all before any work) ------------------------------------------------------


def _check_arguments(
    *,
    x_train,
    y_train,
    width,
    depth,
    beta,
    activation,
    parametrization,
    norm,
    seeds,
    steps,
    lr,
    loss,
    batch_size,
    batch_seed,
    sample_batch,
    x_eval,
    eval_steps,
    ntk_points,
    ntk_steps,
    dtype,
    device,
    name,
) -> _Run:
    """The arguments of :func:`train_ensemble`, checked and grouped; ValueError names a bad one."""
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {name!r}")
    check_hyperparameters(depth, beta, activation, parametrization)
    architecture = Architecture(
        width=check_int(width, "width", minimum=1),
        depth=int(depth),
        beta=float(beta),
        activation=activation,
        parametrization=parametrization,
        norm=check_choice(norm, "norm", NORMS),
    )
    seeds = _check_seeds(seeds)
    schedule = Schedule(
        steps=check_int(steps, "steps", minimum=0),
        lr=check_real(lr, "lr", minimum=0.0, exclusive_minimum=True),
        loss=check_choice(loss, "loss", LOSSES),
        batch_size=None if batch_size is None else check_int(batch_size, "batch_size", minimum=1),
        batch_seed=check_int(batch_seed, "batch_seed", minimum=0),
    )
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a torch floating dtype, got {dtype!r}")
    dev = resolve_device(device)
    eval_steps = _check_steps_list(eval_steps, "eval_steps", schedule.steps)
    ntk_steps = _check_steps_list(ntk_steps, "ntk_steps", schedule.steps)
    batches = _batch_source(x_train, y_train, sample_batch, schedule, dtype, dev)
    n0 = batches.in_dim
    recording = Recording(
        x_eval=_recorded_points(x_eval, "x_eval", eval_steps, "eval_steps", n0, dtype, dev),
        eval_steps=eval_steps,
        ntk_points=_recorded_points(
            ntk_points, "ntk_points", ntk_steps, "ntk_steps", n0, dtype, dev
        ),
        ntk_steps=ntk_steps,
    )
    return _Run(name, architecture, seeds, schedule, batches, recording, dtype, dev)


def _check_seeds(seeds) -> list[int]:
    try:
        items = (
            list(np.asarray(seeds).reshape(-1)) if isinstance(seeds, np.ndarray) else list(seeds)
        )
    except TypeError:
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}") from None
    if not items:
        raise ValueError("seeds must be a non-empty sequence of ints, got an empty one")
    items = [
        check_int(s, f"seeds[{i}]", minimum=0, maximum=_MAX_SEED - 1) for i, s in enumerate(items)
    ]
    if len(set(items)) != len(items):
        raise ValueError(f"seeds must be unique (the members would be identical), got {items}")
    return items


def _check_steps_list(values, name: str, steps: int) -> tuple[int, ...]:
    """Distinct step numbers in [0, steps]."""
    try:
        items = list(values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of step numbers, got {values!r}") from None
    out = tuple(check_int(s, f"{name}[{i}]", minimum=0, maximum=steps) for i, s in enumerate(items))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a step, got {list(out)}")
    return out


def _targets(y, name: str, n: int, dtype, device) -> tuple[Tensor, bool]:
    """Targets (N,) or (N, k) as (N, k), and whether they were (N,)."""
    t = check_tensor(y, name, dtype=dtype, device=device, ndims=(1, 2))
    if t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} rows but the inputs have {n}")
    return (t.unsqueeze(1), True) if t.ndim == 1 else (t, False)


def _sampled(sample_batch, step: int, dtype, device, in_dim, out_dim):
    """Call ``sample_batch(step)`` and check its (x, y); returns (x (B, n0), y (B, k), was_1d)."""
    try:
        x, y = sample_batch(step)
    except (TypeError, ValueError) as err:
        raise ValueError(f"sample_batch({step}) must return a pair (x, y): {err}") from None
    x = check_tensor(x, f"sample_batch({step}) x", dtype=dtype, device=device)
    y, was_1d = _targets(y, f"sample_batch({step}) y", x.shape[0], dtype, device)
    if in_dim is not None and (x.shape[1] != in_dim or y.shape[1] != out_dim):
        raise ValueError(
            f"sample_batch({step}) returned x {tuple(x.shape)}, y {tuple(y.shape)}; "
            f"expected input dimension {in_dim} and {out_dim} target(s) as at step 0"
        )
    return x, y, was_1d


def _batch_source(x_train, y_train, sample_batch, schedule: Schedule, dtype, device) -> BatchSource:
    """The batches of the run: from ``sample_batch`` (its step 0 is drawn and checked here) or
    from the training set (all of it, or mini-batches of ``schedule.batch_size``)."""
    if sample_batch is not None:
        if not callable(sample_batch):
            raise ValueError(f"sample_batch must be callable step -> (x, y), got {sample_batch!r}")
        if x_train is not None or y_train is not None:
            raise ValueError("x_train and y_train must be None when sample_batch gives the data")
        if schedule.batch_size is not None:
            raise ValueError("batch_size must be None when sample_batch gives the batches")
        x, y, was_1d = _sampled(sample_batch, 0, dtype, device, None, None)
        return BatchSource(x, y, was_1d, sample_batch=sample_batch)
    if x_train is None or y_train is None:
        raise ValueError("x_train and y_train are required unless sample_batch is given")
    x = check_tensor(x_train, "x_train", dtype=dtype, device=device)
    y, was_1d = _targets(y_train, "y_train", x.shape[0], dtype, device)
    if schedule.batch_size is not None and schedule.batch_size > x.shape[0]:
        raise ValueError(
            f"batch_size = {schedule.batch_size} exceeds the {x.shape[0]} training points"
        )
    return BatchSource(x, y, was_1d, schedule.batch_size, schedule.batch_seed)


def _recorded_points(
    points, name: str, at_steps: tuple[int, ...], steps_name: str, in_dim: int, dtype, device
) -> Tensor | None:
    """``x_eval`` or ``ntk_points`` as a checked (M, n0) tensor; required if ``at_steps``."""
    if points is None:
        if at_steps:
            raise ValueError(f"{name} is required when {steps_name} is not empty")
        return None
    t = check_tensor(points, name, dtype=dtype, device=device)
    if t.shape[1] != in_dim:
        raise ValueError(f"{name} has input dimension {t.shape[1]}, expected {in_dim}")
    return t


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
        :class:`ntk_repro.networks.MLP` (``norm`` None, "layer", "batch_last" or "batch";
        with a batch norm each member normalises over its own copy of the batch).
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
    return _train(
        _check_arguments(
            x_train=x_train,
            y_train=y_train,
            width=width,
            depth=depth,
            beta=beta,
            activation=activation,
            parametrization=parametrization,
            norm=norm,
            seeds=seeds,
            steps=steps,
            lr=lr,
            loss=loss,
            batch_size=batch_size,
            batch_seed=batch_seed,
            sample_batch=sample_batch,
            x_eval=x_eval,
            eval_steps=eval_steps,
            ntk_points=ntk_points,
            ntk_steps=ntk_steps,
            dtype=dtype,
            device=device,
            name=name,
        )
    )


class _Recorder:
    """Outputs on ``x_eval`` and per-member empirical NTKs, kept on the device until the end."""

    def __init__(self, recording: Recording, n_members: int, out_dim: int, dtype, device):
        self.recording = recording
        self.eval_slot = {s: i for i, s in enumerate(recording.eval_steps)}
        self.ntk_slot = {s: i for i, s in enumerate(recording.ntk_steps)}
        n_eval = 0 if recording.x_eval is None else recording.x_eval.shape[0]
        self.f_eval = torch.empty(
            (n_members, len(recording.eval_steps), n_eval, out_dim), dtype=dtype, device=device
        )
        self.ntk_blocks: list[list[Tensor]] = [
            [None] * len(recording.ntk_steps) for _ in range(n_members)
        ]

    def record(self, step: int, ensemble: _StackedMLP) -> None:
        if step in self.eval_slot:
            self.f_eval[:, self.eval_slot[step]] = ensemble.forward(
                self.recording.x_eval, keep=False
            )[0]
        if step in self.ntk_slot:
            for k in range(ensemble.n_members):
                member = _member_model(
                    ensemble.shell, ensemble.weights, ensemble.biases, k, copy_params=False
                )
                with torch.enable_grad():
                    self.ntk_blocks[k][self.ntk_slot[step]] = empirical_ntk(
                        member, self.recording.ntk_points
                    )

    def f_eval_numpy(self, scalar_targets: bool) -> np.ndarray:
        f_eval = self.f_eval.cpu().numpy()
        return f_eval[..., 0] if scalar_targets else f_eval

    def ntk_numpy(self, dtype: np.dtype) -> np.ndarray:
        if self.recording.ntk_steps:
            return torch.stack([torch.stack(row) for row in self.ntk_blocks]).cpu().numpy()
        points = self.recording.ntk_points
        p = 0 if points is None else points.shape[0]
        return np.empty((len(self.ntk_blocks), 0, p, p), dtype=dtype)


def _train(run: _Run) -> EnsembleResult:
    """The training loop: one forward pass, loss, records and fused update per step."""
    schedule, batches = run.schedule, run.batches
    architecture = run.architecture.mlp_kwargs(batches.in_dim, batches.out_dim)
    ensemble = _StackedMLP(architecture, run.seeds, run.dtype, run.device)
    recorder = _Recorder(run.recording, ensemble.n_members, batches.out_dim, run.dtype, run.device)
    losses = torch.empty(
        (ensemble.n_members, schedule.steps + 1), dtype=run.dtype, device=run.device
    )
    start = time.perf_counter()
    with torch.no_grad():
        for step in range(schedule.steps + 1):
            x_batch, y_batch = batches.at(step)
            update = step < schedule.steps
            f, saved = ensemble.forward(x_batch, keep=update)
            resid = f - y_batch  # (K, B, k)
            rate = loss_rate(schedule.loss, x_batch.shape[0])
            member_loss = resid.square().sum(dim=(1, 2)).mul_(0.5 * rate)
            losses[:, step] = member_loss
            if not bool(torch.isfinite(member_loss).all()):  # the step's only host sync
                _raise_diverged(run.name, run.seeds, step, member_loss, schedule.lr)
            recorder.record(step, ensemble)
            if update:
                ensemble.sgd_step(saved, resid.mul_(rate), schedule.lr)
                del saved, resid, f
    losses_np = losses.cpu().numpy()  # the copy synchronises the device: timing ends here
    train_seconds = time.perf_counter() - start
    return EnsembleResult(
        name=run.name,
        seeds=np.asarray(run.seeds, dtype=np.int64),
        steps=schedule.steps,
        lr=schedule.lr,
        loss=schedule.loss,
        losses=losses_np,
        eval_steps=np.asarray(run.recording.eval_steps, dtype=np.int64),
        f_eval=recorder.f_eval_numpy(batches.scalar_targets),
        ntk_steps=np.asarray(run.recording.ntk_steps, dtype=np.int64),
        ntk=recorder.ntk_numpy(losses_np.dtype),
        train_seconds=train_seconds,
        architecture=architecture,
        weights=ensemble.weights,
        biases=ensemble.biases,
        _shell=ensemble.shell,
    )


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
