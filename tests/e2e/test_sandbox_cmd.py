"""`connector sandbox` as a user runs it: a process serving both CRMs until SIGTERM, and a config that works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from click.testing import CliRunner

from connector.cli import main


def _start(folder: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `connector sandbox --dir folder` and read its output until it says it is serving."""
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "sandbox", "--dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("Serving until"):
                    ready.set()
        except ValueError:  # closed by _stop once the process ended
            pass
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(60) or process.poll() is not None:
        process.kill()
        raise AssertionError("the sandbox did not start:\n" + "\n".join(lines))
    return process, lines


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    finally:
        assert process.stdout is not None
        process.stdout.close()


def cli(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_serves_until_sigterm_and_its_config_works_again_after_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "try"
    process, lines = _start(folder)
    try:
        config = folder / "config.yaml"
        assert f"Wrote {config}" in lines and any(line.strip().startswith("connector sync --once") for line in lines)
        code, out = cli(config, "sync", "--once")
        assert code == 0, out
        assert "sfdc Lead: pulled 40" in out and "hubspot contacts: pulled 40" in out
        code, out = cli(config, "status", "--json")
        assert code == 0
        assert {o["object"]: o["records"] for o in json.loads(out)["objects"]} == {"Lead": 40, "contacts": 40}
    finally:
        assert _stop(process) == 0
    assert "Stopped." in lines
    ports = json.loads((folder / "sandbox.json").read_text())

    process, lines = _start(folder)  # the same ports and CA: the config is kept and still works
    try:
        assert f"Kept {config}" in lines
        assert json.loads((folder / "sandbox.json").read_text()) == ports
        code, out = cli(config, "validate", "--live")
        assert code == 0, out
        code, out = cli(config, "sync", "--once")
        assert code == 0, out
    finally:
        assert _stop(process) == 0


def test_refuses_to_overwrite_a_config_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("database: sqlite:///mine.db\n")
    result = CliRunner().invoke(main, ["sandbox", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "give another --dir" in result.output
    assert (tmp_path / "config.yaml").read_text() == "database: sqlite:///mine.db\n"
    assert not (tmp_path / "sandbox.json").exists()
