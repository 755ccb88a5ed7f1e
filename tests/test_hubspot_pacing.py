"""The HubSpot source's small units on their own: the search window (cursor logic), the pacer, the
event rules and the reading of a batch answer. No HTTP here; the end-to-end tests drive the rest."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.errors import ConfigError
from connector.sources.errors import Action, SourcePaused
from connector.sources.hubspot_activity import EventRules
from connector.sources.hubspot_pacing import Pacer, RollingWindow
from connector.sources.hubspot_window import Mark, Search, SearchWindow, WindowStalled, first_search
from connector.sources.hubspot_writes import _batch_outcomes


# --- a HubSpot search over a list, with HubSpot's freedoms ---------------------------------------
@dataclass(frozen=True)
class Row:
    ms: int
    id: int


class FakeSearch:
    """Answers a `Search` as HubSpot does: one sort, ties in any order (a new one each time), a page
    of `limit`, and `more` when there are further matches."""

    def __init__(self, rows: list[Row], seed: int = 0) -> None:
        self.rows = sorted(rows, key=lambda r: (r.ms, r.id))
        self.keys = [(r.ms, r.id) for r in self.rows]
        self.rng = random.Random(seed)
        self.calls = 0

    def __call__(self, search: Search, limit: int) -> tuple[list[Row], bool]:
        self.calls += 1
        lowest = search.lowest
        top = search.tie_ms if search.tie_ms is not None else search.until_ms
        found = self.rows[
            bisect.bisect_left(self.keys, (lowest.ms, lowest.id)) : bisect.bisect_right(self.keys, (top, 2**62))
        ]
        page = found[:limit]
        if not search.is_tie and page:
            # Ties in any order: the page's last instant is a random pick of that instant's records.
            last = page[-1].ms
            group = [r for r in found if r.ms == last]
            head = [r for r in page if r.ms < last]
            page = head + self.rng.sample(group, len(page) - len(head))
            self.rng.shuffle(page)
            page.sort(key=lambda r: r.ms)
        return page, len(found) > limit


def walk(rows: list[Row], floor: Mark | None, until: int, limit: int, lookback: int = 0) -> tuple[list[Row], int]:
    search = FakeSearch(rows)
    window = SearchWindow[Row](
        first_search(floor, until, lookback), lambda r: Mark(r.ms, r.id), limit=limit, floor=floor
    )
    out: list[Row] = []
    while window.next is not None:
        page, more = search(window.next, limit)
        taken = window.take(page, more)
        assert [Mark(r.ms, r.id) for r in taken] == sorted(Mark(r.ms, r.id) for r in taken)
        out += taken
        assert search.calls < 10 * len(rows) + 10, "the window loops"
    return out, search.calls


rows_strategy = st.lists(st.tuples(st.integers(0, 6), st.integers(1, 400)), max_size=120, unique_by=lambda t: t[1])


@settings(max_examples=300, deadline=None)
@given(
    raw=rows_strategy,
    limit=st.integers(1, 7),
    floor=st.one_of(st.none(), st.tuples(st.integers(0, 6), st.integers(0, 400))),
    until=st.integers(0, 7),
    lookback=st.sampled_from([0, 1, 3]),
)
def test_every_record_after_the_cursor_comes_exactly_once(
    raw: list[tuple[int, int]], limit: int, floor: tuple[int, int] | None, until: int, lookback: int
) -> None:
    rows = [Row(ms, i) for ms, i in raw]
    start = Mark(*floor) if floor else None
    out, _ = walk(rows, start, until, limit, lookback)
    expected = {r for r in rows if (start is None or Mark(r.ms, r.id) > start) and r.ms <= until}
    fresh = [r for r in out if start is None or Mark(r.ms, r.id) > start]
    assert sorted(fresh, key=lambda r: (r.ms, r.id)) == sorted(expected, key=lambda r: (r.ms, r.id))
    assert len(fresh) == len(set(fresh))  # never twice
    assert all(r.ms <= until for r in out)
    if start is not None and lookback:
        assert all(r.ms >= start.ms - lookback for r in out)  # re-reads stay inside the lookback


def test_25000_on_one_millisecond_by_keyset_in_a_bounded_number_of_searches() -> None:
    rows = [Row(5, i) for i in range(1, 25_001)] + [Row(4, 30_000 + i) for i in range(150)]
    out, calls = walk(rows, None, 10, 200)
    assert sorted(r.id for r in out) == sorted(r.id for r in rows)
    assert calls <= 25_150 / 200 + 5


def test_the_cursor_never_moves_back_and_follows_whole_groups() -> None:
    rows = [Row(1, 1), Row(2, 2), Row(2, 3), Row(2, 4), Row(3, 5)]
    window = SearchWindow[Row](Search(10), lambda r: Mark(r.ms, r.id), limit=3, floor=None)
    first = window.take([Row(1, 1), Row(2, 3), Row(2, 2)], more=True)
    assert first == [Row(1, 1)] and window.cursor == Mark(1, 1)  # the group at 2 may go on: not yet
    assert window.next == Search(10, since_ms=2)
    rest = window.take([Row(2, 4), Row(2, 2), Row(2, 3)], more=True)  # a full page of one instant
    assert rest == [] and window.next == Search(10, tie_ms=2, after_id=0, keyset=0)
    assert window.take([Row(2, 2), Row(2, 3), Row(2, 4)], more=False) == rows[1:4]
    assert window.cursor == Mark(2, 4) and window.next == Search(10, tie_ms=2, keyset=4)  # a full page: maybe more
    assert window.take([], more=False) == [] and window.next == Search(10, since_ms=2, inclusive=False)
    assert window.take([Row(3, 5)], more=False) == [Row(3, 5)] and window.next is None


def test_a_crowd_behind_the_cursor_is_re_read_one_page_deep_only() -> None:
    crowd = [Row(5, i) for i in range(1, 1001)]
    floor = Mark(6, 2000)
    out, calls = walk([*crowd, Row(6, 2000), Row(7, 2001)], floor, 10, 100, lookback=3)
    assert Row(7, 2001) in out and calls == 2  # a page of the crowd, then what follows it
    same_instant, calls = walk([*crowd], Mark(5, 600), 10, 100, lookback=3)
    assert sorted(r.id for r in same_instant if r.id > 600) == list(range(601, 1001))  # by id past the cursor
    assert calls == 1 + 5 + 1  # a page by date, the rest by id (the fifth page empty), then later


def test_a_search_answered_wrongly_is_an_error_not_a_loop() -> None:
    window = SearchWindow[Row](Search(10), lambda r: Mark(r.ms, r.id), limit=2, floor=None)
    page = [Row(3, 1), Row(3, 2)]
    window.take(page, more=True)  # a full page of one instant: read it by id
    assert window.take(page, more=True) == page and window.next == Search(10, tie_ms=3, keyset=2)
    with pytest.raises(WindowStalled) as same:
        window.take(page, more=True)  # the same records again: HubSpot ignored the id filter
    assert same.value.action is Action.RETRY and "would not advance" in same.value.message


def test_where_a_pull_starts() -> None:
    assert first_search(None, 50, 5) == Search(50)
    assert first_search(Mark(40, 7), 50, 5) == Search(50, since_ms=35)  # the lookback, whole instants
    assert first_search(Mark(40, 7), 50, 0) == Search(50, tie_ms=40, after_id=7, keyset=7)  # the rest of its ms
    assert first_search(Mark(40, 0), 50, 0) == Search(50, since_ms=40)
    assert first_search(Mark(60, 1), 50, 5) is None  # nothing can be newer than until


# --- pacing --------------------------------------------------------------------------------------
class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def headers(
    limit: int = 10, remaining: int = 9, interval_ms: int = 1000, daily: int = 1000, left: int = 990
) -> dict[str, str]:
    return {
        "X-HubSpot-RateLimit-Max": str(limit),
        "X-HubSpot-RateLimit-Remaining": str(remaining),
        "X-HubSpot-RateLimit-Interval-Milliseconds": str(interval_ms),
        "X-HubSpot-RateLimit-Daily": str(daily),
        "X-HubSpot-RateLimit-Daily-Remaining": str(left),
    }


def test_a_rolling_window_lets_cap_calls_through_per_span_and_guard() -> None:
    window = RollingWindow(3, 1.0)
    for at in (0.0, 0.1, 0.2):
        assert window.wait(at) == 0
        window.add(at)
    assert window.wait(0.3) == pytest.approx(0.0 + 1.0 + window.guard - 0.3)
    assert window.wait(1.0 + window.guard + 0.01) == 0  # the first has left the window


def test_the_pacer_learns_the_burst_limit_and_stays_under_it() -> None:
    time_ = FakeTime()
    pacer = Pacer(budget=1.0, search_per_second=5, clock=time_.clock, sleep=time_.sleep)
    sent: list[float] = []
    for n in range(60):
        pacer.acquire("api")
        sent.append(time_.now)
        pacer.observe("api", 200, headers(remaining=max(0, 9 - n % 10)))
        time_.now += 0.001
    # No more than the limit in any interval, and close to it: paced, not throttled to a crawl.
    assert max(sum(1 for t in sent if start <= t < start + 1.0) for start in sent) <= 9
    assert 60 / (sent[-1] - sent[0]) >= 0.8 * 10
    assert pacer.calls == 60 and pacer.rate_limited == 0


def test_the_pacer_makes_room_for_another_integration_and_for_a_429() -> None:
    time_ = FakeTime()
    pacer = Pacer(budget=1.0, search_per_second=5, clock=time_.clock, sleep=time_.sleep)
    pacer.acquire("api")
    pacer.observe("api", 200, headers(limit=10, remaining=3))  # someone else spent six
    for _ in range(2):
        pacer.acquire("api")
    assert time_.slept == 0
    pacer.acquire("api")  # the window is full: ours three and theirs six
    assert time_.slept > 0.9
    pacer.observe("api", 429, headers(limit=10, remaining=0))
    before = time_.slept
    pacer.acquire("api")
    assert time_.slept - before > 0.9 and pacer.rate_limited == 1


def test_an_unexpected_429_widens_the_guard_within_bounds() -> None:
    time_ = FakeTime()
    pacer = Pacer(budget=1.0, search_per_second=5, clock=time_.clock, sleep=time_.sleep)
    assert pacer.search is not None
    for _ in range(6):
        pacer.acquire("search")
        pacer.observe("search", 429, {})  # HubSpot saw the window full when we did not
        time_.now += 2
    assert pacer.search.guard == pytest.approx(0.1)  # doubled, then held at a tenth of the window
    assert pacer.rate_limited == 6


def test_searches_have_their_own_window() -> None:
    time_ = FakeTime()
    pacer = Pacer(budget=1.0, search_per_second=5, clock=time_.clock, sleep=time_.sleep)
    for _ in range(5):
        pacer.acquire("search")
    assert time_.slept == 0
    pacer.acquire("api")  # another bucket
    assert time_.slept == 0
    pacer.acquire("search")
    assert time_.slept == pytest.approx(1.0 + 0.05)


def test_the_daily_budget_pauses_then_looks_again() -> None:
    time_ = FakeTime()
    pacer = Pacer(budget=0.5, search_per_second=0, clock=time_.clock, sleep=time_.sleep, resume_after=3600)
    pacer.acquire("api")
    pacer.observe("api", 200, headers(daily=100, left=60))  # 40 used, 50 allowed
    for _ in range(10):
        pacer.acquire("search")  # searches state no limits: counted from the last reading
    assert pacer.usage().used == 50
    with pytest.raises(SourcePaused) as paused:
        pacer.acquire("api")
    assert paused.value.resume_after == 3600 and "50 of HubSpot's daily 100" in paused.value.message
    time_.now += 1800
    with pytest.raises(SourcePaused) as still:
        pacer.acquire("api")
    assert still.value.resume_after == pytest.approx(1800)
    time_.now += 1801
    pacer.acquire("api")  # looks again; the answer brings a fresh reading
    pacer.observe("api", 200, headers(daily=100, left=99))
    assert pacer.usage().used == 1 and pacer.usage().limit == 100


# --- event rules ---------------------------------------------------------------------------------
def test_event_rules_defaults_and_overrides() -> None:
    defaults = EventRules.parse({}, "here")
    assert defaults.event("emails", {"hs_email_direction": "INCOMING_EMAIL"}) == "email_replied"
    assert defaults.event("emails", {"hs_email_direction": "EMAIL", "hs_email_status": "BOUNCED"}) == "email_bounced"
    assert defaults.event("emails", {"hs_email_direction": "FORWARDED_EMAIL"}) is None
    assert defaults.event("meetings", {}) == "meeting_booked" and defaults.event("calls", {}) == "call_logged"
    assert defaults.kinds == ("emails", "meetings", "calls")

    custom = EventRules.parse(
        {
            "calls": "custom:dialled",
            "calls:hs_call_status=NO_ANSWER": "none",
            "emails:hs_email_direction=FORWARDED_EMAIL": "custom:forwarded",
            "meetings": "none",
        },
        "here",
    )
    assert custom.event("calls", {"hs_call_status": "NO_ANSWER"}) is None  # the condition comes first
    assert custom.event("calls", {"hs_call_status": "COMPLETED"}) == "custom:dialled"
    assert custom.event("emails", {"hs_email_direction": "FORWARDED_EMAIL"}) == "custom:forwarded"
    assert custom.event("emails", {"hs_email_direction": "EMAIL"}) == "email_sent"  # defaults stay
    assert set(custom.kinds) == {"calls", "emails"}  # meetings: nothing to read
    assert custom.properties("emails") == ["hs_email_direction", "hs_email_status"]


def test_bad_event_rules_are_all_reported() -> None:
    with pytest.raises(ConfigError) as bad:
        EventRules.parse({"emails:": "email_sent", "calls": "phoned", "Meetings": "meeting_booked"}, "types")
    assert len(bad.value.problems) == 3 and "unknown event 'phoned'" in str(bad.value)


# --- a batch answer ------------------------------------------------------------------------------
def test_each_input_of_a_207_has_its_own_outcome() -> None:
    answer = {
        "status": "COMPLETE",
        "results": [{"id": "1", "properties": {"hs_lead_status": "OPEN"}}, {"id": "3"}],
        "errors": [
            {"status": "error", "category": "VALIDATION_ERROR", "message": "locked", "context": {"ids": ["2"]}},
            {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "gone", "context": {"ids": ["4"]}},
        ],
    }
    sent = {"hs_lead_status": "OPEN"}
    one, two, three, four, five = _batch_outcomes([(i, sent) for i in "12345"], answer, "hs_lead_status")
    assert one is None and three is None
    assert two is not None and two.action is Action.RECORD and two.describe() == "VALIDATION_ERROR: locked"
    assert four is not None and four.record_id == "4" and four.message == "gone"
    assert five is not None and five.action is Action.RETRY  # neither confirmed nor refused: send again


def test_a_write_acknowledged_but_not_made_is_not_taken_as_done() -> None:
    answer = {"results": [{"id": "1", "properties": {"lifecyclestage": "customer"}}, {"id": "2", "properties": {}}]}
    sent = {"lifecyclestage": "lead"}
    kept, unknown = _batch_outcomes([("1", sent), ("2", sent)], answer, "lifecyclestage")
    assert kept is not None and kept.code == "NOT_APPLIED" and kept.action is Action.RECORD
    assert "kept 'customer'" in kept.message
    assert unknown is None  # nothing said about the value: confirmed
    cleared = _batch_outcomes(
        [("1", {"lifecyclestage": ""})], {"results": [{"id": "1", "properties": {}}]}, "lifecyclestage"
    )
    assert cleared == [None]
