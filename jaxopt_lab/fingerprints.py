"""Names and fingerprints of the Python objects a sweep is given, for its ``sweep.toml``.

A sweep can run a model, an optimizer factory or a loss that exists only in
the caller's Python process. The definition file records each by its
qualified name and a SHA-256 *fingerprint* of what determines its numbers, so
that a resume with another object under the same name is refused, and a
``--config`` on the file can say what must be passed from Python.

The fingerprint of a function covers its bytecode and constants, its default
arguments, the values its closure captured and the functions, classes and
constants of its own module that it refers to by name, recursively; a class
adds its methods, an object its attributes, an array its dtype, shape and
bytes. Code of the libraries the field installs (jax, optax, flax, ...) is
identified by its qualified name only (its version pins it), though what a
library function captured from the caller (a module inside ``from_nnx``'s
closures) is still covered.

Example:
  >>> def weighted(c):
  ...     return lambda outputs, targets: c * (outputs - targets) ** 2
  >>> describe(weighted(2.0))["name"]
  'jaxopt_lab.fingerprints.weighted.<locals>.<lambda>'
  >>> fingerprint(weighted(2.0)) == fingerprint(weighted(2.0))
  True
  >>> fingerprint(weighted(2.0)) == fingerprint(weighted(3.0))
  False
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import types
from typing import Any

import numpy as np

__all__ = ["qualified_name", "fingerprint", "describe"]

# Installed libraries: their code is named, not hashed.
_LIBRARIES = ("jax", "jaxlib", "optax", "flax", "chex", "numpy", "jaxopt_lab", "builtins", "functools")


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a function or class, or of an object's class; an object that
    names itself (a method ``fingerprint_name()``: a
    :class:`~jaxopt_lab.nn.models.Model`, its own name or its ``init``'s; an
    :class:`~jaxopt_lab.Optimizer`, its factory's) by that name."""
    if isinstance(obj, functools.partial):
        return qualified_name(obj.func)
    if not isinstance(obj, type) and callable(getattr(obj, "fingerprint_name", None)):
        return obj.fingerprint_name()
    target = obj if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)) else type(obj)
    if isinstance(obj, types.MethodType):
        target = obj.__func__
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__qualname__', type(target).__name__)}"


def fingerprint(obj: Any) -> str:
    """The SHA-256 (hex) of what determines ``obj``'s behaviour, as the module describes."""
    digest = hashlib.sha256()
    _feed(digest, obj, set())
    return digest.hexdigest()


def describe(obj: Any) -> dict[str, str]:
    """``{"name": qualified_name(obj), "sha256": fingerprint(obj)}``: what ``sweep.toml`` records."""
    return {"name": qualified_name(obj), "sha256": fingerprint(obj)}


def _is_library(obj) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in _LIBRARIES


def _feed(digest, obj, seen: set[int]) -> None:  # noqa: C901 - one case per kind of object
    def put(*parts):
        for part in parts:
            digest.update(str(part).encode())
            digest.update(b"\0")

    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        put(type(obj).__name__, repr(obj))
        return
    if id(obj) in seen:
        put("<seen>")
        return
    seen.add(id(obj))
    if isinstance(obj, (list, tuple, set, frozenset)) and not hasattr(obj, "_fields"):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        put(type(obj).__name__, len(items))
        for item in items:
            _feed(digest, item, seen)
        return
    if isinstance(obj, dict):
        put("dict", len(obj))
        for key in sorted(obj, key=repr):
            _feed(digest, key, seen)
            _feed(digest, obj[key], seen)
        return
    if hasattr(obj, "__array__") and hasattr(obj, "dtype") and hasattr(obj, "shape"):
        array = np.asarray(obj)
        put("array", array.dtype, array.shape)
        digest.update(np.ascontiguousarray(array).tobytes())
        return
    if isinstance(obj, functools.partial):
        put("partial")
        for part in (obj.func, obj.args, obj.keywords):
            _feed(digest, part, seen)
        return
    if isinstance(obj, types.MethodType):
        put("method")
        _feed(digest, obj.__func__, seen)
        _feed(digest, obj.__self__, seen)
        return
    if isinstance(obj, types.FunctionType):
        put("function", qualified_name(obj))
        if not _is_library(obj):
            _feed_code(digest, obj.__code__, put)
            _feed(digest, obj.__defaults__, seen)
            _feed(digest, obj.__kwdefaults__, seen)
            for name in _names(obj.__code__):  # what it calls or reads from its own module
                value = obj.__globals__.get(name)
                if isinstance(value, (int, float, str, bool, tuple)) or (
                    isinstance(value, (types.FunctionType, type))
                    and getattr(value, "__module__", None) == obj.__module__
                ):
                    put(name)
                    _feed(digest, value, seen)
        for cell in obj.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                contents = "<empty>"
            _feed(digest, contents, seen)
        return
    if isinstance(obj, type):
        put("class", qualified_name(obj))
        if not _is_library(obj):
            for name, value in sorted(vars(obj).items()):
                if isinstance(value, (types.FunctionType, staticmethod, classmethod, property)):
                    put(name)
                    _feed(digest, getattr(value, "__func__", getattr(value, "fget", value)), seen)
                elif isinstance(value, (int, float, str, bool, tuple)) and not name.startswith("__"):
                    put(name, repr(value))
            for base in obj.__bases__:
                _feed(digest, base, seen)
        return
    if isinstance(obj, (types.BuiltinFunctionType, types.ModuleType)):
        put(type(obj).__name__, qualified_name(obj))
        return
    # An instance: its class and its state.
    put("instance")
    _feed(digest, type(obj), seen)
    if dataclasses.is_dataclass(obj):
        for field in dataclasses.fields(obj):
            put(field.name)
            _feed(digest, getattr(obj, field.name, None), seen)
    elif hasattr(obj, "_fields"):  # a NamedTuple
        for name in obj._fields:
            put(name)
            _feed(digest, getattr(obj, name), seen)
    elif hasattr(obj, "__dict__"):
        _feed(digest, {k: v for k, v in vars(obj).items() if not k.startswith("_")}, seen)
    else:
        put(repr(obj))


def _feed_code(digest, code: types.CodeType, put) -> None:
    put(code.co_code.hex(), code.co_names, code.co_varnames)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(digest, const, put)
        else:
            put(repr(const))


def _names(code: types.CodeType):
    """The global names ``code`` and the code nested in it refer to."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)
