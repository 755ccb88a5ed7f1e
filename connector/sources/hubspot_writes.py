"""Writing statuses to HubSpot: batch updates of 100, each input's outcome on its own.

* A 207 names the inputs it refused in its error entries; each refused input gets its entry,
  classified by `errors.hubspot_error`, so it is dead-lettered with HubSpot's words.
* A 400 that refuses the whole batch for one value (HubSpot says which value, not which record) is
  sent again in groups of identical values: the good writes land, each refused one fails alone.
* `lifecyclestage` only moves forward through the API: an earlier stage is answered 200 and not
  made. With `clear_before_backwards`, a write that moves it backwards in HubSpot's own option order
  (the property's displayOrder) first sets it to "" for those records in one batch update, then
  writes the value in the next. A write answered with another value than the one sent (HubSpot kept
  a later stage than we knew of) is cleared and written again, once; without the option it fails
  with HubSpot's value in the message rather than pass for done.
* A refusal that is the configuration's (the status property unknown or read-only, a value its
  options lack, no write scope) is the admin's (`Action.ADMIN`) for every write of the call, and
  nothing more is sent: the drain pauses the object's write-back instead of dead-lettering them.
* Each confirmed write carries HubSpot's `updatedAt` for it (`WriteOutcome.modified_at`): the stamp
  a lagging search will show next to the old value, so that the engine knows that read for stale.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from connector.sources import errors
from connector.sources.base import StatusWrite, WriteOutcome
from connector.sources.errors import Action, CrmError
from connector.sources.hubspot_stream import Json, Stream, at_ms, to_ms

BATCH = 100
NOT_APPLIED = "NOT_APPLIED"  # our code for a write HubSpot answered 200 to and did not make


class Writer:
    """`update(object type, inputs)` sends one batch update (retried, paced) and returns its answer;
    `option_order(stream)` gives the status property's options in HubSpot's display order."""

    def __init__(
        self, update: Callable[[str, list[Json]], Json], option_order: Callable[[Stream], dict[str, int]]
    ) -> None:
        self._send = update
        self._option_order = option_order
        self._stamps: dict[str, datetime] = {}

    def write(self, stream: Stream, writes: Sequence[StatusWrite]) -> list[WriteOutcome]:
        self._stamps = {}
        backwards = [n for n, w in enumerate(writes) if self._moves_backwards(stream, w)]
        outcomes = self._write(stream, writes, range(len(writes)), clear=backwards)
        if stream.clear_before_backwards:
            # HubSpot kept a later stage than we knew of (a person moved it on meanwhile): clear, write again.
            kept = [n for n, error in outcomes.items() if error is not None and error.code == NOT_APPLIED]
            if kept:
                outcomes.update(self._write(stream, writes, kept, clear=kept))
        return [
            WriteOutcome(w.record_id, error, None if error is not None else self._stamps.get(w.record_id))
            for n, w in enumerate(writes)
            for error in (outcomes.get(n),)
        ]

    def _write(
        self, stream: Stream, writes: Sequence[StatusWrite], indices: Iterable[int], *, clear: Sequence[int]
    ) -> dict[int, CrmError | None]:
        """Write `writes[indices]`, those in `clear` set to "" first, in a request of its own."""
        outcomes: dict[int, CrmError | None] = {}
        clears = [(writes[n].record_id, {stream.status_field: ""}) for n in clear]
        for n, error in zip(clear, self._update(stream, clears), strict=True):
            if error is not None:
                outcomes[n] = error
        sending = [n for n in indices if n not in outcomes]
        items = [(writes[n].record_id, _properties(stream, writes[n])) for n in sending]
        outcomes.update(zip(sending, self._update(stream, items), strict=True))
        return outcomes

    def _moves_backwards(self, stream: Stream, write: StatusWrite) -> bool:
        if not stream.clear_before_backwards or not write.previous_status:
            return False
        order = self._option_order(stream)
        new, old = order.get(write.status), order.get(write.previous_status)
        return new is not None and old is not None and new < old

    def _update(self, stream: Stream, items: Sequence[tuple[str, dict[str, str]]]) -> list[CrmError | None]:
        """Batch updates: one outcome per item, in order. A record twice goes in separate batches."""
        outcomes: list[CrmError | None] = [None] * len(items)
        pending = list(range(len(items)))
        while pending:
            batch: list[int] = []
            ids: set[str] = set()
            rest: list[int] = []
            for n in pending:
                if len(batch) < BATCH and items[n][0] not in ids:
                    batch.append(n)
                    ids.add(items[n][0])
                else:
                    rest.append(n)
            for n, error in zip(batch, self._update_batch(stream, [items[n] for n in batch]), strict=True):
                outcomes[n] = error
            admin = next((e for e in outcomes if e is not None and e.action is Action.ADMIN), None)
            if admin is not None:
                for n in rest:  # the same refusal awaits them: not sent
                    outcomes[n] = admin
                break
            pending = rest
        return outcomes

    def _update_batch(self, stream: Stream, items: Sequence[tuple[str, dict[str, str]]]) -> list[CrmError | None]:
        try:
            answer = self._send(stream.name, [{"id": i, "properties": p} for i, p in items])
        except CrmError as exc:
            if exc.action is Action.ADMIN:  # no write scope, a revoked token: no record can be written
                return [exc] * len(items)
            if exc.action is not Action.RECORD:
                raise
            groups: dict[str, list[int]] = {}
            for n, (_, props) in enumerate(items):
                groups.setdefault(json.dumps(props, sort_keys=True), []).append(n)
            if len(groups) == 1:
                # The value itself is refused, for every record: the admin's, where the configuration is at fault.
                return [errors.hubspot_write_error(exc, stream.status_field)] * len(items)
            # HubSpot refused the batch for one value without saying which record: send each value apart.
            outcomes: list[CrmError | None] = [None] * len(items)
            for members in groups.values():
                for n, error in zip(members, self._update_batch(stream, [items[n] for n in members]), strict=True):
                    outcomes[n] = error
            return outcomes
        for item in answer.get("results") or []:
            stamp = item.get("updatedAt")
            if stamp:
                self._stamps[str(item.get("id"))] = at_ms(to_ms(str(stamp)))
        return _batch_outcomes(items, answer, stream.status_field)


def _properties(stream: Stream, write: StatusWrite) -> dict[str, str]:
    props = {stream.status_field: write.status}
    if write.owner:
        props[stream.owner_field] = write.owner
    return props


def _batch_outcomes(
    items: Sequence[tuple[str, Mapping[str, str]]], answer: Json, checked: str
) -> list[CrmError | None]:
    """Each input's outcome in a 200 or 207: confirmed, or the error entry that names it. A confirmed
    input whose `checked` property came back with another value than the one sent was acknowledged
    and not applied (HubSpot does that to an earlier lifecycle stage)."""
    confirmed = {str(item.get("id")): item.get("properties") or {} for item in answer.get("results") or []}
    failed: dict[str, Json] = {}
    unnamed: list[Json] = []
    for entry in answer.get("errors") or []:
        context = entry.get("context") or {}
        named = [str(i) for i in context.get("ids") or context.get("id") or []]
        for record_id in named:
            failed[record_id] = entry
        if not named:
            unnamed.append(entry)
    outcomes: list[CrmError | None] = []
    for record_id, sent in items:
        entry = failed.get(record_id) or (unnamed[0] if len(unnamed) == 1 else None)
        if record_id in confirmed and record_id not in failed:
            outcomes.append(_not_applied(record_id, checked, sent, confirmed[record_id]))
        elif entry is not None:
            error = errors.hubspot_error(None, entry)
            error.record_id = record_id
            outcomes.append(error)
        else:
            # Neither confirmed nor refused: send it again later (a resent write is harmless).
            outcomes.append(CrmError(Action.RETRY, "HubSpot did not confirm this write", record_id=record_id))
    return outcomes


def _not_applied(record_id: str, name: str, sent: Mapping[str, str], stored: Mapping[str, Any]) -> CrmError | None:
    if name not in sent or name not in stored or (stored[name] or "") == (sent[name] or ""):
        return None
    message = f"HubSpot acknowledged {name} = {sent[name]!r} but kept {stored[name]!r}"
    return CrmError(Action.RECORD, message, code=NOT_APPLIED, record_id=record_id)
