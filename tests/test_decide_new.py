"""A first sync's records go through `record_writes._decide_new`, which must write exactly what the
general `_decide_read` writes for a record new to the store: the same stage, clocks, history, timer,
write-back, owner and fields, criteria triggers and rule 4 included, whatever the mapping.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from connector import record_writes
from connector.mapping import StageMapping, read_mapping
from connector.record_writes import _decide_new, _decide_read, decide_remote
from connector.sources.base import RemoteRecord

# Timers, criteria triggers (one that a first read can fire, one from a quarantine-free stage only),
# owners by stage and by `assign:` rules.
MAPPING = """\
stages:
  - {name: New, category: in_progress}
  - {name: Working, category: in_progress, owner: "005-ana"}
  - {name: Qualified, category: in_progress, assign: [{when: {Region: EMEA}, owner: "005-eve"}]}
  - {name: Won, category: succeeded, sticky: true}
  - {name: Lost, category: not_succeeded}
statuses:
  Open: New
  Contacted: Working
  Qualified: Qualified
  Closed Won: Won
  Closed Lost: Lost
triggers:
  - {name: hot, on: {field: Score, gte: 50}, from: [New, Working], to: Qualified}
  - {name: gone, on: {field: OptOut, is_set: true}, from_category: [in_progress], to: Lost}
  - {name: quiet, on: inactive, after: 14d, from: [Working], to: Lost}
  - {name: stale, on: inactive, after: 30d, from_category: [in_progress], to: Lost}
overrides:
  forward_only: true
"""
# The usual mapping: no criteria, no owners (the first sync's fast case).
PLAIN = """\
stages:
  - {name: New, category: in_progress}
  - {name: Working, category: in_progress}
  - {name: Lost, category: not_succeeded}
statuses:
  Open: New
  Contacted: Working
  Closed Lost: Lost
triggers:
  - {name: quiet, on: inactive, after: 14d, from: [Working], to: Lost}
"""

B = datetime(2024, 2, 1, 12, 0, tzinfo=UTC)  # the baseline
PARIS = timezone(timedelta(hours=1))


def read(folder: Path, text: str) -> StageMapping:
    path = folder / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    mapping, problems = read_mapping(path)
    assert mapping is not None, [str(p) for p in problems]
    return mapping


def check_same(mapping: StageMapping) -> int:
    """Every combination, twice (the second time from the lookup table): returns how many moved twice."""
    fields_read = ({}, {"Score": 70}, {"Score": 10, "Region": "EMEA"}, {"OptOut": "yes", "Region": "EMEA"})
    stamps = (B - timedelta(days=3), B + timedelta(hours=2))
    first_seens = (None, B, B + timedelta(hours=1), (B + timedelta(hours=1)).astimezone(PARIS))
    cases = list(itertools.product(
        ("Open", "Contacted", "Qualified", "Closed Won", "Closed Lost", "Unmapped", None),
        ("005-bob", None),
        fields_read,
        stamps,
        first_seens,
        (False, True),  # converted
        (False, True),  # fires_at_first_read
    ))
    two_moves = 0
    for _ in range(2):
        for status, owner, fields, at, first_seen, converted, fires in cases:
            remote = RemoteRecord("00Q1", status, at, converted=converted, owner=owner, fields=fields, created_at=B)
            expected = _decide_read(None, remote, mapping, first_seen, fires)
            got = _decide_new(remote, mapping, first_seen, fires)
            assert got == expected, (remote, first_seen, fires)
            assert decide_remote(None, remote, mapping, first_seen, fires_at_first_read=fires) == expected
            # The instants are the ones given, zone and all (a looked-up decision is not another zone's).
            assert [t.at.tzinfo for t in got.transitions] == [t.at.tzinfo for t in expected.transitions]
            two_moves += len(got.transitions) == 2
    return two_moves


def test_a_new_record_is_decided_as_the_general_path_decides_it(tmp_path: Path) -> None:
    mapping = read(tmp_path, MAPPING)
    # Criteria moves did happen on first reads (else this would not check the criteria at all).
    assert check_same(mapping) > 0


def test_the_same_without_criteria_or_owners(tmp_path: Path) -> None:
    check_same(read(tmp_path, PLAIN))


def test_the_lookup_table_stays_bounded(tmp_path: Path) -> None:
    mapping = read(tmp_path, PLAIN)
    for second in range(record_writes._FIRST_READS_KEPT + 10):
        at = B + timedelta(seconds=second)  # records created after the baseline: a clock each
        remote = RemoteRecord(f"00Q{second}", "Contacted", at, created_at=at)
        assert _decide_new(remote, mapping, at, True) == _decide_read(None, remote, mapping, at, True)
    assert len(record_writes._stage_table(mapping).first_reads) <= record_writes._FIRST_READS_KEPT
