"""Every name the README's API section calls exists where its heading says it lives, and every
name docs/ARCHITECTURE.md gives exists in the package."""

import importlib
import os
import pkgutil
import re

import pytest

import jaxopt_lab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _api_sections():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    api = text[text.index("\n## API\n") :]
    for section in re.split(r"\n### ", api)[1:]:
        heading, body = section.split("\n", 1)
        modules = re.findall(r"`(jaxopt_lab(?:\.\w+)*)`", heading)
        body = re.sub(r"```.*?```", "", body, flags=re.S)  # code blocks run in test_docs
        names = sorted(set(re.findall(r"`([A-Za-z_][\w.]*)\(", body)))
        yield heading, modules, names


# Not names of the package: the user's callables the text describes, and other libraries'.
PLACEHOLDERS = {"factory", "constructor", "fn", "train_fn", "loss", "module.train", "module.eval", "__call__"}
PLACEHOLDERS |= {"flax.linen.BatchNorm"}


def _resolve(dotted, modules):
    dotted = dotted.removeprefix("jaxopt_lab.")
    for where in [*modules, "jaxopt_lab"]:
        obj = importlib.import_module(where)
        for part in dotted.split("."):
            if not hasattr(obj, part) and hasattr(obj, "__path__"):  # a submodule not yet imported
                try:
                    importlib.import_module(f"{obj.__name__}.{part}")
                except ModuleNotFoundError:
                    break
            if not hasattr(obj, part):
                break
            obj = getattr(obj, part)
        else:
            return obj
    return None


def test_the_facade_lists_only_what_it_has():
    assert all(hasattr(jaxopt_lab, name) for name in jaxopt_lab.__all__)
    assert callable(jaxopt_lab.sweep) and callable(jaxopt_lab.train)


@pytest.mark.parametrize("heading, modules, names", list(_api_sections()), ids=lambda v: str(v)[:30])
def test_every_name_of_a_section_is_where_its_heading_says(heading, modules, names):
    missing = [n for n in names if n not in PLACEHOLDERS and _resolve(n, modules) is None]
    assert not missing, f"{heading}: {missing} not found in {modules or ['jaxopt_lab']}"


def test_what_the_readme_says_the_facade_holds_it_holds():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    start = text.index("The names a script needs most are importable from `jaxopt_lab` itself")
    paragraph = text[start : text.index("The modules of earlier versions", start)]
    names = [n for n in re.findall(r"`(\w+)`", paragraph) if n != "jaxopt_lab"]
    assert {"train", "sweep", "Grid", "TrainSpec", "optim", "toys"} <= set(names)
    assert [n for n in names if n not in jaxopt_lab.__all__] == []


# ARCHITECTURE.md's names that are not the package's: files, other libraries', local names, values.
NOT_PACKAGE_NAMES = {
    "lax.fori_loop",
    "tx.update",
    "_results.report",
    "GradientTransformation",
    "segment",
    "step",
}
NOT_PACKAGE_NAMES |= {"bucket", "mask"}


def _in_package(name, modules):
    """``name`` as ``<a module's dotted tail>.<attribute>...`` or ``<attribute>...`` of a module."""
    parts = name.removeprefix("jaxopt_lab.").split(".")
    for start in range(len(parts)):
        tail = ".".join(parts[:start])
        where = [m for m in modules if not start or m.endswith(f".{tail}")]
        if _resolve(".".join(parts[start:]), where) is not None:
            return True
    return False


def test_every_name_of_the_architecture_exists_in_the_package():
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")) as f:
        text = f.read()
    walk = text[text.index("## A sweep") : text.index("## Where to add")]
    dotted = set(re.findall(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)[`(]", text))
    names = dotted | set(re.findall(r"`([A-Za-z_]\w*)[`(]", walk))  # the walk's bare names too
    names = {n for n in names if not n.endswith((".py", ".csv", ".toml", ".parquet"))} - NOT_PACKAGE_NAMES
    modules = [m.name for m in pkgutil.walk_packages(jaxopt_lab.__path__, "jaxopt_lab.")]
    assert len(names) > 40 and sorted(n for n in names if not _in_package(n, modules)) == []
