"""Notifications to stage owners: on entering an owned stage, and reminders while a record sits idle.

Decoupled from the engine: `notify_job` reads what the engine recorded and queues messages in the
`notifications` table, one row per message and channel, unique by key, then sends what is due.

- Entering: the moves since a stored high-water mark (a `cursors` row of kind `notify` per object,
  re-reading a window below it for rows that concurrent writers committed late), keyed by the
  transition's id. Only news is notified: a record's latest move, while the record is still there,
  and made in the last `NEWS` (3 days). So after a pause the owner of the stage a record is in now
  hears of it, not the owners of stages it has since left; and turning notifications on (or a first
  pull of old records) does not mail the whole history.
- Reminders: a stage with `remind_after: R` re-notifies while a record sits in it with no activity
  for R, once per interval: keyed by the record, its stage entry and the interval number
  floor((now - entered) / R), so each interval gives at most one reminder, and a job that did not run
  for a while sends one, not a backlog.

The owner is the transition's (the engine assigned it) or the stage's (`owner:`, or the first
matching `assign:` rule); reminders fall back to the record's CRM owner. Email goes to the address
in `notifications.owners`; the webhook gets every message as JSON.

A row is written before it is sent and marked sent after: a restart never sends a message twice
(only a crash between the send and the mark can, once). A failed send is retried with exponential
backoff, up to `MAX_ATTEMPTS`; a permanent refusal (a 5xx SMTP reply, a 4xx webhook answer) is
kept as `dead` with the error.

Links to the record in the CRM:
- Salesforce: `<instance_url>/<Id>` (the source's `instance_url`, or its token auth's); without
  one, `<login_url>/?startURL=%2F<Id>`, which opens the record after login.
- HubSpot: `https://app.hubspot.com/contacts/<portal id>/record/<objectTypeId>/<id>` (app-eu1 for
  an EU `base_url`); `objectTypeId` is 0-1 contacts, 0-2 companies, 0-3 deals, 0-5 tickets, else
  the object's name (custom objects: their `2-…` id). The portal id is the source's `portal_id`
  where the config has one, else `_`.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from sqlalchemy import Table, func, or_, select, update
from sqlalchemy.orm import Session

from connector.config import Config, HubSpotSource, Notifications, SyncedObject, TokenAuth
from connector.engine import Engine
from connector.mapping import Stage
from connector.reports import human_duration
from connector.store import repo
from connector.store.schema import NotificationRow, Record, TransitionRow

log = logging.getLogger("connector.notify")

MAX_ATTEMPTS = 6
BATCH = 200
LEASE = timedelta(minutes=5)  # a claimed message is not claimed again for this long (a crashed sender)
RESCAN = 5000  # transition ids re-read below the high-water mark
NEWS = timedelta(days=3)  # a move older than this when first seen is not news: not notified
CURSOR_KIND = "notify"  # the high-water mark: the newest transition id read
TIMEOUT = 5.0  # per SMTP / webhook call: within the daemon's stop bound (10 s from SIGTERM to exit)
NOTIFICATIONS = cast(Table, NotificationRow.__table__)
HUBSPOT_OBJECT_TYPES = {
    "contacts": "0-1", "contact": "0-1", "companies": "0-2", "company": "0-2",
    "deals": "0-3", "deal": "0-3", "tickets": "0-5", "ticket": "0-5",
}


@dataclass(frozen=True)
class Message:
    key: str
    channel: str  # email | webhook
    recipient: str | None  # the email address
    subject: str
    body: str
    payload: dict[str, Any]


class SendError(Exception):
    """A send failed; `permanent` when trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


Send = Callable[[Message], None]


@dataclass
class NotifyStats:
    entered: int = 0  # stage entries queued (each on every configured channel)
    reminders: int = 0
    queued: int = 0  # rows queued, over channels
    sent: int = 0
    retried: int = 0
    dead: int = 0
    unaddressed: int = 0  # emails for an owner with no address in `notifications.owners` (recorded as dead)
    disabled: bool = False
    errors: list[str] = field(default_factory=list)


# --- who, where, why -----------------------------------------------------------------------------
def stage_owner(stage: Stage, fields: dict[str, Any] | None) -> str | None:
    """The stage's owner for a record: `owner:`, else the first `assign:` rule matching its fields."""
    if stage.owner:
        return stage.owner
    values = {k: None if v is None else str(v) for k, v in (fields or {}).items()}
    return next((rule.owner for rule in stage.assign if rule.matches(values)), None)


def record_link(config: Config, synced: SyncedObject, external_id: str) -> str:
    source = config.sources[synced.source]
    if isinstance(source, HubSpotSource):
        app = "https://app-eu1.hubspot.com" if "eu1" in source.base_url else "https://app.hubspot.com"
        portal = getattr(source, "portal_id", None) or "_"
        type_id = HUBSPOT_OBJECT_TYPES.get(synced.name.lower(), synced.name)
        return f"{app}/contacts/{portal}/record/{type_id}/{external_id}"
    auth = source.auth
    base = source.instance_url or (auth.instance_url if isinstance(auth, TokenAuth) else None)
    if base:
        return f"{base.rstrip('/')}/{external_id}"
    login = (None if isinstance(auth, TokenAuth) else auth.login_url) or "https://login.salesforce.com"
    return f"{login.rstrip('/')}/?startURL=%2F{external_id}"


def why(cause: str, detail: str, rule: str | None, crm: str) -> str:
    return {
        "external": f"its status in {crm} changed to '{detail}'",
        "event": f"trigger '{rule}' on {detail}",
        "inactive": f"trigger '{rule}': no activity",
        "criteria": f"trigger '{rule}': {detail}",
        "manual": "set by hand" + ("" if detail == "manual" else f": {detail}"),
        "import": detail if detail != "import" else "imported from a CSV",
        "resync": f"resync: its status in {crm} is '{detail}'",
        "conflict": f"a person changed its status in {crm} to '{detail}'",
    }.get(cause, f"{cause}: {detail}")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


NO_ADDRESS = "no email address for owner {owner} in notifications.owners"


@dataclass(frozen=True)
class _Channels:
    settings: Notifications

    def messages(self, key: str, owner: str, subject: str, body: str, payload: dict[str, Any]) -> list[Message]:
        """One message per configured channel; an email with no address (recipient None) is recorded as dead."""
        found = []
        if self.settings.smtp is not None:
            address = self.settings.owners.get(owner)
            found.append(Message(f"{key}:email", "email", address, subject, body, {**payload, "key": key}))
        if self.settings.webhook is not None:
            data = {**payload, "key": key, "text": f"{subject}\n{payload['link']}"}
            found.append(Message(f"{key}:webhook", "webhook", None, subject, body, data))
        return found


def _rows(messages: Sequence[Message], columns: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    rows = []
    for m in messages:
        unaddressed = m.channel == "email" and m.recipient is None
        rows.append(
            {
                **columns, "key": m.key, "channel": m.channel, "recipient": m.recipient,
                "payload": {"subject": m.subject, "body": m.body, "json": m.payload},
                "state": "dead" if unaddressed else "pending", "attempts": 0, "next_attempt_at": now,
                "last_error": NO_ADDRESS.format(owner=columns["owner"]) if unaddressed else None,
                "created_at": now, "sent_at": None, "updated_at": now,
            }
        )
    return rows


def _insert_new(session: Session, rows: list[dict[str, Any]], stats: NotifyStats, kind: str) -> None:
    """Insert the rows whose key is new, and count them."""
    new: set[str] = set()
    size = repo.CHUNK // 2
    for start in range(0, len(rows), size):
        stmt = repo._insert(session, NOTIFICATIONS).values(rows[start : start + size])
        stmt = stmt.on_conflict_do_nothing(index_elements=["key"]).returning(NOTIFICATIONS.c.key)
        new.update(session.execute(stmt).scalars())
    stats.queued += len(new)
    events = {key.rsplit(":", 1)[0] for key in new}
    if kind == "entered":
        stats.entered += len(events)
    else:
        stats.reminders += len(events)
    for row in rows:
        if row["key"] in new and row["state"] == "dead":
            stats.unaddressed += 1
            log.warning("%s; %s not emailed", row["last_error"], row["key"])


# --- queueing ------------------------------------------------------------------------------------
def _crm(config: Config, synced: SyncedObject) -> str:
    return "HubSpot" if isinstance(config.sources[synced.source], HubSpotSource) else "Salesforce"


def queue_entries(engine: Engine, synced: SyncedObject, now: datetime, channels: _Channels, stats: NotifyStats) -> None:
    mapping = synced.mapping
    owned = {s.name for s in mapping.stages if s.owner or s.assign}
    if not owned:
        return
    t, r = TransitionRow, Record

    def work(session: Session) -> None:
        _, mark = repo.get_cursor(session, synced.source, synced.name, CURSOR_KIND)
        query = (
            select(
                t.id, t.record_id, t.at, t.from_stage, t.to_stage, t.cause, t.detail, t.rule, t.owner,
                r.external_id, r.stage.label("current"), r.owner.label("record_owner"), r.fields, r.deleted,
            )
            .join(r, r.id == t.record_id)
            .where(r.source == synced.source, r.object == synced.name, ~t.suppressed)
            .where(or_(t.from_stage.is_(None), t.to_stage.is_(None), t.from_stage != t.to_stage))
            .where(t.at >= now - NEWS)
            .order_by(t.id)
        )
        if mark is not None:
            query = query.where(t.id > int(mark) - RESCAN)
        latest: dict[int, Any] = {}
        high = int(mark) if mark else 0
        for row in session.execute(query):
            latest[row.record_id] = row
            high = max(high, row.id)
        if mark is None:  # the first run: the mark starts at the newest transition, whichever it is
            high = max(high, session.execute(select(func.coalesce(func.max(t.id), 0))).scalar_one())
        crm = _crm(engine.config, synced)
        rows: list[dict[str, Any]] = []
        for row in latest.values():
            if row.to_stage not in owned or row.deleted or row.current != row.to_stage:
                continue
            stage = mapping.stage(row.to_stage)
            owner = row.owner or stage_owner(stage, row.fields)
            if owner is None:
                continue
            key = f"enter:{row.id}"
            reason = why(row.cause, row.detail, row.rule, crm)
            link = record_link(engine.config, synced, row.external_id)
            payload = {
                "event": "entered", "source": synced.source, "object": synced.name, "id": row.external_id,
                "stage": row.to_stage, "category": stage.category.value, "from_stage": row.from_stage,
                "owner": owner, "at": _iso(row.at), "cause": row.cause, "rule": row.rule, "detail": row.detail,
                "why": reason, "link": link,
            }
            subject = f"{synced.name} {row.external_id} entered {row.to_stage}"
            came = f"from {row.from_stage}" if row.from_stage else "as a new record"
            body = (
                f"{synced.source} {synced.name} {row.external_id} entered the stage {row.to_stage} {came} "
                f"at {_iso(row.at)}, and you own it.\n\nWhy: {reason}.\n\nOpen it in {crm}: {link}\n"
            )
            messages = channels.messages(key, owner, subject, body, payload)
            columns = {
                "kind": "entered", "record_id": row.record_id, "transition_id": row.id, "source": synced.source,
                "object": synced.name, "external_id": row.external_id, "stage": row.to_stage, "owner": owner,
                "reminder": 0,
            }
            rows.extend(_rows(messages, columns, now))
        _insert_new(session, rows, stats, "entered")
        repo.save_cursor(session, synced.source, synced.name, None, str(high), now, CURSOR_KIND)

    engine.store.run(work)


def queue_reminders(
    engine: Engine, synced: SyncedObject, now: datetime, channels: _Channels, stats: NotifyStats
) -> None:
    crm = _crm(engine.config, synced)
    for stage in synced.mapping.stages:
        interval = stage.remind_after
        if interval is None:
            continue

        def work(session: Session, stage: Stage = stage, interval: timedelta = interval) -> None:
            r = Record
            records = session.execute(
                select(r.id, r.external_id, r.stage_entered_at, r.last_activity_at, r.owner, r.fields).where(
                    r.source == synced.source, r.object == synced.name, r.stage == stage.name, ~r.deleted,
                    r.stage_entered_at <= now - interval, or_(r.last_activity_at.is_(None),
                                                              r.last_activity_at <= now - interval),
                )
            )
            rows: list[dict[str, Any]] = []
            for record in records:
                entered = record.stage_entered_at
                assert entered is not None
                idle_since = max(entered, record.last_activity_at or entered)
                owner = stage_owner(stage, record.fields) or record.owner
                if now - idle_since < interval or owner is None:
                    continue
                number = int((now - entered) / interval)
                key = f"remind:{record.id}:{int(entered.timestamp() * 1_000_000)}:{number}"
                link = record_link(engine.config, synced, record.external_id)
                idle = human_duration(now - idle_since)
                payload = {
                    "event": "reminder", "source": synced.source, "object": synced.name, "id": record.external_id,
                    "stage": stage.name, "category": stage.category.value, "owner": owner, "at": _iso(now),
                    "reminder": number, "in_stage_since": _iso(entered), "idle_since": _iso(idle_since),
                    "why": f"no activity for {idle}", "link": link,
                }
                subject = f"Reminder: {synced.name} {record.external_id} still in {stage.name}, no activity for {idle}"
                body = (
                    f"{synced.source} {synced.name} {record.external_id} has been in {stage.name} since "
                    f"{_iso(entered)}, with no activity since {_iso(idle_since)} ({idle}).\n\n"
                    f"Open it in {crm}: {link}\n"
                )
                messages = channels.messages(key, owner, subject, body, payload)
                columns = {
                    "kind": "reminder", "record_id": record.id, "transition_id": None, "source": synced.source,
                    "object": synced.name, "external_id": record.external_id, "stage": stage.name, "owner": owner,
                    "reminder": number,
                }
                rows.extend(_rows(messages, columns, now))
            _insert_new(session, rows, stats, "reminder")

        engine.store.run(work)


# --- sending -------------------------------------------------------------------------------------
def retry_delay(attempts: int) -> timedelta:
    """After the n-th failed attempt: 1, 2, 4, 8, 16 minutes ... at most an hour."""
    delay: timedelta = timedelta(minutes=1) * 2 ** max(attempts - 1, 0)
    return min(timedelta(hours=1), delay)


@dataclass(frozen=True)
class _Claimed:
    id: int
    attempts: int
    message: Message


def _claim(engine: Engine, now: datetime) -> list[_Claimed]:
    """Take up to BATCH due messages for this process, each taken by exactly one claimer.

    PostgreSQL: FOR UPDATE SKIP LOCKED, so two daemons pick different rows without waiting. Each
    row is then taken with a compare-and-set on its attempt count, which makes the claim atomic on
    SQLite too: pysqlite starts its transaction only at the first write, so two threads can both
    read a row as pending, and only the first UPDATE of `attempts = n` to n + 1 matches.
    """

    def work(session: Session) -> list[_Claimed]:
        query = (
            select(NotificationRow)
            .where(NotificationRow.state == "pending", NotificationRow.next_attempt_at <= now)
            .order_by(NotificationRow.next_attempt_at, NotificationRow.id)
            .limit(BATCH)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        table = NOTIFICATIONS
        claimed = []
        for row in session.execute(query).scalars().all():
            taken = session.execute(
                update(table)
                .where(table.c.id == row.id, table.c.state == "pending", table.c.attempts == row.attempts)
                .values(attempts=row.attempts + 1, next_attempt_at=now + LEASE, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if cast(Any, taken).rowcount != 1:
                continue  # another sender took it between our read and our write
            stored = row.payload
            message = Message(row.key, row.channel, row.recipient, stored["subject"], stored["body"], stored["json"])
            claimed.append(_Claimed(row.id, row.attempts + 1, message))
        return claimed

    return engine.store.run(work)


def _release(engine: Engine, items: Sequence[_Claimed], now: datetime) -> None:
    """Give back claimed messages that were not sent (the daemon is stopping): due again now."""
    if not items:
        return

    def work(session: Session) -> None:
        table = NOTIFICATIONS
        for item in items:
            session.execute(
                update(table)
                .where(table.c.id == item.id, table.c.attempts == item.attempts, table.c.state == "pending")
                .values(attempts=item.attempts - 1, next_attempt_at=now, updated_at=now)
            )

    engine.store.run(work)


def _finish(engine: Engine, item: _Claimed, now: datetime, error: SendError | None) -> str:
    if error is None:
        values: dict[str, Any] = {"state": "sent", "sent_at": now, "last_error": None}
        outcome = "sent"
    elif error.permanent or item.attempts >= MAX_ATTEMPTS:
        values = {"state": "dead", "last_error": str(error)}
        outcome = "dead"
    else:
        values = {"next_attempt_at": now + retry_delay(item.attempts), "last_error": str(error)}
        outcome = "retried"

    def work(session: Session) -> None:
        table = NOTIFICATIONS
        session.execute(
            update(table)
            .where(table.c.id == item.id, table.c.attempts == item.attempts, table.c.state == "pending")
            .values(updated_at=now, **values)
        )

    engine.store.run(work)
    return outcome


def deliver_due(
    engine: Engine, now: datetime, send: Send, stats: NotifyStats, stop: threading.Event | None = None
) -> None:
    while stop is None or not stop.is_set():
        claimed = _claim(engine, now)
        for index, item in enumerate(claimed):
            if stop is not None and stop.is_set():
                _release(engine, claimed[index:], now)
                return
            error: SendError | None = None
            try:
                send(item.message)
            except SendError as exc:
                error = exc
            except Exception as exc:  # a custom sender's failure: worth another try
                error = SendError(f"{type(exc).__name__}: {exc}")
            outcome = _finish(engine, item, now, error)
            setattr(stats, outcome, getattr(stats, outcome) + 1)
            if error is not None:
                level = logging.ERROR if outcome == "dead" else logging.WARNING
                log.log(level, "notification %s %s: %s", item.message.key, outcome, error)
                stats.errors.append(f"{item.message.key}: {error}")
        if len(claimed) < BATCH:
            return


class Deliverer:
    """The default sender: SMTP for email (STARTTLS or implicit TLS on 465), an HTTP POST of JSON for the webhook."""

    def __init__(self, settings: Notifications) -> None:
        self.settings = settings

    def __call__(self, message: Message) -> None:
        if message.channel == "email":
            self.email(message)
        else:
            self.webhook(message)

    def email(self, message: Message) -> None:
        smtp = self.settings.smtp
        if smtp is None or message.recipient is None:
            raise SendError("email is not configured (notifications.smtp)", permanent=True)
        mail = EmailMessage()
        mail["From"] = smtp.sender
        mail["To"] = message.recipient
        mail["Subject"] = message.subject
        domain = smtp.sender.rpartition("@")[2] or "connector.invalid"
        # The same message resent carries the same Message-ID, so mail clients show it once.
        mail["Message-ID"] = f"<{message.key.replace(':', '.')}@{domain}>"
        mail.set_content(message.body)
        try:
            client_class = smtplib.SMTP_SSL if smtp.port == 465 else smtplib.SMTP
            with client_class(smtp.host, smtp.port, timeout=TIMEOUT) as client:
                if smtp.starttls and client_class is smtplib.SMTP:
                    client.starttls(context=ssl.create_default_context())
                if smtp.username:
                    client.login(smtp.username, smtp.password.get_secret_value() if smtp.password else "")
                client.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            permanent = all(code >= 500 for code in codes)
            raise SendError(f"SMTP refused {message.recipient}: {codes}", permanent=permanent) from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            raise SendError(f"SMTP {exc.smtp_code}: {text}", permanent=exc.smtp_code >= 500) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise SendError(f"SMTP {smtp.host}:{smtp.port}: {exc}") from None

    def webhook(self, message: Message) -> None:
        url = self.settings.webhook
        if url is None:
            raise SendError("the webhook is not configured (notifications.webhook)", permanent=True)
        # The URL often carries a token: errors name its host only.
        host = urlsplit(url).hostname or "?"
        try:
            response = requests.post(
                url, json=message.payload, timeout=TIMEOUT,
                headers={"Idempotency-Key": message.key, "User-Agent": "connector-notify"},
            )
        except requests.RequestException as exc:
            raise SendError(f"webhook {host}: {type(exc).__name__}") from None
        if response.ok:
            return
        status = response.status_code
        permanent = 400 <= status < 500 and status not in (408, 425, 429)
        raise SendError(f"webhook {host} answered {status}: {response.text[:200]}", permanent=permanent)


def notify_job(
    engine: Engine, now: datetime, send: Send | None = None, stop: threading.Event | None = None
) -> NotifyStats:
    """Queue the notifications due as of `now` (entries and reminders), then send what is due.

    With `stop` set (SIGTERM) sending ends after the message in hand; the rest go back to pending.
    """
    settings = engine.config.model.notifications
    stats = NotifyStats()
    if settings is None or (settings.smtp is None and settings.webhook is None):
        stats.disabled = True
        return stats
    channels = _Channels(settings)
    for synced in engine.objects():
        queue_entries(engine, synced, now, channels, stats)
        queue_reminders(engine, synced, now, channels, stats)
    deliver_due(engine, now, send or Deliverer(settings), stats, stop)
    if stats.queued or stats.sent or stats.dead:
        log.info(
            "notifications: %d queued (%d entries, %d reminders), %d sent, %d to retry, %d dead",
            stats.queued, stats.entered, stats.reminders, stats.sent, stats.retried, stats.dead,
        )
    return stats
