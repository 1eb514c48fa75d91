"""Reading binary attribute tables: a CSV, or CelebA's ``list_attr_celeba.txt`` format.

CSV
    A header row, then one row per item. With image names (``names=True``) the first column names
    the image file (``filename,Male,Smiling``; Kaggle's ``list_attr_celeba.csv`` with its
    ``image_id`` column works as is); without (``labels.csv`` of precomputed latents) every column
    is an attribute, except an optional integer ``id`` column.
CelebA
    Line 1: the number of rows; line 2: the attribute names; then ``<file> v1 v2 ...`` separated
    by spaces (``list_attr_celeba.txt``, or CelebAMask-HQ's ``CelebAMask-HQ-attribute-anno.txt``
    whose file names are CelebA-HQ's).

Values are ``0/1``, ``-1/1`` (CelebA's ``±1``; -1 is 0) or ``true/false``, consistently within a
column. Every mistake is an :class:`~cage_eval.errors.InputFileError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cage_eval.errors import InputFileError
from cage_eval.textfiles import read_text_file

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "-1", "false", "no"}


@dataclass
class AttributeTable:
    """Binary attributes of ``n`` items.

    Attributes
    ----------
    path : Path
    names : list of str or None
        Image file names, one per row (tables with names).
    attributes : dict[str, np.ndarray]
        0/1 labels, shape ``(n,)``, int64, in file order of the columns.
    ids : np.ndarray or None
        The ``id`` column of a table without names, shape ``(n,)``.
    format : str
        ``"csv"`` or ``"celeba"``.
    """

    path: Path
    names: list[str] | None
    attributes: dict[str, np.ndarray]
    ids: np.ndarray | None = None
    format: str = "csv"

    def __len__(self) -> int:
        return len(next(iter(self.attributes.values())))

    def take(self, rows: np.ndarray) -> AttributeTable:
        """The table restricted to ``rows`` (indices into it)."""
        return AttributeTable(
            path=self.path, names=None if self.names is None else [self.names[i] for i in rows],
            attributes={a: v[rows] for a, v in self.attributes.items()},
            ids=None if self.ids is None else self.ids[rows], format=self.format)


def read_attribute_table(path: Path, *, names: bool) -> AttributeTable:
    """Read ``path`` in either format (CelebA when its first line is a bare integer).

    Parameters
    ----------
    path : Path
    names : bool
        The first column names image files (a folder's table) instead of being an attribute.

    Raises
    ------
    InputFileError
        Unreadable file, ragged rows, non-binary or mixed-convention values, duplicate names or
        columns, no attribute column, no rows.
    """
    path = Path(path)
    text = read_text_file(path, fix="save it as UTF-8").text  # UTF-8, else cp1252 with a warning
    lines = text.splitlines()
    if lines and lines[0].strip().isdigit():
        header, rows, first_line, fmt = _celeba_rows(path, lines)
    else:
        header, rows, first_line, fmt = _csv_rows(path, text)
    if not rows:
        raise InputFileError(f"{path}: no data rows; give one row per image")
    width = len(header)
    for k, row in enumerate(rows):
        if len(row) != width:
            raise InputFileError(f"{path}: line {first_line + k}: {len(row)} fields, the header "
                                 f"has {width}")
    item_names: list[str] | None = None
    ids = None
    columns = list(range(width))
    if names or fmt == "celeba":
        item_names = [row[0].strip() for row in rows]
        columns = columns[1:]
        seen: dict[str, int] = {}
        for k, name in enumerate(item_names):
            if not name:
                raise InputFileError(f"{path}: line {first_line + k}: empty image name")
            if name in seen:
                raise InputFileError(f"{path}: line {first_line + k}: image {name!r} is listed "
                                     f"twice (also line {first_line + seen[name]})")
            seen[name] = k
    elif "id" in header:
        col = header.index("id")
        columns.remove(col)
        try:
            ids = np.array([int(row[col]) for row in rows], dtype=np.int64)
        except ValueError:
            raise InputFileError(f"{path}: column 'id' must hold integers") from None
    if not columns:
        raise InputFileError(f"{path}: no attribute columns; add columns of 0/1 labels")
    attributes: dict[str, np.ndarray] = {}
    for col in columns:
        name = header[col].strip()
        if not name:
            raise InputFileError(f"{path}: column {col + 1} has no name")
        if name in attributes:
            raise InputFileError(f"{path}: attribute {name!r} appears twice in the header")
        attributes[name] = _binary_column(path, name, [row[col] for row in rows], first_line)
    return AttributeTable(path=path, names=item_names, attributes=attributes, ids=ids, format=fmt)


def _celeba_rows(path: Path, lines: list[str]) -> tuple[list[str], list[list[str]], int, str]:
    count = int(lines[0].strip())
    if len(lines) < 2:
        raise InputFileError(f"{path}: CelebA format needs a second line with attribute names")
    attrs = lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != count:
        raise InputFileError(f"{path}: line 1 says {count} rows but the file has {len(rows)}; "
                             "fix the count or the file")
    # Some copies put a name column header on line 2, most do not.
    header = attrs if rows and len(attrs) == len(rows[0]) else ["name", *attrs]
    return header, rows, 3, "celeba"


def _csv_rows(path: Path, text: str) -> tuple[list[str], list[list[str]], int, str]:
    try:
        table = [row for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise InputFileError(f"{path}: not a valid CSV ({exc})") from None
    if not table:
        raise InputFileError(f"{path}: empty; give a header row and one row per image")
    return [h.strip() for h in table[0]], table[1:], 2, "csv"


def _binary_column(path: Path, name: str, values: list[str], first_line: int) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    seen: set[str] = set()
    for k, raw in enumerate(values):
        v = raw.strip().lower()
        if v in _TRUE:
            out[k] = 1
        elif v in _FALSE:
            out[k] = 0
        else:
            raise InputFileError(f"{path}: line {first_line + k}: {name} = {raw!r}; attribute "
                                 "values must be 0/1, -1/1 or true/false")
        seen.add(v)
    if "0" in seen and "-1" in seen:
        raise InputFileError(f"{path}: attribute {name!r} mixes 0 and -1; use 0/1 or -1/1 in "
                             "one column, not both")
    return out
