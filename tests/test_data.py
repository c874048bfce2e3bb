"""Tests of the experiment inputs: shapes, norms, angles, seeds, digits and the MNIST reader."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest

from ntk_repro import data

# --- circle, sphere, Gaussian -----------------------------------------------------------------


def test_circle_grid_covers_minus_pi_to_pi_with_the_right_radius():
    points, angles = data.circle_points(8, radius=2.0)
    assert points.shape == (8, 2) and angles.shape == (8,)
    assert angles[0] == -math.pi and angles[-1] < math.pi
    np.testing.assert_allclose(np.diff(angles), 2 * math.pi / 8, atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 2.0, atol=1e-15)
    np.testing.assert_allclose(np.arctan2(points[1:, 1], points[1:, 0]), angles[1:], atol=1e-14)

    _, closed = data.circle_points(5, endpoint=True)
    assert closed[0] == -math.pi and closed[-1] == math.pi


def test_circle_with_given_angles():
    points, angles = data.circle_points(angles=[0.0, math.pi / 2])
    np.testing.assert_allclose(points, [[1.0, 0.0], [0.0, 1.0]], atol=1e-15)
    assert angles.tolist() == [0.0, math.pi / 2]


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(), "n"),
        (dict(n=4, angles=[0.0]), "n"),
        (dict(n=0), "n"),
        (dict(n=2.0), "n"),
        (dict(n=4, radius=-1.0), "radius"),
        (dict(angles=[]), "angles"),
        (dict(angles=[[0.0]]), "angles"),
        (dict(angles=[float("inf")]), "angles"),
    ],
)
def test_circle_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        data.circle_points(**kwargs)


@pytest.mark.parametrize("dim", [1, 3, 50])
def test_sphere_points_have_norm_sqrt_dim_and_are_reproducible(dim):
    x = data.sphere_points(400, dim, seed=3)
    assert x.shape == (400, dim)
    np.testing.assert_allclose(np.sum(x * x, axis=1) / dim, 1.0, rtol=1e-12)
    assert np.array_equal(x, data.sphere_points(400, dim, seed=3))
    assert not np.array_equal(x, data.sphere_points(400, dim, seed=4))
    # Centred: every coordinate has mean 0 and variance 1, so its sample mean is ~ N(0, 1/400).
    assert np.abs(x.mean(axis=0)).max() < 5 / math.sqrt(400)
    y = data.sphere_points(10, dim, seed=np.random.default_rng(1), radius=0.5)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 0.5, rtol=1e-12)


def test_sphere_points_are_uniform_in_angle_on_the_circle():
    x = data.sphere_points(20000, 2, seed=0)
    counts, _ = np.histogram(np.arctan2(x[:, 1], x[:, 0]), bins=8, range=(-math.pi, math.pi))
    assert np.all(np.abs(counts / 2500 - 1) < 0.1)


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: data.sphere_points(0, 2, seed=0), "n"),
        (lambda: data.sphere_points(3, 0, seed=0), "dim"),
        (lambda: data.sphere_points(3, 2, seed=-1), "seed"),
        (lambda: data.sphere_points(3, 2, seed="a"), "seed"),
        (lambda: data.sphere_points(3, 2, seed=0, radius="unit"), "radius"),
        (lambda: data.sphere_points(3, 2, seed=0, radius=0.0), "radius"),
        (lambda: data.gaussian_inputs(3, 0, seed=0), "dim"),
        (lambda: data.gaussian_inputs(True, 2, seed=0), "n"),
        (lambda: data.product_target(np.zeros((3, 1))), "x"),
        (lambda: data.gaussian_batch_sampler(3, 2, seed=1.5), "seed"),
    ],
)
def test_generators_reject_bad_arguments(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


def test_gaussian_inputs_and_product_target():
    x = data.gaussian_inputs(5000, 2, seed=11)
    assert x.shape == (5000, 2)
    assert np.array_equal(x, data.gaussian_inputs(5000, 2, seed=11))
    assert abs(x.std() - 1.0) < 0.05 and abs(x.mean()) < 0.05
    np.testing.assert_array_equal(
        data.product_target([[2.0, 3.0, 7.0], [-1.0, 0.5, 0.0]]), [6.0, -0.5]
    )


def test_gaussian_batch_sampler_depends_only_on_seed_and_step():
    sample = data.gaussian_batch_sampler(100, 2, seed=4)
    x5, y5 = sample(5)
    x0, _ = sample(0)
    assert x5.shape == (100, 2) and y5.shape == (100,)
    np.testing.assert_array_equal(y5, x5[:, 0] * x5[:, 1])
    assert not np.array_equal(x0, x5)
    # Order of calls does not matter, and a new sampler with the same seed repeats it.
    again = data.gaussian_batch_sampler(100, 2, seed=4)
    assert np.array_equal(again(5)[0], x5) and np.array_equal(sample(5)[0], x5)


def test_fig2_training_set():
    x, y = data.fig2_training_set()
    assert x.shape == (4, 2) and y.tolist() == [-0.4, -0.2, 0.3, 0.3]
    np.testing.assert_allclose(np.arctan2(x[:, 1], x[:, 0]), data.FIG2_ANGLES, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(data.fig2_training_set(radius=3.0)[0], axis=1), 3.0)


# --- digits -----------------------------------------------------------------------------------


def test_digits_are_on_the_sphere_of_radius_sqrt_n0_and_reproducible():
    x, labels = data.digits_inputs(300, seed=0)
    assert x.shape == (300, 64) and labels.shape == (300,) and labels.dtype == np.int64
    np.testing.assert_allclose(np.sum(x * x, axis=1), 64.0, rtol=1e-12)
    assert set(labels.tolist()) <= set(range(10)) and len(set(labels.tolist())) == 10
    again, labels_again = data.digits_inputs(300, seed=0)
    assert np.array_equal(x, again) and np.array_equal(labels, labels_again)
    assert len(np.unique(x, axis=0)) == 300  # drawn without replacement
    # Centred with the data set's mean image: pixels of the sample average near 0 …
    assert np.abs(x.mean(axis=0)).max() < 0.6
    # … whereas raw pixels are non-negative, all in one orthant.
    raw, _ = data.digits_inputs(300, seed=0, standardize=False)
    np.testing.assert_allclose(np.sum(raw * raw, axis=1), 64.0, rtol=1e-12)
    assert raw.min() >= 0 and raw.mean(axis=0).max() > 1.0


def test_digits_read_from_the_bundled_file_equal_load_digits(monkeypatch):
    from sklearn.datasets import load_digits

    images, labels = data._bundled_digits()
    reference = load_digits()
    assert images.dtype == np.float64 and labels.dtype == np.int64
    assert np.array_equal(images, reference.data) and np.array_equal(labels, reference.target)
    fast = data.digits_inputs(50, seed=7)
    # Without the data file (find_spec finds no sklearn), digits_inputs goes through load_digits.
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    slow = data.digits_inputs(50, seed=7)
    for a, b in zip(fast, slow):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_digits_reject_bad_n():
    with pytest.raises(ValueError, match="n"):
        data.digits_inputs(0, seed=0)
    with pytest.raises(ValueError, match="1797"):
        data.digits_inputs(1798, seed=0)


# --- MNIST reader -------------------------------------------------------------------------------


def write_idx(path, array: np.ndarray, type_code: int = 0x08, compress: bool = False):
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress:
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


@pytest.fixture
def tiny_mnist(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 4, 5), dtype=np.uint8)
    labels = rng.integers(0, 10, size=12, dtype=np.uint8)
    return images, labels, tmp_path


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_reads_idx_images_and_labels(tiny_mnist, compress):
    images, labels, tmp = tiny_mnist
    suffix = ".gz" if compress else ""
    image_file = write_idx(tmp / f"images-idx3-ubyte{suffix}", images, compress=compress)
    label_file = write_idx(tmp / f"labels-idx1-ubyte{suffix}", labels, compress=compress)
    np.testing.assert_array_equal(data.read_idx(image_file), images)

    x, got_labels = data.load_mnist(image_file, 5, seed=1, labels_path=label_file)
    assert x.shape == (5, 20) and got_labels.shape == (5,)
    np.testing.assert_allclose(np.sum(x * x, axis=1), 20.0, rtol=1e-12)
    # Each point is its image, centred by the file's mean image and scaled onto the sphere.
    flat = images.reshape(12, 20).astype(np.float64)
    centred = flat - flat.mean(axis=0)
    index = np.random.default_rng(1).permutation(12)[:5]
    expected = centred[index] * (
        math.sqrt(20) / np.linalg.norm(centred[index], axis=1, keepdims=True)
    )
    np.testing.assert_allclose(x, expected, rtol=1e-12)
    np.testing.assert_array_equal(got_labels, labels[index])
    assert data.load_mnist(image_file, 5, seed=1)[1] is None


def test_load_mnist_reads_npz(tiny_mnist):
    images, labels, tmp = tiny_mnist
    np.savez(tmp / "mnist.npz", images=images, y=labels)
    x, got = data.load_mnist(tmp / "mnist.npz", 12, seed=0)
    assert x.shape == (12, 20) and sorted(got.tolist()) == sorted(labels.tolist())
    np.savez(tmp / "x.npz", x=images.reshape(12, 20).astype(np.float32))
    x2, none = data.load_mnist(tmp / "x.npz", 12, seed=0)
    assert none is None
    np.testing.assert_allclose(x2, x, rtol=1e-6)
    # Other IDX element types are read too.
    floats = write_idx(tmp / "float-idx", images.astype(np.float32), type_code=0x0D)
    np.testing.assert_array_equal(data.read_idx(floats), images.astype(np.float32))


def corrupt_files(tmp, images):
    good = bytes([0, 0, 8, 3]) + struct.pack(">3I", *images.shape) + images.tobytes()
    files = {
        "missing": tmp / "nowhere-idx3-ubyte",
        "bad-magic": tmp / "magic-idx3-ubyte",
        "truncated": tmp / "short-idx3-ubyte",
        "too-long": tmp / "long-idx3-ubyte",
        "bad-gzip": tmp / "broken-idx3-ubyte.gz",
        "npz-without-images": tmp / "other.npz",
        "broken-zip": tmp / "broken.npz",
        "empty": tmp / "empty-idx3-ubyte",
    }
    files["bad-magic"].write_bytes(b"\x12\x34" + good[2:])
    files["truncated"].write_bytes(good[:-7])
    files["too-long"].write_bytes(good + b"\x00")
    files["bad-gzip"].write_bytes(gzip.compress(good)[:-12])
    np.savez(files["npz-without-images"], pixels=images)
    files["broken-zip"].write_bytes(b"PK\x03\x04 this is not a zip archive")
    files["empty"].write_bytes(b"")
    return files


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "bad-magic",
        "truncated",
        "too-long",
        "bad-gzip",
        "npz-without-images",
        "broken-zip",
        "empty",
    ],
)
def test_load_mnist_reports_missing_or_corrupt_files_in_one_line(tiny_mnist, kind):
    images, _, tmp = tiny_mnist
    path = corrupt_files(tmp, images)[kind]
    with pytest.raises(ValueError) as info:
        data.load_mnist(path, 3, seed=0)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert message.startswith("MNIST file")


def test_load_mnist_rejects_mismatched_labels_and_too_many_points(tiny_mnist):
    images, labels, tmp = tiny_mnist
    image_file = write_idx(tmp / "i-idx3-ubyte", images)
    short_labels = write_idx(tmp / "l-idx1-ubyte", labels[:5])
    with pytest.raises(ValueError, match="l-idx1-ubyte"):
        data.load_mnist(image_file, 3, seed=0, labels_path=short_labels)
    with pytest.raises(ValueError, match="exceeds the 12 images"):
        data.load_mnist(image_file, 13, seed=0)
    with pytest.raises(ValueError, match="n must"):
        data.load_mnist(image_file, 0, seed=0)
    blank = write_idx(tmp / "blank-idx3-ubyte", np.zeros((3, 2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="zero norm"):
        data.load_mnist(blank, 2, seed=0, standardize=False)


@pytest.mark.parametrize(
    "content", [b"\x93NUMPY not really", b"just some text\n", b"", bytes(range(256)) * 4]
)
def test_a_file_named_npz_that_is_not_an_npz_says_so(tmp_path, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    for check in (lambda: data.load_mnist(path, 1, seed=0), lambda: data.check_mnist_file(path)):
        with pytest.raises(ValueError) as info:
            check()
        message = str(info.value)
        assert message.startswith(f"MNIST file {path} is not a valid .npz file: ")
        assert "\n" not in message


# --- cheap check of user-supplied MNIST files ----------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_check_mnist_file_accepts_what_load_mnist_reads(tiny_mnist, compress):
    images, labels, tmp = tiny_mnist
    suffix = ".gz" if compress else ""
    image_file = write_idx(tmp / f"images-idx3-ubyte{suffix}", images, compress=compress)
    label_file = write_idx(tmp / f"labels-idx1-ubyte{suffix}", labels, compress=compress)
    assert data.check_mnist_file(image_file, labels_path=label_file, n=12) is None
    np.savez(tmp / "mnist.npz", images=images, y=labels)
    np.savez(tmp / "flat.npz", x=images.reshape(12, 20).astype(np.float32))
    for npz in ("mnist.npz", "flat.npz"):
        data.check_mnist_file(tmp / npz, n=12)
        data.load_mnist(tmp / npz, 12, seed=0)


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "bad-magic",
        "truncated",
        "too-long",
        "bad-gzip",
        "npz-without-images",
        "broken-zip",
        "empty",
    ],
)
def test_check_mnist_file_reports_what_load_mnist_reports_in_one_line(tiny_mnist, kind):
    images, _, tmp = tiny_mnist
    path = corrupt_files(tmp, images)[kind]
    with pytest.raises(ValueError) as info:
        data.check_mnist_file(path)
    message = str(info.value)
    assert message.startswith(f"MNIST file {path} ") and "\n" not in message


def test_check_mnist_file_finds_a_truncated_gzip_download_from_its_trailer(tmp_path):
    # Incompressible pixels, so that the cut lies far past the header the check decompresses.
    images = np.random.default_rng(0).integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    whole = write_idx(tmp_path / "whole-idx3-ubyte.gz", images, compress=True)
    data.check_mnist_file(whole)
    cut = tmp_path / "cut-idx3-ubyte.gz"
    cut.write_bytes(whole.read_bytes()[:-5000])
    with pytest.raises(ValueError, match=r"cut-idx3-ubyte\.gz has \d+ uncompressed bytes"):
        data.check_mnist_file(cut)


def test_check_mnist_file_rejects_mismatched_labels_too_few_images_and_bad_arrays(tiny_mnist):
    images, labels, tmp = tiny_mnist
    image_file = write_idx(tmp / "i-idx3-ubyte", images)
    with pytest.raises(ValueError, match="l-idx1-ubyte has labels of shape"):
        data.check_mnist_file(image_file, labels_path=write_idx(tmp / "l-idx1-ubyte", labels[:5]))
    with pytest.raises(ValueError, match="missing-labels"):
        data.check_mnist_file(image_file, labels_path=tmp / "missing-labels")
    with pytest.raises(ValueError, match="n = 13 exceeds the 12 images"):
        data.check_mnist_file(image_file, n=13)
    with pytest.raises(ValueError, match="n must be an integer"):
        data.check_mnist_file(image_file, n=1.5)
    np.savez(tmp / "short-labels.npz", x=images, labels=labels[:3])
    with pytest.raises(ValueError, match="short-labels.npz has labels of shape"):
        data.check_mnist_file(tmp / "short-labels.npz")
    np.savez(tmp / "vector.npz", images=images.reshape(-1))
    with pytest.raises(ValueError, match="vector.npz holds a uint8 array of shape"):
        data.check_mnist_file(tmp / "vector.npz")
