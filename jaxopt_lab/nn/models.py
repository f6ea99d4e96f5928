"""Small pure models that thread batch-norm state: linear, MLP, 1-D CNN, and flax modules
(linen and NNX).

A :class:`Model` is a pair of pure functions, in the style of
``optax.GradientTransformation``:

* ``init(key, x) -> (params, state)``: ``x`` is an example batch, of which only
  the shape and dtype are used;
* ``apply(params, state, x, *, train, mask=None, bn_momentum=0.99)
  -> (outputs, new_state)``.

``params`` is a nested dict (``{"dense_0": {"kernel", "bias"}, "bn_0":
BatchNormParams, ...}``), ``state`` holds the batch-norm running statistics
(``{"bn_0": BatchNormState, ...}``, and ``{}`` for a model without batch norm,
so every model's state is a pytree that can be vmapped, scanned and selected
with ``jnp.where``). ``mask`` is a boolean over the leading (example) axis:
padded rows of a batch take no part in the batch statistics. ``bn_momentum``
may be traced, so it can be swept. ``train`` must be a Python bool.

Kernels are initialized like flax's defaults (LeCun normal, zero biases), so
results compare with the same architecture written in ``flax.linen``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.errors import InputError
from jaxopt_lab.fingerprints import qualified_name
from jaxopt_lab.nn import batchnorm as bn

__all__ = [
    "Model",
    "MODELS",
    "ACTIVATIONS",
    "linear",
    "mlp",
    "cnn1d",
    "cnn2d",
    "create",
    "from_flax",
    "from_nnx",
]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
}

# flax.linen's defaults for Dense and Conv.
_kernel_init = jax.nn.initializers.lecun_normal()


class Model(NamedTuple):
    """A model as a pair of pure functions.

    Attributes:
      init: ``init(key, x) -> (params, state)``.
      apply: ``apply(params, state, x, *, train, mask=None, bn_momentum=0.99)
        -> (outputs, new_state)``.
      name: the qualified name a sweep records for a model given as a Python
        object (``from_flax``/``from_nnx`` set the module's); default: the
        ``init`` function's.
    """

    init: Callable[..., tuple[Any, Any]]
    apply: Callable[..., tuple[jax.Array, Any]]
    name: str | None = None  # what sweep.toml records for a model given in Python

    def fingerprint_name(self) -> str:
        """The qualified name a sweep records: ``name``, else the ``init`` function's."""
        return self.name if isinstance(self.name, str) else qualified_name(self.init)


# ------------------------------------------------------------------ layers


def _dense_init(key, in_features: int, out_features: int, use_bias: bool = True):
    params = {"kernel": _kernel_init(key, (in_features, out_features), jnp.float32)}
    if use_bias:
        params["bias"] = jnp.zeros((out_features,), jnp.float32)
    return params


def _add_bias(y: jax.Array, params) -> jax.Array:
    if "bias" not in params:
        return y
    return y + params["bias"].reshape((1,) * (y.ndim - 1) + (-1,))


def _dense(params, x: jax.Array) -> jax.Array:
    return _add_bias(jnp.matmul(x, params["kernel"]), params)


def _conv_init(key, kernel_size: int, in_channels: int, out_channels: int, use_bias: bool, ndim: int):
    shape = (kernel_size,) * ndim + (in_channels, out_channels)
    params = {"kernel": _kernel_init(key, shape, jnp.float32)}
    if use_bias:
        params["bias"] = jnp.zeros((out_channels,), jnp.float32)
    return params


_CONV_DIMENSIONS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def _conv(params, x: jax.Array, stride: int) -> jax.Array:
    """1-D or 2-D convolution (by the kernel's rank) with "SAME" padding, as
    ``flax.linen.Conv``: ``(N, W, C) -> (N, W', C')`` or ``(N, H, W, C) -> (N, H', W', C')``."""
    ndim = params["kernel"].ndim - 2
    y = jax.lax.conv_general_dilated(
        x,
        params["kernel"],
        window_strides=(stride,) * ndim,
        padding="SAME",
        dimension_numbers=_CONV_DIMENSIONS[ndim],
    )
    return _add_bias(y, params)


def _batchnorm(params, state, x, *, train, mask, momentum, ghost_batch_size=None):
    # A per-example mask of shape (N,) also covers every position of a (N, W, C) input.
    if ghost_batch_size is not None:
        return bn.ghost_apply(
            params, state, x, ghost_batch_size=ghost_batch_size, train=train, momentum=momentum, mask=mask
        )
    return bn.apply(params, state, x, train=train, momentum=momentum, mask=mask)


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


# ----------------------------------------------------------------- checks


def _check_num_outputs(num_outputs) -> int:
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, (int, np.integer)) or num_outputs < 1:
        raise InputError(f"num_outputs={num_outputs!r} is invalid: expected a positive integer")
    return int(num_outputs)


def _check_sizes(name: str, values) -> tuple[int, ...]:
    values = (values,) if isinstance(values, int) else values
    if not isinstance(values, Sequence) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise InputError(f"{name}={values!r} is invalid: expected a sequence of positive integers")
    return tuple(values)


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}={value!r} is invalid: expected a positive integer")
    return value


def _check_ghost(ghost_batch_size, batchnorm: bool) -> int | None:
    if ghost_batch_size is None:
        return None
    if not batchnorm:
        raise InputError(f"ghost_batch_size={ghost_batch_size!r} is invalid without batchnorm=True")
    return _check_positive("ghost_batch_size", ghost_batch_size)


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise InputError(
            f"activation={name!r} is invalid: expected one of {', '.join(map(repr, ACTIVATIONS))}"
        )
    return ACTIVATIONS[name]


# ------------------------------------------------------------------ models


def linear(num_outputs: int) -> Model:
    """A single dense layer: ``x.reshape(n, -1) @ W + b``.

    With a softmax cross-entropy loss this is multinomial logistic regression;
    with a squared loss, linear regression. Inputs are flattened past axis 0.

    Args:
      num_outputs: number of outputs (classes, or regression targets).

    Returns:
      A :class:`Model` without state.
    """
    num_outputs = _check_num_outputs(num_outputs)

    def init(key, x):
        in_features = math.prod(x.shape[1:])
        return {"dense_0": _dense_init(key, in_features, num_outputs)}, {}

    def apply(params, state, x, *, train, mask=None, bn_momentum=0.99):
        del train, mask, bn_momentum  # no batch norm
        return _dense(params["dense_0"], _flatten(x)), state

    return Model(init, apply)


def mlp(
    num_outputs: int,
    hidden: Sequence[int] = (256, 256),
    batchnorm: bool = False,
    activation: str = "relu",
    ghost_batch_size: int | None = None,
) -> Model:
    """A multilayer perceptron: ``(Dense -> [BatchNorm] -> activation) * len(hidden) -> Dense``.

    Inputs are flattened past axis 0. With ``batchnorm=True`` the hidden dense
    layers have no bias: batch norm subtracts the batch mean, so a bias there
    gets an exactly zero gradient and only adds noise to adaptive optimizers.

    Args:
      num_outputs: number of outputs.
      hidden: widths of the hidden layers.
      batchnorm: normalize each hidden layer's pre-activations.
      activation: a name from :data:`ACTIVATIONS`.
      ghost_batch_size: with batch norm, its statistics over each group of this many
        examples of a training batch (``batchnorm.ghost_apply``; Hoffer et al. 2017);
        ``None``: over the whole batch.

    Returns:
      A :class:`Model`; params ``{"dense_i": {"kernel", ["bias"]}, "bn_i": BatchNormParams}``,
      state ``{"bn_i": BatchNormState}`` (``{}`` without batch norm).

    Example:
      >>> model = mlp(10, hidden=(32,), batchnorm=True)
      >>> x = jnp.ones((8, 40))
      >>> params, state = model.init(jax.random.key(0), x)
      >>> logits, state = model.apply(params, state, x, train=True)
      >>> logits.shape
      (8, 10)
    """
    num_outputs = _check_num_outputs(num_outputs)
    hidden = _check_sizes("hidden", hidden)
    act = _activation(activation)
    batchnorm = bool(batchnorm)
    ghost_batch_size = _check_ghost(ghost_batch_size, batchnorm)

    def init(key, x):
        keys = jax.random.split(key, len(hidden) + 1)
        widths = (math.prod(x.shape[1:]),) + hidden
        params, state = {}, {}
        for i, width in enumerate(hidden):
            params[f"dense_{i}"] = _dense_init(keys[i], widths[i], width, use_bias=not batchnorm)
            if batchnorm:
                params[f"bn_{i}"], state[f"bn_{i}"] = bn.init(width)
        params[f"dense_{len(hidden)}"] = _dense_init(keys[-1], widths[-1], num_outputs)
        return params, state

    def apply(params, state, x, *, train, mask=None, bn_momentum=0.99):
        h = _flatten(x)
        new_state = {}
        for i in range(len(hidden)):
            h = _dense(params[f"dense_{i}"], h)
            if batchnorm:
                h, new_state[f"bn_{i}"] = _batchnorm(
                    params[f"bn_{i}"],
                    state[f"bn_{i}"],
                    h,
                    train=train,
                    mask=mask,
                    momentum=bn_momentum,
                    ghost_batch_size=ghost_batch_size,
                )
            h = act(h)
        return _dense(params[f"dense_{len(hidden)}"], h), new_state

    return Model(init, apply)


def cnn1d(
    num_outputs: int,
    channels: Sequence[int] = (32, 32, 32),
    kernel_size: int = 5,
    stride: int = 2,
    batchnorm: bool = False,
    activation: str = "relu",
    ghost_batch_size: int | None = None,
) -> Model:
    """A small 1-D convolutional net for MNIST-1D.

    ``(Conv(stride, "SAME") -> [BatchNorm] -> activation) * len(channels)
    -> flatten -> Dense``. Inputs ``(N, L)`` are read as ``(N, L, 1)``; inputs
    ``(N, L, C)`` are used as they are. With the defaults an MNIST-1D signal of
    length 40 becomes 20, 10, then 5 positions of 32 channels. As in
    :func:`mlp`, the convolutions have no bias when followed by batch norm.

    Args:
      num_outputs: number of outputs.
      channels: output channels of each convolution.
      kernel_size: width of every convolution kernel.
      stride: stride of every convolution.
      batchnorm: batch norm after each convolution, with statistics over the
        examples and positions of each channel.
      activation: a name from :data:`ACTIVATIONS`.
      ghost_batch_size: with batch norm, its statistics over each group of this many
        examples of a training batch (``batchnorm.ghost_apply``; Hoffer et al. 2017);
        ``None``: over the whole batch.

    Returns:
      A :class:`Model`; params ``{"conv_i": {"kernel", ["bias"]}, "bn_i": ...,
      "dense_0": {...}}``.

    References:
      Greydanus & Kobak, *Scaling down deep learning with MNIST-1D*, ICML 2024
      (arXiv:2011.14439): a 3-layer CNN with stride 2 reaches about 94% test
      accuracy where an MLP reaches about 70%.
    """
    return _conv_net(1, num_outputs, channels, kernel_size, stride, batchnorm, activation, ghost_batch_size)


def cnn2d(
    num_outputs: int,
    channels: Sequence[int] = (16, 32),
    kernel_size: int = 3,
    stride: int = 2,
    batchnorm: bool = False,
    activation: str = "relu",
    ghost_batch_size: int | None = None,
) -> Model:
    """A small 2-D convolutional net for images such as ``mnist5k``.

    ``(Conv(k x k, stride, "SAME") -> [BatchNorm] -> activation) * len(channels)
    -> flatten -> Dense``. Inputs ``(N, H, W)`` are read as ``(N, H, W, 1)``;
    inputs ``(N, H, W, C)`` are used as they are. With the defaults a 28x28
    digit becomes 14x14x16, then 7x7x32. As in :func:`mlp`, the convolutions
    have no bias when followed by batch norm, whose statistics are over the
    examples and positions of each channel.

    Args:
      num_outputs: number of outputs.
      channels: output channels of each convolution.
      kernel_size: height and width of every kernel.
      stride: stride of every convolution, in both directions.
      batchnorm: batch norm after each convolution.
      activation: a name from :data:`ACTIVATIONS`.
      ghost_batch_size: with batch norm, its statistics over each group of this many
        examples of a training batch (``batchnorm.ghost_apply``; Hoffer et al. 2017);
        ``None``: over the whole batch.

    Returns:
      A :class:`Model`; params ``{"conv_i": {"kernel", ["bias"]}, "bn_i": ...,
      "dense_0": {...}}``.
    """
    return _conv_net(2, num_outputs, channels, kernel_size, stride, batchnorm, activation, ghost_batch_size)


def _conv_net(ndim, num_outputs, channels, kernel_size, stride, batchnorm, activation, ghost_batch_size):
    """:func:`cnn1d` (``ndim=1``) or :func:`cnn2d` (``ndim=2``)."""
    num_outputs = _check_num_outputs(num_outputs)
    channels = _check_sizes("channels", channels)
    kernel_size = _check_positive("kernel_size", kernel_size)
    stride = _check_positive("stride", stride)
    act = _activation(activation)
    batchnorm = bool(batchnorm)
    ghost_batch_size = _check_ghost(ghost_batch_size, batchnorm)
    expected = "(N, L) or (N, L, C)" if ndim == 1 else "(N, H, W) or (N, H, W, C)"

    def with_channels(x):
        if x.ndim == ndim + 1:
            return x[..., None]
        if x.ndim != ndim + 2:
            raise InputError(f"x.shape={x.shape} is invalid for cnn{ndim}d: expected {expected}")
        return x

    def init(key, x):
        *sizes, in_channels = with_channels(x).shape[1:]
        keys = jax.random.split(key, len(channels) + 1)
        params, state = {}, {}
        for i, out_channels in enumerate(channels):
            params[f"conv_{i}"] = _conv_init(
                keys[i], kernel_size, in_channels, out_channels, use_bias=not batchnorm, ndim=ndim
            )
            if batchnorm:
                params[f"bn_{i}"], state[f"bn_{i}"] = bn.init(out_channels)
            in_channels = out_channels
            sizes = [-(-n // stride) for n in sizes]  # "SAME" padding: ceil(size / stride)
        params["dense_0"] = _dense_init(keys[-1], math.prod(sizes) * in_channels, num_outputs)
        return params, state

    def apply(params, state, x, *, train, mask=None, bn_momentum=0.99):
        h = with_channels(x)
        new_state = {}
        for i in range(len(channels)):
            h = _conv(params[f"conv_{i}"], h, stride)
            if batchnorm:
                h, new_state[f"bn_{i}"] = _batchnorm(
                    params[f"bn_{i}"],
                    state[f"bn_{i}"],
                    h,
                    train=train,
                    mask=mask,
                    momentum=bn_momentum,
                    ghost_batch_size=ghost_batch_size,
                )
            h = act(h)
        return _dense(params["dense_0"], _flatten(h)), new_state

    return Model(init, apply)


MODELS: dict[str, Callable[..., Model]] = {"linear": linear, "mlp": mlp, "cnn1d": cnn1d, "cnn2d": cnn2d}


def _freeze(value):
    """Lists to tuples, recursively, so options can key a cache."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@functools.lru_cache(maxsize=256)
def _create_cached(name: str, num_outputs: int, options: tuple) -> Model:
    return MODELS[name](num_outputs, **dict(options))


def create(name: str, num_outputs: int, **options) -> Model:
    """The model ``MODELS[name](num_outputs, **options)``, the same object for equal arguments.

    Memoized so that a :class:`Model`, used as a static argument of ``jax.jit``,
    does not trigger a recompile when it is asked for again. Lists in options
    are read as tuples.

    Args:
      name: ``"linear"``, ``"mlp"`` or ``"cnn1d"``.
      num_outputs: number of outputs.
      **options: keyword arguments of the factory (``hidden``, ``batchnorm``, ...).

    Raises:
      ValueError: for an unknown name or option, or a bad option value.
    """
    if name not in MODELS:
        raise InputError(f"model={name!r} is invalid: expected one of {', '.join(map(repr, MODELS))}")
    valid = [p for p in inspect.signature(MODELS[name]).parameters if p != "num_outputs"]
    for key in options:
        if key not in valid:
            takes = f"expected one of {', '.join(map(repr, valid))}" if valid else "it takes none"
            raise InputError(f"option {key!r} is invalid for model={name!r}: {takes}")
    num_outputs = _check_num_outputs(num_outputs)
    frozen = tuple(sorted((k, _freeze(v)) for k, v in options.items()))
    try:
        hash(frozen)
    except TypeError:
        return MODELS[name](num_outputs, **options)
    return _create_cached(name, num_outputs, frozen)


# ------------------------------------------------------------------- flax


def from_flax(module) -> Model:
    """Wrap a ``flax.linen`` module, with or without a ``batch_stats`` collection, as a Model;
    an NNX module's constructor goes to :func:`from_nnx`.

    ``init(key, x)`` calls ``module.init(key, x, train=False)`` when the
    module's ``__call__`` takes ``train`` (else ``module.init(key, x)``) and
    returns ``(variables["params"], variables.get("batch_stats", {}))``.
    ``apply`` runs ``module.apply`` with ``batch_stats`` mutable in training
    mode and returns the updated statistics.

    Limits: a flax module owns its batch-norm momentum and knows nothing of
    padding, so ``bn_momentum`` is ignored, and a ``mask`` cannot be honoured.
    Passing a ``mask`` in training mode to a module with batch statistics
    raises ``ValueError`` rather than silently including padded rows in the
    statistics: sweep such models with the ``bucket`` batch-size strategy.
    Modules that need other collections or RNGs (dropout) are not supported.

    Args:
      module: a ``flax.linen.Module``, or an NNX constructor (see :func:`from_nnx`).

    Returns:
      A :class:`Model`; equal (hashable) modules give the same object.
    """
    if not _is_linen(module):
        return from_nnx(module)
    try:
        hash(module)
    except TypeError:
        return _from_flax(module)
    return _from_flax_cached(module)


@functools.lru_cache(maxsize=64)
def _from_flax_cached(module) -> Model:
    return _from_flax(module)


def _from_flax(module) -> Model:
    try:
        takes_train = "train" in inspect.signature(module.__call__).parameters
    except (TypeError, ValueError, AttributeError) as e:
        raise InputError(f"module={module!r} is invalid: expected a flax.linen Module") from e
    train_kwargs = (lambda train: {"train": train}) if takes_train else (lambda train: {})

    def init(key, x):
        variables = dict(module.init(key, x, **train_kwargs(False)))
        other = sorted(set(variables) - {"params", "batch_stats"})
        if other:
            raise InputError(
                f"module={type(module).__name__} has collections {other}: from_flax supports "
                "only 'params' and 'batch_stats'"
            )
        return variables.get("params", {}), variables.get("batch_stats", {})

    def apply(params, state, x, *, train, mask=None, bn_momentum=0.99):
        del bn_momentum  # the module's own BatchNorm momentum applies
        has_stats = bool(jax.tree.leaves(state))
        if mask is not None and train and has_stats:
            raise InputError(
                f"mask is invalid for the flax module {type(module).__name__} with batch "
                "statistics: it cannot exclude padded rows; use the 'bucket' batch-size strategy"
            )
        variables = {"params": params}
        if has_stats:
            variables["batch_stats"] = state
        if train and has_stats:
            outputs, updates = module.apply(variables, x, mutable=["batch_stats"], **train_kwargs(True))
            return outputs, updates["batch_stats"]
        return module.apply(variables, x, **train_kwargs(train)), state

    return Model(init, apply, f"{type(module).__module__}.{type(module).__qualname__}")


def _is_linen(module) -> bool:
    import flax.linen

    return isinstance(module, flax.linen.Module)


def from_nnx(constructor) -> Model:
    """Wrap a flax NNX module as a Model, from its constructor.

    ``constructor(rngs) -> nnx.Module`` (the module class itself when it takes
    only ``rngs``, else e.g. ``lambda rngs: MLP(64, 10, rngs=rngs)``): ``init(key,
    x)`` calls it with ``nnx.Rngs(key)``, inside the compiled and vmapped
    program, so every seed initializes its own parameters; it returns the
    module's ``nnx.Param`` state as ``params`` (what the optimizer trains) and
    its ``nnx.BatchStat`` state as ``state``. The graph is split once, outside:
    ``apply`` merges it with the two states, sets the module to training or
    evaluation mode (``module.train()`` / ``module.eval()``: a Python choice
    while tracing, so both modes share one compiled program), calls it on
    ``x`` and returns the outputs and the updated batch statistics.

    Limits, as :func:`from_flax`: the module's own ``BatchNorm`` momentum applies
    (``bn_momentum`` is ignored), and a ``mask`` in training mode with batch
    statistics raises :class:`jaxopt_lab.errors.InputError` (sweep such models
    with the ``bucket`` strategy). Variables other than ``Param`` and
    ``BatchStat`` (the RNG state of dropout, ...) are refused.

    Example:
      >>> from flax import nnx
      >>> class Net(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.dense = nnx.Linear(3, 2, rngs=rngs)
      ...         self.bn = nnx.BatchNorm(2, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.bn(self.dense(x))
      >>> model = from_nnx(Net)
      >>> params, state = model.init(jax.random.key(0), jnp.ones((4, 3)))
      >>> out, new_state = model.apply(params, state, jnp.ones((4, 3)), train=True)
      >>> out.shape, sorted(new_state["bn"])
      ((4, 2), ['mean', 'var'])
    """
    from flax import nnx

    if isinstance(constructor, nnx.Module):
        raise InputError(
            f"module={type(constructor).__name__} instance is invalid: expected its constructor, "
            f"e.g. from_nnx(lambda rngs: {type(constructor).__name__}(..., rngs=rngs)), so that "
            "each seed initializes its own parameters"
        )
    if not callable(constructor):
        raise InputError(
            f"module={constructor!r} is invalid: expected a flax.linen Module or an NNX "
            "constructor rngs -> nnx.Module"
        )

    def build(key):
        module = constructor(nnx.Rngs(key))
        if not isinstance(module, nnx.Module):
            raise InputError(
                f"module={constructor!r} is invalid: it returned {type(module).__name__}, "
                "expected an nnx.Module"
            )
        return module

    abstract = nnx.eval_shape(lambda: build(jax.random.key(0)))
    graphdef, _, _, rest = nnx.split(abstract, nnx.Param, nnx.BatchStat, ...)
    if jax.tree.leaves(rest):
        kinds = sorted({type(v).__name__ for _, v in nnx.to_flat_state(rest)})
        raise InputError(
            f"module={type(abstract).__name__} holds {', '.join(kinds)} variables: from_nnx "
            "supports only nnx.Param and nnx.BatchStat"
        )

    def init(key, x):
        del x  # an NNX module is built with its shapes
        _, params, state = nnx.split(build(key), nnx.Param, nnx.BatchStat)
        return params, state

    def apply(params, state, x, *, train, mask=None, bn_momentum=0.99):
        del bn_momentum  # the module's own BatchNorm momentum applies
        has_stats = bool(jax.tree.leaves(state))
        if mask is not None and train and has_stats:
            raise InputError(
                f"mask is invalid for the NNX module {type(abstract).__name__} with batch "
                "statistics: it cannot exclude padded rows; use the 'bucket' batch-size strategy"
            )
        module = nnx.merge(graphdef, params, state, copy=True)  # Variables of this trace
        if train:
            module.train()
        else:
            module.eval()
        outputs = module(x)
        new_state = nnx.state(module, nnx.BatchStat)
        return outputs, new_state

    return Model(init, apply, qualified_name(constructor))
