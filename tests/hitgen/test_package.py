"""The default templates ship inside the wheel and render from a non-editable install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_FILES = {"mturk.html.jinja", "turkle.html.jinja", "batch.html.jinja", "_choice.html.jinja",
                  "_style.html.jinja", "_fragment_script.html.jinja", "report.html.j2"}


def _top_level_folders() -> list[str]:
    """Every top-level package folder pyproject.toml lists (so a new package cannot be missed)."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    dirs = setup.get("package-dir", {})
    return sorted({dirs.get(name, name) for name in (p.split(".")[0] for p in setup["packages"])})


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the project's wheel from a clean copy of the source (offline, no build isolation)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in _top_level_folders():
        shutil.copytree(ROOT / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("cage_eval-*.whl")
    return whl


def test_wheel_contains_the_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {n.split("/", 1)[1] for n in names if n.startswith("cage_eval_templates/")}
    assert TEMPLATE_FILES <= packaged
    assert not any(n.startswith("templates/") for n in names)


def test_installed_wheel_renders_from_any_directory(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import hitgen.render as r, cage_eval_templates as t\n"
        "from hitgen.texts import HitTexts\n"
        "print(r.__file__); print(t.__file__)\n"
        "html = r.render_turkle_template(HitTexts.for_domain('faces'))\n"
        "assert '${image_top}' in html and 'actual human faces' in html\n"
        "print('ok', len(html), r.template_digest())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    render_file, package_file, ok = proc.stdout.splitlines()
    assert Path(render_file).is_relative_to(site) and Path(package_file).is_relative_to(site)
    assert ok.startswith("ok ")
    from hitgen.render import template_digest

    assert ok.split()[-1] == template_digest()  # the same templates as in the source tree
