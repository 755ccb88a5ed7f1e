"""Stage owners and their notifications: a real SMTP server and a real HTTP receiver on loopback."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from alembic import command
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from connector import notify
from connector.config import load_config
from connector.engine import Engine
from connector.notify import Message, NotifyStats, notify_job, record_link
from connector.rules import Cause, RecordState, SetBy, Transition
from connector.sources.base import Cursor, Page, RemoteEvent, RemoteRecord
from connector.store import db, repo
from connector.store.db import Store, open_store
from connector.store.schema import CursorRow, NotificationRow, OutboxItem, Record, TransitionRow
from tests.support import offline_config

pytestmark = pytest.mark.filterwarnings("ignore:The 'initial' parameter is deprecated:DeprecationWarning")

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)

MAPPING = """\
stages:
  - {name: New,          category: in_progress}
  - {name: Working,      category: in_progress, owner: "005-ana", remind_after: 10d}
  - name: Meeting Set
    category: succeeded
    assign:
      - {when: {Region: EMEA}, owner: "005-eve"}
      - {owner: "005-bob"}
  - {name: Unresponsive, category: not_succeeded}
statuses:
  Open: New
  Contacted: Working
  Meeting: Meeting Set
  No Response: Unresponsive
triggers:
  - {name: replied, on: email_replied, from: [New], to: Working}
  - {name: booked,  on: meeting_booked, to: Meeting Set}
"""


# --- loopback servers ------------------------------------------------------------------------------
@dataclass
class Inbox:
    """An SMTP handler that keeps what it receives, and refuses the addresses in `refuse` (550)."""

    messages: list[EmailMessage] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@dataclass
class Hook:
    url: str
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers to give first; then 200


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/hook?token=s3cret":  # strict: anything unexpected fails loudly
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver.received.append((dict(self.headers), json.loads(body)))
            status = receiver.statuses.pop(0) if receiver.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook?token=s3cret"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- the store -------------------------------------------------------------------------------------
def notifications_yaml(smtp_port: int | None, webhook: str | None) -> str:
    lines = ["notifications:"]
    if smtp_port is not None:
        lines.append(f"  smtp: {{host: 127.0.0.1, port: {smtp_port}, sender: connector@acme.test}}")
    if webhook is not None:
        lines.append(f"  webhook: {webhook}")
    lines.append('  owners: {"005-ana": ana@acme.test, "005-bob": bob@acme.test}')
    return "\n".join(lines)


class World:
    """A config in tmp_path and an engine over the store; `restart()` closes and reopens everything."""

    def __init__(self, folder: Path, db_url: str, notifications: str) -> None:
        self.path = offline_config(
            folder,
            MAPPING,
            database=db_url,
            source="sfdc",
            mapping_file="lead.yaml",
            object_settings=", fields: [Region]",
            extra=notifications + "\n",
        )
        self.db_url = db_url
        self.engine = self._open()

    def _open(self) -> Engine:
        return Engine(load_config(self.path), open_store(self.db_url), {})

    @property
    def store(self) -> Store:
        return self.engine.store

    def restart(self) -> None:
        self.store.close()
        self.engine = self._open()

    def close(self) -> None:
        self.store.close()

    def lead(self, external_id: str, status: str, at: datetime, **fields: str) -> None:
        synced = self.engine.synced("sfdc", "Lead")
        self.engine.apply_page(synced, Page([RemoteRecord(external_id, status, at, fields=fields)], Cursor()), at)

    def event(self, external_id: str, kind: str, at: datetime) -> None:
        synced = self.engine.synced("sfdc", "Lead")
        self.engine.apply_events(synced, [RemoteEvent(external_id, kind, at, f"{external_id}:{kind}:{at}")], at)

    def rows(self) -> list[NotificationRow]:
        with self.store.transaction() as session:
            return list(session.scalars(select(NotificationRow).order_by(NotificationRow.id)))


@pytest.fixture
def world_factory(tmp_path: Path, db_url: str) -> Iterator[Any]:
    worlds: list[World] = []

    def make(notifications: str) -> World:
        world = World(tmp_path, db_url, notifications)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()


# --- owners (built in the engine): written back with the status, recorded in history --------------
def owners_now(store: Store) -> tuple[dict[str, tuple[str, str | None]], list[tuple[str, str | None, str | None]]]:
    """(pending outbox item per record: status, owner), and the history entries that assigned an owner."""
    with store.transaction() as session:
        outbox = {
            o.external_id: (o.status, o.owner)
            for o in session.scalars(select(OutboxItem).where(OutboxItem.state == "pending"))
        }
        history = session.execute(
            select(Record.external_id, TransitionRow.to_stage, TransitionRow.owner)
            .join(Record, Record.id == TransitionRow.record_id)
            .where(TransitionRow.owner.is_not(None))
            .order_by(Record.external_id)
        ).all()
    return outbox, [(r.external_id, r.to_stage, r.owner) for r in history]


def test_owner_goes_out_with_the_status_in_one_outbox_item_and_into_history(world_factory: Any) -> None:
    world = world_factory("")
    synced = world.engine.synced("sfdc", "Lead")
    world.lead("L1", "Open", T0)
    world.lead("L2", "Open", T0, Region="EMEA")
    world.lead("L3", "Open", T0)
    world.engine.set_stage(synced, "L1", "Working", T0 + HOUR)  # by hand -> Working, owned by 005-ana
    world.engine.set_stages(synced, [("L2", "Meeting Set")], T0 + HOUR)  # import -> assigned by Region: 005-eve
    world.lead("L3", "Meeting", T0 + 2 * HOUR)  # the CRM moved it -> Meeting Set, no Region -> 005-bob
    outbox, history = owners_now(world.store)
    assert outbox == {
        "L1": ("Contacted", "005-ana"),
        "L2": ("Meeting", "005-eve"),
        "L3": ("Meeting", "005-bob"),  # an external move writes no status, but the owner goes with the CRM's
    }
    assert history == [("L1", "Working", "005-ana"), ("L2", "Meeting Set", "005-eve"), ("L3", "Meeting Set", "005-bob")]
    with world.store.transaction() as session:
        assert session.scalars(select(Record.owner).where(Record.external_id == "L2")).one() == "005-eve"


def test_owner_goes_out_with_a_status_that_an_activity_trigger_set(world_factory: Any) -> None:
    """Events are folded into one write per record; the owner follows the stage they end in."""
    world = world_factory("")
    world.lead("L1", "Open", T0)
    world.lead("L2", "Open", T0, Region="EMEA")
    world.event("L1", "email_replied", T0 + HOUR)  # trigger -> Working, owned by 005-ana
    world.event("L2", "meeting_booked", T0 + HOUR)  # trigger -> Meeting Set, assigned by Region -> 005-eve
    outbox, history = owners_now(world.store)
    assert outbox == {"L1": ("Contacted", "005-ana"), "L2": ("Meeting", "005-eve")}
    assert history == [("L1", "Working", "005-ana"), ("L2", "Meeting Set", "005-eve")]


# --- entering an owned stage -----------------------------------------------------------------------
def test_entering_an_owned_stage_mails_and_posts_once_even_across_a_restart(
    world_factory: Any, smtp: tuple[Inbox, int], hook: Hook
) -> None:
    inbox, port = smtp
    world = world_factory(notifications_yaml(port, hook.url))
    world.lead("L1", "Open", T0)
    assert notify_job(world.engine, T0 + HOUR) == NotifyStats()  # New has no owner: nothing to say
    world.event("L1", "email_replied", T0 + 2 * HOUR)

    stats = notify_job(world.engine, T0 + 3 * HOUR)
    assert (stats.entered, stats.queued, stats.sent, stats.retried, stats.dead) == (1, 2, 2, 0, 0)
    [mail] = inbox.messages
    assert mail["To"] == "ana@acme.test"
    assert mail["From"] == "connector@acme.test"
    assert mail["Subject"] == "Lead L1 entered Working"
    body = mail.get_content()
    assert "sfdc Lead L1 entered the stage Working from New at 2026-04-01T11:00:00Z, and you own it." in body
    assert "Why: trigger 'replied' on email_replied." in body
    assert "Open it in Salesforce: https://acme.my.salesforce.com/L1" in body
    [(headers, payload)] = hook.received
    assert payload == {
        "event": "entered",
        "source": "sfdc",
        "object": "Lead",
        "id": "L1",
        "stage": "Working",
        "category": "in_progress",
        "from_stage": "New",
        "owner": "005-ana",
        "at": "2026-04-01T11:00:00Z",
        "cause": "event",
        "rule": "replied",
        "detail": "email_replied",
        "why": "trigger 'replied' on email_replied",
        "link": "https://acme.my.salesforce.com/L1",
        "key": payload["key"],
        "text": "Lead L1 entered Working\nhttps://acme.my.salesforce.com/L1",
    }
    assert headers["Idempotency-Key"] == payload["key"] + ":webhook"
    assert headers["Content-Type"] == "application/json"

    assert notify_job(world.engine, T0 + 4 * HOUR).sent == 0
    world.restart()
    assert notify_job(world.engine, T0 + 5 * HOUR).sent == 0
    assert (len(inbox.messages), len(hook.received)) == (1, 1)
    assert [(r.kind, r.channel, r.state, r.attempts) for r in world.rows()] == [
        ("entered", "email", "sent", 1),
        ("entered", "webhook", "sent", 1),
    ]


def test_only_the_stage_a_record_is_in_now_is_notified_and_unknown_addresses_are_recorded(
    world_factory: Any,
) -> None:
    sent: list[Message] = []
    world = world_factory(notifications_yaml(2525, "http://127.0.0.1:9/hook"))
    world.lead("L1", "Open", T0)
    world.lead("L2", "Open", T0, Region="EMEA")
    notify_job(world.engine, T0, sent.append)
    world.event("L1", "email_replied", T0 + HOUR)  # -> Working (ana) ...
    world.event("L1", "meeting_booked", T0 + 2 * HOUR)  # ... -> Meeting Set (bob) before the job runs
    world.event("L2", "meeting_booked", T0 + 2 * HOUR)  # -> Meeting Set (eve: no address)

    stats = notify_job(world.engine, T0 + 3 * HOUR, sent.append)
    assert sorted((m.channel, m.recipient, m.subject) for m in sent) == [
        ("email", "bob@acme.test", "Lead L1 entered Meeting Set"),
        ("webhook", None, "Lead L1 entered Meeting Set"),
        ("webhook", None, "Lead L2 entered Meeting Set"),
    ]
    assert (stats.entered, stats.sent, stats.unaddressed) == (2, 3, 1)
    [unaddressed] = [r for r in world.rows() if r.state == "dead"]
    assert (unaddressed.owner, unaddressed.channel) == ("005-eve", "email")
    assert unaddressed.last_error == "no email address for owner 005-eve in notifications.owners"
    assert notify_job(world.engine, T0 + 4 * HOUR, sent.append).unaddressed == 0  # recorded once


def test_old_moves_are_not_news_when_notifications_start(world_factory: Any) -> None:
    sent: list[Message] = []
    world = world_factory(notifications_yaml(None, "http://127.0.0.1:9/hook"))
    world.lead("L1", "Contacted", T0)  # old news by the time notifications start
    world.lead("L2", "Contacted", T0 + 2 * DAY)  # recent enough
    stats = notify_job(world.engine, T0 + 4 * DAY, sent.append)
    assert [m.payload["id"] for m in sent] == ["L2"]
    world.lead("L3", "Contacted", T0 + 4 * DAY + HOUR)
    notify_job(world.engine, T0 + 4 * DAY + 2 * HOUR, sent.append)
    assert [m.payload["id"] for m in sent] == ["L2", "L3"]
    assert stats.entered == 1
    with world.store.transaction() as session:
        mark = session.get(CursorRow, ("sfdc", "Lead", "notify"))
        assert mark is not None and mark.last_id is not None and int(mark.last_id) > 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_move_committed_late_by_a_concurrent_writer_is_still_notified(world_factory: Any) -> None:
    """PostgreSQL hands out ids at insert: a slow transaction can commit a lower id after the mark passed it."""
    sent: list[Message] = []
    world = world_factory(notifications_yaml(None, "http://127.0.0.1:9/hook"))
    notify_job(world.engine, T0, sent.append)
    at = T0 + HOUR
    late = repo.RecordWrite(
        "LATE",
        None,
        RecordState("Working", SetBy.EXTERNAL, "Contacted", at),
        transitions=[Transition(at, None, "Working", Cause.EXTERNAL, "Contacted")],
    )
    with Session(world.store.engine) as slow, slow.begin():
        repo.save_records(slow, "sfdc", "Lead", [late], at)  # holds a transition id, not yet committed
        world.lead("EARLY", "Contacted", at)  # a higher id, committed first
        notify_job(world.engine, at, sent.append)
        assert [m.payload["id"] for m in sent] == ["EARLY"]
    notify_job(world.engine, at + HOUR, sent.append)
    assert [m.payload["id"] for m in sent] == ["EARLY", "LATE"]


# --- reminders -------------------------------------------------------------------------------------
def test_a_reminder_fires_once_per_idle_interval_and_a_restart_sends_no_duplicate(
    world_factory: Any, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    world = world_factory(notifications_yaml(port, None))
    world.lead("L1", "Open", T0)
    world.event("L1", "email_replied", T0)  # enters Working (remind_after: 10d) at T0

    def subjects() -> list[str]:
        return [str(m["Subject"]) for m in inbox.messages]

    notify_job(world.engine, T0 + HOUR)
    assert subjects() == ["Lead L1 entered Working"]
    notify_job(world.engine, T0 + 9 * DAY)
    assert len(inbox.messages) == 1  # not idle for 10 days yet

    assert notify_job(world.engine, T0 + 10 * DAY).reminders == 1  # interval 1
    assert subjects()[-1] == "Reminder: Lead L1 still in Working, no activity for 10.0d"
    assert notify_job(world.engine, T0 + 12 * DAY).reminders == 0  # still interval 1
    world.restart()
    assert notify_job(world.engine, T0 + 15 * DAY).reminders == 0  # still interval 1, after a restart
    assert notify_job(world.engine, T0 + 20 * DAY).reminders == 1  # interval 2
    assert notify_job(world.engine, T0 + 20 * DAY + HOUR).reminders == 0
    assert len(inbox.messages) == 3

    world.event("L1", "email_opened", T0 + 21 * DAY)  # activity: no trigger, but the record is not idle
    assert notify_job(world.engine, T0 + 30 * DAY).reminders == 0  # interval 3, idle only 9 days
    assert notify_job(world.engine, T0 + 31 * DAY).reminders == 1  # interval 3, idle 10 days
    world.restart()
    assert notify_job(world.engine, T0 + 35 * DAY).reminders == 0
    assert notify_job(world.engine, T0 + 55 * DAY).reminders == 1  # a long pause: one reminder, not a backlog
    assert len(inbox.messages) == 5
    assert [(r.kind, r.reminder) for r in world.rows()] == [
        ("entered", 0),
        ("reminder", 1),
        ("reminder", 2),
        ("reminder", 3),
        ("reminder", 5),
    ]
    assert all(m["To"] == "ana@acme.test" for m in inbox.messages)


def test_reminders_go_to_the_crm_owner_where_the_stage_has_none(world_factory: Any) -> None:
    sent: list[Message] = []
    world = world_factory(notifications_yaml(None, "http://127.0.0.1:9/hook"))
    mapping = world.path.parent / "lead.yaml"
    new_stage = "{name: New,          category: in_progress}"
    mapping.write_text(mapping.read_text().replace(new_stage, "{name: New, category: in_progress, remind_after: 1d}"))
    world.restart()
    synced = world.engine.synced("sfdc", "Lead")
    page = [RemoteRecord("L1", "Open", T0, owner="005-zed"), RemoteRecord("L2", "Open", T0)]
    world.engine.apply_page(synced, Page(page, Cursor()), T0)
    stats = notify_job(world.engine, T0 + DAY, sent.append)
    assert stats.reminders == 1  # L2 has no owner at all
    assert [(m.payload["owner"], m.payload["stage"], m.payload["reminder"]) for m in sent] == [("005-zed", "New", 1)]


# --- failures ----------------------------------------------------------------------------------------
def test_a_failing_webhook_is_retried_with_backoff_and_a_refusal_is_dead(world_factory: Any, hook: Hook) -> None:
    world = world_factory(notifications_yaml(None, hook.url))
    world.lead("L1", "Open", T0)
    notify_job(world.engine, T0)
    world.event("L1", "email_replied", T0)
    hook.statuses = [503, 502]

    first = notify_job(world.engine, T0 + HOUR)
    assert (first.sent, first.retried) == (0, 1)
    [row] = world.rows()
    assert (row.attempts, row.next_attempt_at, row.state) == (1, T0 + HOUR + timedelta(minutes=1), "pending")
    assert row.last_error == "webhook 127.0.0.1 answered 503: ok"  # the URL's token is never shown
    assert notify_job(world.engine, T0 + HOUR + timedelta(seconds=30)).retried == 0  # not due yet
    assert notify_job(world.engine, T0 + HOUR + timedelta(minutes=1)).retried == 1
    assert world.rows()[0].next_attempt_at == T0 + HOUR + timedelta(minutes=3)  # then 2 minutes
    world.restart()
    assert notify_job(world.engine, T0 + HOUR + timedelta(minutes=3)).sent == 1
    assert len(hook.received) == 3
    assert len({h["Idempotency-Key"] for h, _ in hook.received}) == 1

    world.lead("L2", "Open", T0 + 2 * HOUR)
    world.event("L2", "email_replied", T0 + 2 * HOUR)
    hook.statuses = [410]
    refused = notify_job(world.engine, T0 + 3 * HOUR)
    assert (refused.dead, refused.retried) == (1, 0)
    assert world.rows()[-1].last_error == "webhook 127.0.0.1 answered 410: ok"


def test_smtp_refusal_is_dead_at_once_and_an_unreachable_server_gives_up_after_max_attempts(
    world_factory: Any, smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, port = smtp
    inbox.refuse.add("bob@acme.test")
    world = world_factory(notifications_yaml(port, None))
    world.lead("L1", "Open", T0)
    notify_job(world.engine, T0)
    world.event("L1", "meeting_booked", T0)  # Meeting Set: bob, whose mailbox the server refuses
    stats = notify_job(world.engine, T0 + HOUR)
    assert (stats.sent, stats.dead) == (0, 1)
    assert world.rows()[0].last_error == "SMTP refused bob@acme.test: [550]"

    closed = free_port()  # nothing listens there
    world.path.write_text(world.path.read_text().replace(f"port: {port}", f"port: {closed}"))
    world.restart()
    world.lead("L2", "Contacted", T0 + 2 * HOUR)  # Working: ana's mail cannot get through
    monkeypatch.setattr(notify, "MAX_ATTEMPTS", 3)
    now = T0 + 3 * HOUR
    outcomes = []
    for _ in range(3):
        result = notify_job(world.engine, now)
        outcomes.append((result.retried, result.dead))
        now += timedelta(hours=2)
    assert outcomes == [(1, 0), (1, 0), (0, 1)]
    row = world.rows()[-1]
    assert (row.state, row.attempts) == ("dead", 3)
    assert row.last_error is not None and row.last_error.startswith(f"SMTP 127.0.0.1:{closed}: ")


def test_no_notifications_configured_means_nothing_runs(world_factory: Any) -> None:
    world = world_factory("")
    world.lead("L1", "Contacted", T0)
    assert notify_job(world.engine, T0 + HOUR).disabled


# --- links and the schema ----------------------------------------------------------------------------
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_record_links(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "m.yaml").write_text(MAPPING)
    (tmp_path / "config.yaml").write_text(f"""\
database: "{db_url}"
sources:
  sf:
    type: salesforce
    instance_url: https://acme.my.salesforce.com/
    auth: {{method: token, access_token: x}}
    objects: {{Lead: {{status_field: Status, mapping: m.yaml}}}}
  sf2:
    type: salesforce
    auth: {{method: client_credentials, login_url: https://acme.my.salesforce.com, client_id: a, client_secret: b}}
    objects: {{Contact: {{status_field: Stage__c, mapping: m.yaml}}}}
  hs:
    type: hubspot
    auth: {{method: token, access_token: x}}
    objects:
      contacts: {{status_field: hs_lead_status, mapping: m.yaml}}
      2-1234: {{status_field: stage, mapping: m.yaml}}
  hs_eu:
    type: hubspot
    base_url: https://api-eu1.hubapi.com
    auth: {{method: token, access_token: x}}
    objects: {{companies: {{status_field: stage, mapping: m.yaml}}}}
""")
    config = load_config(tmp_path / "config.yaml")

    def link(source: str, obj: str, external_id: str) -> str:
        return record_link(config, config.object(source, obj), external_id)

    assert link("sf", "Lead", "00Q1") == "https://acme.my.salesforce.com/00Q1"
    assert link("sf2", "Contact", "0031") == "https://acme.my.salesforce.com/?startURL=%2F0031"
    assert link("hs", "contacts", "51") == "https://app.hubspot.com/contacts/_/record/0-1/51"
    assert link("hs", "2-1234", "7") == "https://app.hubspot.com/contacts/_/record/2-1234/7"
    assert link("hs_eu", "companies", "9") == "https://app-eu1.hubspot.com/contacts/_/record/0-2/9"


def test_migration_0002_upgrades_and_downgrades(db_url: str) -> None:
    store = open_store(db_url)
    try:
        config = db._alembic_config()
        with store.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")
        assert "notifications" not in inspect(store.engine).get_table_names()
        with store.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        assert "notifications" in inspect(store.engine).get_table_names()
        # 0002 is behind head, and back at head the notifications table is there again.
        assert db.head_revision() != "0001"
    finally:
        store.close()


# --- exactly once: concurrent senders, a stop mid-batch ---------------------------------------------
def test_two_senders_at_once_deliver_each_message_exactly_once(world_factory: Any, hook: Hook) -> None:
    """Two notify passes at the same moment (two daemons, or two objects' timers in one) on one store."""
    world = world_factory(notifications_yaml(None, hook.url))
    for i in range(40):
        world.lead(f"L{i}", "Open", T0)
    notify_job(world.engine, T0 + HOUR, lambda _m: None)  # the mark starts here: later moves are news
    for i in range(40):
        world.lead(f"L{i}", "Contacted", T0 + 2 * HOUR)
    other = Engine(load_config(world.path), open_store(world.db_url), {})
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def sender(engine: Engine) -> None:
        try:
            start.wait(timeout=10)
            for minute in range(3):
                notify_job(engine, T0 + 3 * HOUR + minute * timedelta(minutes=1))
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    try:
        threads = [threading.Thread(target=sender, args=(e,)) for e in (world.engine, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        other.store.close()
    assert not failures, failures
    keys = [payload["key"] for _, payload in hook.received]
    assert len(keys) == 40
    assert sorted(set(keys)) == sorted(keys)
    assert {(r.state, r.attempts) for r in world.rows()} == {("sent", 1)}


def test_a_stop_mid_batch_gives_the_unsent_back_to_pending(world_factory: Any) -> None:
    world = world_factory(notifications_yaml(None, "http://127.0.0.1:9/hook"))
    for i in range(5):
        world.lead(f"L{i}", "Open", T0)
    notify_job(world.engine, T0, lambda _m: None)
    for i in range(5):
        world.lead(f"L{i}", "Contacted", T0 + HOUR)
    stop = threading.Event()
    sent: list[Message] = []

    def send(message: Message) -> None:
        sent.append(message)
        stop.set()  # SIGTERM arrives while the first message is sent

    notify_job(world.engine, T0 + 2 * HOUR, send, stop=stop)
    assert len(sent) == 1
    states = sorted((r.state, r.attempts, r.next_attempt_at.replace(tzinfo=UTC) <= T0 + 2 * HOUR) for r in world.rows())
    assert states == [("pending", 0, True)] * 4 + [("sent", 1, False)]
    notify_job(world.engine, T0 + 2 * HOUR, sent.append)  # the next daemon sends the rest, once
    assert sorted(m.key for m in sent) == sorted({m.key for m in sent}) and len(sent) == 5


@pytest.fixture
def tls_smtp() -> Iterator[tuple[Inbox, int, str, list[tuple[str, str]]]]:
    """A real SMTP server on loopback that requires STARTTLS (a trustme certificate) before AUTH LOGIN/PLAIN."""
    import ssl

    import trustme
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    logins: list[tuple[str, str]] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=data.password == b"mail-s3cret")

    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        authenticator=authenticate, auth_require_tls=True,
    )
    controller.start()
    folder = Path(__import__("tempfile").mkdtemp())
    ca_pem = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    try:
        yield inbox, port, str(ca_pem), logins
    finally:
        controller.stop()


def test_email_over_starttls_with_login(
    world_factory: Any, tls_smtp: tuple[Inbox, int, str, list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, port, ca_pem, logins = tls_smtp
    # The server's certificate is trusted the way an admin trusts a private CA: SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", ca_pem)
    monkeypatch.setenv("SMTP_PASSWORD", "mail-s3cret")
    smtp = (
        f"  smtp: {{host: 127.0.0.1, port: {port}, sender: connector@acme.test, starttls: true,\n"
        '          username: connector, password: "${SMTP_PASSWORD}"}'
    )
    world = world_factory("notifications:\n" + smtp + '\n  owners: {"005-ana": ana@acme.test}')
    world.lead("L1", "Open", T0)
    notify_job(world.engine, T0)
    world.lead("L1", "Contacted", T0 + HOUR)
    stats = notify_job(world.engine, T0 + 2 * HOUR)
    assert (stats.sent, stats.errors) == (1, [])
    assert logins == [("connector", "mail-s3cret")]
    assert [(m["To"], m["Subject"]) for m in inbox.messages] == [("ana@acme.test", "Lead L1 entered Working")]

