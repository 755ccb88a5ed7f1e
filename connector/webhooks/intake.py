"""From webhook requests to targeted pulls: check, count, gather ids for a moment, hand them on.

A request is answered as soon as its receiver has checked it (CRMs want a quick 2xx and retry
otherwise); the ids it names wait in a per-object batch. A batch goes out when no new id arrived for
`QUIET` seconds, and at the latest `WINDOW` seconds after its first id, so a burst of edits (a list
import, a bulk update) becomes one targeted read, and a lone change waits a quarter of a second.

The intake never touches the store: `pull` (the daemon's targeted pull) reads the records from the
CRM and runs them through the engine like any page. When the object is busy (its scheduled pull holds
the lock) the batch is kept and tried again shortly; a batch that could not be pulled at all is given
up on without harm, since the scheduled pull reads the same changes within one poll interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from connector.webhooks.base import (
    MAX_BODY,
    Notice,
    NoticeKind,
    Receiver,
    RefusalReason,
    Refused,
    WebhookReply,
    WebhookRequest,
)

log = logging.getLogger("connector.webhooks")

QUIET = 0.25  # seconds without a new id before a batch goes
WINDOW = 1.0  # seconds after its first id a batch goes, however busy
RETRY = 1.0  # seconds before a batch whose object was busy is tried again
GIVE_UP = 60.0  # seconds after which a batch still not pulled is left to the scheduled pull
MAX_IDS = 1000  # ids in one batch; more go in the next


@dataclass
class Batch:
    """The records of one object that webhooks named, waiting for their targeted pull."""

    source: str
    object: str
    changed: dict[str, None] = field(default_factory=dict)  # ids to read, in arrival order
    gone: dict[str, None] = field(default_factory=dict)  # deleted or merged away: the object's pull runs now
    first_at: float = 0.0  # monotonic
    last_at: float = 0.0
    received_at: datetime | None = None  # when the oldest notice in it arrived (for the lag metric)

    def due(self, now: float) -> bool:
        return now - self.last_at >= QUIET or now - self.first_at >= WINDOW or len(self.changed) >= MAX_IDS


# The daemon's targeted pull: True when it ran (or need not run again), False when the object was busy.
PullBatch = Callable[[Batch], bool]


class Intake:
    def __init__(
        self,
        receivers: Mapping[str, Receiver],
        pull: PullBatch,
        clock: Callable[[], datetime],
        stop: threading.Event,
        on_request: Callable[[str, str], None] | None = None,  # (source, "accepted" or the refusal's reason)
        on_notice: Callable[[str, Notice], None] | None = None,
    ) -> None:
        self.receivers = dict(receivers)
        self.pull = pull
        self.clock = clock
        self.stop = stop
        self._on_request = on_request or (lambda source, outcome: None)
        self._on_notice = on_notice or (lambda source, notice: None)
        self._batches: dict[tuple[str, str], Batch] = {}
        self._retry_at: dict[tuple[str, str], float] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    # --- requests (server threads) ---------------------------------------------------------------
    def handle(self, source: str, request: WebhookRequest) -> WebhookReply:
        """Answer one request to /webhooks/<source>; never raises for what the caller sent."""
        receiver = self.receivers.get(source)
        try:
            if receiver is None:
                raise Refused(404, RefusalReason.NOT_CONFIGURED, f"no webhooks are set up for source '{source}'")
            if request.method != "POST":
                raise Refused(405, RefusalReason.METHOD, "webhooks are POSTed")
            if len(request.body) > MAX_BODY:
                raise Refused(413, RefusalReason.TOO_LARGE, f"a webhook body is at most {MAX_BODY} bytes")
            notices, reply = receiver.receive(request)
        except Refused as refused:
            return self.refuse(source, refused)
        self._on_request(source, "accepted")
        for notice in notices:
            self._on_notice(source, notice)
        self.add(source, notices, request.received_at)
        return reply

    def refuse(self, source: str, refused: Refused) -> WebhookReply:
        """Count and answer a refused request; the log names the reason, never the request's content."""
        known = source in self.receivers
        # An unknown source's name is the caller's text: neither a metric label nor a log line.
        self._on_request(source if known else "(unknown)", refused.reason.value)
        log.warning("a webhook for %s was refused (%s): %s", source if known else "an unknown source",
                    refused.reason.value, refused.message)
        return WebhookReply(refused.status, "text/plain; charset=utf-8", (refused.message + "\n").encode())

    def add(self, source: str, notices: Sequence[Notice], received_at: datetime) -> None:
        if not notices:
            return
        now = time.monotonic()
        with self._wake:
            for notice in notices:
                key = (source, notice.object)
                batch = self._batches.get(key)
                if batch is None:
                    batch = self._batches[key] = Batch(source, notice.object, first_at=now, received_at=received_at)
                target = batch.gone if notice.kind in (NoticeKind.DELETION, NoticeKind.MERGE) else batch.changed
                target.update(dict.fromkeys(notice.record_ids))
                batch.last_at = now
            self._wake.notify()

    # --- the worker ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="webhook-intake", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._wake:
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _work(self) -> None:
        while not self.stop.is_set():
            batch = self._next()
            if batch is None:
                continue
            try:
                done = self.pull(batch)
            except Exception:  # a bug must not end the intake; the scheduled pull covers these ids
                log.exception("the targeted pull of %s %s failed", batch.source, batch.object)
                done = True
            if not done:
                self._put_back(batch)

    def _next(self) -> Batch | None:
        """The next batch that is due (waiting until one is), or None to look at the stop flag."""
        with self._wake:
            now = time.monotonic()
            ready = [
                key for key, batch in self._batches.items()
                if batch.due(now) and self._retry_at.get(key, 0.0) <= now
            ]
            if ready:
                key = min(ready, key=lambda k: self._batches[k].first_at)
                self._retry_at.pop(key, None)
                batch = self._batches.pop(key)
                if len(batch.changed) > MAX_IDS:
                    ids = list(batch.changed)
                    batch.changed = dict.fromkeys(ids[:MAX_IDS])
                    rest = Batch(batch.source, batch.object, dict.fromkeys(ids[MAX_IDS:]), first_at=now,
                                 last_at=now - QUIET, received_at=batch.received_at)
                    self._batches[key] = rest
                return batch
            self._wake.wait(timeout=self._wait(now))
            return None

    def _wait(self, now: float) -> float:
        waits = [0.5]
        for key, batch in self._batches.items():
            due = min(batch.last_at + QUIET, batch.first_at + WINDOW)
            waits.append(max(due, self._retry_at.get(key, 0.0)) - now)
        return max(0.01, min(waits))

    def _put_back(self, batch: Batch) -> None:
        now = time.monotonic()
        key = (batch.source, batch.object)
        if now - batch.first_at > GIVE_UP:
            # Benign (a long pull held the object); info, not a warning: the on-call has nothing to do.
            log.info(
                "%s %s: %d records named by webhooks could not be pulled for %.0fs; the scheduled pull reads them",
                batch.source, batch.object, len(batch.changed) + len(batch.gone), GIVE_UP,
            )
            return
        with self._wake:
            newer = self._batches.get(key)
            if newer is not None:  # ids that arrived meanwhile join the ones put back
                batch.changed.update(newer.changed)
                batch.gone.update(newer.gone)
                batch.last_at = newer.last_at
            self._batches[key] = batch
            self._retry_at[key] = now + RETRY
            self._wake.notify()
