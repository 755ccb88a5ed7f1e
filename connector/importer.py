"""CSV import: set many records' stages by hand (set_by import); the rows that cannot apply are rejected.

A row names a record by its CRM id and a stage by the stage's name or by its CRM status (exact, after
trimming the cell's surrounding spaces). Rows with an unknown stage, an unknown, deleted or duplicate
id, or a malformed line are rejected with the line they start on and the reason; the others apply
as manual sets that queue the stage's status for write-back, a thousand per transaction.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from connector.config import SyncedObject
from connector.csvsafe import neutralise_row, restore
from connector.engine import Engine
from connector.errors import UsageError
from connector.rules import SetBy
from connector.store import repo
from connector.yamlfile import suggest

CHUNK = 1000  # rows per transaction, and per progress step
DELIMITERS = ",;\t|"
ID_COLUMNS = ("id", "record id", "record_id", "external_id", "hs_object_id")
STAGE_COLUMNS = ("stage", "status")
_SCIENTIFIC = re.compile(r"^\d+(\.\d+)?[eE]\+\d+$")
_SF_ID15 = re.compile(r"^[A-Za-z0-9]{15}$")

Progress = Callable[[int, int], None]  # (rows applied so far, rows to apply)


@dataclass(frozen=True)
class Line:
    """One row of the file: where it starts, its cells (None when it could not be parsed), the error."""

    number: int
    cells: list[str] | None
    error: str | None = None
    text: str = ""


@dataclass(frozen=True)
class CsvTable:
    path: Path
    encoding: str
    delimiter: str
    header: list[str]
    lines: list[Line]


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str
    cells: list[str]


@dataclass
class ImportReport:
    file: Path
    source: str
    object: str
    encoding: str
    delimiter: str
    id_column: str
    stage_column: str
    rows: int = 0
    applied: int = 0
    unchanged: int = 0
    writebacks: int = 0
    rejects: list[Reject] = field(default_factory=list)
    dry_run: bool = False
    rejects_file: Path | None = None

    @property
    def rejected(self) -> int:
        return len(self.rejects)


# --- reading ---------------------------------------------------------------------------------------
def decode(data: bytes) -> tuple[str, str]:
    """The text and the encoding it was read with: a BOM decides; else UTF-8, else Windows-1252 (Excel)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def sniff_delimiter(text: str) -> str:
    """The delimiter of the file: csv.Sniffer on a sample, checked against the header line."""
    sample = text[:65536]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rindex("\n") + 1]
    first = sample.splitlines()[0] if sample else ""

    def width(delimiter: str) -> int:
        return len(next(csv.reader([first], delimiter=delimiter), []))

    widest = max(DELIMITERS, key=width)  # first candidate wins ties: ',' before ';'
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return widest
    return sniffed if width(sniffed) >= width(widest) else widest


def read_table(path: Path) -> CsvTable:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    text, encoding = decode(data)
    delimiter = sniff_delimiter(text)
    physical = io.StringIO(text, newline="").readlines()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    lines: list[Line] = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raw = "".join(physical[start - 1 : reader.line_num]).rstrip("\r\n")
            if header is None:
                raise UsageError(f"{path}:{start}: the header line is malformed: {exc}") from None
            lines.append(Line(start, None, f"malformed line: {exc}", raw))
            continue
        # A row that is blank (an empty line, or only delimiters) is no row at all.
        if not any(c.strip() for c in cells):
            continue
        cells = [restore(c) for c in cells]  # a fixed rejects file comes back with our quotes
        if header is None:
            header = [c.strip() for c in cells]
            continue
        lines.append(Line(start, cells))
    if header is None:
        raise UsageError(f"{path} is empty: the first line must name the columns (an id and a stage)")
    return CsvTable(path, encoding, delimiter, header, lines)


def find_column(table: CsvTable, wanted: str | None, defaults: Sequence[str], what: str, option: str) -> int:
    """The index of a column: as named (exactly, or differing only in case and spaces), or a default."""
    header = table.header
    columns = ", ".join(f"'{h}'" for h in header)
    folded = [h.strip().casefold() for h in header]
    if wanted is not None:
        if wanted in header:
            return header.index(wanted)
        if folded.count(wanted.strip().casefold()) == 1:
            return folded.index(wanted.strip().casefold())
        hint = suggest(wanted, header)
        raise UsageError(f"{table.path} has no column '{wanted}'{hint}; its columns: {columns}")
    for name in defaults:
        if name.casefold() in folded:
            return folded.index(name.casefold())
    raise UsageError(f"{table.path}: which column holds the {what}? Name it with {option}; its columns: {columns}")


# --- checking ------------------------------------------------------------------------------------
def salesforce_id18(value: str) -> str:
    """The 18-character, case-safe form of a 15-character Salesforce id (as reports export them)."""
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, char in enumerate(value[start : start + 5]) if char.isupper())
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return value + suffix


def resolve_stage(synced: SyncedObject, value: str) -> tuple[str | None, str | None]:
    """(stage, None) for a stage name or a CRM status; (None, reason) otherwise."""
    mapping = synced.mapping
    by_name = value if mapping.has_stage(value) else None
    by_status = mapping.stage_for_status(value)
    if by_name and by_status and by_name != by_status:
        return None, (
            f"'{value}' is ambiguous: it is the stage '{by_name}' and the status of stage '{by_status}'; "
            "write the stage's name"
        )
    stage = by_name or by_status
    if stage is not None:
        return stage, None
    known = [*mapping.stage_names, *mapping.statuses]
    return None, f"unknown stage or status '{value}'{near_miss(value, known)}"


def near_miss(value: str, known: Sequence[str]) -> str:
    """A did-you-mean: the same words in another case or spacing first, else a close spelling."""
    folded = " ".join(value.split()).casefold()
    same = [k for k in known if " ".join(k.split()).casefold() == folded]
    if same:
        return f" (did you mean '{same[0]}'?)"
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass
class Plan:
    """What an import would do: rows to set, rows already in their stage, rows rejected."""

    apply: list[tuple[int, str, str]] = field(default_factory=list)  # (line, id, stage)
    unchanged: int = 0
    rejects: list[Reject] = field(default_factory=list)
    rows: int = 0


def _check_line(
    line: Line, width: int, id_index: int, stage_index: int, synced: SyncedObject
) -> tuple[str | None, str | None, list[str]]:
    """(external id, stage, reasons) of one line."""
    if line.cells is None:
        return None, None, [line.error or "malformed line"]
    cells = line.cells
    extra = cells[width:]
    if len(cells) < width or any(c.strip() for c in extra):
        reason = f"malformed line: {len(cells)} fields where the header has {width} (a stray delimiter or quote?)"
        return None, None, [reason]
    external_id = cells[id_index].strip()
    value = cells[stage_index].strip()
    reasons: list[str] = []
    if not external_id:
        reasons.append("no id")
    stage: str | None = None
    if not value:
        reasons.append("no stage")
    else:
        stage, problem = resolve_stage(synced, value)
        if problem:
            reasons.append(problem)
    return external_id or None, stage, reasons


def _load(
    engine: Engine, synced: SyncedObject, ids: set[str]
) -> tuple[dict[str, repo.StoredRecord], dict[str, str]]:
    """The stored records, and each id as the store knows it (a Salesforce 15-character id as its 18)."""
    salesforce = engine.config.sources[synced.source].type == "salesforce"
    long_form = {i: salesforce_id18(i) for i in ids if salesforce and _SF_ID15.match(i)}
    with engine.store.transaction() as session:
        stored = repo.load_records(session, synced.source, synced.name, sorted(ids | set(long_form.values())))
    resolved = {i: i if i in stored or i not in long_form else long_form[i] for i in ids}
    return stored, resolved


def plan_import(engine: Engine, synced: SyncedObject, table: CsvTable, id_index: int, stage_index: int) -> Plan:
    plan = Plan(rows=len(table.lines))
    width = len(table.header)
    checked = [(line, *_check_line(line, width, id_index, stage_index, synced)) for line in table.lines]
    stored, resolved = _load(engine, synced, {i for _, i, _, _ in checked if i})
    lines_of: dict[str, list[int]] = {}
    for line, raw_id, _, _ in checked:
        if raw_id:
            lines_of.setdefault(resolved[raw_id], []).append(line.number)
    for line, raw_id, stage, reasons in checked:
        external_id = resolved[raw_id] if raw_id else None
        if external_id is not None:
            others = [n for n in lines_of[external_id] if n != line.number]
            record = stored.get(external_id)
            if others:
                reasons.append(f"duplicate id '{external_id}' (also on line {', '.join(map(str, others))})")
            if record is None:
                hint = " (a spreadsheet wrote it as a number: format the column as text)" if _SCIENTIFIC.match(
                    external_id
                ) else ""
                reasons.append(f"no record '{raw_id}' in {synced.source} {synced.name}{hint}")
            elif record.deleted:
                reasons.append(f"record '{external_id}' was deleted in the CRM")
        if reasons:
            plan.rejects.append(Reject(line.number, "; ".join(reasons), line.cells or [line.text]))
            continue
        assert external_id is not None and stage is not None
        state = stored[external_id].state
        if state.stage == stage and state.quarantined is None:
            plan.unchanged += 1
        else:
            plan.apply.append((line.number, external_id, stage))
    return plan


# --- applying ------------------------------------------------------------------------------------
def apply_plan(
    engine: Engine, synced: SyncedObject, plan: Plan, now: datetime, note: str, progress: Progress | None = None
) -> int:
    """Set the planned stages, a chunk per transaction; return how many write-backs were queued."""
    queued = 0
    total = len(plan.apply)
    for start in range(0, total, CHUNK):
        chunk = [(external_id, stage) for _, external_id, stage in plan.apply[start : start + CHUNK]]
        decisions = engine.set_stages(synced, chunk, now, SetBy.IMPORT, note)
        queued += sum(1 for d in decisions.values() if d.writeback)
        if progress is not None:
            progress(min(start + CHUNK, total), total)
    return queued


def write_rejects(path: Path, table: CsvTable, rejects: Sequence[Reject]) -> None:
    """The rejected rows as they were, after their line and reason: fix them, and import this file.

    Cells that a spreadsheet would run as a formula get a leading `'` (see `csvsafe`); the importer
    takes it off again.
    """
    encoding = "utf-8" if table.encoding == "utf-8" else "utf-8-sig"
    with path.open("w", encoding=encoding, newline="") as out:
        writer = csv.writer(out, delimiter=table.delimiter)
        writer.writerow(neutralise_row(["line", "reason", *table.header]))
        for reject in rejects:
            writer.writerow(neutralise_row([reject.line, reject.reason, *reject.cells]))


def default_rejects_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.rejects.csv")


def run_import(
    engine: Engine,
    synced: SyncedObject,
    path: Path,
    now: datetime,
    *,
    id_column: str | None = None,
    stage_column: str | None = None,
    rejects_path: Path | None = None,
    dry_run: bool = False,
    progress: Callable[[int], Progress | None] | None = None,
) -> ImportReport:
    """Read, check and apply one file. `progress(rows to apply)` may return a callback for the apply phase."""
    table = read_table(path)
    object_id = f"{synced.name.lower()} id"
    id_index = find_column(table, id_column, (*ID_COLUMNS, object_id), "record ids", "--id-column")
    stage_defaults = (*STAGE_COLUMNS, synced.settings.status_field)
    stage_index = find_column(table, stage_column, stage_defaults, "stages", "--stage-column")
    if id_index == stage_index:
        raise UsageError(f"{path}: the id and the stage cannot both come from column '{table.header[id_index]}'")
    plan = plan_import(engine, synced, table, id_index, stage_index)
    report = ImportReport(
        path, synced.source, synced.name, table.encoding, table.delimiter, table.header[id_index],
        table.header[stage_index], rows=plan.rows, unchanged=plan.unchanged, rejects=plan.rejects, dry_run=dry_run,
    )
    if dry_run:
        report.applied = len(plan.apply)
    else:
        callback = progress(len(plan.apply)) if progress else None
        report.writebacks = apply_plan(engine, synced, plan, now, f"imported from {path.name}", callback)
        report.applied = len(plan.apply)
    if plan.rejects or rejects_path is not None:
        report.rejects_file = rejects_path or default_rejects_path(path)
        write_rejects(report.rejects_file, table, plan.rejects)
    return report


def describe_encoding(encoding: str) -> str:
    return {
        "utf-8": "UTF-8",
        "utf-8-sig": "UTF-8 with BOM",
        "utf-16": "UTF-16",
        "cp1252": "Windows-1252",
        "latin-1": "Latin-1",
    }.get(encoding, encoding)


def describe_delimiter(delimiter: str) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}.get(delimiter, repr(delimiter))
