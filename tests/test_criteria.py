"""Criteria conditions against whatever a CRM may answer: never an error, always a bounded, printable detail."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector import criteria
from connector.mapping import Condition

CONDITIONS = [
    Condition.model_validate(raw)
    for raw in (
        {"field": "F", "gte": 50},
        {"field": "F", "lt": 2.5},
        {"field": "F", "gt": "2025-01-01"},
        {"field": "F", "lte": "2025-01-01T12:00:00+02:00"},
        {"field": "F", "equals": "Partner Referral"},
        {"field": "F", "equals": True},
        {"field": "F", "equals": 50},
        {"field": "F", "in": ["Gold", 3, False]},
        {"field": "F", "is_set": True},
        {"field": "F", "is_not_set": True},
    )
]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=1200),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None)
@given(condition=st.sampled_from(CONDITIONS), before=JSON, after=JSON)
def test_any_answer_gives_true_or_false_and_a_bounded_detail(condition: Condition, before: Any, after: Any) -> None:
    assert criteria.holds(condition, {"F": after}) in (True, False)
    detail = criteria.describe(condition, {"F": before}, {"F": after})
    assert detail.isprintable() and len(detail) < 200


def test_values_as_each_crm_sends_them() -> None:
    gte = Condition.model_validate({"field": "F", "gte": 50})
    assert [criteria.holds(gte, {"F": v}) for v in (50, 50.0, "50", " 50.5 ", "49.9", None, "", "high", True)] == [
        True, True, True, True, False, False, False, False, False,
    ]
    after = Condition.model_validate({"field": "F", "gt": "2025-01-01"})
    assert [criteria.holds(after, {"F": v}) for v in ("2025-01-02", "1735776000000", "2025-01-01T00:00:01Z")] == [
        True, True, True,
    ]
    assert not criteria.holds(after, {"F": "2025-01-01T00:00:00Z"})
    assert criteria.holds(Condition.model_validate({"field": "F", "equals": 50}), {"F": "50.0"})
    assert criteria.holds(Condition.model_validate({"field": "F", "is_not_set": True}), {})
