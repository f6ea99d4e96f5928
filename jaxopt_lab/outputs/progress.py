"""Progress of a sweep: a bar on a terminal, one line per finished group, or your own.

``sweep(progress=...)`` takes ``True``, ``"lines"``, ``False``, or an object with
``advance(config_steps, configs_done)``, ``group_done(index, group)`` and ``close()``
(a group has ``spec``, a :class:`~jaxopt_lab.TrainSpec`, and
``config_ids``).
"""

from __future__ import annotations

import sys
import time

from jaxopt_lab.errors import InputError
from jaxopt_lab.optim import families as families_lib

__all__ = ["MODES", "Progress", "check", "make"]

MODES = (True, False, "lines")
_METHODS = ("advance", "group_done", "close")


def check(progress) -> None:
    """Refuse what is neither a mode of :data:`MODES` nor a progress object."""
    mode = isinstance(progress, (bool, str)) and progress in MODES
    if not (mode or _is_object(progress)):
        raise InputError(
            f"progress={progress!r} is invalid: expected one of True, False, 'lines' or an object with "
            "advance, group_done and close"
        )


def _is_object(progress) -> bool:
    return not isinstance(progress, (bool, str)) and all(
        callable(getattr(progress, m, None)) for m in _METHODS
    )


def make(progress, total_config_steps: int, num_configs: int, num_groups: int):
    """The progress object of a sweep: ``progress`` itself when it is one, else a :class:`Progress`."""
    if _is_object(progress):
        return progress
    return Progress(progress, total_config_steps, num_configs, num_groups)


class Progress:
    """Progress of a sweep: a tqdm bar over config-steps on a terminal, or one line per
    finished group (``"lines"``, and a bar's stand-in when stderr is not a terminal,
    where a bar's carriage returns would fill a log), or nothing."""

    def __init__(self, mode, total_config_steps: int, num_configs: int, num_groups: int):
        from tqdm.auto import tqdm

        if mode is True and not sys.stderr.isatty():
            mode = "lines"
        self._mode, self._num_configs, self._num_groups = mode, num_configs, num_groups
        self._configs_done = 0
        self._started = time.perf_counter()
        self._bar = tqdm(
            total=total_config_steps,
            unit="step",
            unit_scale=True,
            disable=mode is not True,
            desc=self._label(),
            dynamic_ncols=True,
        )

    def _label(self) -> str:
        return f"sweep {self._configs_done}/{self._num_configs} configs"

    def advance(self, config_steps: int, configs_done: int) -> None:
        if configs_done:
            self._configs_done += configs_done
            self._bar.set_description_str(self._label(), refresh=False)
        self._bar.update(config_steps)

    def group_done(self, index: int, group) -> None:
        if self._mode == "lines":
            name = families_lib.resolve(group.spec.optimizer).name
            static = ", ".join(
                [
                    f"optimizer={name}",
                    *(f"{k}={v}" for k, v in group.spec.optimizer_flags),
                    *([f"schedule={group.spec.schedule}"] if group.spec.schedule != "constant" else []),
                    f"batch_size={group.spec.batch_size}",
                ]
            )
            seconds = time.perf_counter() - self._started
            print(
                f"group {index + 1}/{self._num_groups} done ({static}, {len(group.config_ids)} configs): "
                f"{self._configs_done}/{self._num_configs} configs in {seconds:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        self._bar.close()
