"""The retry policy's waits end as soon as the process is told to stop (a daemon's SIGTERM)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from connector.sources import retry
from connector.sources.errors import Action, CrmError
from connector.sources.retry import RetryPolicy, Stopped


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    retry.stop_on(event)
    try:
        yield event
    finally:
        retry.stop_on(threading.Event())


def _unavailable(exc: BaseException) -> CrmError:
    return CrmError(Action.RETRY, f"unavailable: {exc}", status=503)


def test_a_stop_during_the_backoff_ends_the_wait_at_once(stop: threading.Event) -> None:
    calls: list[float] = []

    def call() -> None:
        calls.append(time.monotonic())
        raise ConnectionError("refused")

    policy = RetryPolicy(_unavailable, attempts=6, base=30.0, cap=60.0)  # 15 s to 30 s before the 2nd try
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        policy.call(call)
    assert time.monotonic() - started < 2
    assert len(calls) == 1  # no further attempt after the stop


def test_a_rate_limit_wait_is_cut_short_too(stop: threading.Event) -> None:
    def call() -> None:
        raise CrmError(Action.RATE_LIMIT, "429 Too Many Requests", status=429, retry_after=120)

    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        RetryPolicy(_unavailable, attempts=3).call(call)
    assert time.monotonic() - started < 2


def test_without_a_stop_the_policy_still_retries(stop: threading.Event) -> None:
    attempts: list[int] = []

    def call() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("refused")
        return "ok"

    assert RetryPolicy(_unavailable, attempts=4, base=0.01, cap=0.02).call(call) == "ok"
    assert len(attempts) == 3 and not stop.is_set()
