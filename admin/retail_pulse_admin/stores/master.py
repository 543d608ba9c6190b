"""Parse a store master CSV into valid store rows and rejections a person can act on.

Pure parsing, no AWS: the importer decides what to do with the result. The real file
(`AreaCode,StoreName,StoreID`) quotes names that contain commas and leaves stray spaces
around names, so every cell is trimmed and the csv module does the quoting. A BOM and
CRLF line endings (a spreadsheet's export) are tolerated. Nothing is guessed: a row that
cannot be read as exactly one store is rejected with its line number, never repaired.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

HEADER: tuple[str, ...] = ("AreaCode", "StoreName", "StoreID")
_HEADER_TEXT = ",".join(HEADER)
_BOM = "\ufeff"
# Far above any real id or name, far below DynamoDB's 2 KB key limit: one absurd cell
# is rejected here instead of failing a whole batch write later.
MAX_FIELD_LENGTH = 256


class StoreMasterError(Exception):
    """The file cannot be read at all (missing, a directory, not UTF-8)."""


@dataclass(frozen=True)
class StoreRow:
    """One valid store, with the line it came from so a report can point at it."""

    store_id: str
    area_code: str
    store_name: str
    line: int


@dataclass(frozen=True)
class Rejection:
    """A line that was not loaded, and why, in words for the person fixing the file."""

    line: int
    reason: str


@dataclass
class StoreMaster:
    """The outcome of reading a store master: one row per distinct store, plus the rest."""

    rows: list[StoreRow] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    # Data records seen (header and blank lines excluded): rows + rejections + duplicates.
    read: int = 0
    # The same store repeated with the same area and name: harmless, kept once.
    duplicates: int = 0


def read_store_master(source: str | os.PathLike[str] | Iterable[str]) -> StoreMaster:
    """Read a store master from a path (a `str` is a path) or from lines of text.

    Raises StoreMasterError when a path cannot be opened or is not UTF-8 text; every
    problem inside the file is a Rejection instead, so the good rows still load.
    """
    if isinstance(source, str | os.PathLike):
        try:
            # utf-8-sig drops a BOM; newline="" lets csv handle CRLF and quoted newlines.
            with open(source, encoding="utf-8-sig", newline="") as handle:
                return _parse(handle)
        except UnicodeDecodeError as exc:
            raise StoreMasterError(
                f"{os.fspath(source)} is not UTF-8 text (byte {exc.start}); "
                "save the store master as CSV UTF-8"
            ) from exc
        except OSError as exc:
            raise StoreMasterError(
                f"cannot read {os.fspath(source)}: {exc.strerror or exc}"
            ) from exc
    return _parse(source)


def read_store_master_text(text: str) -> StoreMaster:
    """Read a store master held in a string (handy for tests and small uploads)."""
    return _parse(io.StringIO(text, newline=""))


def _parse(lines: Iterable[str]) -> StoreMaster:
    master = StoreMaster()
    records = _records(lines)
    header = next(records, None)
    if header is None:
        master.rejections.append(
            Rejection(1, f"the file is empty: expected the header {_HEADER_TEXT}")
        )
        return master
    header_line, header_cells = header
    columns, problem = _columns(header_cells)
    if columns is None:
        master.rejections.append(Rejection(header_line, problem))
        return master

    first_seen: dict[str, StoreRow] = {}
    for line, cells in records:
        master.read += 1
        row_or_reason = _row(line, cells, columns)
        if isinstance(row_or_reason, str):
            master.rejections.append(Rejection(line, row_or_reason))
            continue
        row = row_or_reason
        earlier = first_seen.get(row.store_id)
        if earlier is None:
            first_seen[row.store_id] = row
            master.rows.append(row)
        elif (earlier.area_code, earlier.store_name) == (row.area_code, row.store_name):
            master.duplicates += 1
        else:
            master.rejections.append(Rejection(line, _conflict(row, earlier)))
    return master


def _records(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """Yield (first physical line, trimmed cells) per CSV record, skipping blank lines."""
    # skipinitialspace: `710006, "A, B",S1` is a quoted name after a stray space.
    reader = csv.reader(_without_bom(lines), skipinitialspace=True)
    line = 1
    for cells in reader:
        trimmed = [cell.strip() for cell in cells]
        if any(trimmed):
            yield line, trimmed
        # A quoted name may span lines; the next record starts after this one ends.
        line = reader.line_num + 1


def _without_bom(lines: Iterable[str]) -> Iterator[str]:
    iterator = iter(lines)
    first = next(iterator, None)
    if first is None:
        return
    yield first.removeprefix(_BOM)
    yield from iterator


def _columns(cells: list[str]) -> tuple[dict[str, int] | None, str]:
    """Map each expected column to its position; any order and letter case are fine."""
    names = [cell.removeprefix(_BOM).strip().lower() for cell in cells]
    wanted = {name.lower(): name for name in HEADER}
    positions: dict[str, int] = {}
    extra: list[str] = []
    for index, (cell, name) in enumerate(zip(cells, names, strict=True)):
        if name in wanted and wanted[name] not in positions:
            positions[wanted[name]] = index
        elif name:  # an empty cell is a spreadsheet's padding; a repeat or stranger is not
            extra.append(_shorten(cell))
    missing = [name for name in HEADER if name not in positions]
    if missing or extra:
        found = _shorten(",".join(cells), 80)
        detail = []
        if missing:
            detail.append("missing " + ", ".join(missing))
        if extra:
            detail.append("unexpected " + ", ".join(extra))
        return None, f"bad header {found!r} ({'; '.join(detail)}): expected {_HEADER_TEXT}"
    return positions, ""


def _shorten(text: str, limit: int = 40) -> str:
    """A header that is really some other file's first line should not flood the report."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _row(line: int, cells: list[str], columns: dict[str, int]) -> StoreRow | str:
    """One record as a StoreRow, or the reason it is not one."""
    # Some spreadsheets pad rows with empty trailing cells; those carry no data.
    while len(cells) > len(HEADER) and not cells[-1]:
        cells = cells[:-1]
    if len(cells) != len(HEADER):
        hint = ""
        if len(cells) > len(HEADER):
            hint = "; a name that contains a comma must be in double quotes"
        return f"expected {len(HEADER)} columns ({_HEADER_TEXT}), found {len(cells)}{hint}"
    store_id = cells[columns["StoreID"]]
    area_code = cells[columns["AreaCode"]]
    store_name = cells[columns["StoreName"]]
    if not store_id:
        return "missing StoreID"
    if not area_code:
        return f"empty AreaCode for store {store_id}"
    if not store_name:
        return f"empty StoreName for store {store_id}"
    if any(ch.isspace() for ch in store_id):
        return f"StoreID {store_id!r} contains spaces"
    if store_id.startswith("#"):  # the Stores table keeps its area registry under "#areas"
        return f"StoreID {store_id!r} must not start with '#'"
    if area_code.startswith("#"):  # a client's results are indexed under "#<client>#<area>"
        return f"AreaCode {area_code!r} must not start with '#'"
    for column, value in (
        ("StoreID", store_id),
        ("AreaCode", area_code),
        ("StoreName", store_name),
    ):
        if len(value) > MAX_FIELD_LENGTH:
            return f"{column} is {len(value)} characters long, over the limit of {MAX_FIELD_LENGTH}"
    return StoreRow(store_id=store_id, area_code=area_code, store_name=store_name, line=line)


def _conflict(row: StoreRow, earlier: StoreRow) -> str:
    return (
        f"duplicate StoreID {row.store_id} with a different area or name: "
        f"{row.area_code} {row.store_name!r} here, "
        f"{earlier.area_code} {earlier.store_name!r} on line {earlier.line} (kept)"
    )
