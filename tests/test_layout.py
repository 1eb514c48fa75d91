"""The import direction of the layers: cli -> {cage, hitgen, mturk, analysis} -> foundation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("cage", "hitgen", "mturk", "analysis")
FOUNDATION = ("cage_eval/errors.py", "cage_eval/runs.py", "cage_eval/files.py", "cage_eval/progress.py",
              "cage_eval/cache.py",
              "cage_eval/__init__.py")


def _imports(path: Path) -> set[str]:
    """Every module name a file imports (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", LIBRARIES)
def test_libraries_never_import_the_cli(package):
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p)
                                                   if n == "cage_eval.cli" or n.startswith("cage_eval.cli."))
                 for p in _files(package)}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("name", FOUNDATION)
def test_the_foundation_imports_no_layer_above_it(name):
    above = ("cage_eval.cli", *LIBRARIES, "torch", "pandas", "numpy", "boto3")
    bad = sorted(n for n in _imports(ROOT / name)
                 if any(n == a or n.startswith(a + ".") for a in above))
    assert bad == []


def test_analysis_never_imports_torch():
    bad = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.split(".")[0] == "torch")
           for p in _files("analysis")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_engine_knows_nothing_of_experiments_or_files():
    """cage/engine is Algorithm 1 only: no experiment, generator training, run files or CLI."""
    forbidden = ("cage.experiments", "cage.digits", "cage.pipeline", "cage.report", "cage.plots",
                 "cage_eval.runs", "cage_eval.files", "cage_eval.cli")
    bad = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p)
                                             if any(n == f or n.startswith(f + ".") for f in forbidden))
           for p in _files("cage/engine")}
    assert {k: v for k, v in bad.items() if v} == {}
