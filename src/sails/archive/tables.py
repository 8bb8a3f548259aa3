"""Reading input tables: ALminer CSV files, ObsCore VOTables, astropy ASCII/ECSV tables.

CSV goes through the standard ``csv`` module (fast, no type guessing: 50,000 rows in well
under a second); everything else through astropy. Either way the result is a list of column
names and rows as dicts, which :func:`sails.archive.rows.map_rows` validates.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sails.archive.rows import RecordSet, map_rows
from sails.errors import IngestError, UserInputError


@dataclass
class InputTable:
    source: str
    columns: list[str]
    rows: list[dict[str, Any]]
    first_line: int = 1
    line_word: str = "row"

    def records(self) -> RecordSet:
        return map_rows(self.columns, self.rows, self.source, self.first_line, self.line_word)


def _open_text(path: Path) -> str:
    try:
        content = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserInputError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise UserInputError(f"{path} is a folder, not a table file") from None
    except UnicodeDecodeError:
        raise IngestError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise UserInputError(f"cannot read {path}: {exc.strerror}") from None
    if "\x00" in content:
        raise IngestError(f"{path} contains NUL bytes: not a text table")
    return content


def read_csv(path: str | Path) -> InputTable:
    """An ALminer CSV (or any CSV with ObsCore column names); tab-separated also accepted."""
    path = Path(path)
    content = _open_text(path)
    header = content.split("\n", 1)[0]
    delimiter = "\t" if header.count("\t") > header.count(",") else ","
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        columns = next(reader)
    except StopIteration:
        raise IngestError(f"{path} is empty (no header line)") from None
    except csv.Error as exc:
        raise IngestError(f"{path} is not a readable CSV: {exc}") from None
    columns = [c.strip() for c in columns]
    rows: list[dict[str, Any]] = []
    try:
        for values in reader:
            if not values or (len(values) == 1 and not values[0].strip()):
                rows.append({})  # keep line numbers right; an empty row fails validation
                continue
            rows.append(dict(zip(columns, values, strict=False)))
    except csv.Error as exc:
        raise IngestError(f"{path}, line {reader.line_num}: {exc}") from None
    # Blank lines at the very end are not rows.
    while rows and not rows[-1]:
        rows.pop()
    return InputTable(str(path), columns, rows, first_line=2, line_word="line")


def table_rows(table: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """An astropy Table as (columns, rows); masked values become None."""
    names = list(table.colnames)
    cols = [table[n].tolist() for n in names]
    rows = [dict(zip(names, values, strict=True)) for values in zip(*cols, strict=True)] \
        if names else []
    return names, rows


def _check_votable_status(path: Path) -> None:
    """A saved TAP error document carries QUERY_STATUS=ERROR: say so instead of 'no rows'."""
    from astropy.io.votable import parse

    try:
        vot = parse(str(path), verify="ignore")
    except Exception as exc:
        raise IngestError(f"{path} is not a readable VOTable: {exc}") from None
    for res in vot.resources:
        for info in res.infos:
            if info.name == "QUERY_STATUS" and str(info.value).upper() == "ERROR":
                msg = (info.content or "").strip() or "no message"
                raise IngestError(f"{path} holds a failed TAP query: {msg}")


def read_obscore_file(path: str | Path) -> InputTable:
    """An ObsCore result saved as VOTable, ECSV, CSV or whitespace-separated ASCII."""
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise UserInputError(f"no such file: {path}")
    if path.is_dir():
        raise UserInputError(f"{path} is a folder, not a table file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    head = path.read_bytes()[:512].lstrip()
    if suffix in (".xml", ".vot", ".votable") or head.startswith(b"<?xml") \
            or head.startswith(b"<VOTABLE"):
        _check_votable_status(path)
        fmt = "votable"
    elif suffix == ".ecsv" or head.startswith(b"# %ECSV"):
        fmt = "ascii.ecsv"
    else:
        fmt = "ascii"
    try:
        kwargs: dict[str, Any] = {"format": fmt}
        if fmt == "votable":
            kwargs["verify"] = "ignore"
        table = Table.read(str(path), **kwargs)
    except Exception as exc:
        what = {"votable": "VOTable", "ascii.ecsv": "ECSV"}.get(fmt, "ASCII table")
        raise IngestError(f"cannot read {path} as {what}: {exc}") from None
    columns, rows = table_rows(table)
    return InputTable(str(path), columns, rows)
