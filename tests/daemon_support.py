"""Daemons as real subprocesses against the loopback sandboxes: start, signal, kill, read the store.

The sandboxes run in the test process (threads on loopback); each `connector run` / `connector sync
--once` is a child process talking to them over HTTP(S), so signals, exit codes and kill -9 are real.
Every child's stdout and stderr go to files, printed by `Proc.diagnostics()` when an assertion fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, create_engine, text

from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.salesforce import SalesforceSandbox

SHORT_SCHEDULE = {"sync_every": "1s", "writeback_every": "1s", "timers_every": "2s", "reconcile_every": "24h"}
NEW_LEAD, WORKING_LEAD = "Open - Not Contacted", "Working - Contacted"
CLOSED_LEAD = "Closed - Not Converted"
NEW_CONTACT, CONNECTED_CONTACT = "NEW", "CONNECTED"


def copy_mappings(folder: Path) -> Path:
    """The packaged example mappings (the ones `connector demo` uses) into `folder/mappings`."""
    mappings = folder / "mappings"
    mappings.mkdir(exist_ok=True)
    for name in ("salesforce-lead.yaml", "hubspot-contact.yaml"):
        packaged = resources.files("connector") / "examples" / "mappings" / name
        (mappings / name).write_text(packaged.read_text(encoding="utf-8"), encoding="utf-8")
    return mappings


def write_config(
    folder: Path,
    database: str,
    *,
    sf: SalesforceSandbox | None = None,
    hs: HubSpotSandbox | None = None,
    page_size: int = 0,
) -> Path:
    """A config.yaml (JSON is YAML) pointing at the sandboxes, as `connector demo` writes one."""
    copy_mappings(folder)
    sources: dict[str, Any] = {}
    if sf is not None:
        sources["sfdc"] = {
            "type": "salesforce",
            "instance_url": sf.url,
            "auth": {
                "method": "client_credentials",
                "login_url": sf.url,
                "client_id": sf.client_id,
                "client_secret": sf.client_secret,
            },
            "ca_bundle": sf.ca_pem,
            **({"page_size": page_size} if page_size else {}),
            "objects": {"Lead": {"status_field": "Status", "mapping": "mappings/salesforce-lead.yaml"}},
        }
    if hs is not None:
        sources["hubspot"] = {
            "type": "hubspot",
            "base_url": hs.url,
            "auth": {"method": "token", "access_token": hs.token},
            "objects": {"contacts": {"status_field": "hs_lead_status", "mapping": "mappings/hubspot-contact.yaml"}},
        }
    config = {
        "database": database,
        "sources": sources,
        "schedule": SHORT_SCHEDULE,
        "writeback": {"enabled": True, "conflict_check": True},
    }
    path = folder / "config.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


# --- child processes -------------------------------------------------------------------------------
@dataclass
class Proc:
    """One `connector ...` child; its output goes to files in `folder`."""

    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    files: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> float:
        """Send `signum`; returns when it was sent (time.monotonic())."""
        self.popen.send_signal(signum)
        return time.monotonic()

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None when still running after `timeout` seconds."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """kill -9, and reap."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=30)

    def close(self) -> None:
        self.kill()
        for handle in self.files:
            handle.close()
        self.files.clear()

    def diagnostics(self) -> str:
        return (
            f"--- {self.name}: {' '.join(self.args)} (exit {self.popen.poll()})\n"
            f"--- stdout:\n{self.stdout()[-6000:]}\n--- stderr:\n{self.stderr()[-12000:]}"
        )


class Procs:
    """Starts children and guarantees none outlives the test (`close()` kills what still runs)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.all: list[Proc] = []

    def start(self, name: str, *args: str) -> Proc:
        out_path = self.folder / f"{len(self.all):02d}-{name}.out"
        err_path = self.folder / f"{len(self.all):02d}-{name}.err"
        out, err = out_path.open("wb"), err_path.open("wb")
        command = [sys.executable, "-m", "connector", *args]
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            popen = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=child_env)
        except BaseException:
            out.close()
            err.close()
            raise
        proc = Proc(name, command[3:], popen, out_path, err_path, [out, err])
        self.all.append(proc)
        return proc

    def run(self, name: str, *args: str, timeout: float = 120) -> Proc:
        """Start and wait for the end (killed and reported if it takes longer than `timeout`)."""
        proc = self.start(name, *args)
        if proc.wait(timeout) is None:
            proc.kill()
            raise AssertionError(f"{name} did not finish within {timeout}s\n{proc.diagnostics()}")
        return proc

    def diagnostics(self) -> str:
        return "\n".join(p.diagnostics() for p in self.all)

    def close(self) -> None:
        for proc in self.all:
            proc.close()


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll until `condition()` is truthy; its value, or AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# --- reading the store from the test -------------------------------------------------------------
def as_utc(value: Any) -> datetime:
    """A timestamp as plain SQL returns it (SQLite: naive text; PostgreSQL: aware) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime), value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StoreReader:
    """Plain SQL over the daemon's database (WAL SQLite or PostgreSQL), read-only by convention."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        try:
            with self.engine.connect() as connection:
                return list(connection.execute(text(sql), params))
        except Exception as exc:  # the schema may not exist yet while the daemon migrates
            if "no such table" in str(exc) or "does not exist" in str(exc):
                return []
            raise

    def scalar(self, sql: str, **params: Any) -> Any:
        found = self.rows(sql, **params)
        return found[0][0] if found else None

    def cursor(self, source: str, obj: str, kind: str = "records") -> tuple[Any, str | None] | None:
        found = self.rows(
            "SELECT modified_at, last_id FROM cursors WHERE source = :s AND object = :o AND kind = :k",
            s=source,
            o=obj,
            k=kind,
        )
        return (found[0][0], found[0][1]) if found else None

    def records(self, source: str, obj: str) -> dict[str, tuple[str | None, str | None, str | None]]:
        """external_id -> (stage, set_by, remote_status)."""
        found = self.rows(
            "SELECT external_id, stage, set_by, remote_status FROM records WHERE source = :s AND object = :o",
            s=source,
            o=obj,
        )
        return {r[0]: (r[1], r[2], r[3]) for r in found}

    def history(self, source: str, obj: str) -> dict[str, list[tuple[Any, ...]]]:
        """external_id -> [(from, to, cause, rule, suppressed), ...] in the order written."""
        found = self.rows(
            "SELECT r.external_id, t.from_stage, t.to_stage, t.cause, t.rule, t.suppressed "
            "FROM transitions t JOIN records r ON r.id = t.record_id "
            "WHERE r.source = :s AND r.object = :o ORDER BY t.id",
            s=source,
            o=obj,
        )
        out: dict[str, list[tuple[Any, ...]]] = {}
        for external_id, *entry in found:
            out.setdefault(external_id, []).append((entry[0], entry[1], entry[2], entry[3], bool(entry[4])))
        return out

    def without_history(self, source: str, obj: str) -> list[str]:
        return [
            r[0]
            for r in self.rows(
                "SELECT r.external_id FROM records r WHERE r.source = :s AND r.object = :o AND NOT EXISTS "
                "(SELECT 1 FROM transitions t WHERE t.record_id = r.id)",
                s=source,
                o=obj,
            )
        ]

    def outbox(self, source: str, obj: str) -> dict[str, int]:
        return {
            r[0]: r[1]
            for r in self.rows(
                "SELECT state, count(*) FROM outbox WHERE source = :s AND object = :o GROUP BY state",
                s=source,
                o=obj,
            )
        }


def sigterm_and_wait(procs_: list[Proc], timeout: float = 10.0) -> dict[str, tuple[int | None, float]]:
    """SIGTERM each; (exit code, seconds from its signal to its exit) per name."""
    sent = {p.name: p.signal(signal.SIGTERM) for p in procs_}
    out = {}
    for proc in procs_:
        left = max(0.1, sent[proc.name] + timeout - time.monotonic())
        code = proc.wait(left)
        out[proc.name] = (code, time.monotonic() - sent[proc.name])
    return out
