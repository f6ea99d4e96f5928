"""``sweep.toml``: the definition of a sweep, enough to run it again, and its TOML.

A definition is a dict of the tables :data:`DEFINITION_TABLES`. This module is
the one place that knows them: :func:`definition_of` builds a sweep's from its spec
and grid, :func:`difference` compares a folder's with a request (for a resume),
:func:`sweep_arguments` and :func:`python_objects` read one back into ``sweep()``'s
arguments (the command's ``--config``), and :func:`write_definition` /
:func:`read_definition` are its TOML (floats with ``repr``, so they read back bit
for bit; an unknown table is refused).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxopt_lab import data as data_lib
from jaxopt_lab import fingerprints as fingerprints_lib
from jaxopt_lab.engine import spec as spec_lib
from jaxopt_lab.errors import InputError
from jaxopt_lab.measure import measurements as measure_lib
from jaxopt_lab.optim import families as families_lib
from jaxopt_lab.outputs.atomic import atomic_write_bytes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = [
    "DEFINITION_TABLES",
    "definition_of",
    "difference",
    "sweep_arguments",
    "python_objects",
    "write_definition",
    "read_definition",
    "format_definition",
]

# The top-level tables a sweep.toml may hold; anything else is a typo worth an error.
DEFINITION_TABLES = (
    "spec",
    "model_options",
    "dataset_options",
    "optimizer_flags",
    "grid",
    "sweep",
    "measure",  # measurement name -> its options (TrainSpec.measure)
    "target",  # TrainSpec.target's fields
    "objects",  # what was given as Python objects: {name, sha256} each (jaxopt_lab.fingerprints)
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _choices(names) -> str:
    return ", ".join(map(repr, names))


def definition_of(spec: spec_lib.TrainSpec, grid, strategy: str, chunk_size, epochs) -> dict:
    """The definition of a sweep, as ``sweep.toml`` holds it: enough to run it again.

    Python objects (a model, a loss, an optimizer family, a measurement function) are
    written by qualified name, with a fingerprint of their code in ``[objects]``."""
    objects = {}  # what came as Python objects: by qualified name and fingerprint
    spec_fields = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name in ("dataset_options", "model_options", "optimizer_flags", "measure", "target"):
            continue
        if f.name in ("model", "loss") and not isinstance(value, str):
            objects[f.name] = fingerprints_lib.describe(value)
            value = spec_lib.PYTHON_PREFIX + objects[f.name]["name"]
        if f.name == "optimizer":
            value = families_lib.resolve(value).name
        if f.name == "dataset" and isinstance(value, data_lib.DatasetRef):
            value = f"arrays:{value.dataset.name}"
        if value is None:  # TOML has no null: absent means the default
            continue
        spec_fields[f.name] = value
    if epochs is not None:
        spec_fields["epochs"] = float(epochs)
        spec_fields.pop("steps")

    def table(pairs):  # TOML has lists, not tuples: write what reads back equal
        return {k: list(v) if isinstance(v, tuple) else v for k, v in pairs}

    definition = {
        "spec": spec_fields,
        "model_options": table(spec.model_options),
        "dataset_options": (
            {"arrays": spec.dataset.fingerprint()}  # a resume with other arrays is refused
            if isinstance(spec.dataset, data_lib.DatasetRef)
            else table(spec.dataset_options)
        ),
        "optimizer_flags": table(spec.optimizer_flags),
        "grid": {
            k: [families_lib.resolve(o).name for o in v] if k == "optimizer" else list(v)
            for k, v in grid.axes.items()
        },
        "sweep": {"strategy": strategy, **({"chunk_size": chunk_size} if chunk_size else {})},
    }
    if spec.measure:  # [measure.<name>] with its options; a function by qualified name
        definition["measure"] = {}
        for m in spec.measure:
            if isinstance(m, measure_lib.Custom):
                objects.setdefault("measure", {})[m.label()] = fingerprints_lib.describe(m.fn)
                definition["measure"][spec_lib.PYTHON_PREFIX + m.label()] = {}
            else:
                definition["measure"][m.name] = m.options()
    if spec.target is not None:
        definition["target"] = dataclasses.asdict(spec.target)
    families = [families_lib.resolve(o) for o in grid.axes.get("optimizer", (spec.optimizer,))]
    custom = {
        f.name: fingerprints_lib.describe(f) for f in families if families_lib.REGISTRY.get(f.name) != f
    }
    if custom:
        objects["optimizer"] = custom
    if objects:
        definition["objects"] = objects
    return definition


# Options that change only how fast a sweep runs: a resume keeps the folder's.
_SPEED_ONLY = (("sweep", "chunk_size"), ("sweep", "chunk_widths"))


def difference(stored: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """The first key in which two definitions differ, in words; ``None`` if they agree.

    The order of a grid axis's values does not count, nor do options that change
    only speed (``chunk_size``).
    """

    def canonical(table, key, value):
        if table == "grid" and isinstance(value, list):
            return sorted(value, key=repr)
        return value

    # A spec field a folder's sweep.toml lacks (written before the field existed) has its default.
    spec_defaults = {f.name: f.default for f in dataclasses.fields(spec_lib.TrainSpec)}
    for table in sorted(set(stored) | set(now)):
        old, new = stored.get(table, {}), now.get(table, {})
        for key in sorted(set(old) | set(new)):
            if (table, key) in _SPEED_ONLY:
                continue
            default = spec_defaults.get(key) if table == "spec" else None
            a = canonical(table, key, old.get(key, default))
            b = canonical(table, key, new.get(key, default))
            if a != b:
                shown = [repr(v) if v is not None else "absent" for v in (old.get(key), new.get(key))]
                return f"[{table}] {key} is {shown[0]} in the folder and {shown[1]} now"
    return None


def sweep_arguments(definition: Mapping[str, Any]) -> tuple[dict, dict]:
    """What a definition asks ``sweep()`` for: the spec (with its option tables) and the
    sweep's options (``strategy``, ``chunk_size``); the grid is ``definition["grid"]``."""
    spec = dict(definition["spec"])
    for table in ("model_options", "dataset_options", "optimizer_flags", "measure", "target"):
        if definition.get(table):
            spec[table] = definition[table]
    options = dict(definition.get("sweep", {}))
    options.pop("chunk_widths", None)  # how a folder was cut: the sweep reads it from the folder
    unknown = sorted(set(options) - {"strategy", "chunk_size"})
    if unknown:
        raise InputError(f"[sweep] key {unknown[0]!r} is invalid: expected 'strategy' or 'chunk_size'")
    return spec, options


def python_objects(definition: Mapping[str, Any]) -> list[str]:
    """The Python objects a definition was run with (``[objects]``), in words: a sweep with
    any runs only from Python, given the same objects."""
    objects = definition.get("objects", {})
    named = [
        f"{kind} {entry['name']}" for kind, entry in objects.items() if kind not in ("optimizer", "measure")
    ]
    named += [f"optimizer {name} ({entry['name']})" for name, entry in objects.get("optimizer", {}).items()]
    named += [f"measure {entry['name']}" for entry in objects.get("measure", {}).values()]
    return named


def write_definition(path: str | os.PathLike, definition: Mapping[str, Any]) -> None:
    """Write a sweep definition as TOML, atomically.

    ``definition`` maps table names from :data:`DEFINITION_TABLES` to tables
    of scalars (str, bool, int, float), lists of them, or nested tables. Floats
    are written with ``repr``, so they read back bit for bit; ``inf`` and
    ``nan`` are valid TOML. TOML has no null: a ``None`` value is an error.
    """
    atomic_write_bytes(path, format_definition(definition).encode("utf-8"))


def read_definition(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a ``sweep.toml`` into a definition dict.

    Raises:
      ValueError: one line naming the file, for a missing file, malformed
        TOML (with the parser's line and column) or a top-level key that is
        not one of :data:`DEFINITION_TABLES`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"path {path!r} is invalid: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        definition = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(f"malformed TOML in {path}: not UTF-8 text ({err.reason})") from None
    except tomllib.TOMLDecodeError as err:
        message = " ".join(str(err).split())
        raise InputError(f"malformed TOML in {path}: {message}") from None
    for name, value in definition.items():
        if name not in DEFINITION_TABLES or not isinstance(value, dict):
            kind = "table" if isinstance(value, dict) else "key"
            raise InputError(
                f"unknown top-level {kind} {name!r} in {path}: expected tables {_choices(DEFINITION_TABLES)}"
            )
    return definition


def format_definition(definition: Mapping[str, Any]) -> str:
    """The TOML text of ``definition`` (what :func:`write_definition` writes)."""
    if not isinstance(definition, Mapping):
        raise InputError(
            f"definition of type {type(definition).__name__} is invalid: expected a dict of tables"
        )
    lines: list[str] = []
    for name, table in definition.items():
        if name not in DEFINITION_TABLES:
            raise InputError(
                f"definition table {name!r} is invalid: expected one of {_choices(DEFINITION_TABLES)}"
            )
        if not isinstance(table, Mapping):
            raise InputError(
                f"definition[{name!r}] of type {type(table).__name__} is invalid: expected a dict"
            )
        _format_table([name], table, lines)
    return "\n".join(lines) + "\n"


def _format_table(path: list[str], table: Mapping[str, Any], lines: list[str]) -> None:
    if lines:
        lines.append("")
    lines.append("[" + ".".join(_format_key(k) for k in path) + "]")
    # TOML puts a table's own keys before its sub-tables.
    subtables = []
    for key, value in table.items():
        if not isinstance(key, str):
            raise InputError(f"key {key!r} in [{'.'.join(path)}] is invalid: expected a string")
        if isinstance(value, Mapping):
            subtables.append((key, value))
        else:
            lines.append(f"{_format_key(key)} = {_format_value(value, [*path, key])}")
    for key, value in subtables:
        _format_table([*path, key], value, lines)


def _format_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _format_string(key)


def _format_string(text: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _format_value(value: Any, path: list[str]) -> str:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest string that parses back to the same double
    if isinstance(value, str):
        return _format_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_value(v, path) for v in value) + "]"
    where = ".".join(path)
    if value is None:
        raise InputError(f"{where} is None: TOML has no null, leave the key out instead")
    raise InputError(
        f"{where} of type {type(value).__name__} is invalid: expected a str, bool, int, float, list or dict"
    )
