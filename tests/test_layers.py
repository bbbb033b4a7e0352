"""The package layers of DESIGN.md, checked on the source: imports only point down.

core (``bowlrp`` top-level modules)  <-  models (``bowlrp.bow``, ``nets``)  <-  application (``bowlrp.app``).
Every import counts, also those inside functions (lazy imports are still dependencies).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Absolute names of every module imported anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _layer(module: str) -> str | None:
    if module == "bowlrp.__main__" or module.startswith("bowlrp.app"):
        return "application"
    if module.startswith("bowlrp.bow") or module == "nets" or module.startswith("nets."):
        return "bow" if module.startswith("bowlrp.bow") else "nets"
    if module == "bowlrp" or module.startswith("bowlrp."):
        return "core"
    if module == "datasets" or module.startswith("datasets."):
        return "datasets"
    return None  # third-party or standard library


# what each layer may import from the project's own packages
ALLOWED = {
    "core": {"core"},
    "bow": {"core", "bow"},
    "nets": {"core", "nets"},
    "application": {"core", "bow", "nets", "application"},
}

SOURCES = sorted(p for pkg in ("bowlrp", "nets") for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    module = _module_name(path)
    layer = _layer(module)
    wrong = sorted(
        name for name in _imports(path)
        if _layer(name) is not None and _layer(name) not in ALLOWED[layer]
    )
    assert not wrong, f"{module} ({layer} layer) imports {wrong}"


def test_every_layer_is_populated():
    layers = {_layer(_module_name(p)) for p in SOURCES}
    assert layers == {"core", "bow", "nets", "application"}


def test_core_lazy_exports_only_name_core_or_models():
    """``bowlrp.__init__`` names its public objects as strings; importing it imports nothing else."""
    import bowlrp

    assert _imports(ROOT / "bowlrp" / "__init__.py") <= {"__future__", "__future__.annotations", "importlib"}
    for name, module in bowlrp._EXPORTS.items():
        assert getattr(__import__(module, fromlist=[name]), name) is getattr(bowlrp, name)
