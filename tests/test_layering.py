"""One dependency direction: the page draws what the core computes, never the other way round.
Nothing in diffusion/ may import streamlit or plotly."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "diffusion"
FORBIDDEN = ("streamlit", "plotly")

_PROBE = """
import importlib, json, pkgutil, sys
import diffusion
names = sorted(m.name for m in pkgutil.walk_packages(diffusion.__path__, "diffusion."))
for name in names:
    importlib.import_module(name)  # diffusion.__main__ runs nothing unless it is __main__
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def test_importing_every_module_of_the_core_loads_no_ui_library():
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {f"diffusion.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert expected <= set(report["imported"])  # every module really was imported
    leaked = [m for m in report["modules"] if m.split(".")[0] in FORBIDDEN]
    assert not leaked, f"importing diffusion loaded {leaked}"


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import statement, wherever it sits (top level or in a function)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_file_in_the_core_imports_streamlit_or_plotly():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 10
    offending = []
    for path in files:
        for line, module in _imported_modules(path):
            if module.split(".")[0] in FORBIDDEN:
                offending.append(f"{path.name}:{line} imports {module}")
        # dynamic imports spelled as strings, e.g. importlib.import_module("plotly")
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        for match in re.finditer(r"""(import_module|__import__)\(\s*['"](streamlit|plotly)""", code):
            offending.append(f"{path.name} dynamically imports {match.group(2)}")
    assert not offending, offending
