"""Where the experiment scripts write their CSVs, PNGs and JSON, and how they end.

The tracked ``experiments/results/`` is written only when asked, with
``--update-results`` on a script's command line (or ``JAXOPT_LAB_UPDATE_RESULTS=1``,
which ``run_all.py --update-results`` sets for its children); otherwise the
files go to ``runs/experiments/``, so running the experiments leaves the
repository as it was.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
UPDATE = "--update-results" in sys.argv[1:] or os.environ.get("JAXOPT_LAB_UPDATE_RESULTS") == "1"
OUT = HERE / "results" if UPDATE else HERE.parent / "runs" / "experiments"
OUT.mkdir(parents=True, exist_ok=True)


def report(name, ok, verdict, table, fig, dpi=120):
    """Write ``<name>.csv`` and ``<name>.png`` to OUT, then print ``<name>: PASS|FAIL <verdict>``.

    The verdict line is the script's last line: ``run_all.py`` reads it.
    """
    table.to_csv(OUT / f"{name}.csv", index=False)
    fig.savefig(OUT / f"{name}.png", dpi=dpi)
    print(f"{name}: {'PASS' if ok else 'FAIL'} {verdict}")
