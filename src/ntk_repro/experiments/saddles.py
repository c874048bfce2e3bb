"""Beyond the NTK regime: deep linear networks from small initialisation (docs/deep-linear.md).

A_θ = W_L⋯W₁ (width w, entries N(0, σ²), σ² = w^−γ, standard parametrisation) trained by
gradient descent on ½‖M ⊙ (A_θ − A*)‖²_F; time t = lr · step (gradient-flow time). A* is
dim × dim with the configured singular values and Haar-random singular vectors.

- ``dynamics`` (wildcard ``depth``): the full-matrix loss from every γ of ``gammas`` and the
  depth's staircase γ (``staircase``), ``seeds`` initialisations each: the loss every ``loss_dt``
  of time, singular values and NTK change at ``records`` records. Members whose Θ₀ is large
  (γ < 1) use lr = lr_fraction / λ̄ with λ̄ >= λmax(Θ₀).
- ``escape`` (wildcard ``depth``): the escape time from the origin t₁ (first time σ₁(A_θ) >= s₁/2)
  over a range of γ (σ), with common random numbers (member i is σ·Z_i at every σ), at lr and lr/2.
- ``ntk``: the NTK's relative change ‖Θ_T − Θ₀‖_F/‖Θ₀‖_F after training, at several widths.
- ``completion``: matrix completion of a rank-r target from a fraction of its entries, from a
  small and from a large initialisation.
- ``plot``, ``check``.
"""

from __future__ import annotations

import math

import numpy as np

from ntk_repro import deep_linear as dl
from ntk_repro.experiments import Experiment, Job
from ntk_repro.results import (
    Check,
    derive_seed,
    load_arrays,
    new_figure,
    require_finite,
    save_arrays,
    save_figure,
    write_checks,
)

NAME = "saddles"


# --- problems ----------------------------------------------------------------------------------

# A net is "converged" when its final loss is at most this × ½‖A*‖² (the plateau finder's floor).
# In the lazy regime the residual decays like e^{−λt} and so does the NTK's remaining change, so
# this bounds the unfinished part of the change by √1e-4 = 1% of the change.
CONVERGED = 1e-4
# γ > 1 members count as "trained" (past every plateau) below this × their initial loss.
TRAINED = 1e-3


def haar_orthogonal(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed dim × dim orthogonal matrix: Q of a Gaussian Z = QR with the column
    signs fixed so that diag R > 0. Without the fix Q follows the QR routine's sign convention
    (LAPACK's Householder QR gives Q₁₁ < 0 always), which is not Haar."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def haar_target(dim: int, singular_values, seed: int, *, name="singular_values") -> np.ndarray:
    """U diag(s) Vᵀ (dim × dim) with U, V independent Haar orthogonal matrices and s the given
    values padded with zeros; a one-line ValueError naming ``name`` if there are more than dim."""
    given = np.asarray(singular_values, dtype=np.float64).ravel()
    if len(given) > dim:
        raise ValueError(f"{name}: {len(given)} singular values for a {dim} × {dim} target")
    rng = np.random.default_rng(seed)
    s = np.zeros(dim)
    s[: len(given)] = given
    u, v = haar_orthogonal(dim, rng), haar_orthogonal(dim, rng)
    return (u * s) @ v.T


def _target(p: dict) -> np.ndarray:
    seed = derive_seed(p["seed"], NAME, "target")
    return haar_target(p["dim"], p["singular_values"], seed, name="saddles.singular_values")


def _init_seeds(p: dict, n: int, *tags) -> list[int]:
    return [derive_seed(p["seed"], NAME, "init", *tags, i) for i in range(n)]


def _stable_lrs(shape, depth, width, gammas, seeds, lr, fraction) -> list[float]:
    """Per member lr_k = min(lr, fraction / λ̄_k), λ̄_k >= λmax(Θ₀) of member k: only γ < 1 is
    reduced in practice, whose NTK at initialisation is huge (∝ w^{(1−γ)(L−1)}) so that GD at
    the common lr would diverge."""
    weights = dl.init_weights(
        dl.layer_shapes(*shape, depth, width),
        seeds,
        [width ** (-g / 2) for g in gammas],
        "cpu",
    )
    return [min(lr, fraction / top) for top in dl.ntk_max_eigenvalue_bound(weights)]


def _entry(p: dict, key: str, depth: int) -> dict:
    """The ``staircase`` or ``escape`` entry of a depth. Escape γ come sorted and must be
    equally spaced (a geometric grid in σ), which the difference estimate of the exponent
    assumes."""
    entry = next((e for e in p[key] if e["depth"] == depth), None)
    if entry is None:
        raise ValueError(f"saddles.{key}: no entry for depth {depth}")
    if key != "escape":
        return entry
    gammas = sorted(entry["gammas"])
    if not np.allclose(np.diff(gammas), gammas[1] - gammas[0]):
        raise ValueError(f"saddles.escape: the gammas of depth {depth} must be equally spaced")
    return entry | {"gammas": gammas}


def check_config(p: dict) -> None:
    """What the schema cannot say (a relation between keys), as one-line ValueErrors naming the
    key: the experiment's ``validate``, run when the workflow loads the config."""
    for key, dim in (("singular_values", "dim"), ("completion_singular_values", "completion_dim")):
        if len(p[key]) > p[dim]:
            raise ValueError(
                f"saddles.{key}: {len(p[key])} values, more than saddles.{dim} = {p[dim]}"
            )
    for key in ("staircase", "escape"):
        depths = [e["depth"] for e in p[key]]
        if len(set(depths)) != len(depths):
            raise ValueError(f"saddles.{key}: a depth is listed twice")
        for depth in depths:
            _entry(p, key, depth)


def _depths(key: str):
    """``each`` of the per-depth jobs."""
    return lambda p: [{"depth": e["depth"]} for e in p[key]]


# --- stages ------------------------------------------------------------------------------------


def dynamics(p: dict, outputs, *, depth: str) -> None:
    """Members with a reduced lr (γ < 1) run the same steps and so cover less time, lr_k·steps;
    their NTK is large in proportion (lr_k·λmax ≈ lr_fraction), so they are far past convergence
    at the end (the "no plateau" row checks it)."""
    depth = int(depth)
    entry = _entry(p, "staircase", depth)
    gammas = sorted(set(p["gammas"]) | {entry["gamma"]})
    init = _init_seeds(p, p["seeds"])
    members = [(g, s) for s in init for g in gammas]
    target = _target(p)
    lrs = _stable_lrs(
        target.shape,
        depth,
        p["width"],
        [g for g, _ in members],
        [s for _, s in members],
        entry["lr"],
        p["lr_fraction"],
    )
    steps = int(round(entry["time"] / entry["lr"]))
    run = dl.train_deep_linear_batch(
        target,
        depth=depth,
        width=p["width"],
        gamma=[g for g, _ in members],
        lr=lrs,
        steps=steps,
        seeds=[s for _, s in members],
        record_every=max(1, steps // p["records"]),
        loss_every=max(1, int(round(p["loss_dt"] / entry["lr"]))),
        device=p["device"],
    )
    save_arrays(
        outputs[0],
        staircase_gamma=np.float64(entry["gamma"]),
        target_singular_values=np.linalg.svd(target, compute_uv=False),
        horizon=np.float64(entry["time"]),
        **run.arrays(),
    )


def escape(p: dict, outputs, *, depth: str) -> None:
    depth = int(depth)
    entry = _entry(p, "escape", depth)
    target = _target(p)
    s = np.linalg.svd(target, compute_uv=False)
    init = _init_seeds(p, p["escape_seeds"])
    gammas = [g for _ in init for g in entry["gammas"]]
    seeds = [sd for sd in init for _ in entry["gammas"]]
    result = {}
    for tag, lr in (("lr", entry["lr"]), ("half", entry["lr"] / 2)):
        steps = int(round(entry["time"] / lr))
        run = dl.train_deep_linear_batch(
            target,
            depth=depth,
            width=p["width"],
            gamma=gammas,
            lr=lr,
            steps=steps,
            seeds=seeds,
            record_every=max(1, steps // p["escape_records"]),
            ntk=False,
            device=p["device"],
        )
        t1 = [dl.escape_times(t, sv, s)[0] for t, sv in zip(run.times, run.singular_values)]
        result[f"t1_{tag}"] = np.reshape(t1, (len(init), len(entry["gammas"])))  # NaN: no escape
        result[f"lr_{tag}"] = np.float64(lr)
    save_arrays(
        outputs[0],
        depth=np.int64(depth),
        gammas=np.array(entry["gammas"], dtype=np.float64),
        sigmas=p["width"] ** (-np.array(entry["gammas"], dtype=np.float64) / 2),
        width=np.int64(p["width"]),
        s1=np.float64(s[0]),
        horizon=np.float64(entry["time"]),
        **result,
    )


def ntk(p: dict, outputs) -> None:
    """The NTK change after training, per width. All members run the same steps, so a lazy
    member (lr_k = lr_fraction/λ̄_k < ntk_lr) covers the time lr_k·steps, which shrinks like
    w^{−(1−γ)(L−1)}. This does not bias the comparison across widths: the claim is about the
    change at convergence, and the lazy dynamics relax at the rate λmax(Θ₀) ∝ 1/lr_k, so every
    width covers the same number of relaxation times (lr_k·λmax·steps ≈ lr_fraction·steps).
    The equal-time alternative would cost w^{(1−γ)(L−1)} more steps for nothing. That the nets
    did converge is checked on ``final_loss`` (CONVERGED)."""
    target = _target(p)
    init = _init_seeds(p, p["seeds"])
    gammas = [g for _ in init for g in p["ntk_gammas"]]
    seeds = [s for s in init for _ in p["ntk_gammas"]]
    steps = int(round(p["ntk_time"] / p["ntk_lr"]))
    change, final_loss, horizon = [], [], []
    for width in p["ntk_widths"]:
        lrs = _stable_lrs(
            target.shape, p["ntk_depth"], width, gammas, seeds, p["ntk_lr"], p["lr_fraction"]
        )
        run = dl.train_deep_linear_batch(
            target,
            depth=p["ntk_depth"],
            width=width,
            gamma=gammas,
            lr=lrs,
            steps=steps,
            seeds=seeds,
            record_every=steps,
            device=p["device"],
        )
        change.append(run.ntk_change[:, -1].reshape(len(init), -1))
        final_loss.append(run.losses[:, -1].reshape(len(init), -1))
        horizon.append(run.times[:, -1].reshape(len(init), -1))
    save_arrays(
        outputs[0],
        widths=np.array(p["ntk_widths"], dtype=np.int64),
        gammas=np.array(p["ntk_gammas"], dtype=np.float64),
        depth=np.int64(p["ntk_depth"]),
        change=np.stack(change),  # (widths, seeds, gammas)
        final_loss=np.stack(final_loss),  # (widths, seeds, gammas)
        horizon=np.stack(horizon),  # lr_k · steps, (widths, seeds, gammas)
        initial_loss=np.float64(0.5 * (target**2).sum()),  # ½‖A*‖², the loss at A = 0
    )


def completion_problem(p: dict, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Target of rank r (Haar singular vectors) and a Bernoulli(observed) mask, for seed i."""
    seed = derive_seed(p["seed"], NAME, "completion", i)
    name = "saddles.completion_singular_values"
    target = haar_target(p["completion_dim"], p["completion_singular_values"], seed, name=name)
    mask = np.random.default_rng(seed + 1).random(target.shape) < p["observed"]
    return target, mask


def completion(p: dict, outputs) -> None:
    """All problems and both initialisations in one batch (member 2i: small, 2i + 1: large)."""
    gammas = [p["small_gamma"], p["large_gamma"]] * p["completion_seeds"]
    problems = [completion_problem(p, i) for i in range(p["completion_seeds"])]
    targets = np.stack([t for t, _ in problems for _ in range(2)])
    masks = np.stack([m for _, m in problems for _ in range(2)])
    seeds = [s for s in _init_seeds(p, p["completion_seeds"], "completion") for _ in range(2)]
    lrs = _stable_lrs(
        targets.shape[1:],
        p["completion_depth"],
        p["width"],
        gammas,
        seeds,
        p["completion_lr"],
        p["lr_fraction"],
    )
    steps = int(round(p["completion_time"] / p["completion_lr"]))
    run = dl.train_deep_linear_batch(
        targets,
        depth=p["completion_depth"],
        width=p["width"],
        gamma=gammas,
        lr=lrs,
        steps=steps,
        seeds=seeds,
        mask=masks,
        record_every=steps,
        ntk=False,
        device=p["device"],
    )
    unobserved = 0.5 * (targets**2 * (1 - masks)).sum(axis=(1, 2))
    pairs = (p["completion_seeds"], 2)
    save_arrays(
        outputs[0],
        gammas=np.array(gammas[:2]),
        # ‖(1−M)⊙(A−A*)‖_F/‖(1−M)⊙A*‖_F, (seeds, 2)
        test_error=np.sqrt(run.test_losses[:, -1] / unobserved).reshape(pairs),
        singular_values=run.singular_values[:, -1].reshape(*pairs, -1),  # (seeds, 2, dim)
        train_loss=run.losses[:, -1].reshape(pairs),
        lrs=np.array(lrs).reshape(pairs),
        rank=np.int64(len(p["completion_singular_values"])),
        target_singular_values=np.array(p["completion_singular_values"], dtype=np.float64),
    )


# --- analysis ----------------------------------------------------------------------------------


def _se(values) -> float:
    """Standard error of the mean over seeds; the schema asks >= 3 seeds, so fewer than 2 values
    is a bug, not a zero tolerance."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        raise ValueError(f"a standard error needs >= 2 values, got {len(values)}")
    return float(values.std(ddof=1) / math.sqrt(len(values)))


def staircase_summary(run: dict, k: int, target_s: np.ndarray) -> dict:
    """Plateaus of member k: count, levels, each level's relative distance to the nearest
    Eckart–Young tail, and plateaus whose rank (number of modes with σ_i >= s_i/2 at the flattest
    point) is not the k of that tail, plus 1 if the final rank is not rank A*."""
    tails = dl.eckart_young_tails(target_s)
    r = len(tails)
    plateaus = dl.find_plateaus(run["loss_times"][k], run["loss_curve"][k])
    escapes = dl.escape_times(run["times"][k], run["singular_values"][k], target_s)
    levels = np.array([q.level for q in plateaus])
    if len(levels) == 0:
        return {
            "count": 0,
            "levels": levels,
            "errors": np.array([np.inf]),
            "rank_mismatches": r + 1,
            "escapes": escapes,
        }
    distance = np.abs(levels[:, None] - tails[None, :]) / tails[None, :]
    ranks = np.array([int(np.sum(escapes <= q.time)) for q in plateaus])
    final = run["singular_values"][k][-1][:r] >= 0.5 * np.sort(target_s)[::-1][:r]
    return {
        "count": len(plateaus),
        "levels": levels,
        "errors": distance.min(axis=1),
        "rank_mismatches": int(np.sum(ranks != distance.argmin(axis=1))) + int(final.sum() != r),
        "escapes": escapes,
    }


def escape_slope(sigmas, t1, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Per seed (rows of t1 (S, n)): the law's slope and its drift across the σ range.

    L = 2: t₁ = log(1/σ)/s₁ + c, slope of t₁ against log(1/σ) (predicted 1/s₁).
    L >= 3: t₁ = c σ^−(L−2) + c₂; the O(1) time c₂ spent after leaving the origin's neighbourhood
    cancels in differences of consecutive σ (a geometric grid), so the exponent is the slope of
    log(t₁(σ_j) − t₁(σ_{j+1})) against log σ_j (σ_j < σ_{j+1}; predicted −(L−2)). The law makes
    every such difference > 0 (a smaller σ escapes later); a seed with a difference <= 0
    contradicts it and gets NaN, as does a seed with a NaN t₁ (no escape).
    Drift: the local slope at the small-σ end minus that at the large-σ end.
    """
    sigmas = np.asarray(sigmas, dtype=np.float64)
    t1 = np.atleast_2d(np.asarray(t1, dtype=np.float64))
    order = np.argsort(sigmas)  # σ ascending: the small-σ end first
    sigmas, t1 = sigmas[order], t1[:, order]
    if depth == 2:
        x, y = np.log(1 / sigmas), t1
    else:
        gaps = t1[:, :-1] - t1[:, 1:]
        ok = np.isfinite(gaps).all(axis=1) & (gaps > 0).all(axis=1)
        x = np.log(sigmas[:-1])
        y = np.full(gaps.shape, np.nan)
        y[ok] = np.log(gaps[ok])
    usable = np.isfinite(y).all(axis=1)
    slopes = np.full(len(y), np.nan)
    slopes[usable] = [np.polyfit(x, row, 1)[0] for row in y[usable]]
    local = np.diff(y, axis=1) / np.diff(x)
    return slopes, local[:, 0] - local[:, -1]


def predicted_ntk_slope(gamma: float, depth: int) -> float:
    """log-log slope of ‖Θ_T − Θ₀‖/‖Θ₀‖ in w for γ < 1, to leading order (inferred):
    δΘ ≈ (L−1)/(2wσ²)·(D_in⊗I + I⊗D_out), D = A*ᵀA* − A₀ᵀA₀, against ‖Θ₀‖ ∝ L(wσ²)^{L−1};
    ‖A₀‖² ∝ (wσ²)^L/w dominates ‖A*‖² iff γ < 1 − 1/L (slope −1), else slope −L(1−γ)."""
    return -1.0 if gamma < 1 - 1 / depth else -depth * (1 - gamma)


def _gammas(values) -> str:
    return ", ".join(f"{g:g}" for g in np.unique(values))


# --- claims: dynamics --------------------------------------------------------------------------


def _level_note(summaries: list, tails: np.ndarray) -> str:
    """The measured plateau levels against the tails, saying which seeds they come from."""
    r, n = len(tails), len(summaries)
    full = [sm["levels"][:r] for sm in summaries if len(sm["levels"]) >= r]
    if len(full) == n:
        shown, which = np.mean(full, axis=0), f"the first {r} levels, mean over seeds"
    elif full:
        shown = np.mean(full, axis=0)
        which = f"the first {r} levels, mean over the {len(full)} of {n} seeds with >= {r}"
    else:
        shown = summaries[0]["levels"]
        which = f"the first seed's {len(shown)} levels; no seed has {r} plateaus"
    note = "levels " + ", ".join(f"{v:.4g}" for v in shown) + " vs "
    return note + ", ".join(f"{v:.4g}" for v in tails) + f" ({which}, loss at the flattest point)"


def _other_gammas_note(run: dict, gamma_l: float) -> str:
    """The plateaus of the larger σ of the sweep (1 < γ < the staircase γ), first seed."""
    s, others = run["target_singular_values"], []
    for k, g in enumerate(run["gammas"]):
        if 1 < g < gamma_l and run["seeds"][k] == run["seeds"][0]:
            sm = staircase_summary(run, k, s)
            worst = f", level errors up to {100 * sm['errors'].max():.2g}%" if sm["count"] else ""
            others.append(f"γ = {g:g}: {sm['count']} plateaus{worst}")
    return "; ".join(others)


def _staircase_rows(run: dict) -> list[Check]:
    depth, s = int(run["depth"]), run["target_singular_values"]
    gamma_l = float(run["staircase_gamma"])
    tails = dl.eckart_young_tails(s)
    r = len(tails)
    members = np.flatnonzero(np.isclose(run["gammas"], gamma_l))
    summaries = [staircase_summary(run, k, s) for k in members]
    where = f"L = {depth}, γ = {gamma_l:g} (σ = {float(run['sigmas'][members[0]]):.2g}), w = "
    where += f"{int(run['width'])}, {len(members)} seeds"
    times = np.array([sm["escapes"] for sm in summaries])  # (seeds, r), NaN: no escape
    seen = np.isfinite(times).sum(0)
    escapes = np.where(seen > 0, np.nansum(times, 0) / np.maximum(seen, 1), np.nan)
    return [
        Check(
            NAME,
            f"{where}: one plateau per singular value of A* (|number of plateaus − rank A*|, "
            "max over seeds)",
            0.0,
            max(abs(sm["count"] - r) for sm in summaries),
            0.0,
            "abs",
            note=f"rank A* = {r}; a plateau is a run of >= 3 loss points (every loss_dt) where "
            "−d log loss/dt < 1% of its maximum (loss > 1e-4 × initial)",
        ),
        Check(
            NAME,
            f"{where}: the plateaus sit at the Eckart–Young tails ½Σ_{{i>k}} s_i² (max relative "
            "error over plateaus and seeds)",
            0.0,
            max(float(np.max(sm["errors"])) for sm in summaries),
            0.01,
            "at_most",
            note=f"{_level_note(summaries, tails)}; tolerance the 1% of the claim. "
            + _other_gammas_note(run, gamma_l),
        ),
        Check(
            NAME,
            f"{where}: rank(A_θ) steps 0 → 1 → … → rank A* (plateaus with the wrong rank + final "
            "rank mismatch, max over seeds)",
            0.0,
            max(sm["rank_mismatches"] for sm in summaries),
            0.0,
            "abs",
            note="rank = number of modes with σ_i(A_θ) >= s_i/2, at each plateau's flattest point; "
            "escape times (mean over the seeds that escaped; nan: none did) "
            + ", ".join(f"{v:.3g}" for v in escapes),
        ),
    ]


def _lazy_row(run: dict) -> Check:
    """γ <= 1: no plateau. A plateau after the end of a member's time lr_k·steps would be
    missed, so every member must have converged (CONVERGED, the plateau finder's floor)."""
    depth, gammas = int(run["depth"]), run["gammas"]
    lazy = np.flatnonzero(gammas <= 1)
    claim = f"L = {depth}, γ <= 1: no plateau (max number of plateaus over γ ∈ {{"
    claim += _gammas(gammas[lazy]) + "} and seeds)"
    if not len(lazy):
        return Check(NAME, claim, 0.0, np.nan, 0.0, "abs", not_evaluated="no γ <= 1 in gammas")
    counts = [len(dl.find_plateaus(run["loss_times"][k], run["loss_curve"][k])) for k in lazy]
    ratio = run["losses"][lazy, -1] / (0.5 * np.sum(run["target_singular_values"] ** 2))
    late = lazy[ratio > CONVERGED]
    times = ", ".join(f"{t:.3g}" for t in run["times"][lazy, -1])
    if len(late):
        note = f"set-up failure: γ = {_gammas(gammas[late])} not converged (loss > {CONVERGED:g}"
        note += " × ½‖A*‖²) at the end, a plateau may come later; lengthen the staircase time"
    else:
        note = f"every member converged (loss <= {CONVERGED:g} × ½‖A*‖²) within its time"
        note += " lr_k·steps, so no plateau lies beyond it"
    return Check(
        NAME,
        claim,
        0.0,
        np.nan if len(late) else max(counts),
        0.0,
        "abs",
        note=f"{note} (times {times}); γ < 1: the NTK regime, γ = 1: all modes learned together",
    )


def _trained_ntk_row(run: dict) -> Check:
    """γ > 1: the NTK changes by at least its own initial size, on the members past every
    plateau; if none is, the horizon is too short and the row fails saying so."""
    depth, gammas = int(run["depth"]), run["gammas"]
    trained = run["losses"][:, -1] <= TRAINED * run["losses"][:, 0]
    active = np.flatnonzero((gammas > 1) & trained)
    waiting = _gammas(gammas[(gammas > 1) & ~trained])
    note = (
        f"threshold 1 = a change as large as Θ₀ itself (docs/deep-linear.md); Θ₀ ∝ "
        "L(wσ²)^{L−1} = L w^{(1−γ)(L−1)} vanishes with w for γ > 1 while the trained NTK is "
        f"O(1) (inferred); members that reached loss <= {TRAINED:g} × initial"
    )
    if waiting:
        note += f" (γ = {waiting} still on a plateau at t = {float(run['horizon']):g}, left out)"
    if not len(active):
        note = (
            f"set-up failure: no γ > 1 member is past its plateaus at t = "
            f"{float(run['horizon']):g}, so the claim is not shown; lengthen the staircase time. "
            + note
        )
    return Check(
        NAME,
        f"L = {depth}, γ > 1: the NTK changes by O(1) or more, ‖Θ_T − Θ₀‖_F/‖Θ₀‖_F >= 1 (min "
        "over trained γ and seeds)",
        1.0,
        float(run["ntk_change"][active, -1].min()) if len(active) else np.nan,
        0.0,
        "at_least",
        note=note,
    )


def _dynamics_rows(run: dict) -> list[Check]:
    return _staircase_rows(run) + [_lazy_row(run), _trained_ntk_row(run)]


# --- claims: escape ----------------------------------------------------------------------------


def _not_escaped(esc: dict) -> str:
    """'' if every member escaped at both steps, else which γ did not (a set-up failure)."""
    missing = ~np.isfinite(esc["t1_lr"]) | ~np.isfinite(esc["t1_half"])  # (seeds, gammas)
    if not missing.any():
        return ""
    bad = [
        f"γ = {g:g} ({int(missing[:, j].sum())} of {missing.shape[0]} seeds)"
        for j, g in enumerate(esc["gammas"])
        if missing[:, j].any()
    ]
    return (
        f"set-up failure: L = {int(esc['depth'])} did not escape by t = "
        f"{float(esc['horizon']):g} at " + ", ".join(bad) + "; lengthen the escape time"
    )


def _escape_rows(esc: dict) -> list[Check]:
    depth, sig = int(esc["depth"]), esc["sigmas"]
    if depth == 2:
        paper, law = 1 / float(esc["s1"]), "t₁ = log(1/σ)/s₁ + c: slope in log(1/σ)"
    else:
        paper, law = -(depth - 2.0), f"t₁ ∝ σ^−{depth - 2}: exponent"
    claims = (
        f"L = {depth}: escape time from the origin, {law} (γ ∈ {{{_gammas(esc['gammas'])}}}, "
        f"w = {int(esc['width'])}, {esc['t1_lr'].shape[0]} seeds)",
        f"L = {depth}: the dynamics are converged in the step (escape times at lr vs lr/2: "
        "estimated GD error 2·max|t(lr) − t(lr/2)|/t)",
    )
    step_note = (
        "GD's error in t is O(lr), so the error at lr is about twice the halving change; "
        "1% = the accuracy of the plateau claims"
    )
    missing = _not_escaped(esc)
    if missing:
        return [
            Check(NAME, claims[0], paper, np.nan, np.nan, "abs", note=missing),
            Check(NAME, claims[1], 0.0, np.nan, 0.01, "at_most", note=f"{missing}; {step_note}"),
        ]
    full, _ = escape_slope(sig, esc["t1_lr"], depth)
    half, drift = escape_slope(sig, esc["t1_half"], depth)
    extrapolated = 2 * half - full  # Richardson: GD's error in the escape time is O(lr)
    value, se = float(extrapolated.mean()), _se(extrapolated)
    step_part = float(abs(np.mean(full - half)))
    drift_part = float(abs(np.mean(drift)))
    sign = ""
    if not np.isfinite(extrapolated).all():
        bad = int((~np.isfinite(extrapolated)).sum())
        sign = f"{bad} seed(s) have t₁ not decreasing in σ (a difference <= 0: the law fails); "
    rel_step = np.abs(esc["t1_lr"] - esc["t1_half"]) / esc["t1_half"]
    return [
        Check(
            NAME,
            claims[0],
            paper,
            value,
            3 * se + step_part + drift_part,
            "abs",
            note=f"{sign}t₁ = first time σ₁(A_θ) >= s₁/2; Richardson-extrapolated to lr → 0 from "
            f"lr = {float(esc['lr_lr']):g} ({float(full.mean()):.4g}) and lr/2 "
            f"({float(half.mean()):.4g}); tolerance 3 SE over seeds ({3 * se:.2g}) + the step "
            f"correction ({step_part:.2g}) + the drift of the local slope across σ "
            f"({drift_part:.2g}); same Z at every σ",
        ),
        Check(NAME, claims[1], 0.0, float(2 * rel_step.max()), 0.01, "at_most", note=step_note),
    ]


# --- claims: NTK and completion ----------------------------------------------------------------


def _ntk_converged(res: dict, j: int) -> str:
    """'' if every net of γ_j converged (CONVERGED) at every width, else a set-up failure."""
    ratio = res["final_loss"][:, :, j] / float(res["initial_loss"])  # (widths, seeds)
    late = [
        f"w = {int(w)} ({int((ratio[i] > CONVERGED).sum())} seeds)"
        for i, w in enumerate(res["widths"])
        if (ratio[i] > CONVERGED).any()
    ]
    if not late:
        return ""
    return (
        f"set-up failure: γ = {res['gammas'][j]:g} not converged (loss > {CONVERGED:g} × "
        f"½‖A*‖²) at " + ", ".join(late) + "; lengthen ntk_time"
    )


def _lazy_ntk_row(res: dict, j: int, late: str) -> Check:
    widths, gamma, depth = res["widths"], float(res["gammas"][j]), int(res["depth"])
    per_seed = np.log(res["change"][:, :, j]).T  # (seeds, widths)
    x = np.log(widths.astype(np.float64))
    slopes = np.array([np.polyfit(x, row, 1)[0] for row in per_seed])
    local = np.diff(per_seed, axis=1) / np.diff(x)
    drift = float(abs(np.mean(local[:, -1] - local[:, 0])))
    se = _se(slopes)
    return Check(
        NAME,
        f"L = {depth}, γ = {gamma:g} (lazy): the NTK's relative change vanishes with w "
        f"(log-log slope in w = {', '.join(str(int(w)) for w in widths)})",
        predicted_ntk_slope(gamma, depth),
        np.nan if late else float(slopes.mean()),
        3 * se + drift,
        "abs",
        note=(f"{late}; " if late else "")
        + "inferred: to leading order δΘ ∝ (A*ᵀA* − A₀ᵀA₀)/(wσ²) so the change is ∝ w^−1 when "
        "‖A₀‖ dominates (γ < 1 − 1/L); changes "
        + ", ".join(f"{v:.3g}" for v in res["change"][:, :, j].mean(1))
        + f" at convergence (loss <= {CONVERGED:g} × ½‖A*‖²); tolerance 3 SE over seeds "
        f"({3 * se:.2g}) + the drift of the local slope ({drift:.2g})",
        not_evaluated="" if len(widths) >= 3 else "the drift of the slope needs >= 3 widths",
    )


def _active_ntk_row(res: dict, j: int, late: str) -> Check:
    gamma, depth, change = float(res["gammas"][j]), int(res["depth"]), res["change"][:, :, j]
    if gamma == 1:
        regime = "the boundary γ = 1"
        why = "inferred: at γ = 1 Θ₀ = O(1) and A moves by O(1), so Θ moves by O(1) at any width "
        why += "(the lazy regime is γ < 1 only)"
    else:
        regime = "γ > 1"
        why = "inferred: Θ₀ ∝ w^{(1−γ)(L−1)} vanishes while the trained NTK is O(1), so the "
        why += "change grows with w"
    return Check(
        NAME,
        f"L = {depth}, γ = {gamma:g} ({regime}): the NTK changes by O(1) at every width, "
        "‖Θ_T − Θ₀‖_F/‖Θ₀‖_F >= 1 (min over widths of the seed mean)",
        1.0,
        np.nan if late else float(change.mean(1).min()),
        0.0,
        "at_least",
        note=(f"{late}; " if late else "")
        + f"threshold 1 = a change as large as Θ₀ itself (docs/deep-linear.md); {why}; changes "
        + ", ".join(f"{v:.3g}" for v in change.mean(1))
        + f" at convergence (loss <= {CONVERGED:g} × ½‖A*‖²)",
    )


def _ntk_rows(res: dict) -> list[Check]:
    rows = []
    for j, gamma in enumerate(res["gammas"]):
        late = _ntk_converged(res, j)
        rows.append((_lazy_ntk_row if gamma < 1 else _active_ntk_row)(res, j, late))
    return rows


def _completion_rows(res: dict, p: dict) -> list[Check]:
    r, dim = int(res["rank"]), res["singular_values"].shape[-1]
    eff = dl.effective_rank(res["singular_values"], rel=p["effective_rank_rel"])  # (seeds, 2)
    err = res["test_error"]
    n = err.shape[0]
    where = f"{dim}×{dim} rank-{r} target, {100 * p['observed']:g}% observed, L = "
    where += f"{p['completion_depth']}, w = {p['width']}, {n} seeds"
    eff_note = f"effective rank = number of singular values > {p['effective_rank_rel']:g} σ₁(A_θ)"

    def row(claim, paper, values, comparison, note):
        return Check(
            NAME,
            f"{where}: {claim}",
            paper,
            float(values.mean()),
            3 * _se(values),
            comparison,
            note=f"{note}; tolerance 3 SE over seeds",
        )

    small, large = f"γ = {p['small_gamma']:g} (small init)", f"γ = {p['large_gamma']:g} (NTK)"
    return [
        row(
            f"{small} recovers A*: relative error on the unobserved entries",
            p["recovery_error"],
            err[:, 0],
            "at_most",
            f"‖(1−M)⊙(A_θ − A*)‖_F/‖(1−M)⊙A*‖_F after t = {p['completion_time']:g}; large init "
            f"{err[:, 1].mean():.3g} ± {_se(err[:, 1]):.2g}",
        ),
        row(f"{small}: effective rank = r", float(r), eff[:, 0].astype(float), "abs", eff_note),
        row(
            f"{large} does not find the low rank: effective rank >= dim/2",
            dim / 2,
            eff[:, 1].astype(float),
            "at_least",
            f"{eff_note}; the lazy solution keeps A₀ on the unobserved entries (inferred)",
        ),
        row(
            f"{large} does not recover A*: relative error on the unobserved entries >= 1",
            1.0,
            err[:, 1],
            "at_least",
            f"1 = predicting 0 there; small init {err[:, 0].mean():.3g} ± {_se(err[:, 0]):.2g}",
        ),
    ]


def _load(runs, escapes, ntk_path, completion_path) -> tuple[list, list, dict, dict]:
    """The result files; escape times may be NaN (no escape: a failing row says which)."""
    runs = [load_arrays(path) for path in runs]
    escapes = [load_arrays(path) for path in escapes]
    ntk_res, completion_res = load_arrays(ntk_path), load_arrays(completion_path)
    for run in runs:
        require_finite(f"saddles L = {int(run['depth'])}", losses=run["losses"])
    require_finite("saddles ntk", change=ntk_res["change"], final_loss=ntk_res["final_loss"])
    require_finite("saddles completion", error=completion_res["test_error"])
    return runs, escapes, ntk_res, completion_res


def check(p: dict, outputs, *, runs, escapes, ntk_path, completion_path) -> None:
    runs, escapes, ntk_res, completion_res = _load(runs, escapes, ntk_path, completion_path)
    rows = [row for run in runs for row in _dynamics_rows(run)]
    rows += [row for esc in escapes for row in _escape_rows(esc)]
    rows += _ntk_rows(ntk_res) + _completion_rows(completion_res, p)
    write_checks(outputs[0], rows)


# --- figure ------------------------------------------------------------------------------------


def _plot_losses(ax, run: dict) -> None:
    first = run["seeds"] == run["seeds"][0]
    for i, k in enumerate(np.flatnonzero(first)):
        t, loss = run["loss_times"][k][1:], run["loss_curve"][k][1:]
        ax.loglog(t, loss, color=f"C{i}", lw=1.2, label=f"γ = {run['gammas'][k]:g}")
    for level in dl.eckart_young_tails(run["target_singular_values"]):
        ax.axhline(level, color="0.5", lw=0.6, ls=":")
    ax.set_xlabel("t = lr · step")
    ax.set_ylabel("½‖A_θ − A*‖²")
    ax.set_ylim(bottom=1e-4)
    ax.set_title(
        f"L = {int(run['depth'])}, w = {int(run['width'])}: loss (dotted: ½Σ_{{i>k}} s_i²)"
    )
    ax.legend(fontsize=7, loc="lower left")


def _plot_staircase(ax, run: dict) -> None:
    gamma = float(run["staircase_gamma"])
    k = int(np.flatnonzero(np.isclose(run["gammas"], gamma))[0])
    s = run["target_singular_values"]
    r = len(dl.eckart_young_tails(s))
    for i in range(r + 1):
        ax.plot(run["times"][k], run["singular_values"][k][:, i], color=f"C{i}", lw=1.2)
    for value in s[:r]:
        ax.axhline(value, color="0.5", lw=0.6, ls=":")
    ax2 = ax.twinx()
    ax2.plot(run["loss_times"][k], run["loss_curve"][k], color="k", lw=0.8, ls="--")
    ax2.set_ylabel("loss (dashed)")
    ax2.grid(False)
    ax.set_xlabel("t = lr · step")
    ax.set_ylabel("singular values of A_θ")
    ax.set_title(
        f"L = {int(run['depth'])}, γ = {gamma:g} (σ = {float(run['sigmas'][k]):.2g}): staircase"
    )


def _plot_escape(ax, escapes: list) -> None:
    for i, esc in enumerate(escapes):
        depth, sig = int(esc["depth"]), esc["sigmas"]
        t1 = esc["t1_half"]
        for row in t1:
            ax.loglog(sig, row, "o", ms=3, color=f"C{i}", alpha=0.6)
        mean = np.nanmean(t1, 0)  # NaN: no escape (a failing row says which)
        if depth == 2:
            ref = np.log(1 / sig) / float(esc["s1"])
            ref += np.mean(mean - ref)
            label = "L = 2: log(1/σ)/s₁ + c"
        else:
            ref = mean[-1] * (sig / sig[-1]) ** (-(depth - 2.0))
            label = f"L = {depth}: ∝ σ^−{depth - 2}"
        ax.loglog(sig, ref, "-", color=f"C{i}", lw=1, label=label)
    ax.set_xlabel("σ (initial entry scale)")
    ax.set_ylabel("escape time t₁ (σ₁ = s₁/2)")
    ax.set_title("Escape from the saddle at 0 (lr/2)")
    ax.legend(fontsize=7)


def _plot_ntk(ax, res: dict) -> None:
    widths = res["widths"]
    for j, gamma in enumerate(res["gammas"]):
        values = res["change"][:, :, j]  # (widths, seeds)
        se = values.std(1, ddof=1) / math.sqrt(values.shape[1])
        ax.errorbar(
            widths, values.mean(1), yerr=se, fmt="o-", ms=3, label=f"γ = {gamma:g}", color=f"C{j}"
        )
        if gamma < 1:
            slope = predicted_ntk_slope(float(gamma), int(res["depth"]))
            ax.loglog(
                widths,
                values.mean(1)[0] * (widths / widths[0]) ** slope,
                ":",
                color=f"C{j}",
                label=f"∝ w^{slope:g}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width w")
    ax.set_ylabel("‖Θ_T − Θ₀‖_F / ‖Θ₀‖_F (mean ± 1 SE over seeds)")
    ax.set_title(f"NTK movement, L = {int(res['depth'])}")
    ax.legend(fontsize=7)


def _plot_completion(ax, res: dict, p: dict) -> None:
    sv = res["singular_values"]
    for j, gamma in enumerate(res["gammas"]):
        err = res["test_error"][:, j]
        for i, row in enumerate(sv[:, j]):
            label = f"γ = {gamma:g}: test error {err.mean():.2g}" if i == 0 else None
            ax.semilogy(
                np.arange(1, len(row) + 1),
                row,
                "o-",
                ms=2,
                lw=0.8,
                color=f"C{j}",
                alpha=0.7,
                label=label,
            )
    ax.semilogy(
        np.arange(1, int(res["rank"]) + 1), res["target_singular_values"], "k*", ms=8, label="A*"
    )
    ax.axhline(
        p["effective_rank_rel"] * res["target_singular_values"][0], color="0.5", lw=0.6, ls=":"
    )
    ax.set_ylim(bottom=1e-6)
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i(A_θ) after training")
    ax.set_title(f"Completion from {100 * p['observed']:g}% of the entries")
    ax.legend(fontsize=7)


def plot(p: dict, outputs, *, runs, escapes, ntk_path, completion_path) -> None:
    runs, escapes, ntk_res, completion_res = _load(runs, escapes, ntk_path, completion_path)
    cols = max(len(runs), 3)
    fig, axes = new_figure(3, cols, width=5.0 * cols, height=12.5, squeeze=False)
    for i, run in enumerate(runs):
        _plot_losses(axes[0, i], run)
        _plot_staircase(axes[1, i], run)
    for i in range(len(runs), cols):
        axes[0, i].axis("off")
        axes[1, i].axis("off")
    _plot_escape(axes[2, 0], escapes)
    _plot_ntk(axes[2, 1], ntk_res)
    _plot_completion(axes[2, 2], completion_res, p)
    for ax in axes[2, 3:]:
        ax.axis("off")
    save_figure(fig, outputs)


EXPERIMENT = Experiment(
    name=NAME,
    order=150,
    uses=("seed", "device"),
    jobs=(
        Job(
            "dynamics",
            dynamics,
            "dynamics_L{depth}.npz",
            each=_depths("staircase"),
            runtime=30,
        ),
        Job(
            "escape",
            escape,
            "escape_L{depth}.npz",
            each=_depths("escape"),
            runtime=30,
        ),
        Job("ntk", ntk, "ntk.npz", runtime=30),
        Job("completion", completion, "completion.npz", runtime=30),
    ),
    plot=plot,
    check=check,
    validate=check_config,
    figure_inputs={
        "runs": "dynamics",
        "escapes": "escape",
        "ntk_path": "ntk",
        "completion_path": "completion",
    },
)
