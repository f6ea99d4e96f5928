"""The output folder of a sweep: its files, written atomically, and what it may hold.

An output folder holds three files, each written atomically (to a temporary
file in the same folder, then ``os.replace``) so an interrupt never leaves a
half-written one:

- ``results.parquet``: the table;
- ``summary.csv``: :func:`~jaxopt_lab.analysis.tables.summary` of the table, one row per config;
- ``sweep.toml``: the sweep's full definition, enough to run it again
  (:mod:`~jaxopt_lab.outputs.schema`);

and, while a sweep runs, ``chunks/`` (each finished chunk's rows) and the
checkpoints of running chunks (:mod:`~jaxopt_lab.outputs.checkpoints`).
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from jaxopt_lab.analysis import tables as tables_lib
from jaxopt_lab.errors import InputError
from jaxopt_lab.outputs import schema as schema_lib
from jaxopt_lab.outputs.atomic import atomic_write_bytes, atomic_write_parquet, atomic_write_with
from jaxopt_lab.outputs.checkpoints import CHECKPOINT_DIR, ChunkCheckpoint

__all__ = [
    "Folder",
    "ARGUMENT_NAMES",
    "save",
    "load",
    "SWEEP_FILES",
    "CHUNK_DIR",
    "chunk_file_name",
    "foreign_entries",
    "remove_sweep_files",
    "remove_temporary_files",
    "has_sweep_contents",
    "read_chunk",
]


def save(out_dir: str | os.PathLike, table: pd.DataFrame, definition: Mapping[str, Any]) -> None:
    """Write a sweep's files into ``out_dir`` (created if needed).

    Writes ``results.parquet`` (the table), ``summary.csv`` (:func:`~jaxopt_lab.analysis.tables.summary`)
    and ``sweep.toml`` (``definition``, see :func:`~jaxopt_lab.outputs.schema.write_definition`), each
    atomically. The definition is checked before anything is written.
    """
    tables_lib.check_table(table)
    text = schema_lib.format_definition(definition)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_parquet(table, os.path.join(out_dir, "results.parquet"))
    configs = tables_lib.summary(table)
    atomic_write_with(
        os.path.join(out_dir, "summary.csv"),
        lambda buffer: buffer.write(configs.to_csv(index=False).encode("utf-8")),
    )
    atomic_write_bytes(os.path.join(out_dir, "sweep.toml"), text.encode("utf-8"))


def load(out_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read back what :func:`save` wrote: ``(table, definition)``."""
    out_dir = os.fspath(out_dir)
    for name in ("results.parquet", "sweep.toml"):
        if not os.path.isfile(os.path.join(out_dir, name)):
            raise InputError(f"out_dir {out_dir!r} is invalid: it has no {name}")
    table = pd.read_parquet(os.path.join(out_dir, "results.parquet"))
    return table, schema_lib.read_definition(os.path.join(out_dir, "sweep.toml"))


# --------------------------------------------------------------------------- the output folder

# What a sweep writes into its output folder, and nothing else: `overwrite` removes
# only these, and refuses a folder that holds anything more. The pictures are those of
# `plots.pictures` and of the command's `report`: heatmap.png, curves.png, curves_<column>.png,
# curves_<column>_by_step.png, heatmap_<column>.png.
SWEEP_FILES = ("sweep.toml", "results.parquet", "summary.csv")
_PICTURE = re.compile(r"(heatmap|curves)(_\w+)?\.png")
CHUNK_DIR = "chunks"
_CHUNK_NAME = re.compile(r"group\d{3,}-chunk\d{4,}")  # chunk_file_name's stem
_CHUNK_FILE = re.compile(_CHUNK_NAME.pattern + r"\.parquet(\.corrupt)?")
_TEMPORARY_FILE = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # atomic_write_bytes's


def chunk_file_name(group: int, chunk: int) -> str:
    """The file of a sweep's chunk ``chunk`` of compiled group ``group``, under ``chunks/``."""
    return f"group{group:03d}-chunk{chunk:04d}.parquet"


def foreign_entries(out_dir: str | os.PathLike) -> list[str]:
    """What ``out_dir`` holds that a sweep does not write, as paths relative to it."""
    out_dir = os.fspath(out_dir)
    foreign = []
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        if name == CHECKPOINT_DIR and os.path.isdir(path) and not os.path.islink(path):
            # orbax's folders, one per chunk, whatever they hold
            foreign += [
                os.path.join(name, n) for n in sorted(os.listdir(path)) if not _CHUNK_NAME.fullmatch(n)
            ]
        elif name == CHUNK_DIR and os.path.isdir(path) and not os.path.islink(path):
            for inner in sorted(os.listdir(path)):
                inner_path = os.path.join(path, inner)
                if not (
                    os.path.isfile(inner_path)
                    and (_CHUNK_FILE.fullmatch(inner) or _TEMPORARY_FILE.fullmatch(inner))
                ):
                    foreign.append(os.path.join(name, inner))
        elif not (
            os.path.isfile(path)
            and (name in SWEEP_FILES or _PICTURE.fullmatch(name) or _TEMPORARY_FILE.fullmatch(name))
        ):
            foreign.append(name)
    return foreign


def remove_sweep_files(out_dir: str | os.PathLike) -> None:
    """Remove what a sweep wrote into ``out_dir`` (it must hold nothing else); keep the folder."""
    out_dir = os.fspath(out_dir)
    if foreign_entries(out_dir):
        raise InputError(f"out_dir {out_dir!r} holds files a sweep does not write: not removing them")
    chunks = os.path.join(out_dir, CHUNK_DIR)
    if os.path.isdir(chunks):
        for name in os.listdir(chunks):
            os.remove(os.path.join(chunks, name))
        os.rmdir(chunks)
    shutil.rmtree(os.path.join(out_dir, CHECKPOINT_DIR), ignore_errors=True)
    for name in os.listdir(out_dir):
        os.remove(os.path.join(out_dir, name))


def has_sweep_contents(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` holds anything but what a starting sweep leaves for an instant
    (temporary files of atomic writes, an empty ``chunks/``): a folder that other workers
    of a job array are just creating still counts as empty."""
    out_dir = os.fspath(out_dir)
    for name in os.listdir(out_dir):
        if _TEMPORARY_FILE.fullmatch(name):
            continue
        path = os.path.join(out_dir, name)
        if name == CHUNK_DIR and os.path.isdir(path) and not os.listdir(path):
            continue
        return True
    return False


def remove_temporary_files(out_dir: str | os.PathLike) -> None:
    """Remove the temporary files an interrupted atomic write left in ``out_dir`` and its chunks."""
    for folder in (os.fspath(out_dir), os.path.join(os.fspath(out_dir), CHUNK_DIR)):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if _TEMPORARY_FILE.fullmatch(name):
                    os.remove(os.path.join(folder, name))


def read_chunk(path: str | os.PathLike, expected_columns: Sequence[str]) -> pd.DataFrame | None:
    """A finished chunk's rows, or ``None`` when the file is missing, truncated or corrupt.

    An unreadable file is renamed ``<name>.corrupt`` (kept, so nothing is lost) and a
    warning names it, so the chunk is computed again.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    try:
        frame = pd.read_parquet(path)
        missing = [c for c in expected_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"it lacks the columns {missing}")
    except Exception as err:  # pyarrow raises several types for a damaged file
        aside = path + ".corrupt"
        os.replace(path, aside)
        warnings.warn(
            f"chunk file {path} is unreadable ({type(err).__name__}: {err}); moved it to {aside} "
            "and computing the chunk again",
            stacklevel=2,
        )
        return None
    return frame


# How a folder's errors name the options of the request: sweep()'s own arguments unless
# the caller (the command) gives its spellings.
ARGUMENT_NAMES = {"resume": "resume=True", "overwrite": "overwrite=True", "shard": "shard="}


class Folder:
    """The output folder of one sweep: what ``sweep(out=...)`` checks, reads and writes.

    ``sweep(out="runs/x")`` makes one; pass a ``Folder`` of your own to change how it
    names the options in its errors (``names``, e.g. the command's flags) or whether it
    draws the pictures (``plots``). The engine calls, in order: :meth:`check` (reads
    only), :meth:`prepare` (the writing process), then per chunk :meth:`read_chunk`,
    :meth:`checkpoint` and :meth:`write_chunk`, and :meth:`finish` with the table.

    Args:
      path: the folder.
      plots: draw ``heatmap.png``, ``curves.png`` and the others
        (:func:`jaxopt_lab.outputs.plots.draw`) when the table is written.
      names: how errors name ``resume``, ``overwrite`` and ``shard`` (default
        :data:`ARGUMENT_NAMES`).
    """

    def __init__(
        self, path: str | os.PathLike, *, plots: bool = True, names: Mapping[str, str] | None = None
    ):
        self.path = os.fspath(path)
        self.plots = plots
        self.names = {**ARGUMENT_NAMES, **(names or {})}
        self.chunk_dir = os.path.join(self.path, CHUNK_DIR)

    def check(
        self, definition: Mapping[str, Any], *, resume: bool, overwrite: bool, shard=None
    ) -> dict | None:
        """Check what the folder holds against the request; reads only.

        Returns:
          The folder's own definition when resuming one (``resume``), else ``None``.
        """
        n, out = self.names, self.path
        if shard is not None and overwrite:  # a shard reads the folder: before resume's check
            raise InputError(
                f"{n['shard']}{shard[0]}/{shard[1]} and {n['overwrite']} are exclusive: a worker would "
                "delete the others' chunks"
            )
        if resume and overwrite:
            raise InputError(f"{n['resume']} and {n['overwrite']} are exclusive: give at most one")
        if os.path.exists(out) and not os.path.isdir(out):
            raise InputError(f"output folder {out!r} is a file: expected a folder")
        if not (os.path.isdir(out) and has_sweep_contents(out)):
            return None
        if overwrite:
            foreign = foreign_entries(out)
            if foreign:
                shown = ", ".join(map(repr, foreign[:3])) + (", ..." if len(foreign) > 3 else "")
                raise InputError(
                    f"output folder {out!r} holds files a sweep does not write ({shown}): overwrite "
                    "replaces only a sweep's own files; choose another folder"
                )
            return None
        if not resume:
            raise InputError(
                f"output folder {out!r} is not empty: pass {n['resume']} to finish it or {n['overwrite']} "
                "to replace it"
            )
        path = os.path.join(out, "sweep.toml")
        if not os.path.exists(path):
            raise InputError(f"cannot resume {out!r}: it holds no sweep.toml")
        stored = schema_lib.read_definition(path)
        difference = schema_lib.difference(stored, definition)
        if difference:
            raise InputError(f"cannot resume {out!r}: its sweep differs from this one: {difference}")
        return stored

    def prepare(self, definition: Mapping[str, Any], *, overwrite: bool, clean: bool) -> None:
        """Create the folder and write ``sweep.toml``; with ``overwrite`` first remove what a
        sweep wrote there, with ``clean`` the temporary files a killed write left (not while
        other workers of a job array may be writing)."""
        out = self.path
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as err:
            raise InputError(f"out={out!r} is invalid: cannot create that folder ({err.strerror})") from None
        if not os.access(out, os.W_OK | os.X_OK):
            raise InputError(f"out={out!r} is invalid: the folder is not writable")
        if overwrite:
            remove_sweep_files(out)
        if clean:
            remove_temporary_files(out)
        os.makedirs(self.chunk_dir, exist_ok=True)
        schema_lib.write_definition(os.path.join(out, "sweep.toml"), definition)

    def read_chunk(self, group: int, chunk: int, columns: Sequence[str]) -> pd.DataFrame | None:
        """A finished chunk's rows (:func:`read_chunk`), or ``None``."""
        return read_chunk(os.path.join(self.chunk_dir, chunk_file_name(group, chunk)), columns)

    def write_chunk(self, group: int, chunk: int, frame: pd.DataFrame) -> None:
        atomic_write_parquet(frame, os.path.join(self.chunk_dir, chunk_file_name(group, chunk)))

    def checkpoint(self, group: int, chunk: int, every: float, *, fresh: bool) -> ChunkCheckpoint:
        """The checkpoints of a running chunk; ``fresh`` drops any left from an earlier sweep."""
        name = os.path.splitext(chunk_file_name(group, chunk))[0]
        folder = os.path.join(self.path, CHECKPOINT_DIR, name)
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        return ChunkCheckpoint(folder, every)

    def finish(self, table: pd.DataFrame, definition: Mapping[str, Any]) -> None:
        """Write the table, its summary, ``sweep.toml`` and (``plots``) the pictures."""
        save(self.path, table, definition)
        if self.plots:
            from jaxopt_lab.outputs import plots as plots_lib

            plots_lib.draw(table, self.path)
