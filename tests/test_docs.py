"""The documentation runs: every docstring example of the package, and the README's Python blocks.

Docstring examples run under the test configuration (strict promotion, four CPU
devices). README blocks run as a user runs them: each in a fresh Python process
with standard JAX settings, in an empty folder (so the files they write land
there), and the numbers a block prints and quotes in a ``# comment`` must be
what it printed, to the digits quoted.
"""

import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys

import numpy as np
import pytest

import jaxopt_lab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = sorted(m.name for m in pkgutil.walk_packages(jaxopt_lab.__path__, "jaxopt_lab."))


def _doctests(module_name):
    module = importlib.import_module(module_name)
    # Only the examples written in this module, not those of names it imports.
    return [
        t
        for t in doctest.DocTestFinder().find(module, module_name)
        if t.examples and t.name.startswith(module_name)
    ]


def test_every_module_with_examples_is_collected():
    with_examples = {name for name in MODULES if _doctests(name)}
    assert {
        "jaxopt_lab.optim.transforms",
        "jaxopt_lab.engine.train",
        "jaxopt_lab.nn.models",
        "jaxopt_lab.engine.grid",
        "jaxopt_lab.engine.spec",
        "jaxopt_lab.data",
    } <= with_examples


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    for test in _doctests(module_name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"


def _readme_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


BLOCKS = _readme_blocks()


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


# A quoted value: `print(...)  # [0.94 0.94]` or `# 0.5` (not prose comments).
_QUOTED = re.compile(r"^print\(.*\)\s+#\s*(\[[^\]]*\]|-?\d[\d.e+-]*)")


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_as_written(index, tmp_path):
    block = BLOCKS[index]
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"
    run = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    printed = [_numbers(line) for line in run.stdout.splitlines()]
    for line in block.splitlines():
        quoted = _QUOTED.match(line.strip())
        if quoted:
            expected = _numbers(quoted.group(1))
            assert any(
                len(p) == len(expected) and np.allclose(p, expected, rtol=1e-5, atol=1e-6) for p in printed
            ), (quoted.group(1), run.stdout)


def _numbers(text):
    return [float(v) for v in re.findall(r"-?\d+\.?\d*(?:e[+-]?\d+)?", text)]
