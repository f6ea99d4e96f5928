"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable
from typing import Any

import pandas as pd

__all__ = ["atomic_write_bytes", "atomic_write_with", "atomic_write_parquet"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same folder (so the rename stays on
    one filesystem), are flushed to disk, then ``os.replace`` moves it over
    ``path``. On any exception, KeyboardInterrupt included, the temporary file
    is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    # 0o666 through the umask: the same permissions a plain open() would give.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_with(path: str | os.PathLike, write: Callable[[io.BytesIO], Any]) -> None:
    """Write what ``write(buffer)`` puts into a buffer to ``path``, atomically."""
    buffer = io.BytesIO()
    write(buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``frame`` (without its index) as a parquet file, atomically."""
    atomic_write_with(path, lambda buffer: frame.to_parquet(buffer, index=False))
