"""The webhook intake: requests checked and counted, ids gathered per object, handed to the targeted pull.

The receiver here is a stand-in for a CRM's format (the real ones have tests of their own); what is
tested is the intake's part: answering, counting refusals, batching, retrying a busy object.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest

from connector.webhooks.base import (
    MAX_BODY,
    Notice,
    NoticeKind,
    RefusalReason,
    Refused,
    WebhookReply,
    WebhookRequest,
)
from connector.webhooks.intake import QUIET, WINDOW, Batch, Intake

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class PlainReceiver:
    """Body: {"object": ..., "ids": [...], "kind": ...}; header x-secret must be "s3cret"."""

    source = "crm"

    def receive(self, request: WebhookRequest) -> tuple[Sequence[Notice], WebhookReply]:
        if request.headers.get("x-secret") != "s3cret":
            raise Refused(401, RefusalReason.SIGNATURE, "wrong signature")
        try:
            body = json.loads(request.body)
            notice = Notice(body["object"], tuple(body["ids"]), NoticeKind(body.get("kind", "change")))
        except (ValueError, KeyError, TypeError):
            raise Refused(400, RefusalReason.MALFORMED, "not a webhook body") from None
        return [notice], WebhookReply(200, "text/plain", b"")


class Recorder:
    def __init__(self, busy_times: int = 0) -> None:
        self.batches: list[Batch] = []
        self.busy_times = busy_times
        self.calls = 0
        self.event = threading.Event()

    def __call__(self, batch: Batch) -> bool:
        self.calls += 1
        if self.calls <= self.busy_times:
            return False
        self.batches.append(batch)
        self.event.set()
        return True


@pytest.fixture
def counted() -> dict[tuple[str, str], int]:
    return {}


@pytest.fixture
def intake_with(counted: dict[tuple[str, str], int]) -> Iterator[tuple[Intake, Recorder]]:
    stop = threading.Event()
    recorder = Recorder()

    def count(source: str, outcome: str) -> None:
        counted[(source, outcome)] = counted.get((source, outcome), 0) + 1

    intake = Intake({"crm": PlainReceiver()}, recorder, lambda: NOW, stop, on_request=count)
    intake.start()
    yield intake, recorder
    stop.set()
    intake.close()


def post(intake: Intake, body: object, source: str = "crm", secret: str = "s3cret", method: str = "POST") -> int:
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    request = WebhookRequest(method, "http://127.0.0.1/webhooks/crm", {"x-secret": secret}, data, NOW)
    return intake.handle(source, request).status


def test_ids_arriving_together_are_pulled_in_one_batch_per_object(intake_with: tuple[Intake, Recorder]) -> None:
    intake, recorder = intake_with
    assert post(intake, {"object": "Lead", "ids": ["a", "b"]}) == 200
    assert post(intake, {"object": "Lead", "ids": ["b", "c"]}) == 200
    assert post(intake, {"object": "Contact", "ids": ["x"]}) == 200
    assert post(intake, {"object": "Lead", "ids": ["d"], "kind": "deletion"}) == 200
    deadline = time.monotonic() + 5
    while len(recorder.batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    by_object = {b.object: b for b in recorder.batches}
    assert list(by_object["Lead"].changed) == ["a", "b", "c"]
    assert list(by_object["Lead"].gone) == ["d"]
    assert list(by_object["Contact"].changed) == ["x"]
    assert by_object["Lead"].received_at == NOW


def test_a_lone_change_goes_within_the_window(intake_with: tuple[Intake, Recorder]) -> None:
    intake, recorder = intake_with
    started = time.monotonic()
    post(intake, {"object": "Lead", "ids": ["a"]})
    assert recorder.event.wait(5)
    # QUIET after the last id, never later than WINDOW after the first (plus the thread's wake-up)
    assert QUIET <= time.monotonic() - started < WINDOW + 0.5


def test_a_steady_stream_still_goes_once_a_window(intake_with: tuple[Intake, Recorder]) -> None:
    intake, recorder = intake_with
    started = time.monotonic()
    for n in range(int(WINDOW / 0.1) + 5):  # an id every 0.1 s: never QUIET long enough
        post(intake, {"object": "Lead", "ids": [str(n)]})
        if recorder.batches:
            break
        time.sleep(0.1)
    assert recorder.batches, "the batch waited for a quiet moment that never came"
    assert time.monotonic() - started < WINDOW + 0.5


def test_a_busy_object_keeps_its_ids_and_is_tried_again() -> None:
    stop = threading.Event()
    recorder = Recorder(busy_times=1)
    intake = Intake({"crm": PlainReceiver()}, recorder, lambda: NOW, stop)
    intake.start()
    try:
        post(intake, {"object": "Lead", "ids": ["a"]})
        time.sleep(QUIET + 0.2)  # the first attempt finds the object busy
        post(intake, {"object": "Lead", "ids": ["b"]})
        assert recorder.event.wait(5)
        assert recorder.calls == 2
        assert list(recorder.batches[0].changed) == ["a", "b"]
    finally:
        stop.set()
        intake.close()


def test_refusals_are_answered_and_counted_by_reason(
    intake_with: tuple[Intake, Recorder], counted: dict[tuple[str, str], int]
) -> None:
    intake, recorder = intake_with
    assert post(intake, {"object": "Lead", "ids": ["a"]}, secret="guess") == 401
    assert post(intake, b"<html>", secret="s3cret") == 400
    assert post(intake, {"object": "Lead", "ids": ["a"]}, method="PUT") == 405
    assert post(intake, b"x" * (MAX_BODY + 1)) == 413
    assert post(intake, {"object": "Lead", "ids": ["a"]}, source="<script>") == 404
    assert counted == {
        ("crm", "signature"): 1,
        ("crm", "malformed"): 1,
        ("crm", "method"): 1,
        ("crm", "too_large"): 1,
        ("(unknown)", "not_configured"): 1,  # the caller's text is never a metric label
    }
    time.sleep(QUIET + 0.2)
    assert recorder.batches == [], "a refused request named records"


def test_a_webhooks_address_takes_webhooks_and_serves_nothing_else() -> None:
    from connector.web.server import _handler, _listen

    stop = threading.Event()
    recorder = Recorder()
    intake = Intake({"crm": PlainReceiver()}, recorder, lambda: NOW, stop)
    server = _listen("127.0.0.1:0", "server.webhooks", _handler(None, intake))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        body = json.dumps({"object": "Lead", "ids": ["a"]}).encode()
        request = urllib.request.Request(f"{base}/webhooks/crm", data=body, headers={"X-Secret": "s3cret"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as page:
            urllib.request.urlopen(f"{base}/", timeout=5)
        page.value.close()
        assert page.value.code == 404
        forged = urllib.request.Request(f"{base}/webhooks/crm", data=body, headers={"X-Secret": "nope"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=5)
        refused.value.close()
        assert refused.value.code == 401
    finally:
        server.shutdown()
        server.server_close()
        stop.set()
