"""Optimizer families for the sweep engine: a factory, its traced and its static hyperparameters.

An optimizer family is a value::

    Optimizer(factory, hparams={"learning_rate": 1e-3, "weight_decay": 1e-4}, static={}, name="adamw")

``factory(**hparams, **static)`` returns an ``optax.GradientTransformation``. The
engine calls it inside the compiled, vmapped program, so every entry of
``hparams`` is a traced scalar and may be a sweep axis: a clipping threshold or
a decay inside the user's own chain as well as a learning rate. Entries of
``static`` change code (flags, masks, dtypes); each distinct value selects a
compiled group, and they may be grid axes too (``nesterov=[False, True]`` makes
two groups). ``hparams`` must hold ``learning_rate``: the engine rescales it for
the batch size (``TrainSpec.lr_rule``) and reports it.

Weight decay: a family whose ``hparams`` hold ``weight_decay`` (AdamW, Lion,
LAMB, ...) applies it itself, and the grid's ``weight_decay`` axis goes to its
factory; for the others the engine adds coupled (L2) decay before the
optimizer, as ``optax.add_decayed_weights``.

:data:`REGISTRY` holds the built-in families by name, this package's
transforms and optax's aliases alike; every name the command and
``Grid(optimizer=[...])`` accept is an entry of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_lab.errors import InputError
from jaxopt_lab.fingerprints import qualified_name
from jaxopt_lab.optim import transforms

__all__ = ["Optimizer", "REGISTRY", "resolve", "check_traceable"]


def _frozen(mapping) -> tuple[tuple[str, Any], ...]:
    if isinstance(mapping, Mapping):
        mapping = mapping.items()
    return tuple((str(k), tuple(v) if isinstance(v, list) else v) for k, v in mapping)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """An optimizer family: ``factory(**hparams, **static) -> optax.GradientTransformation``.

    Attributes:
      factory: builds the transformation; called with traced ``hparams`` inside
        the compiled program, so it must not branch in Python on them.
      hparams: the traced hyperparameters with their defaults (``learning_rate``
        among them); each may be a sweep axis.
      static: keyword arguments that change code, with their defaults; each
        distinct value compiles a group of its own.
      name: the name in tables, plots and ``sweep.toml`` (default: the factory's).

    Example:
      >>> import optax
      >>> def clipped_adamw(learning_rate, clip, weight_decay):
      ...     return optax.chain(optax.clip_by_global_norm(clip),
      ...                        optax.adamw(learning_rate, weight_decay=weight_decay))
      >>> family = Optimizer(clipped_adamw, hparams={"learning_rate": 1e-3, "clip": 1.0,
      ...                                            "weight_decay": 1e-4})
      >>> family.name, family.hparam_names
      ('clipped_adamw', ('learning_rate', 'clip', 'weight_decay'))
    """

    factory: Callable[..., optax.GradientTransformation]
    hparams: Any = ()
    static: Any = ()
    name: str | None = None

    def fingerprint_name(self) -> str:
        """The qualified name a sweep records for a family given as a Python object: its
        factory's."""
        return qualified_name(self.factory)

    def __post_init__(self):
        if not callable(self.factory):
            raise InputError(
                f"factory={self.factory!r} is invalid: expected a callable returning an optax "
                "GradientTransformation"
            )
        object.__setattr__(self, "hparams", _frozen(self.hparams))
        object.__setattr__(self, "static", _frozen(self.static))
        names = [k for k, _ in self.hparams]
        if "learning_rate" not in names:
            raise InputError(
                f"hparams={dict(self.hparams)!r} is invalid: expected a 'learning_rate' entry "
                "(the engine scales it with the batch size and reports it)"
            )
        for key, value in self.hparams:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise InputError(
                    f"hparams[{key!r}]={value!r} is invalid: expected a number (a traced "
                    "hyperparameter); flags, masks and dtypes go in static"
                )
        for key, value in self.static:
            try:
                hash(value)
            except TypeError:
                raise InputError(
                    f"static[{key!r}]={value!r} is invalid: a static value selects a compiled group and "
                    "must be hashable (a tuple, not a list or dict; a function for a mask)"
                ) from None
        both = sorted(set(names) & {k for k, _ in self.static})
        if both:
            raise InputError(f"{both[0]!r} is in both hparams and static: expected one of them")
        if self.name is None:
            object.__setattr__(self, "name", getattr(self.factory, "__name__", type(self.factory).__name__))
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"name={self.name!r} is invalid: expected a non-empty string")

    @property
    def hparam_names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.hparams)

    @property
    def defaults(self) -> dict[str, Any]:
        """The traced hyperparameters' defaults."""
        return dict(self.hparams)

    @property
    def static_defaults(self) -> dict[str, Any]:
        return dict(self.static)

    @property
    def owns_weight_decay(self) -> bool:
        """Whether the factory applies weight decay itself (its ``hparams`` hold ``weight_decay``)."""
        return "weight_decay" in self.hparam_names

    def check_static(self, static: Mapping[str, Any]) -> None:
        """Raise :class:`InputError` for a static keyword (a flag) this family does not take."""
        unknown = sorted(set(dict(static)) - set(self.static_defaults))
        if unknown:
            valid = ", ".join(map(repr, self.static_defaults))
            takes = f"expected one of {valid}" if self.static else "it takes none"
            raise InputError(f"optimizer flag {unknown[0]!r} is invalid for optimizer={self.name!r}: {takes}")

    def build(
        self, hparams: Mapping[str, Any], static: Mapping[str, Any] = ()
    ) -> optax.GradientTransformation:
        """The transformation at ``hparams`` (missing ones take their defaults) and ``static``
        (over the defaults). Unknown keys raise :class:`InputError`."""
        unknown = sorted(set(hparams) - set(self.hparam_names))
        if unknown:
            raise InputError(
                f"hyperparameter {unknown[0]!r} is invalid for optimizer={self.name!r}: "
                f"expected one of {', '.join(map(repr, self.hparam_names))}"
            )
        static = dict(static)
        self.check_static(static)
        return self.factory(**{**self.defaults, **hparams}, **{**self.static_defaults, **static})


# ------------------------------------------------------------------- built-in families


def _lars(learning_rate, weight_decay, trust_coefficient, eps, beta, **flags):
    # A momentum coefficient is `beta` in every family (`bn_momentum` is batch norm's);
    # optax.lars calls it momentum.
    return optax.lars(
        learning_rate, weight_decay, trust_coefficient=trust_coefficient, eps=eps, momentum=beta, **flags
    )


_ADAM = {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0}

REGISTRY: dict[str, Optimizer] = {
    o.name: o
    for o in (
        # This package's transforms.
        Optimizer(transforms.sgd, {"learning_rate": 0.1}, name="sgd"),
        Optimizer(
            transforms.momentum,
            {"learning_rate": 0.01, "beta": 0.9},
            {"nesterov": False, "ema": False, "bias_correction": False},
            name="momentum",
        ),
        Optimizer(
            transforms.rmsprop,
            {"learning_rate": 1e-3, "decay": 0.9, "eps": 1e-8},
            {"centered": False},
            name="rmsprop",
        ),
        Optimizer(transforms.adam, {"learning_rate": 1e-3, **_ADAM}, {"bias_correction": True}, name="adam"),
        # optax's aliases, with optax's defaults.
        Optimizer(
            optax.adamw,
            {"learning_rate": 1e-3, **_ADAM, "weight_decay": 1e-4},
            {"nesterov": False},
            name="adamw",
        ),
        Optimizer(optax.nadam, {"learning_rate": 1e-3, **_ADAM}, name="nadam"),
        Optimizer(optax.nadamw, {"learning_rate": 1e-3, **_ADAM, "weight_decay": 1e-4}, name="nadamw"),
        Optimizer(
            optax.lion, {"learning_rate": 1e-4, "b1": 0.9, "b2": 0.99, "weight_decay": 1e-3}, name="lion"
        ),
        Optimizer(
            optax.lamb,
            {
                "learning_rate": 1e-3,
                "b1": 0.9,
                "b2": 0.999,
                "eps": 1e-6,
                "eps_root": 0.0,
                "weight_decay": 0.0,
            },
            name="lamb",
        ),
        Optimizer(
            _lars,
            {
                "learning_rate": 0.1,
                "weight_decay": 0.0,
                "trust_coefficient": 0.001,
                "eps": 0.0,
                "beta": 0.9,
            },
            {"nesterov": False},
            name="lars",
        ),
        Optimizer(
            optax.adagrad,
            {"learning_rate": 1e-2, "initial_accumulator_value": 0.1, "eps": 1e-7},
            name="adagrad",
        ),
        Optimizer(
            optax.adabelief,
            {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-16, "eps_root": 1e-16},
            {"nesterov": False},
            name="adabelief",
        ),
        Optimizer(optax.signum, {"learning_rate": 1e-3, "beta": 0.9}, name="signum"),
        Optimizer(optax.sign_sgd, {"learning_rate": 1e-3}, name="sign_sgd"),
        # decay_rate and eps trace; min_dim_size_to_factor, momentum (None or a number:
        # a Python branch) and factored change code.
        Optimizer(
            optax.adafactor,
            {"learning_rate": 1e-2, "decay_rate": 0.8, "clipping_threshold": 1.0, "eps": 1e-30},
            {"min_dim_size_to_factor": 128, "multiply_by_parameter_scale": True, "factored": True},
            name="adafactor",
        ),
    )
}
"""The built-in optimizer families by name."""


def resolve(optimizer: str | Optimizer) -> Optimizer:
    """The family of a registry name, or ``optimizer`` itself."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer in REGISTRY:
        return REGISTRY[optimizer]
    raise InputError(
        f"optimizer={optimizer!r} is invalid: expected one of {', '.join(map(repr, REGISTRY))} "
        "or a jaxopt_lab.Optimizer"
    )


def check_traceable(optimizer: Optimizer, static: Mapping[str, Any], params) -> None:
    """Build ``optimizer`` from traced hyperparameters and trace one update on ``params``'s shapes.

    Raises:
      InputError: naming the first hyperparameter the factory cannot take as a traced
        value (it branches in Python on it), and saying to declare it static.
    """

    def trace(traced_names):
        def run(values, params):
            tx = optimizer.build({**optimizer.defaults, **values}, static)
            state = tx.init(params)
            return tx.update(params, state, params)

        values = {k: jnp.float32(optimizer.defaults[k]) for k in traced_names}
        with jax.numpy_dtype_promotion("standard"):
            jax.eval_shape(run, values, params)

    errors = (
        jax.errors.ConcretizationTypeError,
        jax.errors.TracerBoolConversionError,
        jax.errors.TracerIntegerConversionError,
        TypeError,
    )
    try:
        trace(optimizer.hparam_names)
        return
    except errors:
        pass
    for name in optimizer.hparam_names:
        try:
            trace((name,))
        except errors:
            raise InputError(
                f"optimizer={optimizer.name!r}: its factory cannot take a traced {name!r} (it uses the value "
                f"in Python); declare it static: Optimizer(..., static={{{name!r}: ...}})"
            ) from None
    trace(optimizer.hparam_names)  # fails only together: let the error speak for itself
