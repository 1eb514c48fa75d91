"""Text from the crowd files (worker ids and names, DAG names) made safe for each output format.

Worker ids come from whoever filled a results file, DAG names from a run or a tidy file: any
string at all. Written raw they can take over the reader of the output:

* **CSV** opened in a spreadsheet: a cell starting with ``= + - @`` (or a tab or carriage return)
  is a formula (CSV injection). :func:`csv_cell` prefixes such a cell with ``'``, as OWASP
  recommends; :func:`csv_quoting` quotes every field when a value holds a lone carriage return,
  which the csv module would otherwise write unquoted.
* **Markdown**: ``|`` ends a table cell, a line break ends the row, ``<`` starts raw HTML, and
  ``* _ ` [ ] ~ &`` format or link. :func:`markdown_cell` backslash-escapes those characters and
  writes line breaks as ``<br>``.
* **LaTeX**: ``& \\ %`` end cells, rows and lines; ``{ } $ # _ ^ ~`` and ``^^`` sequences are
  commands. :func:`latex_text` replaces every special character by a command that prints it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MD_ESCAPE = frozenset("\\`*_[]<>&|~$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TEX = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
    "%": r"\%", "_": r"\_", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
}
ARROW = "->"
TEX_ARROW = r"$\rightarrow$"


def csv_cell(value: object) -> object:
    """``value`` with a ``'`` in front when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_quoting(values: Iterable[object]) -> int:
    """``csv.QUOTE_ALL`` when a value holds a carriage return, else ``csv.QUOTE_MINIMAL``."""
    return csv.QUOTE_ALL if any(isinstance(v, str) and "\r" in v for v in values) else \
        csv.QUOTE_MINIMAL


def markdown_cell(text: str) -> str:
    """``text`` as the content of one Markdown (GFM) table cell, shown literally."""
    text = _CONTROL.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "".join("<br>" if ch == "\n" else "\\" + ch if ch in _MD_ESCAPE else ch
                   for ch in text)


def latex_text(text: str) -> str:
    """``text`` as LaTeX that prints it literally; ``->`` becomes an arrow, and line breaks, tabs
    and control characters become spaces (they would end a paragraph or stop TeX)."""
    text = _CONTROL.sub(" ", text.replace("\r", " ").replace("\n", " ").replace("\t", " "))
    return TEX_ARROW.join("".join(_TEX.get(ch, ch) for ch in part)
                          for part in text.split(ARROW))
