"""Result files shared by every experiment: seeds, arrays, checked claims, figures.

- Seeds derive from the config seed and the wildcards of a job (:func:`derive_seed`), so any
  single target regenerates alone, bit for bit.
- Arrays go to npz written with fixed zip timestamps (numpy's own ``savez`` stamps the
  current time, so two identical runs would differ in bytes); never pickle.
- Claims become rows of a checks table (:class:`Check`): the paper/theory value, ours, a
  tolerance, how they are compared and whether the claim holds.
- Figures share one style and are written as png + pdf without timestamps.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# --- seeds -------------------------------------------------------------------------------------


def derive_seed(*parts) -> int:
    """A 63-bit seed from the config seed and any wildcards / names, stable across runs."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


# --- arrays ------------------------------------------------------------------------------------

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def save_arrays(path, **arrays) -> None:
    """Write arrays to an .npz (readable by ``np.load``) with deterministic bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            value = np.asarray(arrays[name])
            if value.dtype == object:
                raise ValueError(f"array {name!r} has dtype object; results are never pickled")
            buf = io.BytesIO()
            np.lib.format.write_array(buf, value, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    tmp.replace(path)  # a killed job never leaves a half-written result behind


def load_arrays(path) -> dict[str, np.ndarray]:
    """Read an .npz written by :func:`save_arrays` (pickle disabled)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# --- checked claims ----------------------------------------------------------------------------

COMPARISONS = {
    # measured within tolerance of the paper/theory value
    "abs": lambda m, p, t: abs(m - p) <= t,
    "rel": lambda m, p, t: abs(m - p) <= t * abs(p),
    # measured on the right side of a bound (paper value), tolerance as slack
    "at_most": lambda m, p, t: m <= p + t,
    "at_least": lambda m, p, t: m >= p - t,
}
CHECK_COLUMNS = (
    "experiment",
    "claim",
    "paper_value",
    "measured",
    "tolerance",
    "comparison",
    "status",
    "passed",
    "note",
)
STATUSES = ("pass", "fail", "not_evaluated")


@dataclass
class Check:
    """One machine-checked claim of a figure.

    ``not_evaluated`` holds the reason why the run's sizes cannot test the claim (e.g. too few
    layers to extrapolate); such a row is written with status ``not_evaluated`` and never
    counts as passing or failing. Otherwise the status is ``pass`` or ``fail``; a non-finite
    measurement always fails.
    """

    experiment: str
    claim: str
    paper_value: float
    measured: float
    tolerance: float
    comparison: str = "abs"
    note: str = ""
    not_evaluated: str = ""
    passed: bool = field(init=False)
    status: str = field(init=False)

    def __post_init__(self):
        if self.comparison not in COMPARISONS:
            raise ValueError(f"comparison {self.comparison!r} is unknown")
        m, p, t = float(self.measured), float(self.paper_value), float(self.tolerance)
        self.passed = bool(math.isfinite(m) and COMPARISONS[self.comparison](m, p, t))
        if self.not_evaluated:
            self.status = "not_evaluated"
            self.note = f"not evaluated at this size: {self.not_evaluated}. {self.note}".strip()
        else:
            self.status = "pass" if self.passed else "fail"


def write_checks(path, checks: list[Check]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CHECK_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for check in checks:
            row = asdict(check)
            for key in ("paper_value", "measured", "tolerance"):
                row[key] = f"{float(row[key]):.6g}"
            if check.status == "not_evaluated":
                row["passed"] = ""
            writer.writerow({k: row[k] for k in CHECK_COLUMNS})


def merge_checks(paths, out) -> list[dict]:
    """Concatenate per-experiment check tables into one (rows in input order)."""
    rows = []
    for p in paths:
        with open(p, newline="") as fh:
            rows.extend(csv.DictReader(fh))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CHECK_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


# --- figures -----------------------------------------------------------------------------------

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "svg.hashsalt": "ntk-repro",
}


def new_figure(nrows=1, ncols=1, *, width=6.4, height=3.6, **kwargs):
    """A matplotlib figure in the project's one style (Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt.subplots(nrows, ncols, figsize=(width, height), constrained_layout=True, **kwargs)


def save_figure(fig, outputs) -> None:
    """Save to every path in ``outputs`` (png and/or pdf) without timestamps, then close."""
    import matplotlib.pyplot as plt

    for out in outputs:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"CreationDate": None} if out.suffix == ".pdf" else {"Software": None}
        fig.savefig(out, metadata=meta)
    plt.close(fig)


def require_finite(name: str, **arrays) -> None:
    """Refuse to plot or check NaN/inf: diverged training is reported, never drawn."""
    for key, value in arrays.items():
        if not np.isfinite(np.asarray(value)).all():
            raise RuntimeError(f"{name}: {key} contains NaN or inf (diverged run?)")
