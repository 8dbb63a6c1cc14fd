"""One dependency direction: the page and the command's front end (``ui/``, ``dashboard.py``) draw
what the core computes, never the other way round. No module of ``diffusion/`` may import ``ui``,
streamlit or plotly, and the core has no import cycle.

``diffusion/__main__.py`` is the command's entry point: it hands over to ``ui.command`` only when
run as a program (inside ``if __name__ == "__main__":``), so importing it loads nothing of ``ui``.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diffusion"
FORBIDDEN = ("ui", "streamlit", "plotly", "tests", "dashboard")

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


def test_the_probe_catches_a_core_module_that_imports_the_page(tmp_path):
    """The check above can fail: a copy of the core where one module imports ui.jobs is caught."""
    shutil.copytree(PACKAGE, tmp_path / "diffusion")
    shutil.copytree(ROOT / "ui", tmp_path / "ui")
    metrics = tmp_path / "diffusion" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n\ndef _late():\n    import ui.jobs  # noqa\n\n\nimport ui.jobs  # noqa\n")
    _, leaked = import_every_module(tmp_path)
    assert "ui.jobs" in leaked


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


def test_no_file_in_the_core_imports_the_page_streamlit_or_plotly():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 10
    offending = []
    for path in files:
        for line, module, guarded in _imports(path):
            entry_point = path.name == "__main__.py" and guarded and module == "ui.command"
            if module.split(".")[0] in FORBIDDEN and not entry_point:
                offending.append(f"{path.name}:{line} imports {module}")
        code = path.read_text()
        for name in ("streamlit", "plotly", "ui."):  # dynamic imports spelled as strings
            if f'import_module("{name}' in code or f"__import__('{name}" in code or f'__import__("{name}' in code:
                offending.append(f"{path.name} dynamically imports {name}")
    assert not offending, offending


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
