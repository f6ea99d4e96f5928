"""Checkpoints inside a chunk, with orbax: on an accelerator one chunk may be the whole sweep.

A chunk's training state (every config's parameters, optimizer and batch-norm
state, data keys, running sums) and its rows so far are saved under
``OUT/checkpoints/<chunk>/<step>/`` every ``every`` seconds, between segments.
orbax commits a checkpoint by renaming its folder, so a process killed in the
middle of a save leaves the previous checkpoint intact; a resume restores the
latest one and continues from its step, and the finished chunk's file replaces
the checkpoint.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import jax
import pandas as pd

__all__ = ["CHECKPOINT_DIR", "ChunkCheckpoint"]

CHECKPOINT_DIR = "checkpoints"


def _to_saveable(state):
    """PRNG key arrays as their raw data (what orbax stores); the impl is the default's."""
    return jax.tree.map(
        lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, state
    )


def _from_saved(saved, like):
    return jax.tree.map(
        lambda s, x: (
            jax.random.wrap_key_data(s, impl=jax.random.key_impl(x))
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
            else s
        ),
        saved,
        like,
    )


class ChunkCheckpoint:
    """The checkpoints of one chunk, in ``folder``, saved at most every ``every`` seconds."""

    def __init__(self, folder: str, every: float):
        self.folder = os.path.abspath(folder)
        self.every = float(every)
        self._last = time.monotonic()
        self._manager = None

    def _open(self):
        if self._manager is None:
            import orbax.checkpoint as ocp

            options = ocp.CheckpointManagerOptions(max_to_keep=1, cleanup_tmp_directories=True)
            self._manager = ocp.CheckpointManager(self.folder, options=options)
        return self._manager

    def restore(self, like) -> tuple[Any, dict, pd.DataFrame] | None:
        """``(state, meta, rows)`` of the latest checkpoint, placed as ``like`` (a state of the
        same structure, shapes and shardings); ``None`` when there is none."""
        if not os.path.isdir(self.folder):
            return None
        import orbax.checkpoint as ocp

        manager = self._open()
        step = manager.latest_step()
        if step is None:
            return None
        saveable = _to_saveable(like)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), saveable
        )
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
        )
        meta = dict(restored["meta"])
        rows = pd.DataFrame(meta.pop("rows")).astype(meta.pop("dtypes"))
        return _from_saved(restored["state"], like), meta, rows

    def maybe_save(self, step: int, state, meta: dict, rows: pd.DataFrame) -> bool:
        """Save when ``every`` seconds have passed since the last save (or the start)."""
        if time.monotonic() - self._last < self.every:
            return False
        import orbax.checkpoint as ocp

        payload = {
            **meta,
            "rows": {c: rows[c].tolist() for c in rows.columns},
            "dtypes": {c: str(t) for c, t in rows.dtypes.items()},
        }
        manager = self._open()
        manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_to_saveable(state)), meta=ocp.args.JsonSave(payload)
            ),
        )
        manager.wait_until_finished()
        self._last = time.monotonic()
        return True

    def remove(self) -> None:
        """Drop the chunk's checkpoints (its file now holds its rows)."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None
        shutil.rmtree(self.folder, ignore_errors=True)
