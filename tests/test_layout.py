"""The import direction of the layers and the rules between siblings.

cli -> {cage, report, hitgen, mturk, crowds, analysis} -> foundation (cage_eval.{errors, runs, files,
progress}); inside cage: engine <- run, pairs, experiments; crowd backends never import each other;
no source file names a document outside the repository."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("cage", "report", "hitgen", "mturk", "crowds", "analysis")
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


def _offenders(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p)
                                             if any(n == f or n.startswith(f + ".") for f in forbidden))
           for p in _files(package)}
    return {k: v for k, v in bad.items() if v}


def test_the_engine_knows_nothing_of_experiments_runs_crowds_or_files():
    """cage/engine is Algorithm 1 only: no experiment, run, pairs, HIT, crowd, report or CLI."""
    forbidden = ("cage.experiments", "cage.run", "cage.pairs", "cage.generators", "cage.labels",
                 "cage_eval.runs", "cage_eval.files", "cage_eval.cli", "hitgen", "mturk", "crowds",
                 "report", "analysis")
    assert _offenders("cage/engine", forbidden) == {}


def test_the_numerics_know_no_hit_wording_crowd_or_report():
    """cage/ computes; what people see (hitgen, report) and who they are (crowds) live above it."""
    assert _offenders("cage", ("hitgen", "mturk", "crowds", "report", "analysis")) == {}


@pytest.mark.parametrize("package", ["report", "analysis"])
def test_the_report_and_the_analysis_never_import_torch_or_cage(package):
    assert _offenders(package, ("torch", "cage")) == {}


@pytest.mark.parametrize(("backend", "others"), [
    ("mturk", ("crowds.turkle", "crowds.prolific")),
    ("crowds/turkle", ("mturk", "crowds.prolific")),
    ("crowds/prolific", ("mturk", "crowds.turkle")),
])
def test_crowd_backends_never_import_each_other(backend, others):
    if not (ROOT / backend).is_dir():
        pytest.skip(f"{backend} is not in this tree")
    assert _offenders(backend, others) == {}


def test_shared_crowd_code_imports_no_backend():
    shared = [p for p in (ROOT / "crowds").glob("*.py")]
    bad = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p)
                                             if n.split(".")[0] == "mturk"
                                             or n.startswith(("crowds.turkle", "crowds.prolific")))
           for p in shared}
    assert {k: v for k, v in bad.items() if v} == {}


def test_cage_has_no_loose_modules():
    """cage/ is organised by role: only packages (and its __init__) at its top."""
    loose = sorted(p.name for p in (ROOT / "cage").glob("*.py") if p.name != "__init__.py")
    assert loose == []


def test_every_package_declares_what_it_offers():
    missing = sorted(str(p.relative_to(ROOT)) for pkg in (*LIBRARIES, "cage_eval")
                     for p in (ROOT / pkg).rglob("__init__.py")
                     if "__all__" not in p.read_text(encoding="utf-8"))
    assert missing == []


#: Documents that live outside this repository; the project must stand alone (docs/ instead).
#: (Spelled in two parts so that this file does not name them itself.)
OUTSIDE_DOCUMENTS = tuple(stem + ext for stem, ext in (
    ("cage_method", ".md"), ("crowdsourcing", ".md"), ("cage_core", ".md"), ("aesthetics", ".md"),
    ("STYLE", ".md"), ("../sha", "red")))


def test_no_source_file_names_a_document_outside_the_repository():
    tracked = [p for pattern in ("*.py", "*.md", "*.toml", "*.j2", "*.jinja")
               for p in ROOT.rglob(pattern)
               if not any(part in {".venv", ".git", "mutants", "node_modules"} or part.startswith(".")
                          for part in p.relative_to(ROOT).parts)]
    bad = {str(p.relative_to(ROOT)): [d for d in OUTSIDE_DOCUMENTS if d in p.read_text(encoding="utf-8")]
           for p in tracked}
    assert {k: v for k, v in bad.items() if v} == {}
