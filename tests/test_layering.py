"""One dependency direction, layer by layer, never the other way round:

    diffusion (the core)  <-  runtime (jobs on worker processes)  <-  ui + dashboard.py (the page)
    diffusion  <-  charts (figures, plotly)  <-  cli (the command), ui
    runtime  <-  cli

No module of a layer imports a layer above it (``LAYERS``); the core loads no ui library (checked
by importing every core module in a fresh interpreter), and the core has no import cycle.
``python -m diffusion`` starts the command as a new program (``os.execv``), importing nothing above.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diffusion"
FORBIDDEN = ("ui", "cli", "runtime", "charts", "streamlit", "plotly", "tests", "dashboard")

_PROBE = """
import importlib, json, pkgutil, sys
import diffusion
names = sorted(m.name for m in pkgutil.walk_packages(diffusion.__path__, "diffusion."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def import_every_module(root: Path) -> tuple[list[str], list[str]]:
    """Import each module of ``root/diffusion`` in a fresh interpreter: (modules imported, modules
    of the forbidden packages found in ``sys.modules`` afterwards)."""
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=root, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    leaked = [m for m in report["modules"] if m.split(".")[0] in FORBIDDEN]
    return report["imported"], leaked


def test_importing_every_module_of_the_core_loads_no_ui_library():
    imported, leaked = import_every_module(ROOT)
    expected = {f"diffusion.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert expected <= set(imported)  # every module really was imported
    assert not leaked, f"importing diffusion loaded {leaked}"


def test_the_probe_catches_a_core_module_that_imports_the_runtime():
    """The check above can fail: a copy of the core where one module imports the runtime (which
    imports nothing of the page) is caught."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        shutil.copytree(PACKAGE, tmp_path / "diffusion")
        shutil.copytree(ROOT / "runtime", tmp_path / "runtime")
        metrics = tmp_path / "diffusion" / "metrics.py"
        metrics.write_text(metrics.read_text() + "\n\ndef _late():\n    import runtime.state  # noqa\n\n\n"
                           "import runtime.state  # noqa\n")
        _, leaked = import_every_module(tmp_path)
    assert "runtime.state" in leaked


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, module, guarded) for every import statement, wherever it sits; relative imports are
    resolved inside the package; ``guarded`` if under ``if __name__ == "__main__":``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    guarded_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            guarded_lines |= {n.lineno for child in node.body for n in ast.walk(child) if hasattr(n, "lineno")}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, node.lineno in guarded_lines) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module if node.level == 0 else f"diffusion.{node.module}"
            found.append((node.lineno, module, node.lineno in guarded_lines))
        elif isinstance(node, ast.ImportFrom) and node.level == 1:  # from . import x
            found += [(node.lineno, f"diffusion.{alias.name}", node.lineno in guarded_lines) for alias in node.names]
    return found


# each layer, and the top-level names its files must not import
LAYERS = {
    "diffusion": ("ui", "cli", "runtime", "charts", "dashboard", "streamlit", "plotly", "tests"),
    "runtime": ("ui", "cli", "charts", "dashboard", "streamlit", "plotly", "tests"),
    "charts": ("ui", "cli", "runtime", "dashboard", "streamlit", "tests"),
    "cli": ("ui", "dashboard", "streamlit", "tests"),
    "ui": ("cli", "dashboard", "tests"),
}


def upward_imports(root: Path) -> list[str]:
    """Every import of a forbidden layer, as 'file:line imports module', over all the layers."""
    offending = []
    for layer, forbidden in LAYERS.items():
        for path in sorted((root / layer).rglob("*.py")):
            for line, module, _ in _imports(path):
                if module.split(".")[0] in forbidden:
                    offending.append(f"{layer}/{path.name}:{line} imports {module}")
            code = path.read_text()
            for name in forbidden:  # dynamic imports spelled as strings
                if f'import_module("{name}' in code or f'__import__("{name}' in code or f"__import__('{name}" in code:
                    offending.append(f"{layer}/{path.name} dynamically imports {name}")
    return offending


def test_no_layer_imports_a_layer_above_it():
    assert len(list(PACKAGE.rglob("*.py"))) >= 10
    assert not upward_imports(ROOT), upward_imports(ROOT)


@pytest.mark.parametrize(("layer", "planted"), [("diffusion", "runtime.registry"), ("runtime", "ui.panels"),
                                                ("charts", "streamlit"), ("cli", "ui.controls")])
def test_the_layer_check_catches_an_upward_import(tmp_path, layer, planted):
    for name in LAYERS:
        shutil.copytree(ROOT / name, tmp_path / name)
    target = next(iter(sorted((tmp_path / layer).glob("*.py"))))
    target.write_text(target.read_text() + f"\n\ndef _late():\n    import {planted}  # noqa\n")
    assert any(f"imports {planted}" in line for line in upward_imports(tmp_path))


def test_the_core_has_no_import_cycle():
    graph = {}
    for path in PACKAGE.glob("*.py"):
        name = f"diffusion.{path.stem}"
        graph[name] = {m for _, m, _ in _imports(path) if m.startswith("diffusion.") and m != name}
    visiting, done = set(), set()

    def visit(node, trail):
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " -> ".join([*trail, node])
        visiting.add(node)
        for target in sorted(graph.get(node, ())):
            visit(target, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
