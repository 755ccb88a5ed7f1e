"""The first sync of an org with months of history: what `sync --once --dry-run` shows, with and without
`enroll_existing: true`, and what the real first sync then writes (nothing, by default).

Seeds both sandboxes as an org in use for months (records last modified 30 to 120 days ago, replies and
calls logged 20 to 90 days ago), points a config at them and runs the CLI as a user would.

    python bench/old_org_first_sync.py                 # 5,000 leads, 20,000 contacts, 1,000 Tasks, 2,000 calls
    python bench/old_org_first_sync.py --scale 0.1     # a tenth of that
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from connector.cli import main
from connector.demo import _write_config
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.salesforce import SalesforceSandbox

DAY = timedelta(days=1)
LEAD_STATUSES = ["Open - Not Contacted", "Working - Contacted", "Working - Contacted", "Closed - Not Converted"]
CONTACT_STATUSES = ["NEW", "OPEN", "ATTEMPTED_TO_CONTACT", "CONNECTED", "IN_PROGRESS", "BAD_TIMING"]


def seed(sf: SalesforceSandbox, hs: HubSpotSandbox, scale: float, rng: random.Random) -> None:
    now = datetime.now(UTC)
    leads: list[str] = []
    contacts: list[str] = []
    for day in range(30, 121, 10):  # ten batches, each modified on its own day in the past
        sf.clock = hs.clock = lambda day=day: now - day * DAY
        n_leads, n_contacts = int(500 * scale), int(2000 * scale)
        leads += sf.seed(
            "Lead", [{"LastName": f"L{i}", "Company": "x", "Status": rng.choice(LEAD_STATUSES)} for i in range(n_leads)]
        )
        contacts += hs.seed(
            "contacts",
            [{"email": f"{day}-{i}@x.io", "hs_lead_status": rng.choice(CONTACT_STATUSES)} for i in range(n_contacts)],
        )
    for day in range(20, 91, 10):
        sf.clock = hs.clock = lambda day=day: now - day * DAY
        when = (now - day * DAY).date().isoformat()
        tasks = [{"Subject": "RE: pricing", "Type": "Email", "WhoId": rng.choice(leads), "ActivityDate": when}]
        sf.seed("Task", tasks * int(125 * scale))
        for _ in range(int(250 * scale)):
            hs.add_engagement("calls", rng.choice(contacts), {"hs_call_title": "intro"}, at=now - day * DAY)
    sf.clock = hs.clock = lambda: datetime.now(UTC)


def cli(config: Path, *args: str) -> tuple[int, str, float]:
    started = time.perf_counter()
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    return result.exit_code, result.output, time.perf_counter() - started


def summary(output: str) -> list[dict[str, object]]:
    data = json.loads(output[output.index("{") :])
    rows = []
    for o in data["objects"]:
        moves = [m for m in o.get("moves", []) if m["from"] is not None]
        by_rule: dict[str, int] = {}
        for move in moves:
            key = f"{move['from']} -> {move['to']} ({move['rule'] or move['cause']})"
            by_rule[key] = by_rule.get(key, 0) + 1
        rows.append(
            {
                "object": f"{o['source']} {o['object']}",
                "pulled": o["pulled"],
                "moves": len(moves),
                "writes": len(o.get("writes", [])) if "writes" in o else o["written"],
                "by_rule": by_rule,
            }
        )
    return rows


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: 5,000 leads and 20,000 contacts")
    args = parser.parse_args()
    rng = random.Random(4)
    sf, hs = SalesforceSandbox(), HubSpotSandbox()
    sf.start()
    hs.start()
    try:
        with tempfile.TemporaryDirectory(prefix="connector-old-org-") as folder:
            seed(sf, hs, args.scale, rng)
            config = _write_config(Path(folder), sf, hs)
            mappings = [Path(folder) / "mappings" / n for n in ("salesforce-lead.yaml", "hubspot-contact.yaml")]
            originals = [m.read_text() for m in mappings]
            for mapping, text in zip(mappings, originals, strict=True):
                mapping.write_text(text + "enroll_existing: true\n")
            code, out, took = cli(config, "sync", "--once", "--dry-run", "--json")
            print(f"enroll_existing: true -- sync --once --dry-run --json (exit {code}, {took:.1f} s):")
            for row in summary(out):
                print(f"  {row}")
            code, text, _ = cli(config, "sync", "--once", "--dry-run")
            print("  as text, first lines:")
            for line in [line for line in text.splitlines() if "records read" not in line][:8]:
                print(f"    {line}")
            written = f"Salesforce {len(sf.writes('Lead'))}, HubSpot {len(hs.writes('contacts'))}"
            print(f"  CRM writes after the dry run: {written}")
            for mapping, text in zip(mappings, originals, strict=True):
                mapping.write_text(text)
            code, out, took = cli(config, "sync", "--once", "--dry-run", "--json")
            print(f"default (baseline) -- sync --once --dry-run --json (exit {code}, {took:.1f} s):")
            for row in summary(out):
                print(f"  {row}")
            code, out, took = cli(config, "sync", "--once", "--json")
            print(f"default (baseline) -- the real sync --once (exit {code}, {took:.1f} s):")
            for row in summary(out):
                print(f"  {row}")
            print(f"  CRM writes: Salesforce {len(sf.writes('Lead'))}, HubSpot {len(hs.writes('contacts'))}")
    finally:
        sf.stop()
        hs.stop()


if __name__ == "__main__":
    main_()
