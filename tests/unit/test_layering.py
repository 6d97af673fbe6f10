"""The adapter's shape, read from its source: imports only run downwards, and modules stay small.

Layers, bottom up: `core` (configuration, catalog, errors, security, middleware, observability),
`triton` (the only door to Triton), the capability packages, and `main` (the app factory). A module
imports its own layer or lower ones; between capabilities, only legacy completions and the Responses
API reuse chat's sampling fields, preparation, tool calling and engine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "adapter" / "src" / "passerelle"
LAYERS = {
    "core": 0,
    "triton": 1,
    **dict.fromkeys(("chat", "completions", "responses", "models", "audio", "admin", "health"), 2),
    "main": 3,
    "__main__": 4,
}
SIDEWAYS = {("completions", "chat"), ("responses", "chat")}
MAX_LINES = 400
MAX_ROUTER_LINES = 100


def _package(module: str) -> str:
    return module.split(".")[1]


def _modules() -> dict[str, Path]:
    return {
        ".".join(("passerelle", *path.relative_to(SOURCE).with_suffix("").parts)).removesuffix(".__init__"): path
        for path in SOURCE.rglob("*.py")
    }


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("passerelle."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("passerelle."))
    return found


def test_every_package_has_a_layer() -> None:
    assert {_package(module) for module in _modules() if module != "passerelle"} == set(LAYERS)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_only_run_down_a_layer(module: str) -> None:
    if module == "passerelle":
        return
    here = _package(module)
    for imported in _imports(_modules()[module]):
        there = _package(imported)
        upward = LAYERS[there] > LAYERS[here]
        sideways = LAYERS[there] == LAYERS[here] == 2 and there != here and (here, there) not in SIDEWAYS
        assert not upward and not sideways, f"{module} imports {imported}"


def test_modules_and_routers_stay_small() -> None:
    sizes = {module: len(path.read_text(encoding="utf-8").splitlines()) for module, path in _modules().items()}
    assert {module: lines for module, lines in sizes.items() if lines > MAX_LINES} == {}
    assert {module: lines for module, lines in sizes.items() if module.endswith(".router") and lines > MAX_ROUTER_LINES} == {}
