"""The one retry policy around CRM transport calls, built from a source's settings.

Every wait in it (backoff, `Retry-After`, HubSpot's pacing) goes through `pause`, which waits on the
process's stop event instead of `time.sleep`: a daemon told to stop while a CRM is unreachable or
rate-limited stops within its bound, not after a minute of backoff. An interrupted wait raises
`Stopped`, which the daemon treats as the end of the job, not as the CRM's failure.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from connector.sources.errors import Action, CrmError

T = TypeVar("T")

RETRIED = frozenset({Action.RETRY, Action.RATE_LIMIT, Action.REAUTH})

_stopping = threading.Event()  # replaced by the daemon's own stop event (`stop_on`)


class Stopped(Exception):
    """A wait was cut short because the process is stopping; the work in hand is given up, not failed."""


def stop_on(event: threading.Event) -> None:
    """Make every `pause` of this process end as soon as `event` is set."""
    global _stopping
    _stopping = event


def stopping() -> bool:
    return _stopping.is_set()


def pause(seconds: float) -> None:
    """Sleep for `seconds`, or raise `Stopped` as soon as the process is told to stop."""
    if _stopping.wait(max(0.0, seconds)):
        raise Stopped(f"stopping: a wait of {seconds:.1f}s was cut short")


class RetryPolicy:
    """Retry transient failures with capped exponential backoff and jitter; honour rate-limit waits.

    An expired session is re-authenticated once per call: a 401 that persists after a fresh login is
    a problem for the admin, not a loop (simple-salesforce's own re-login can recurse without bound).
    """

    def __init__(
        self,
        translate: Callable[[BaseException], CrmError],
        *,
        attempts: int = 6,
        base: float = 0.5,
        cap: float = 60.0,
        reauthenticate: Callable[[], None] | None = None,
        sleep: Callable[[float], None] = pause,
        rng: random.Random | None = None,
    ) -> None:
        self.translate = translate
        self.attempts = max(1, attempts)
        self.base = base
        self.cap = cap
        self.reauthenticate = reauthenticate
        self.sleep = sleep
        self.rng = rng or random.Random()

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        backoff = min(self.cap, self.base * 2 ** (state.attempt_number - 1))
        backoff = self.rng.uniform(backoff / 2, backoff)
        if isinstance(error, CrmError) and error.action is Action.REAUTH:
            return 0.0
        if isinstance(error, CrmError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0) + self.rng.uniform(0, 0.25), max(self.cap, error.retry_after))
        return backoff

    def call(self, fn: Callable[[], T]) -> T:
        reauthenticated = False

        def attempt() -> T:
            nonlocal reauthenticated
            if _stopping.is_set():  # a stop between two attempts: do not start another call
                raise Stopped("stopping: no further attempt")
            try:
                return fn()
            except (CrmError, Stopped):
                raise
            except Exception as exc:
                error = self.translate(exc)
            if error.action is Action.REAUTH:
                if reauthenticated or self.reauthenticate is None:
                    raise CrmError(
                        Action.ADMIN, f"the CRM refused a fresh session: {error.message}", code=error.code,
                        status=error.status,
                    ) from None
                self.reauthenticate()
                # Only a session we actually got counts: a login that failed for a moment may be tried again.
                reauthenticated = True
            raise error

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, CrmError) and e.action in RETRIED),
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(attempt)
