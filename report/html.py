"""Render a run's :class:`~report.data.ReportData` as one self-contained HTML page.

The page (``templates/report.html.j2``, installed as ``cage_eval_templates``) carries its own CSS,
runs no script and inlines every image as a ``data:`` URI, so it opens from disk, offline, moved
or mailed; a Content-Security-Policy forbids every fetch but ``data:`` images. The jinja2
environment autoescapes and uses ``StrictUndefined``; run data are passed as values, never
rendered as templates. :func:`write_report` reads the run, renders and writes ``RUN/report.html``
atomically. Standard library and jinja2 only: no torch.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2

from cage_eval import files, runs
from cage_eval.errors import RunDirError
from report.data import Figure, ReportData, SpendingReader, read_report
from report.explain import P_TESTS, REASON_WORDS, p_name

TEMPLATE_PACKAGE = "cage_eval_templates"
#: ``.j2``, not ``.jinja``: :func:`hitgen.render.template_digest` hashes every ``*.jinja`` template
#: as "the HIT pages workers saw", and the report's look must not change that digest.
TEMPLATE = "report.html.j2"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_num(x: Any, digits: int = 3) -> str:
    """A number with fixed decimals; ``–`` when missing."""
    return "–" if _missing(x) else f"{float(x):.{digits}f}"


def fmt_signed(x: Any, digits: int = 3) -> str:
    """A signed number (``+0.095``); ``–`` when missing."""
    return "–" if _missing(x) else f"{float(x):+.{digits}f}"


def fmt_p(x: Any) -> str:
    """A p-value: 3 decimals, scientific below 0.001; ``–`` when missing."""
    if _missing(x):
        return "–"
    return f"{float(x):.1e}" if float(x) < 1e-3 else f"{float(x):.3f}"


def fmt_int(x: Any) -> str:
    """A count with thousands separators; ``–`` when missing."""
    return "–" if _missing(x) else f"{int(round(float(x))):,}"


_SYMBOLS = {"USD": "$", "GBP": "£"}


def fmt_money(x: Any, currency: str = "USD") -> str:
    """Dollars (``$1,234.50``), or pounds (``£1,234.50``) with ``currency="GBP"``."""
    if x is None:
        return "–"
    return f"{_SYMBOLS.get(currency, currency + ' ')}{Decimal(x):,.2f}"


def fmt_pct(x: Any, digits: int = 0) -> str:
    return "–" if _missing(x) else f"{float(x):.{digits}%}"


def fmt_ci(lo: Any, hi: Any) -> str:
    """``[0.718, 0.816]``; ``–`` when undefined."""
    return "–" if _missing(lo) or _missing(hi) else f"[{float(lo):.3f}, {float(hi):.3f}]"


def fmt_json(value: Any) -> str:
    """Indented JSON for ``<pre>`` blocks."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The report's jinja2 environment (autoescape, ``StrictUndefined``, the format filters)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(TEMPLATE_PACKAGE, "."),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt_num, signed=fmt_signed, p=fmt_p, int=fmt_int, money=fmt_money,
                       pct=fmt_pct, json=fmt_json)
    env.globals.update(ci=fmt_ci, missing=_missing, p_name=p_name, p_tests=P_TESTS,
                       reason_words=REASON_WORDS)
    return env


def data_uri(run: Path, figure: Figure) -> str:
    """``data:image/png;base64,...`` of a figure of the run."""
    try:
        data = (run / figure.path).read_bytes()
    except OSError as exc:
        raise RunDirError(f"{run / figure.path}: unreadable ({exc.strerror}); regenerate the "
                          "run") from None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def render_report(data: ReportData) -> str:
    """The whole page as text."""
    template = environment().get_template(TEMPLATE)
    return template.render(r=data, f=data.facts, img=functools.partial(data_uri, data.run_dir))


def write_report(run: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None,
                 spending: SpendingReader | None = None) -> tuple[Path, ReportData]:
    """Read the run ``run``, render its report and write it (default ``RUN/report.html``).

    Returns the path written and what it shows. Nothing is written when reading fails. The
    run's lock is held while the report reads and writes (no publish or collect meanwhile), and
    ``out`` must be new or a previous report (:func:`cage_eval.files.check_report_target`).

    Raises
    ------
    RunDirError
        See :func:`report.data.read_report`; or ``out`` cannot be written.
    """
    if not Path(run).is_dir():
        runs.read_manifest(run)  # says what to do
    path = files.check_report_target(Path(out) if out is not None else Path(run) / runs.REPORT)
    with files.run_lock(run, "reported"):
        data = read_report(run, spending=spending)
        html = render_report(data)
        files.check_report_target(path)  # nothing may have taken its place meanwhile
        try:
            files.atomic_write_text(path, html)
        except OSError as exc:
            raise RunDirError(f"{path}: cannot write the report ({exc.strerror or exc}); choose "
                              "a writable place") from None
    return path, data
