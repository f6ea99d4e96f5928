"""The package's layers (docs/ARCHITECTURE.md): a module imports only from its layer or those below."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jaxopt_lab"
# Lowest first. A module's layer is its longest prefix here.
LAYERS = (
    ("jaxopt_lab.errors", "jaxopt_lab.fingerprints"),
    ("jaxopt_lab.optim", "jaxopt_lab.nn", "jaxopt_lab.data"),
    ("jaxopt_lab.measure",),
    ("jaxopt_lab.analysis.tables",),
    ("jaxopt_lab.engine.spec", "jaxopt_lab.engine.grid"),
    ("jaxopt_lab.engine.train", "jaxopt_lab.engine.chunks"),
    ("jaxopt_lab.engine.distributed", "jaxopt_lab.outputs"),
    ("jaxopt_lab.engine.sweep",),
    ("jaxopt_lab.analysis", "jaxopt_lab.toys"),
    ("jaxopt_lab.cli", "jaxopt_lab"),
)


def _layer(module: str) -> int:
    best, found = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), i
    assert found is not None, module
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxopt_lab"):
            for alias in node.names:  # `from jaxopt_lab.x import y`: y may be a module
                yield f"{node.module}.{alias.name}" if node.module.count(".") < 2 else node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("jaxopt_lab"))


@pytest.mark.parametrize("module, path", list(_modules()), ids=lambda v: str(v).rsplit("/", 1)[-1])
def test_a_module_imports_only_from_its_layer_or_below(module, path):
    if module == "jaxopt_lab" or module.endswith("__init__"):
        return
    own = _layer(module)
    above = sorted({name for name in _imports(path) if _layer(name) > own})
    assert not above, f"{module} (layer {own}) imports {above} from layers above it"


def _module_aliases(tree):
    """The names a module binds to jaxopt_lab modules: ``from jaxopt_lab.x import y as z``
    (y a module) and ``import jaxopt_lab.x as z``."""
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxopt_lab"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE.parent / name.replace(".", "/")
                ).is_dir():
                    aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name.startswith("jaxopt_lab") and a.asname}
    return aliases


@pytest.mark.parametrize("module, path", list(_modules()), ids=lambda v: str(v).rsplit("/", 1)[-1])
def test_no_private_name_is_used_across_modules(module, path):
    tree = ast.parse(path.read_text())
    imported = [
        f"{node.module}.{a.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxopt_lab")
        for a in node.names
        if a.name.startswith("_")
    ]
    aliases = _module_aliases(tree)
    used = [
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]
    assert not imported + used, f"{module} uses private names of other modules: {imported + used}"
