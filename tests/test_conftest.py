"""The suite's own configuration: warnings, unknown markers and passing xfails fail a run."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "body, expected",
    [
        ("import warnings\n\ndef test_w():\n    warnings.warn('x', DeprecationWarning)\n", "1 failed"),
        ("import pytest\n\n@pytest.mark.xfail\ndef test_x():\n    pass\n", "1 failed"),
        ("import pytest\n\n@pytest.mark.not_a_marker\ndef test_m():\n    pass\n", "not_a_marker"),
    ],
    ids=["warning", "xfail-passes", "unknown-marker"],
)
def test_the_project_configuration_fails_what_it_should(tmp_path, body, expected):
    path = tmp_path / "test_probe.py"
    path.write_text(textwrap.dedent(body))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(path),
            "-c",
            os.path.join(ROOT, "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0, run.stdout
    assert expected in run.stdout + run.stderr
