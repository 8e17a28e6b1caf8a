"""Plan CSV files as text: read them as spreadsheet programs write them, write them
so every spreadsheet program reads them back.

Reading accepts a UTF-8 BOM, CRLF or LF line ends, and a comma or semicolon
delimiter (spreadsheets in locales with a decimal comma export semicolons); the
delimiter is the one the header line uses. Each record carries the physical line
of the file it starts on, counted as an editor counts them, so a quoted cell
that spans lines does not shift the numbers of the rows after it.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vmshift import textfile
from vmshift.errors import bad_input

MAX_PLAN_BYTES = 256 * 1024 * 1024  # far beyond any real plan; stops a wrong file early
_LINE_BREAK = re.compile(r"\r\n?")


@dataclass(frozen=True)
class Record:
    line: int  # the physical line the record starts on (1 is the header)
    cells: list[str]


def read_text(path: Path) -> str:
    """The plan file as text: UTF-8, its BOM removed. BadInput names the file."""
    return textfile.read_text(path, "plan CSV file", MAX_PLAN_BYTES,
                              "export the sheet as CSV UTF-8")


def sniff_delimiter(text: str) -> str:
    """The delimiter the header line uses: ';' when it has more of them than commas."""
    header = text.split("\n", 1)[0]
    return ";" if header.count(";") > header.count(",") else ","


def records(text: str) -> Iterator[Record]:
    """Every record of TEXT with the line it starts on; blank lines are skipped."""
    # newline="": csv sees line ends untranslated, so quoted cells keep their
    # CRLF or LF, and reader.line_num counts physical lines.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text),
                        strict=False)
    start = 1
    for cells in reader:
        if cells:
            yield Record(start, cells)
        start = reader.line_num + 1


def format_csv(header: list[str], rows: Iterable[list[str]]) -> str:
    """A plan as CSV text: comma-delimited, LF line ends, quotes only where needed.
    Line breaks inside a cell are written as LF: csv quotes a cell holding the
    line terminator's characters only, so a lone CR would end the record."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_LINE_BREAK.sub("\n", cell) for cell in row] for row in rows)
    return out.getvalue()


def write_atomically(path: Path, text: str, *, force: bool, option: str = "--output") -> None:
    """Write TEXT to PATH whole or not at all (a temporary file renamed over it);
    an existing PATH is kept unless FORCE."""
    refuse_existing(path, force=force, option=option)
    if not path.parent.is_dir():
        raise bad_input(path, f"{option}: no directory {str(path.parent)!r}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refuse_existing(path: Path, *, force: bool, option: str = "--output") -> None:
    """BadInput naming PATH when it exists and FORCE was not given: checked for
    every output of a command before it writes any of them."""
    if path.exists() and not force:
        raise bad_input(path, f"{option}: the file exists (--force replaces it)")
