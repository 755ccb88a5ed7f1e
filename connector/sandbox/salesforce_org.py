"""The sandbox org's data, and what people and admins do to it outside the API (the back door).

Tests and `connector demo` shape the org through these methods (`seed`, `edit_as_person`, `delete`,
`merge`, `deny_read`, ...), which act as a person, a data load or an admin in Setup would, never as
the API: they are not counted and not logged in `writes()`.

Outbound Messages: `add_outbound_message(...)` defines one with the workflow rule that fires it;
from then on every committed save of that object (a person's edit, a data load, an API write) that
the rule fires on is queued and sent by `salesforce_outbound.Outbox` from a background thread.

Late commits: a person's edit or a data load inside `long_transaction(d)` (or with `commit_delay`
set) is stamped when it is made (SystemModstamp T) but stays invisible to every API read (SOQL,
queryAll, reads by Id: one database) until T + d, when it appears with its stamp T, behind records
already visible. Meanwhile the API cannot write those records (UNABLE_TO_LOCK_ROW), as with a row
held by a running transaction. See docs/crm-behaviour.md for the sources.
"""

from __future__ import annotations

import random
import threading
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any

from connector.sandbox import soql
from connector.sandbox.salesforce_outbound import WHEN, Criteria, OutboundMessageDef, Outbox, check_endpoint
from connector.sandbox.salesforce_schema import (
    B62,
    CONVERTED_STATUS,
    LEAD_STATUSES,
    ORG_BORN,
    PAIR_CAPS,
    PAIRS,
    PERSON_NAMED,
    SUFFIX,
    FieldDef,
    SObject,
    audited,
    caps,
    history_object,
    normalize_id,
    pick,
    ref,
    standard_objects,
)

# Field history of the standard objects: `<Object>History`, pointing at its record by `<Object>Id`.
_STANDARD_HISTORY = {"Lead": ("LeadHistory", "LeadId"), "Contact": ("ContactHistory", "ContactId"),
                     "Account": ("AccountHistory", "AccountId")}
_ACTIVITIES = {"Task": ("TaskRelation", "TaskId"), "Event": ("EventRelation", "EventId")}


@dataclass
class _Pending:
    """An edit made but not yet committed: invisible to the API until `visible_at`."""

    visible_at: datetime
    obj: str
    record: dict[str, Any]  # the whole new version
    user: str


def _person_name(record: Mapping[str, Any]) -> str:
    return " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p)


class Org:
    """The records, schema, permissions and field history of one sandbox org."""

    def __init__(self, *, seed: int = 0, username: str = "admin@sandbox.test") -> None:
        self.username = username
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.commit_delay = timedelta(0)  # how late every back-door edit commits (0: at once)
        self._delay: timedelta | None = None  # inside long_transaction()
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._pod = "Sb" + B62[seed % 62]
        self._counter = 1
        self._objects: dict[str, SObject] = {}
        self._by_prefix: dict[str, SObject] = {}
        self._custom_prefixes = 0
        self._writes: list[tuple[str, str, dict[str, Any]]] = []
        self._injected: dict[str, list[Any]] = {}  # Id -> [code, message, times left]
        self._pending: list[_Pending] = []
        self._locked: set[str] = set()  # Ids with an uncommitted edit
        self._tracked: dict[str, set[str]] = {}  # object -> fields whose history is kept
        self._hidden: set[str] = set()  # objects the API user may not see (lower-cased)
        self._no_edit: set[str] = set()  # objects the API user may read but not edit (lower-cased)
        self._admin_id = self._person_id = ""
        self.org_id = self._new_id("00D")
        self.api_version = "62.0"
        self.instance_url = "https://sandbox.my.salesforce.com"  # the server's URL once it listens
        self._outbox: Outbox | None = None
        self._outbound_muted: set[str] = set()  # users whose profile lacks "Send Outbound Messages"
        self._outbound_held = 0  # inside outbound_held(): saves fire no rule (the caller fires once)
        for sobject in standard_objects():
            self._add_object(sobject)
        self._seed_users_and_statuses()

    # --- the org, as an admin or a person shapes it ----------------------------------------------
    def define_object(self, name: str, fields: Mapping[str, list[str] | None], restricted: bool = True) -> None:
        """Add a custom object, or add fields to an existing one: a list makes a picklist of those values."""
        defs = [pick(n, list(v), restricted=restricted) if v is not None else FieldDef(n, "string")
                for n, v in fields.items()]
        with self._lock:
            existing = self._objects.get(name)
            if existing is None:
                prefix = f"a{B62[self._custom_prefixes // 62]}{B62[self._custom_prefixes % 62]}"
                self._custom_prefixes += 1
                base = [f for f in defs if f.name != "Name"]
                self._add_object(SObject(name, prefix, audited(FieldDef("Name", "string"), ref("OwnerId", "User"),
                                                               *base)))
                return
            for definition in defs:
                existing.add_field(definition)

    def add_picklist_value(self, obj: str, field_name: str, value: str) -> None:
        """What an admin does in Setup; a new Lead status also appears as a LeadStatus row."""
        with self._lock:
            definition = self._sobject(obj).fields[field_name]
            if definition.picklist is None:
                raise ValueError(f"{obj}.{field_name} is not a picklist")
            if value not in definition.picklist:
                definition.picklist.append(value)
                if (obj, field_name) == ("Lead", "Status"):
                    self._lead_status_rows([value], len(definition.picklist))

    def picklist_values(self, obj: str, field_name: str) -> list[str]:
        with self._lock:
            return list(self._sobject(obj).fields[field_name].picklist or [])

    def remove_picklist_value(self, obj: str, field_name: str, value: str) -> None:
        """An admin deletes a value from a restricted picklist: records keep it, writes of it are refused."""
        with self._lock:
            definition = self._sobject(obj).fields[field_name]
            if definition.picklist is not None and value in definition.picklist:
                definition.picklist.remove(value)

    # --- permissions (the API user's profile and permission sets) --------------------------------
    def deny_read(self, obj: str) -> None:
        """The API user may not see `obj`: SOQL answers INVALID_TYPE, describe NOT_FOUND."""
        with self._lock:
            self._hidden.add(obj.lower())

    def deny_edit(self, obj: str) -> None:
        """The API user may read `obj` but not edit it: each update answers INSUFFICIENT_ACCESS_OR_READONLY."""
        with self._lock:
            self._no_edit.add(obj.lower())

    def set_field_readonly(self, obj: str, field_name: str) -> None:
        """Field-level security: read-only for the API user (describe says updateable: false)."""
        with self._lock:
            self._sobject(obj).fields[field_name].updateable = False

    def allow(self, obj: str) -> None:
        """Give back read and edit on `obj`."""
        with self._lock:
            self._hidden.discard(obj.lower())
            self._no_edit.discard(obj.lower())

    def visible(self, obj: str) -> bool:
        return obj.lower() not in self._hidden

    def editable(self, obj: str) -> bool:
        return obj.lower() not in self._no_edit

    # --- field history ---------------------------------------------------------------------------
    def track_history(self, obj: str, *fields: str) -> None:
        """Setup > Set History Tracking: from now on each edit of these fields writes a history row.

        A custom object's `<Name>__History` object exists only once tracking is on.
        """
        with self._lock:
            sobject = self._sobject(obj)
            name, parent = self._history_of(sobject)
            if name not in self._objects:
                self._add_object(history_object(name, parent, sobject.name))
            self._tracked.setdefault(sobject.name, set()).update(fields)

    def add_history(self, obj: str, record_id: str, field_name: str, old: Any, new: Any, when: datetime,
                    user: str | None = None) -> None:
        """A field-history row as Salesforce keeps it (for seeding months of past edits)."""
        with self._lock:
            sobject = self._sobject(obj)
            name, parent = self._history_of(sobject)
            if name not in self._objects:
                self._add_object(history_object(name, parent, sobject.name))
            history = self._objects[name]
            (rid,) = self._new_ids(history.key_prefix, 1)
            history.records[rid] = {
                "Id": rid, "IsDeleted": False, parent: normalize_id(record_id) or record_id,
                "CreatedById": user or self._person_id, "CreatedDate": self._stamp(when), "Field": field_name,
                "OldValue": None if old is None else str(old), "NewValue": None if new is None else str(new),
            }

    @staticmethod
    def _history_of(sobject: SObject) -> tuple[str, str]:
        return _STANDARD_HISTORY.get(sobject.name) or (sobject.name.removesuffix("__c") + "__History", "ParentId")

    def _write_history(self, sobject: SObject, old: Mapping[str, Any] | None, new: Mapping[str, Any],
                       user: str) -> None:
        for name in sorted(self._tracked.get(sobject.name, ())):
            if old is not None and old.get(name) != new.get(name):
                self.add_history(sobject.name, new["Id"], name, old.get(name), new.get(name), new["SystemModstamp"],
                                 user)

    # --- late commits ----------------------------------------------------------------------------
    @contextmanager
    def long_transaction(self, seconds: float) -> Iterator[None]:
        """Back-door edits made inside commit `seconds` after their stamp (a long Apex job, a data load)."""
        with self._lock:
            previous, self._delay = self._delay, timedelta(seconds=seconds)
        try:
            yield
        finally:
            with self._lock:
                self._delay = previous

    def settle(self) -> None:
        """Commit every pending edit whose time has come, oldest first (every API call does this first)."""
        with self._lock:
            if not self._pending:
                return
            now = self.clock()
            due = sorted((p for p in self._pending if p.visible_at <= now), key=lambda p: p.visible_at)
            if not due:
                return
            self._pending = [p for p in self._pending if p.visible_at > now]
            for pending in due:
                self._commit(self._objects[pending.obj], pending.record, pending.user)
            self._locked = {p.record["Id"] for p in self._pending}

    def _late(self) -> timedelta:
        return self._delay if self._delay is not None else self.commit_delay

    def _save(self, sobject: SObject, new: dict[str, Any], user: str) -> None:
        """A back-door edit: committed now, or held back when it belongs to a long transaction."""
        delay = self._late()
        if delay > timedelta(0):
            self._pending.append(_Pending(new["SystemModstamp"] + delay, sobject.name, new, user))
            self._locked.add(new["Id"])
        else:
            self._commit(sobject, new, user)

    def _commit(self, sobject: SObject, new: dict[str, Any], user: str, *, created: bool = False) -> None:
        """`created`: the save that completes an insert (rules see it as a creation)."""
        rid = new["Id"]
        old = sobject.records.get(rid)
        index = sobject.by_modstamp
        if old is not None:
            at = bisect_left(index, (old["SystemModstamp"], rid))
            if at < len(index) and index[at] == (old["SystemModstamp"], rid):
                del index[at]
        key = (new["SystemModstamp"], rid)
        if not index or index[-1] <= key:
            index.append(key)
        else:
            insort(index, key)
        self._write_history(sobject, old, new, user)
        self._fire_outbound(sobject, None if created else old, new, user)
        if old is None:
            sobject.records[rid] = new
        else:
            old.clear()
            old.update(new)

    def _stamped(self, sobject: SObject, base: Mapping[str, Any], changes: Mapping[str, Any], now: datetime,
                 user: str) -> dict[str, Any]:
        new = {**base, **changes, "SystemModstamp": now, "LastModifiedDate": now, "LastModifiedById": user}
        if sobject.name in PERSON_NAMED:
            new["Name"] = _person_name(new)
        return new

    def _latest(self, sobject: SObject, record_id: str) -> dict[str, Any]:
        """The record as the person editing it sees it: with their own uncommitted edits."""
        normal = normalize_id(record_id) or record_id
        for pending in reversed(self._pending):
            if pending.obj == sobject.name and pending.record["Id"] == normal:
                return pending.record
        return self._existing(sobject, record_id)

    # --- records ---------------------------------------------------------------------------------
    def seed(self, obj: str, records: list[dict[str, Any]], *, modstamp: datetime | None = None) -> list[str]:
        """Bulk insert, as a data load would: field names are checked, values are stored as given."""
        with self._lock:
            sobject = self._sobject(obj)
            when = self._stamp(modstamp) if modstamp is not None else self._now()
            template, known = sobject.template(), sobject.fields.keys()
            template.update(CreatedDate=when, LastModifiedDate=when, SystemModstamp=when,
                            CreatedById=self._admin_id, LastModifiedById=self._admin_id)
            if "OwnerId" in known:
                template["OwnerId"] = self._admin_id
            timed = {n for n, f in sobject.fields.items() if f.type in ("datetime", "date")}
            named = sobject.name in PERSON_NAMED
            for given in records:
                if not known >= given.keys():
                    raise ValueError(f"no such field on {obj}: {sorted(given.keys() - known)}")
            ids = self._new_ids(sobject.key_prefix, len(records))
            built = []
            for rid, given in zip(ids, records, strict=True):
                record = template.copy()
                record.update(given)
                record["Id"] = rid
                if not timed.isdisjoint(given):
                    for name in timed.intersection(given):
                        record[name] = self._typed(sobject.fields[name], given[name])
                if named:
                    record["Name"] = _person_name(record)
                if sobject.name in _ACTIVITIES:
                    record["AccountId"] = self._account_of(record)
                built.append(record)
            if self._late() > timedelta(0):
                for record in built:
                    self._save(sobject, record, self._admin_id)
                return ids
            stamps = []
            for record in built:
                sobject.records[record["Id"]] = record
                stamps.append((record["SystemModstamp"], record["Id"]))
                self._fire_outbound(sobject, None, record, self._admin_id)
            index = sobject.by_modstamp
            in_order = not index or not stamps or index[-1] <= stamps[0]
            index.extend(stamps)
            if not in_order or any(a > b for a, b in pairwise(stamps)):
                index.sort()
            return ids

    def edit_as_person(self, obj: str, record_id: str, **fields: Any) -> None:
        """A user's edit in the UI: not validated against picklists (so tests can create drift)."""
        with self._lock:
            sobject = self._sobject(obj)
            base = self._latest(sobject, record_id)
            changes = {}
            for name, value in fields.items():
                if name not in sobject.fields:
                    raise ValueError(f"no such field on {obj}: {name}")
                changes[name] = self._typed(sobject.fields[name], value)
            self._save(sobject, self._stamped(sobject, base, changes, self._now(), self._person_id), self._person_id)

    def record(self, obj: str, record_id: str) -> dict[str, Any]:
        """A copy of the committed fields (datetimes as aware datetimes), deleted records included."""
        with self._lock:
            self.settle()
            return dict(self._existing(self._sobject(obj), record_id))

    def delete(self, obj: str, record_id: str) -> None:
        with self._lock:
            sobject = self._sobject(obj)
            base = self._latest(sobject, record_id)
            self._save(sobject, self._stamped(sobject, base, {"IsDeleted": True}, self._now(), self._person_id),
                       self._person_id)

    def merge(self, obj: str, winner_id: str, loser_id: str) -> None:
        """Merge as Salesforce does: the loser is deleted with MasterRecordId = the winner (see queryAll)."""
        with self._lock:
            sobject, now, user = self._sobject(obj), self._now(), self._person_id
            winner, loser = self._latest(sobject, winner_id), self._latest(sobject, loser_id)
            self._save(sobject, self._stamped(sobject, loser, {"IsDeleted": True, "MasterRecordId": winner["Id"]},
                                              now, user), user)
            self._save(sobject, self._stamped(sobject, winner, {}, now, user), user)

    def convert_lead(self, record_id: str, *, create_contact: bool = True) -> None:
        """Like the Convert button: the lead is closed and, by default, an Account and a Contact appear."""
        with self._lock:
            leads, now = self._sobject("Lead"), self._now()
            lead = self._latest(leads, record_id)
            if lead["IsConverted"]:
                raise ValueError(f"lead {record_id} is already converted")
            changes: dict[str, Any] = {"IsConverted": True, "Status": CONVERTED_STATUS, "ConvertedDate": now.date()}
            if create_contact:
                (account,) = self.seed("Account", [{"Name": lead["Company"] or lead["LastName"]}], modstamp=now)
                (contact,) = self.seed("Contact", [{
                    "FirstName": lead["FirstName"], "LastName": lead["LastName"], "Email": lead["Email"],
                    "AccountId": account, "OwnerId": lead["OwnerId"], "Country": lead["Country"],
                }], modstamp=now)
                changes.update(ConvertedAccountId=account, ConvertedContactId=contact)
            self._save(leads, self._stamped(leads, lead, changes, now, self._person_id), self._person_id)

    def log_activity(self, kind: str, *, who: Sequence[str] = (), what: str | None = None,
                     shared: bool = True, **fields: Any) -> str:
        """A Task or Event as a rep logs it: WhoId is the first person; with Shared Activities on
        (`shared`), TaskRelation / EventRelation name every person (IsWhat false) and the record (true)."""
        relation, parent = _ACTIVITIES[kind]
        with self._lock:
            people = [normalize_id(p) or p for p in who]
            given = dict(fields)
            if people:
                given["WhoId"] = people[0]
            if what is not None:
                given["WhatId"] = normalize_id(what) or what
            (activity,) = self.seed(kind, [given])
            if shared:
                rows: list[dict[str, Any]] = [{"RelationId": p, parent: activity, "IsWhat": False} for p in people]
                if what is not None:
                    rows.append({"RelationId": given["WhatId"], parent: activity, "IsWhat": True})
                if kind == "Event":
                    for row in rows:
                        row.update(IsParent=True, IsInvitee=False)
                for row in rows:
                    row["AccountId"] = self._account_of({"WhoId": row["RelationId"]} if not row["IsWhat"]
                                                        else {"WhatId": row["RelationId"]})
                self.seed(relation, rows)
            return activity

    def _account_of(self, activity: Mapping[str, Any]) -> str | None:
        """Salesforce's AccountId on an activity: its WhatId's Account, else its WhoId Contact's."""
        what = self._found(activity.get("WhatId"))
        if what is not None and what[0].name == "Account":
            return str(what[1]["Id"])
        if what is not None and what[0].name == "Opportunity":
            return what[1].get("AccountId")
        who = self._found(activity.get("WhoId"))
        if who is not None and who[0].name == "Contact":
            return who[1].get("AccountId")
        return None

    def _found(self, record_id: Any) -> tuple[SObject, dict[str, Any]] | None:
        normal = normalize_id(record_id) if isinstance(record_id, str) else None
        owner = self._by_prefix.get(normal[:3]) if normal else None
        if normal is None or owner is None or normal not in owner.records:
            return None
        return owner, owner.records[normal]

    def fail_writes(self, record_ids: Iterable[str], error_code: str, message: str, times: int = 1) -> None:
        """The next `times` API writes to each record fail with this per-record error (e.g. UNABLE_TO_LOCK_ROW)."""
        with self._lock:
            for rid in record_ids:
                self._injected[normalize_id(rid) or rid] = [error_code, message, times]

    def writes(self, obj: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Every successful API update or create, in order, with the fields as the client sent them.

        Rolled-back and refused records are absent, so exactly-once checks can count on it.
        """
        with self._lock:
            return [(rid, dict(fields)) for name, rid, fields in self._writes if obj is None or name == obj]

    # --- Outbound Messages ----------------------------------------------------------------------
    def add_outbound_message(self, obj: str, endpoint_url: str, fields: Sequence[str] = ("Id",), *,
                             when: str = "created_or_edited", criteria: Criteria | None = None) -> str:
        """Setup > Outbound Messages plus the workflow rule (or record-triggered flow) that sends it.

        `when` is the rule's evaluation criteria: "created", "created_or_edited" (every save), or
        "created_or_edited_to_meet" (a save that makes `criteria` true). Returns the ActionId (04k...).
        """
        if when not in WHEN:
            raise ValueError(f"when must be one of {WHEN}")
        check_endpoint(endpoint_url)
        with self._lock:
            sobject = self._sobject(obj)
            unknown = [f for f in fields if f not in sobject.fields]
            if unknown:
                raise ValueError(f"no such field on {sobject.name}: {unknown}")
            action_id = self._new_id("04k")
            names = ("Id", *(f for f in fields if f != "Id"))
            self.outbound.definitions.append(
                OutboundMessageDef(action_id, sobject.name, endpoint_url, names, when, criteria))
            return action_id

    @property
    def outbound(self) -> Outbox:
        """The org's outbound message queue: `messages()`, `wait_idle()`, `pause()`, retry timings."""
        with self._lock:
            if self._outbox is None:
                self._outbox = Outbox(self.org_id, self._outbound_records, lambda: self.instance_url,
                                      lambda: self.api_version)
            return self._outbox

    def mute_outbound_messages(self, user_id: str | None = None) -> None:
        """Untick "Send Outbound Messages" on a user's profile (default: the API user): that user's
        saves fire no Outbound Message, which is how Salesforce advises breaking integration loops."""
        with self._lock:
            self._outbound_muted.add(user_id or self._admin_id)

    @contextmanager
    def outbound_held(self) -> Iterator[None]:
        """Saves inside fire no Outbound Message: an API insert is a row made then filled in, one save."""
        with self._lock:
            self._outbound_held += 1
            try:
                yield
            finally:
                self._outbound_held -= 1

    def stop_outbound(self) -> None:
        with self._lock:
            outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.stop()

    def _fire_outbound(self, sobject: SObject, old: Mapping[str, Any] | None, new: Mapping[str, Any],
                       user: str) -> None:
        outbox = self._outbox
        if outbox is None or self._outbound_held or user in self._outbound_muted:
            return
        if outbox.watches(sobject.name):
            outbox.changed(sobject.name, old, new, lambda: self._new_id("04l"))

    def _outbound_records(self, obj: str, ids: list[str]) -> list[Mapping[str, Any]]:
        with self._lock:
            records = self._sobject(obj).records
            return [dict(records[i]) for i in ids]

    # --- internals of the org --------------------------------------------------------------------
    def _add_object(self, sobject: SObject) -> None:
        self._objects[sobject.name] = sobject
        self._by_prefix[sobject.key_prefix] = sobject

    def _seed_users_and_statuses(self) -> None:
        people = [("Admin User", self.username, True), ("Sam Seller", "sam@sandbox.test", True),
                  ("Riley Rep", "riley@sandbox.test", True), ("Former Employee", "former@sandbox.test", False)]
        epoch = ORG_BORN
        users = self.seed("User", [{"Name": n, "Username": u, "Email": u, "IsActive": a} for n, u, a in people],
                          modstamp=epoch)
        # The API's user is the admin; a person's edits in the UI come from a sales rep.
        self._admin_id, self._person_id = users[0], users[1]
        for rid in users:
            self._objects["User"].records[rid].update(CreatedById=self._admin_id, LastModifiedById=self._admin_id)
        self._lead_status_rows(LEAD_STATUSES, 1, epoch)

    def _lead_status_rows(self, values: list[str], first_order: int, when: datetime | None = None) -> None:
        rows = [{"MasterLabel": v, "ApiName": v, "SortOrder": first_order + i, "IsConverted": v == CONVERTED_STATUS,
                 "IsDefault": v == LEAD_STATUSES[0]} for i, v in enumerate(values)]
        self.seed("LeadStatus", rows, modstamp=when)

    def _new_id(self, prefix: str) -> str:
        return self._new_ids(prefix, 1)[0]

    def _new_ids(self, prefix: str, count: int) -> list[str]:
        """Prefix, pod, then a 9-digit base-62 counter: string order is creation order.

        Seeding 200,000 records must be quick, so Ids come in runs that share all but the last two
        digits, whose part of the checksum is looked up rather than computed.
        """
        start, end, out = self._counter, self._counter + count, []
        self._counter = end
        n = start
        while n < end:
            block, first = divmod(n, len(PAIRS))
            last = min(len(PAIRS), first + end - n)
            digits = []
            for _ in range(7):
                block, digit = divmod(block, 62)
                digits.append(B62[digit])
            head = prefix + self._pod + "".join(reversed(digits))  # the first 13 of 15 characters
            fixed = SUFFIX[caps(head[:5])] + SUFFIX[caps(head[5:10])]
            high = caps(head[10:])
            out.extend([head + PAIRS[j] + fixed + SUFFIX[high | PAIR_CAPS[j] << 3] for j in range(first, last)])
            n += last - first
        return out

    def _now(self) -> datetime:
        return self._stamp(self.clock())

    @staticmethod
    def _stamp(value: datetime) -> datetime:
        """Audit fields have one-second resolution, as in a real org (so many records share one)."""
        if value.tzinfo is None:
            raise ValueError("datetimes must be timezone-aware")
        return value.astimezone(UTC).replace(microsecond=0)

    def _sobject(self, name: str) -> SObject:
        found = self._objects.get(name) or next(
            (o for o in self._objects.values() if o.name.lower() == name.lower()), None
        )
        if found is None:
            raise KeyError(f"no such object: {name}")
        return found

    def _existing(self, sobject: SObject, record_id: str) -> dict[str, Any]:
        record = sobject.records.get(normalize_id(record_id) or record_id)
        if record is None:
            raise KeyError(f"no {sobject.name} with Id {record_id}")
        return record

    def _typed(self, definition: FieldDef, value: Any) -> Any:
        if isinstance(value, str) and definition.type == "datetime":
            parsed = soql.parse_datetime(value) or datetime.fromisoformat(value)
            return self._stamp(parsed)
        if isinstance(value, datetime) and definition.type == "datetime":
            return self._stamp(value)
        if isinstance(value, str) and definition.type == "date":
            return date.fromisoformat(value)
        if definition.type in ("double", "currency", "percent") and isinstance(value, int):
            return float(value)  # Salesforce answers these as JSON doubles: 55.0, not 55
        return value
