"""`connector demo`: both sandbox CRMs on loopback, a temporary SQLite store, a few scripted cycles.

It shows, with real HTTP through the real client libraries: the initial pull, activity moving
records (replies, meetings), a sticky manual set holding against a trigger, a person editing a
record in the CRM while our write-back waited (the person wins), inactivity measured by moving
`now` forward, what was written back, and the funnel.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connector.config import load_config
from connector.cycle import Jobs, ObjectOutcome
from connector.engine import Engine
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.salesforce import SalesforceSandbox
from connector.sandbox_cmd import Sandboxes, start_sandboxes, write_config
from connector.sources.factory import open_sources
from connector.store import repo
from connector.store.db import open_store

LEADS = 2000
CONTACTS = 1500
LEAD_MIX = [
    ("Open - Not Contacted", 0.55),
    ("Working - Contacted", 0.30),
    ("Closed - Converted", 0.08),
    ("Closed - Not Converted", 0.07),
]
CONTACT_MIX = [
    ("NEW", 0.35),
    ("OPEN", 0.2),
    ("ATTEMPTED_TO_CONTACT", 0.2),
    ("CONNECTED", 0.1),
    ("IN_PROGRESS", 0.08),
    ("OPEN_DEAL", 0.04),
    ("BAD_TIMING", 0.02),
    ("UNQUALIFIED", 0.01),
]


def _pick(rng: random.Random, mix: list[tuple[str, float]]) -> str:
    return rng.choices([v for v, _ in mix], weights=[w for _, w in mix])[0]


def _write_config(folder: Path, sf: SalesforceSandbox, hs: HubSpotSandbox) -> Path:
    """A config for sandboxes started elsewhere (the tests'), trusting their own CA file where it is."""
    crms = Sandboxes(folder, sf, hs)
    return write_config(folder, crms, header="Written by `connector demo`.", ca_bundle=str(sf.ca_pem))


def _summary(outcome: ObjectOutcome) -> str:
    p, d = outcome.pulled, outcome.drained
    return (
        f"{outcome.source} {outcome.object}: read {p.records}" + (f", new {p.new}" if p.new else "")
        + f", moved {p.transitions + outcome.events.moves.transitions}"
        f" (+{outcome.timers.transitions} by timers), suppressed {p.suppressed + outcome.events.moves.suppressed}"
        f" (+{outcome.timers.suppressed}), written back {d.done}, conflicts {d.conflicts}, dead {d.dead}"
        + (f", quarantined {p.quarantined}" if p.quarantined else "")
    )


def _moves_since(engine: Engine, since_id: int, echo: Callable[[str], None], limit: int = 12) -> int:
    """Print the history written since `since_id`: what moved and why, and what was held back."""
    from sqlalchemy import select

    from connector.store.schema import Record, TransitionRow

    with engine.store.transaction() as session:
        rows = session.execute(
            select(TransitionRow, Record.source, Record.object, Record.external_id)
            .join(Record, Record.id == TransitionRow.record_id)
            .where(TransitionRow.id > since_id, TransitionRow.from_stage.is_not(None))
            .order_by(TransitionRow.id)
        ).all()
        last = session.execute(select(TransitionRow.id).order_by(TransitionRow.id.desc()).limit(1)).scalar() or 0
    for row, source, obj, external_id in rows[:limit]:
        why = f"trigger '{row.rule}' on {row.detail}" if row.rule else f"{row.cause} {row.detail!r}"
        if row.suppressed:
            echo(f"    {source} {obj} {external_id}: stays in {row.from_stage} ({row.reason}; {why})")
        else:
            echo(f"    {source} {obj} {external_id}: {row.from_stage} -> {row.to_stage} ({why})")
    if len(rows) > limit:
        echo(f"    ... and {len(rows) - limit} more")
    return int(last)


def run_demo(echo: Callable[[str], None] = print, keep: bool = False) -> int:
    rng = random.Random(42)
    folder = Path(tempfile.mkdtemp(prefix="connector-demo-"))
    # Ports and CA recorded in the folder: after --keep, `connector sandbox --dir` makes its config work again.
    crms = start_sandboxes(folder)
    sf, hs = crms.salesforce, crms.hubspot
    engine: Engine | None = None
    try:
        echo(f"Sandbox Salesforce at {sf.url} (TLS), sandbox HubSpot at {hs.url}; working folder {folder}")
        leads = sf.seed(
            "Lead",
            [
                {
                    "FirstName": f"Lead{i}",
                    "LastName": "Demo",
                    "Company": f"Acme {i % 97}",
                    "Status": _pick(rng, LEAD_MIX),
                }
                for i in range(LEADS)
            ],
        )
        contacts = hs.seed(
            "contacts",
            [
                {"email": f"c{i}@example.com", "firstname": f"Contact{i}", "hs_lead_status": _pick(rng, CONTACT_MIX)}
                for i in range(CONTACTS)
            ],
        )
        sf.edit_as_person("Lead", leads[7], Status="Nurturing")  # a value nobody mapped
        echo(f"Seeded {LEADS} Salesforce leads and {CONTACTS} HubSpot contacts.\n")

        config = load_config(write_config(folder, crms, header="Written by `connector demo`."))
        engine = Engine(config, open_store(config.database_url), open_sources(config))
        jobs = Jobs(engine)
        lead, contact = engine.synced("sfdc", "Lead"), engine.synced("hubspot", "contacts")
        now = datetime.now(UTC)

        def cycle(title: str, at: datetime, since: int) -> int:
            echo(title)
            for synced in (lead, contact):
                echo("  " + _summary(jobs.once(synced, at)))
            return _moves_since(engine, since, echo)

        last = cycle("1. Initial sync: every record gets its stage from its CRM status.", now, 0)
        echo(f"    (lead {leads[7]} has the unmapped status 'Nurturing': quarantined, listed by `connector status`)\n")

        def state(source: str, obj: str, rid: str) -> str | None:
            with engine.store.transaction() as session:
                record = repo.get_record(session, source, obj, rid)
                return record.state.stage if record else None

        new_leads = [i for i in leads[:400] if state("sfdc", "Lead", i) == "New"]
        new_contacts = [c for c in contacts[:400] if state("hubspot", "contacts", c) in ("New", "Open")]
        for rid in new_leads[:6]:
            sf.seed(
                "Task", [{"WhoId": rid, "Type": "Email", "Subject": "RE: your pricing question", "Status": "Completed"}]
            )
        for cid in new_contacts[:6]:
            hs.add_engagement("emails", cid, {"hs_email_direction": "INCOMING_EMAIL", "hs_email_subject": "Re: hello"})
        for cid in new_contacts[6:9]:
            hs.add_engagement("meetings", cid, {"hs_meeting_title": "Intro call", "hs_meeting_outcome": "SCHEDULED"})
        held = new_leads[6]
        engine.set_stage(lead, held, "Converted", now, note="signed at the trade show")
        engine.feed_event(lead, held, "unsubscribed", now, now)  # e.g. from the marketing tool, via `connector event`
        contested = new_leads[7]
        engine.feed_event(lead, contested, "email_replied", now, now)  # queues 'Working - Contacted'
        sf.edit_as_person("Lead", contested, Status="Closed - Not Converted")  # ...but a rep closes it first
        echo("2. Activity: replies and meetings in both CRMs; a lead set to Converted by hand (sticky);")
        echo(f"   lead {contested} replied, but a rep closed it in Salesforce before our write-back went out.")
        last = cycle("", now + timedelta(minutes=5), last)
        echo(
            f"    lead {contested} is now {state('sfdc', 'Lead', contested)!r}: the rep's value stays in Salesforce "
            f"({sf.record('Lead', contested)['Status']!r}), our stale write was dropped.\n"
        )

        later = now + timedelta(days=22)
        last = cycle("3. Three weeks later (--now moved forward): records with no activity go quiet.", later, last)
        sync_writes = len(sf.writes("Lead")) + len(hs.writes("contacts"))
        echo(
            f"\n   Written back in total: {len(sf.writes('Lead'))} Salesforce leads "
            f"(sObject Collections, up to 200 a call), {len(hs.writes('contacts'))} HubSpot contacts "
            f"(batch update, up to 100 a call): {sync_writes} writes."
        )
        again = [jobs.once(s, later + timedelta(minutes=1)) for s in (lead, contact)]
        echo(
            f"   A further cycle writes {sum(o.drained.done for o in again)} more: our own writes are not "
            "mistaken for changes.\n"
        )
        echo("4. The funnel:")
        _funnel(engine, echo)
        if keep:
            echo(f"\nTry: connector explain sfdc Lead {held} --config {folder / 'config.yaml'}")
            echo(f"To talk to the CRMs again: connector sandbox --dir {folder} (then use that config)")
        else:
            echo("\nRun `connector demo --keep` to keep the folder and try `connector explain` on it.")
        return 0
    finally:
        if engine is not None:
            for source in engine.sources.values():
                source.close()
            engine.store.close()
        crms.stop()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _funnel(engine: Engine, echo: Callable[[str], None]) -> None:
    with engine.store.transaction() as session:
        for synced in engine.objects():
            counts = repo.stage_counts(session, synced.source, synced.name)
            total = sum(counts.values()) or 1
            echo(f"  {synced.source} {synced.name}")
            for stage in synced.mapping.stages:
                count = counts.get(stage.name, 0)
                bar = "#" * round(40 * count / total)
                echo(f"    {stage.name:<14} {stage.category.value:<14} {count:>5}  {bar}")
