"""Reading the text files people bring (results CSVs): one decoder, one CSV reader, one limit.

Standard library only. ``analyze`` and the report read ``results.csv`` through
:func:`read_csv_table`, so they agree on every file: the same decoding, the same field-size limit,
the same rows set aside.

- **Decoding** (:func:`decode_text`): the whole file as UTF-8 (a byte-order mark is dropped);
  only when that fails, as Windows-1252 (what Excel on Windows saves), with a
  :class:`~cage_eval.errors.CageEvalWarning` naming the first byte that is not UTF-8. A file that
  is neither is refused, naming the byte, its offset and its line.
- **Fields** longer than :data:`MAX_FIELD_CHARS` characters make the file unreadable (a results
  file holds short answers; a multi-megabyte field is damage or an attack), with the line.
- **Rows with more fields than the header** are set aside and counted
  (:attr:`CsvTable.extra_lines`), never read with their surplus silently dropped; the reader warns
  how many and where. Shorter rows are padded with empty fields (a spreadsheet drops trailing
  empty cells).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cage_eval.errors import CageEvalWarning, InputFileError

#: The longest field (in characters) any results file may hold; over it the file is refused.
MAX_FIELD_CHARS = 1024 * 1024

#: How many line numbers a message lists before it says "..."
_SHOWN = 5


@dataclass(frozen=True)
class DecodedText:
    """A file's text and how it was decoded.

    ``encoding`` is ``utf-8``, ``utf-8-sig`` (with a byte-order mark) or ``cp1252``; ``note`` says
    why the fallback was used (empty for UTF-8).
    """

    text: str
    encoding: str
    note: str = ""


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def decode_text(path: str | os.PathLike[str], data: bytes, *, fix: str = "save it as UTF-8",
                warn: bool = True) -> DecodedText:
    """Decode the whole of ``data`` (the bytes of ``path``): UTF-8 first, then Windows-1252.

    The fallback is announced with a :class:`CageEvalWarning` (``Warning: PATH: not UTF-8 (byte
    0xe9 at offset 1,234, line 5); read as Windows-1252 (cp1252)``), unless ``warn`` is false
    (the note is in :attr:`DecodedText.note` either way).

    Raises
    ------
    InputFileError
        Neither UTF-8 nor Windows-1252: names the first byte that is not UTF-8, its offset and
        its line, and says to ``fix``.
    """
    bom = data.startswith(b"\xef\xbb\xbf")
    try:
        return DecodedText(data[3:].decode("utf-8") if bom else data.decode("utf-8"),
                           "utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + (3 if bom else 0)
    byte, line = f"byte 0x{data[offset]:02x} at offset {offset:,}", _line_of(data, offset)
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: undecodable {byte} (line {line}), neither UTF-8 nor "
                             f"Windows-1252; {fix}") from None
    note = f"{path}: not UTF-8 ({byte}, line {line}); read as Windows-1252 (cp1252)"
    if warn:
        warnings.warn(note, CageEvalWarning, stacklevel=2)
    return DecodedText(text, "cp1252", note)


def read_text_file(path: str | os.PathLike[str], *, fix: str = "save it as UTF-8",
                   warn: bool = True) -> DecodedText:
    """:func:`decode_text` of the file at ``path``.

    Raises
    ------
    InputFileError
        The file cannot be read, or is not text.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be read ({exc.strerror})") from None
    return decode_text(path, data, fix=fix, warn=warn)


@dataclass(frozen=True)
class CsvTable:
    """A CSV file read by :func:`read_csv_table`.

    ``columns`` is the header (stripped); ``rows`` the data rows, each as long as the header;
    ``lines`` the 1-based line each row starts on (the header is line 1); ``extra_lines`` the
    lines of the rows set aside for having more fields than the header.
    """

    path: Path
    columns: tuple[str, ...]
    rows: list[list[str]]
    lines: list[int]
    encoding: str
    extra_lines: list[int] = field(default_factory=list)

    def column(self, name: str) -> list[str]:
        """Every row's value of column ``name`` (empty strings when the file has no such column)."""
        if name not in self.columns:
            return [""] * len(self.rows)
        i = self.columns.index(name)
        return [row[i] for row in self.rows]

    @property
    def extra_note(self) -> str:
        """One line about the rows set aside, or ``""``."""
        if not self.extra_lines:
            return ""
        shown = ", ".join(str(n) for n in self.extra_lines[:_SHOWN])
        more = ", ..." if len(self.extra_lines) > _SHOWN else ""
        return (f"{self.path}: {len(self.extra_lines)} row(s) have more fields than the header "
                f"(lines {shown}{more}); set aside, not analysed")


def read_csv_table(path: str | os.PathLike[str], *, text: DecodedText | None = None,
                   fix: str = "repair the file or download it again", warn: bool = True
                   ) -> CsvTable:
    """Read a whole CSV file (see the module docstring); warn about rows set aside.

    Parameters
    ----------
    path : the file.
    text : its decoded text, when the caller has it already.
    fix : what the user should do, for error messages.
    warn : warn (:class:`CageEvalWarning`) about a Windows-1252 fallback and rows set aside; a
        command that reads the file a second time passes False.

    Raises
    ------
    InputFileError
        Unreadable, undecodable or malformed (naming the line), or a field over
        :data:`MAX_FIELD_CHARS`.
    """
    path = Path(path)
    if text is None:
        text = read_text_file(path, fix="save it as UTF-8 CSV", warn=warn)
    reader = csv.reader(io.StringIO(text.text, newline=""), strict=True)
    old = csv.field_size_limit(MAX_FIELD_CHARS)
    rows: list[list[str]] = []
    lines: list[int] = []
    extra: list[int] = []
    columns: tuple[str, ...] = ()
    try:
        line = 1
        for record in reader:
            if not columns and not lines and not extra:
                columns = tuple(c.strip() for c in record)
                line = reader.line_num + 1
                continue
            if not record:  # a blank line
                line = reader.line_num + 1
                continue
            if len(record) > len(columns):
                extra.append(line)
            else:
                if len(record) < len(columns):
                    record = record + [""] * (len(columns) - len(record))
                rows.append(record)
                lines.append(line)
            line = reader.line_num + 1
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise InputFileError(f"{path}: line {line}: a field of over "
                                 f"{MAX_FIELD_CHARS:,} characters; a results file holds short "
                                 f"answers: {fix}") from None
        raise InputFileError(f"{path}: line {line}: not a well-formed CSV ({exc}); "
                             f"{fix}") from None
    finally:
        csv.field_size_limit(old)
    table = CsvTable(path=path, columns=columns, rows=rows, lines=lines,
                     encoding=text.encoding, extra_lines=extra)
    if extra and warn:
        warnings.warn(table.extra_note, CageEvalWarning, stacklevel=2)
    return table

