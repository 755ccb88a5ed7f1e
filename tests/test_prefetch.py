"""Reading pages ahead: same order, overlap with the caller's work, errors and early exits handled."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from connector.sources.prefetch import read_ahead


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "connector-read-ahead"}


def test_pages_arrive_in_order_and_the_thread_ends() -> None:
    with read_ahead(iter(range(50)), depth=2) as pages:
        assert list(pages) == list(range(50))
    assert not _threads()


def test_the_next_page_is_fetched_while_the_caller_works() -> None:
    second_fetched = threading.Event()

    def pages() -> Iterator[int]:
        yield 1
        second_fetched.set()
        yield 2

    with read_ahead(pages()) as reader:
        assert next(reader) == 1
        # The caller has not asked for page 2 yet; it is on its way regardless.
        assert second_fetched.wait(5)
        assert list(reader) == [2]


def test_an_error_while_fetching_is_raised_in_the_caller_after_the_pages_before_it() -> None:
    failure = RuntimeError("the CRM said no")

    def pages() -> Iterator[int]:
        yield 1
        yield 2
        raise failure

    seen: list[int] = []
    with pytest.raises(RuntimeError) as raised, read_ahead(pages()) as reader:
        for page in reader:
            seen.append(page)
    assert raised.value is failure
    assert seen == [1, 2]
    assert not _threads()


def test_leaving_early_stops_fetching_and_closes_the_source() -> None:
    fetched: list[int] = []
    closed = threading.Event()

    def pages() -> Iterator[int]:
        try:
            for n in range(1000):
                fetched.append(n)
                yield n
        finally:
            closed.set()

    with read_ahead(pages(), depth=1) as reader:
        for page in reader:
            if page == 3:
                break
    assert closed.is_set()
    assert not _threads()
    # Bounded: besides the pages taken, one waiting in the queue and one in the fetching thread's hands.
    assert len(fetched) <= 4 + 2


def test_an_error_in_the_caller_stops_the_thread_too() -> None:
    def pages() -> Iterator[int]:
        yield from range(1000)

    with pytest.raises(ValueError), read_ahead(pages()) as reader:
        for page in reader:
            if page == 2:
                raise ValueError("apply failed")
    assert not _threads()
