"""The experiment scripts leave the tracked experiments/results/ alone unless asked."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "experiments").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", [p.name for p in SCRIPTS if p.name != "run_all.py"])
def test_every_script_writes_through_the_results_switch(script):
    text = (ROOT / "experiments" / script).read_text()
    assert "from _results import OUT" in text or "from _results import report" in text
    assert "experiments/results/" not in text.replace("the tracked experiments/results/", "")


def _run_all_experiments() -> tuple[str, ...]:
    text = (ROOT / "experiments" / "run_all.py").read_text()
    tree = ast.parse(text)
    (listed,) = [n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "EXPERIMENTS"]
    return ast.literal_eval(listed)


def test_every_experiment_is_a_short_script_that_run_all_and_the_readme_list():
    # STYLE.md: an experiment is a declaration of 30 to 80 lines; benchmarks and profiles are not experiments.
    names = _run_all_experiments()
    scripts = {p.stem for p in SCRIPTS} - {"run_all"}
    assert set(names) == {s for s in scripts if not s.startswith(("bench_", "profile_"))}
    readme = (ROOT / "experiments" / "README.md").read_text()
    for name in names:
        lines = len((ROOT / "experiments" / f"{name}.py").read_text().splitlines())
        assert 30 <= lines <= 80, f"{name}.py has {lines} lines"
        assert f"| `{name}` |" in readme and f"(results/{name}.png)" in readme


def _outputs(update: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "JAXOPT_LAB_UPDATE_RESULTS"}
    argv = [sys.executable, "-c", "import _results; print(_results.OUT)"] + (["--update-results"] * update)
    run = subprocess.run(argv, cwd=ROOT / "experiments", env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_results_go_to_runs_unless_asked():
    assert Path(_outputs(False)) == ROOT / "runs" / "experiments"
    assert Path(_outputs(True)) == ROOT / "experiments" / "results"


def test_a_script_run_leaves_the_tracked_results_byte_for_byte():
    tracked = ROOT / "experiments" / "results"
    before = {p.name: p.read_bytes() for p in tracked.iterdir()}
    env = {k: v for k, v in os.environ.items() if k not in ("JAXOPT_LAB_UPDATE_RESULTS", "XLA_FLAGS")}
    run = subprocess.run(
        [sys.executable, "experiments/momentum_window.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "momentum_window: PASS" in run.stdout
    assert {p.name: p.read_bytes() for p in tracked.iterdir()} == before
    assert (ROOT / "runs" / "experiments" / "momentum_window.csv").exists()
