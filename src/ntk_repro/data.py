"""Inputs and targets of the reproduced experiments (docs/design.md §2–3).

Everything is numpy in and numpy out (float64). Randomness comes only from an explicit
``seed``: an int (reproducible: the same int gives the same points) or a
``numpy.random.Generator`` (consumed, for callers that manage their own streams).

- :func:`circle_points`: the unit circle of the NTK paper's figures, x = r·(cos γ, sin γ).
- :func:`sphere_points`: uniform on the sphere of radius √n0 (‖x‖²/n0 = 1), as in the
  Freeze & Chaos analysis.
- :func:`gaussian_inputs`, :func:`product_target`, :func:`gaussian_batch_sampler`: fig1 of the
  NTK paper trains on fresh N(0, I₂) inputs every step with target f*(x) = x1·x2.
- :data:`FIG2_ANGLES`, :data:`FIG2_TARGETS`, :func:`fig2_training_set`: the 4 training points
  of fig2.
- :func:`digits_inputs`, :func:`load_mnist`: images put on the sphere of radius √n0 for the
  kernel PCA of fig3 (scikit-learn's bundled digits by default; MNIST if the user has it).
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ntk_repro.validation import check_int, check_points, check_real

# Fig2 of the NTK paper: angles γ (radians) of the 4 training points on the unit circle and
# their targets.
FIG2_ANGLES = (-2.194, -0.931, 0.963, 2.226)
FIG2_TARGETS = (-0.4, -0.2, 0.3, 0.3)

# --- validation (at the edges) -----------------------------------------------------------------


def as_generator(seed, name: str = "seed") -> np.random.Generator:
    """A numpy Generator from an int seed (>= 0) or an existing Generator (returned as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            f"{name} must be a non-negative int or a numpy.random.Generator, got {seed!r}"
        )
    return np.random.default_rng(int(seed))


# --- synthetic inputs --------------------------------------------------------------------------


def circle_points(
    n: int | None = None, *, angles=None, radius: float = 1.0, endpoint: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Points x = radius·(cos γ, sin γ) on a circle.

    Parameters
    ----------
    n : number of grid angles γ_j = −π + 2πj/n, j = 0 … n−1 (covering [−π, π)); with
        ``endpoint=True`` the grid is ``linspace(−π, π, n)`` and includes π. Give either ``n``
        or ``angles``.
    angles : array (N,) of angles in radians, used as given.
    radius : positive radius (1 for the NTK paper's unit circle; √2 puts the points on the
        sphere ‖x‖²/n0 = 1).
    endpoint : see ``n``.

    Returns
    -------
    points : float64 array (N, 2).
    angles : float64 array (N,).
    """
    radius = check_real(radius, "radius", minimum=0.0, exclusive_minimum=True)
    if (n is None) == (angles is None):
        raise ValueError("give exactly one of n (a grid of angles) and angles")
    if angles is None:
        n = check_int(n, "n", minimum=1)
        if endpoint:
            gamma = np.linspace(-math.pi, math.pi, n)
        else:
            gamma = -math.pi + (2.0 * math.pi / n) * np.arange(n)
    else:
        try:
            gamma = np.array(angles, dtype=np.float64)
        except (TypeError, ValueError):
            gamma = None
        if gamma is None or gamma.ndim != 1 or gamma.size == 0 or not np.isfinite(gamma).all():
            raise ValueError("angles must be a non-empty 1-D array of finite numbers")
    points = radius * np.stack([np.cos(gamma), np.sin(gamma)], axis=1)
    return points, gamma


def sphere_points(n: int, dim: int, *, seed, radius="sqrt_dim") -> np.ndarray:
    """``n`` points uniform on the sphere S^{dim−1} of the given radius.

    Parameters
    ----------
    n : number of points >= 1.  dim : ambient dimension n0 >= 1.
    seed : int or numpy Generator.
    radius : "sqrt_dim" (default: ‖x‖ = √dim, i.e. ‖x‖²/n0 = 1) or a positive number.

    Returns
    -------
    float64 array (n, dim) with every row of norm ``radius``.
    """
    n, dim = check_int(n, "n", minimum=1), check_int(dim, "dim", minimum=1)
    if isinstance(radius, str):
        if radius != "sqrt_dim":
            raise ValueError(f"radius must be 'sqrt_dim' or a positive number, got {radius!r}")
        radius = math.sqrt(dim)
    else:
        radius = check_real(radius, "radius", minimum=0.0, exclusive_minimum=True)
    rng = as_generator(seed)
    g = rng.standard_normal((n, dim))
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    # A standard normal vector is 0 with probability 0; redraw rather than divide by it.
    while (bad := norms[:, 0] == 0.0).any():
        g[bad] = rng.standard_normal((int(bad.sum()), dim))
        norms = np.linalg.norm(g, axis=1, keepdims=True)
    return g * (radius / norms)


def gaussian_inputs(n: int, dim: int, *, seed) -> np.ndarray:
    """``n`` i.i.d. N(0, I_dim) inputs: float64 array (n, dim)."""
    n, dim = check_int(n, "n", minimum=1), check_int(dim, "dim", minimum=1)
    return as_generator(seed).standard_normal((n, dim))


def product_target(x) -> np.ndarray:
    """Fig1 target f*(x) = x1·x2 of inputs x (N, n0 >= 2): float64 array (N,)."""
    arr = check_points(x, "x", min_dim=2)
    return arr[:, 0] * arr[:, 1]


def gaussian_batch_sampler(
    n: int, dim: int, *, seed: int, target: Callable[[np.ndarray], np.ndarray] = product_target
) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """A ``sample_batch(step) -> (x, y)`` drawing fresh N(0, I_dim) inputs every step.

    The batch of a step depends only on (seed, step), never on earlier calls, so a run can be
    repeated or resumed bit for bit. ``x`` is (n, dim), ``y = target(x)`` is (n,).
    """
    n, dim = check_int(n, "n", minimum=1), check_int(dim, "dim", minimum=1)
    seed = check_int(seed, "seed", minimum=0)

    def sample_batch(step: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.random.default_rng([seed, int(step)]).standard_normal((n, dim))
        return x, np.asarray(target(x), dtype=np.float64)

    return sample_batch


def fig2_training_set(radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The 4 training points of the NTK paper's fig2: (x (4, 2), y (4,)), float64."""
    points, _ = circle_points(angles=FIG2_ANGLES, radius=radius)
    return points, np.array(FIG2_TARGETS, dtype=np.float64)


# --- image data sets on the sphere -------------------------------------------------------------


def _onto_sphere(
    images: np.ndarray, n: int, rng: np.random.Generator, standardize: bool, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``n`` of the images (N, n0) at random; centre and scale them to ‖x‖² = n0.

    Centring subtracts the mean image of the whole data set (not of the sample), so a point's
    coordinates do not depend on which other points were drawn. Pixels are not divided by
    their standard deviation: border pixels are almost constant and would only amplify noise.
    Returns (x (n, n0), chosen indices (n,)).
    """
    total, n0 = images.shape
    if n > total:
        raise ValueError(f"n = {n} exceeds the {total} images of {source}")
    index = rng.permutation(total)[:n]
    x = images[index].astype(np.float64)
    if standardize:
        x -= images.mean(axis=0, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0.0).any():
        raise ValueError(
            f"{source} has an image of zero norm"
            f"{' after centring' if standardize else ''}; it has no direction"
        )
    return x * (math.sqrt(n0) / norms), index


def _bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images (1797, 64) float64 and labels (1797,) int64.

    Read from the package's data file, the table ``sklearn.datasets.load_digits`` reads (the
    same numbers), without importing scikit-learn (~2 s of every job); through
    ``load_digits`` where that file is not found.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # shipped with scikit-learn, no download

    digits = load_digits()
    return np.asarray(digits.data, dtype=np.float64), np.asarray(digits.target, dtype=np.int64)


def digits_inputs(n: int, *, seed, standardize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of scikit-learn's bundled 8×8 digits, on the sphere of radius √64.

    Parameters
    ----------
    n : number of images, 1 … 1797 (drawn without replacement).
    seed : int or numpy Generator.
    standardize : subtract the mean image of the data set before scaling (default). If False
        the raw (non-negative) pixels are only scaled, so all points share one orthant.

    Returns
    -------
    x : float64 array (n, 64) with ‖x‖² = 64 for every row.
    labels : int64 array (n,) of digit classes.
    """
    n = check_int(n, "n", minimum=1)
    images, labels = _bundled_digits()
    x, index = _onto_sphere(images, n, as_generator(seed), standardize, "the digits data set")
    return x, labels[index]


# --- MNIST from user-supplied files ------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_MAX_HEADER = 4 + 4 * 255  # magic, then one uint32 per dimension (at most 255)
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive


def _existing_file(path) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"MNIST file {path} does not exist (or is not a file)")
    return path


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _read_head(path: str, count: int = 4) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(count)
    except OSError as err:
        raise ValueError(f"MNIST file {path} cannot be read: {err.strerror}") from None


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise ValueError(f"MNIST file {path} cannot be read: {err.strerror}") from None
    if raw[:2] == _GZIP_MAGIC:  # gzip, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, ValueError, zlib.error) as err:
            raise ValueError(f"MNIST file {path} is not a valid gzip file: {err}") from None
    return raw


def _idx_header(raw: bytes, path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, element dtype and header length from the first bytes of an IDX file."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(f"MNIST file {path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"MNIST file {path} is truncated inside its IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return shape, np.dtype(_IDX_DTYPES[raw[2]]), header


def _idx_bytes(shape: tuple[int, ...], dtype: np.dtype, header: int) -> int:
    return header + dtype.itemsize * math.prod(shape)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format, optionally gzip-compressed) into a numpy array.

    Raises ValueError naming the file when it is missing or not a well-formed IDX file.
    """
    path = _existing_file(path)
    raw = _read_bytes(path)
    shape, dtype, header = _idx_header(raw, path)
    expected = _idx_bytes(shape, dtype, header)
    if len(raw) != expected:
        raise ValueError(
            f"MNIST file {path} has {len(raw)} bytes but its IDX header {shape} needs {expected}"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _idx_shape(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an IDX file from its header alone, with its size checked.

    A gzip file is checked against the uncompressed size in its trailer (modulo 2³², as gzip
    stores it), which a truncated download fails; damage inside the stream is found only when
    :func:`read_idx` decompresses it all.
    """
    if _read_head(path, 2) != _GZIP_MAGIC:
        head = _read_head(path, _IDX_MAX_HEADER)
        size, expected_size = os.path.getsize(path), None
    else:
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(_IDX_MAX_HEADER)
            with open(path, "rb") as handle:
                handle.seek(-4, os.SEEK_END)
                size = int.from_bytes(handle.read(4), "little")
        except (OSError, EOFError, ValueError, zlib.error) as err:
            raise ValueError(
                f"MNIST file {path} is not a valid gzip file: {_one_line(err)}"
            ) from None
        expected_size = 2**32
    shape, dtype, header = _idx_header(head, path)
    expected = _idx_bytes(shape, dtype, header)
    if expected_size is not None:
        expected %= expected_size
    if size != expected:
        unpacked = " uncompressed" if expected_size is not None else ""
        raise ValueError(
            f"MNIST file {path} has {size}{unpacked} bytes but its IDX header "
            f"{shape} needs {expected}"
        )
    return shape, dtype


def _is_npz(path: str) -> bool:
    """An .npz by name or by content (a zip archive); anything else is read as IDX."""
    return path.lower().endswith(".npz") or _read_head(path) == _ZIP_MAGIC


def _npz_keys(names, path: str) -> tuple[str, str | None]:
    """The keys of the images ("x" or "images") and labels ("y", "labels" or None)."""
    image_key = next((k for k in ("x", "images") if k in names), None)
    if image_key is None:
        raise ValueError(f"MNIST file {path} has no 'x' or 'images' array (found {sorted(names)})")
    return image_key, next((k for k in ("y", "labels") if k in names), None)


def _not_npz(path: str, reason) -> ValueError:
    return ValueError(f"MNIST file {path} is not a valid .npz file: {_one_line(reason)}")


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    if _read_head(path) != _ZIP_MAGIC:
        raise _not_npz(path, "it is not a zip archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            image_key, label_key = _npz_keys(set(archive.files), path)
            images = archive[image_key]
            labels = archive[label_key] if label_key is not None else None
    except ValueError as err:
        if str(err).startswith("MNIST file"):
            raise
        raise _not_npz(path, err) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise _not_npz(path, err) from None
    return images, labels


def _npz_shapes(path: str) -> tuple[tuple[int, ...], np.dtype, tuple[int, ...] | None]:
    """Shape and dtype of the images of an .npz, and the labels' shape, from the .npy headers
    in the zip directory, without reading the arrays."""
    if _read_head(path) != _ZIP_MAGIC:
        raise _not_npz(path, "it is not a zip archive")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {m[:-4]: m for m in archive.namelist() if m.endswith(".npy")}
            image_key, label_key = _npz_keys(set(members), path)
            shapes = []
            for key in (image_key, label_key):
                if key is None:
                    shapes.append((None, None))
                    continue
                with archive.open(members[key]) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                shapes.append((shape, dtype))
    except ValueError as err:
        if str(err).startswith("MNIST file"):
            raise
        raise _not_npz(path, err) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise _not_npz(path, err) from None
    (image_shape, image_dtype), (label_shape, _) = shapes
    return image_shape, image_dtype, label_shape


def _check_images(path: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if len(shape) < 2 or shape[0] == 0 or dtype.kind not in "biuf":
        raise ValueError(
            f"MNIST file {path} holds a {dtype} array of shape "
            f"{shape}, expected numeric images (N, rows, cols) or (N, n0)"
        )


def _check_labels(source: str, shape: tuple[int, ...], n_images: int) -> None:
    if shape != (n_images,):
        raise ValueError(
            f"MNIST file {source} has labels of shape {shape}, "
            f"expected ({n_images},) to match the images"
        )


def check_mnist_file(path, *, labels_path=None, n: int | None = None) -> None:
    """Check that user-supplied MNIST files exist and parse, cheaply, before any job starts.

    Reads headers only: the IDX header and file size (for gzip its trailer), or the zip
    directory and the .npy headers of an .npz. Arguments as in :func:`load_mnist`; with ``n``
    the file must hold at least ``n`` images.

    Raises
    ------
    ValueError
        With one line naming the file when it is missing, malformed or too small.
    """
    path = _existing_file(path)
    if _is_npz(path):
        shape, dtype, label_shape = _npz_shapes(path)
    else:
        (shape, dtype), label_shape = _idx_shape(path), None
    _check_images(path, shape, dtype)
    source = path
    if labels_path is not None:
        source = _existing_file(labels_path)
        label_shape, _ = _idx_shape(source)
    if label_shape is not None:
        _check_labels(source, label_shape, shape[0])
    if n is not None and check_int(n, "n", minimum=1) > shape[0]:
        raise ValueError(f"n = {n} exceeds the {shape[0]} images of MNIST file {path}")


def load_mnist(
    path, n: int, *, seed, labels_path=None, standardize: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` MNIST images from user-supplied files, on the sphere of radius √n0.

    Parameters
    ----------
    path : an IDX image file (e.g. ``train-images-idx3-ubyte``, optionally gzip-compressed)
        or an ``.npz`` holding an ``x`` or ``images`` array (N, 28, 28) or (N, 784), and
        optionally ``y``/``labels``. A file named ``*.npz`` or holding a zip archive is read
        as an ``.npz``, anything else as IDX.
    n : number of images to draw without replacement.
    seed : int or numpy Generator.
    labels_path : optional IDX label file (N,) matching an IDX image file.
    standardize : as in :func:`digits_inputs`.

    Returns
    -------
    x : float64 array (n, n0) with ‖x‖² = n0 for every row (n0 = 784 for MNIST).
    labels : int64 array (n,), or None when the files carry no labels.

    Raises
    ------
    ValueError
        With a one-line message naming the file when it is missing or malformed
        (:func:`check_mnist_file` finds most of these without reading the pixels).
    """
    n = check_int(n, "n", minimum=1)
    path = _existing_file(path)
    if _is_npz(path):
        images, labels = _read_npz(path)
    else:
        images, labels = read_idx(path), None
    if labels_path is not None:
        labels = read_idx(labels_path)
        labels_path = os.fspath(labels_path)
    images = np.asarray(images)
    _check_images(path, images.shape, images.dtype)
    images = images.reshape(images.shape[0], -1)
    if not np.isfinite(images).all():
        raise ValueError(f"MNIST file {path} contains NaN or inf pixels")
    if labels is not None:
        labels = np.asarray(labels)
        _check_labels(
            labels_path if labels_path is not None else path, labels.shape, images.shape[0]
        )
    x, index = _onto_sphere(images, n, as_generator(seed), standardize, f"MNIST file {path}")
    return x, (None if labels is None else labels[index].astype(np.int64))


__all__ = [
    "FIG2_ANGLES",
    "FIG2_TARGETS",
    "as_generator",
    "check_mnist_file",
    "circle_points",
    "digits_inputs",
    "fig2_training_set",
    "gaussian_batch_sampler",
    "gaussian_inputs",
    "load_mnist",
    "product_target",
    "read_idx",
    "sphere_points",
]
