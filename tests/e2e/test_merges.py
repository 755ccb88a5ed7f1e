"""Merges in both CRMs, through the CLI: the record merged away keeps a link to the one that won, in its
history and in `explain`, and a write-back that waited for it is reported, not silently lost."""

from __future__ import annotations

import json

from sqlalchemy import create_engine, text

from tests.e2e.conftest import Crms, run_cli


def outbox_rows(config_folder: str, external_id: str) -> list[tuple[str, str | None]]:
    engine = create_engine(f"sqlite:///{config_folder}/connector.db")
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT state, last_error FROM outbox WHERE external_id = :id ORDER BY id"), {"id": external_id}
            )
            return [(r[0], r[1]) for r in rows]
    finally:
        engine.dispose()


def test_a_merged_record_points_at_its_winner_and_its_pending_write_is_reported(crms: Crms) -> None:
    sf, hs, config = crms
    winner, loser = sf.seed("Lead", [{"LastName": n, "Company": "x", "Status": "Open - Not Contacted"} for n in "WL"])
    keep, gone = hs.seed("contacts", [{"email": f"{n}@x.io", "hs_lead_status": "NEW"} for n in "kg"])
    assert run_cli(config, "sync", "--once")[0] == 0
    # A write-back waits for each loser when a person merges it away.
    assert run_cli(config, "stage", "set", "sfdc", "Lead", loser, "Working")[0] == 0
    assert run_cli(config, "stage", "set", "hubspot", "contacts", gone, "Attempted")[0] == 0
    sf.merge("Lead", winner, loser)
    hs.merge("contacts", keep, gone)

    code, out = run_cli(config, "sync", "--once")
    assert code == 0, out
    assert sf.writes("Lead") == [] and hs.writes("contacts") == []  # nothing written to a merged-away record
    for source, obj, record, survivor in (("sfdc", "Lead", loser, winner), ("hubspot", "contacts", gone, keep)):
        code, shown = run_cli(config, "explain", source, obj, record, "--json")
        assert code == 0, shown
        data = json.loads(shown)
        assert data["merged_into"] == survivor
        last = data["history"][-1]
        assert last["to"] is None and f"merged into {survivor}" in last["reason"]
        assert "pending write-back" in last["reason"] and "dropped" in last["reason"]
        code, shown = run_cli(config, "explain", source, obj, record)
        assert f"merged into {survivor}" in shown
        states = outbox_rows(str(config.parent), record)
        assert states[-1][0] == "cancelled" and f"merged into {survivor}" in (states[-1][1] or "")
