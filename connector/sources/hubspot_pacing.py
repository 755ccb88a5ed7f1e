"""Pacing HubSpot calls below its limits, from the limits HubSpot states on every answer.

HubSpot counts a private app's calls in a rolling burst window (`X-HubSpot-RateLimit-Max` calls per
`-Interval-Milliseconds`, 100 or 190 per 10 s), searches separately (five a second, and a search answer
carries no limit headers), and per day (`-Daily`, `-Daily-Remaining`). The pacer keeps its own record
of when it sent each call and waits, before sending, until one more fits the window: 429s are then
the exception (another integration on the same token), not the way the limit is found; one that
comes anyway widens the window's guard a little. Once `api_budget` of the daily allocation is used,
calls are refused with `SourcePaused` for an hour; then the next answer's reading decides.
`Transport` is the urllib3 hook every call of the client goes through, so no call escapes the pacer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import urllib3

from connector.sources import errors
from connector.sources.base import ApiUsage
from connector.sources.errors import SourcePaused

log = logging.getLogger("connector.hubspot")

Kind = Literal["search", "api"]
HOUR = 3600.0


def guard_for(span: float) -> float:
    """Slack added to a window: our send times and HubSpot's arrival times differ by the network's jitter."""
    return max(0.05, span * 0.01)


class RollingWindow:
    """At most `cap` calls in any `span` seconds (plus a guard), by the times we sent them."""

    def __init__(self, cap: int, span: float) -> None:
        self.cap, self.span = max(1, cap), span
        self.guard = guard_for(span)
        self._sent: deque[float] = deque()

    def resize(self, cap: int, span: float) -> None:
        self.cap, self.span, self.guard = max(1, cap), span, max(self.guard, guard_for(span))

    def _prune(self, now: float) -> None:
        horizon = now - self.span - self.guard
        while self._sent and self._sent[0] <= horizon:
            self._sent.popleft()

    def count(self, now: float) -> int:
        self._prune(now)
        return len(self._sent)

    def wait(self, now: float) -> float:
        """Seconds until one more call fits."""
        self._prune(now)
        if len(self._sent) < self.cap:
            return 0.0
        return max(0.0, self._sent[len(self._sent) - self.cap] + self.span + self.guard - now)

    def add(self, now: float, count: int = 1) -> None:
        self._sent.extend([now] * count)

    def fill(self, now: float) -> None:
        """Count the window as spent from now: HubSpot said 429, whoever spent it."""
        self.add(now, max(0, self.cap - self.count(now)))

    def widen(self) -> None:
        """A 429 we did not see coming: more jitter than the guard allowed for (or another integration:
        the bound keeps that from costing more than a tenth of the window)."""
        self.guard = max(self.guard, min(self.guard * 2, self.span / 10))


class Pacer:
    """Waits before each call until it fits HubSpot's windows; refuses calls once `budget` of the day is spent."""

    def __init__(
        self,
        *,
        budget: float,
        search_per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        resume_after: float = HOUR,
    ) -> None:
        self.budget = budget
        self.clock, self.sleep = clock, sleep
        self.resume_after = resume_after
        self.burst: RollingWindow | None = None  # known from the first answer's headers
        self.search = RollingWindow(int(search_per_second), 1.0) if search_per_second > 0 else None
        self.calls = 0
        self.rate_limited = 0  # 429s HubSpot answered
        self.waited = 0.0  # seconds spent waiting for a window
        self.daily_limit: int | None = None
        self._daily_remaining: int | None = None
        self._since_reading = 0  # calls since the last daily reading (a search answer carries none)
        self._paused_until: float | None = None
        self._lock = threading.Lock()

    # --- before a call ---------------------------------------------------------------------------
    def acquire(self, kind: Kind) -> None:
        while True:
            with self._lock:
                now = self.clock()
                self._check_budget(now)
                window = self.search if kind == "search" else self.burst
                delay = window.wait(now) if window is not None else 0.0
                if delay <= 0:
                    if window is not None:
                        window.add(now)
                    self.calls += 1
                    self._since_reading += 1
                    return
            self.waited += delay
            self.sleep(delay)

    def _check_budget(self, now: float) -> None:
        if self._paused_until is not None:
            if now < self._paused_until:
                raise SourcePaused(
                    "the api_budget share of HubSpot's daily allocation is spent",
                    resume_after=self._paused_until - now,
                    code="API_BUDGET",
                )
            # Time to look again: the next answer brings a fresh daily reading.
            self._paused_until, self._daily_remaining = None, None
        used = self.daily_used
        if used is None or self.daily_limit is None:
            return
        allowed = int(self.daily_limit * self.budget)
        if used >= allowed:
            self._paused_until = now + self.resume_after
            raise SourcePaused(
                f"{used} of HubSpot's daily {self.daily_limit} calls used; the api_budget of "
                f"{self.budget:.0%} allows {allowed}",
                resume_after=self.resume_after,
                code="API_BUDGET",
            )

    # --- after an answer -------------------------------------------------------------------------
    def observe(self, kind: Kind, status: int, headers: Mapping[str, str]) -> None:
        with self._lock:
            now = self.clock()
            self._read_daily(headers)
            if kind == "api":
                self._read_burst(now, headers)
            if status == 429:
                self.rate_limited += 1
                window = self.search if kind == "search" else self.burst
                if window is not None:
                    if window.wait(now) <= 0:  # we thought there was room: allow for more jitter
                        window.widen()
                    window.fill(now)

    def _read_daily(self, headers: Mapping[str, str]) -> None:
        limit, remaining = (
            _int(headers.get("X-HubSpot-RateLimit-Daily")),
            _int(headers.get("X-HubSpot-RateLimit-Daily-Remaining")),
        )
        if limit is not None and remaining is not None:
            self.daily_limit, self._daily_remaining, self._since_reading = limit, remaining, 0

    def _read_burst(self, now: float, headers: Mapping[str, str]) -> None:
        limit = _int(headers.get("X-HubSpot-RateLimit-Max"))
        interval = _int(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds"))
        if limit is None or interval is None or limit <= 0 or interval <= 0:
            return
        # One call spare: room for the jitter between our clock and HubSpot's.
        cap, span = max(1, limit - 1), interval / 1000
        if self.burst is None:
            self.burst = RollingWindow(cap, span)
            self.burst.add(now)  # the call just answered
        elif (self.burst.cap, self.burst.span) != (cap, span):
            self.burst.resize(cap, span)
        remaining = _int(headers.get("X-HubSpot-RateLimit-Remaining"))
        if remaining is not None:
            # Calls HubSpot counted that we did not send: another integration shares the token.
            others = (limit - remaining) - self.burst.count(now)
            if others > 0:
                self.burst.add(now, others)

    # --- reporting -------------------------------------------------------------------------------
    @property
    def daily_used(self) -> int | None:
        if self.daily_limit is None or self._daily_remaining is None:
            return None
        return self.daily_limit - self._daily_remaining + self._since_reading

    def usage(self) -> ApiUsage:
        with self._lock:
            return ApiUsage(used=self.daily_used, limit=self.daily_limit, calls=self.calls)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class Transport(urllib3.PoolManager):
    """The one pool every API object of the client shares: paces each call, reads HubSpot's limit
    headers from each answer, and classifies transport failures at the boundary.

    Retries are off here (`retries=False`): the source's RetryPolicy retries whole calls, POSTs
    included, and nothing is sent twice by two layers.
    """

    def __init__(self, pacer: Pacer, *, timeout: float, ca_certs: str | None = None) -> None:
        kwargs: dict[str, Any] = {"ca_certs": ca_certs, "cert_reqs": "CERT_REQUIRED"} if ca_certs else {}
        super().__init__(num_pools=4, maxsize=4, retries=False, **kwargs)
        self.pacer = pacer
        self.timeout = urllib3.Timeout(total=timeout)

    def urlopen(  # type: ignore[override]  # PoolManager.urlopen narrows RequestMethods.urlopen the same way
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> urllib3.BaseHTTPResponse:
        kind: Kind = "search" if urlsplit(url).path.endswith("/search") else "api"
        self.pacer.acquire(kind)
        if kw.get("timeout") is None:  # the client passes None, which urllib3 takes as "wait forever"
            kw["timeout"] = self.timeout
        kw["preload_content"] = True  # the body is read and the connection back in the pool at once
        try:
            response = super().urlopen(method, url, redirect, **kw)
        except urllib3.exceptions.HTTPError as exc:
            # Translated here: the client turns a TLS failure into an AttributeError of its own.
            raise errors.from_hubspot(exc) from exc
        self.pacer.observe(kind, response.status, response.headers)
        if response.status == 429:
            log.info("HubSpot answered 429 to %s %s; the retry policy waits for the window", method, urlsplit(url).path)
        return response
