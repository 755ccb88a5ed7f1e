"""A loopback Salesforce org: OAuth, SOQL query/queryAll, describe, sObject and sObject Collections.

Driven by the real simple-salesforce client over HTTPS, so the bodies, status codes, error codes and
headers follow Salesforce's REST API closely. Tests and `connector demo` shape the org through the
back-door methods (`seed`, `edit_as_person`, `delete`, `fail_writes`, ...), which act like a person
or an admin would, never like the API: they are not counted and not logged in `writes()`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
import shutil
import ssl
import string
import tempfile
import threading
import time
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connector.sandbox import soql
from connector.sandbox._http import LoopbackServer, Request, Response

# --- Ids ------------------------------------------------------------------------------------------
_B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase  # ASCII order: sorts as numbers
_SUFFIX = string.ascii_uppercase + "012345"
_UPPER_BITS = str.maketrans({c: "1" if c.isupper() else "0" for c in _B62})
_ID_RE = re.compile(r"[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?$")


_PAIRS = [a + b for a in _B62 for b in _B62]  # the last two digits of an Id's counter


def _caps(chunk: str) -> int:
    """Bit i set when chunk[i] is upper case: the basis of an 18-character Id's suffix."""
    return int(chunk.translate(_UPPER_BITS)[::-1] or "0", 2)


_PAIR_CAPS = [_caps(pair) for pair in _PAIRS]


def _checksum(id15: str) -> str:
    """The 3-character suffix that makes an 18-character Id unique without regard to case."""
    return "".join(_SUFFIX[_caps(id15[i : i + 5])] for i in (0, 5, 10))


def normalize_id(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character Id; None when it is not a well-formed Id."""
    if not _ID_RE.match(value):
        return None
    suffix = _checksum(value[:15])
    if len(value) == 18 and value[15:] != suffix:
        return None
    return value[:15] + suffix


# --- schema ---------------------------------------------------------------------------------------
_KINDS = {
    "id": soql.ID, "reference": soql.ID, "string": soql.TEXT, "email": soql.TEXT, "picklist": soql.TEXT,
    "datetime": soql.DATETIME, "date": soql.DATE, "boolean": soql.BOOLEAN, "int": soql.NUMBER,
}
_SOAP_TYPES = {"id": "tns:ID", "reference": "tns:ID", "datetime": "xsd:dateTime", "date": "xsd:date",
               "boolean": "xsd:boolean", "int": "xsd:int"}


@dataclass
class FieldDef:
    name: str
    type: str  # describe type: id, string, email, picklist, reference, datetime, date, boolean, int
    updateable: bool = True
    nillable: bool = True
    picklist: list[str] | None = None
    default: str | None = None
    restricted: bool = True
    reference_to: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        base = self.name.removesuffix("__c")
        if base.endswith("Id") and len(base) > 2:
            base = base[:-2] + " ID"
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base).replace("_", " ")

    def describe(self) -> dict[str, Any]:
        picklist = self.picklist or []
        return {
            "name": self.name, "label": self.label, "type": self.type,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"), "length": 0 if self.type in _SOAP_TYPES else 255,
            "custom": self.name.endswith("__c"), "updateable": self.updateable, "createable": self.updateable,
            "nillable": self.nillable, "filterable": True, "sortable": True, "idLookup": self.type == "id",
            "restrictedPicklist": self.picklist is not None and self.restricted,
            "dependentPicklist": False, "defaultValue": None, "referenceTo": list(self.reference_to),
            "picklistValues": [
                {"active": True, "defaultValue": v == self.default, "label": v, "value": v, "validFor": None}
                for v in picklist
            ],
        }


@dataclass
class _SObject:
    name: str
    key_prefix: str
    fields: dict[str, FieldDef]
    updateable: bool = True
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (SystemModstamp, Id), kept sorted: keyset pages over 200k records start with a bisect, not a scan
    by_modstamp: list[tuple[datetime, str]] = field(default_factory=list)
    lower: dict[str, str] = field(default_factory=dict)  # Salesforce names are case-insensitive

    def __post_init__(self) -> None:
        self.lower = {name.lower(): name for name in self.fields}

    def add_field(self, definition: FieldDef) -> None:
        self.fields[definition.name] = definition
        self.lower[definition.name.lower()] = definition.name
        for record in self.records.values():
            record.setdefault(definition.name, None)

    def template(self) -> dict[str, Any]:
        blank: dict[str, Any] = {name: f.default for name, f in self.fields.items()}
        blank.update(IsDeleted=False, **({"IsConverted": False} if "IsConverted" in self.fields else {}))
        return blank

    def entity(self) -> soql.Entity:
        return soql.Entity(self.name, {name: _KINDS[f.type] for name, f in self.fields.items()})

    def describe(self) -> dict[str, Any]:
        urls = {"sobject": f"/sobjects/{self.name}", "describe": f"/sobjects/{self.name}/describe"}
        return {
            "name": self.name, "label": self.name.removesuffix("__c").replace("_", " "), "keyPrefix": self.key_prefix,
            "custom": self.name.endswith("__c"), "queryable": True, "retrieveable": True, "searchable": True,
            "createable": self.updateable, "updateable": self.updateable, "deletable": self.updateable,
            "urls": urls, "fields": [f.describe() for f in self.fields.values()],
        }


def _fields(*specs: FieldDef) -> dict[str, FieldDef]:
    audit = [
        FieldDef("IsDeleted", "boolean", updateable=False, nillable=False),
        FieldDef("CreatedDate", "datetime", updateable=False, nillable=False),
        FieldDef("CreatedById", "reference", updateable=False, reference_to=("User",)),
        FieldDef("LastModifiedDate", "datetime", updateable=False, nillable=False),
        FieldDef("LastModifiedById", "reference", updateable=False, reference_to=("User",)),
        FieldDef("SystemModstamp", "datetime", updateable=False, nillable=False),
    ]
    return {f.name: f for f in [FieldDef("Id", "id", updateable=False, nillable=False), *specs, *audit]}


def _ref(name: str, *to: str, updateable: bool = True) -> FieldDef:
    return FieldDef(name, "reference", updateable=updateable, reference_to=to)


def _pick(name: str, values: list[str], default: str | None = None, **kw: Any) -> FieldDef:
    return FieldDef(name, "picklist", picklist=list(values), default=default, **kw)  # a copy: each org is its own


LEAD_STATUSES = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"]
CONTACT_STAGES = ["Prospect", "Engaged", "Opportunity", "Customer", "Churned"]
ACCOUNT_STAGES = ["Target", "Engaged", "Customer", "Lost"]
_CONVERTED_STATUS = "Closed - Converted"
_ORG_BORN = datetime(2020, 1, 1, tzinfo=UTC)  # when the users and lead statuses were set up
_PERSON_NAMED = ("Lead", "Contact")  # Name is FirstName + LastName, read-only


def _text(name: str, **kw: Any) -> FieldDef:
    return FieldDef(name, "string", **kw)


def _standard_objects() -> list[_SObject]:
    owner = _ref("OwnerId", "User")
    name_ro = _text("Name", updateable=False)
    merged = _ref("MasterRecordId", "Lead", "Contact", "Account", updateable=False)
    return [
        _SObject("Lead", "00Q", _fields(
            _text("FirstName"), _text("LastName", nillable=False), name_ro, _text("Company", nillable=False),
            FieldDef("Email", "email"), _text("Country"),
            _pick("LeadSource", ["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"],
                  restricted=False),
            owner, _pick("Status", LEAD_STATUSES, LEAD_STATUSES[0], nillable=False),
            FieldDef("IsConverted", "boolean", updateable=False, nillable=False),
            FieldDef("ConvertedDate", "date", updateable=False),
            _ref("ConvertedAccountId", "Account", updateable=False),
            _ref("ConvertedContactId", "Contact", updateable=False), merged,
        )),
        _SObject("Contact", "003", _fields(
            _text("FirstName"), _text("LastName", nillable=False), name_ro, FieldDef("Email", "email"),
            _ref("AccountId", "Account"), owner, _text("Country"), _pick("Stage__c", CONTACT_STAGES), merged,
        )),
        _SObject("Account", "001", _fields(
            _text("Name", nillable=False), owner, merged, _pick("Account_Stage__c", ACCOUNT_STAGES),
            _pick("Industry", ["Technology", "Finance", "Healthcare", "Manufacturing", "Retail", "Other"],
                  restricted=False),
        )),
        _SObject("Task", "00T", _fields(
            _text("Subject"), _pick("Type", ["Email", "Call", "Meeting", "Other"]),
            _pick("Status", ["Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"],
                  "Not Started", nillable=False),
            _ref("WhoId", "Lead", "Contact"), _ref("WhatId", "Account"), FieldDef("ActivityDate", "date"), owner,
        )),
        _SObject("User", "005", _fields(
            _text("Name", nillable=False), _text("Username", nillable=False), FieldDef("Email", "email"),
            FieldDef("IsActive", "boolean", nillable=False),
        )),
        _SObject("LeadStatus", "01J", _fields(
            _text("MasterLabel"), _text("ApiName"), FieldDef("SortOrder", "int"),
            FieldDef("IsConverted", "boolean"), FieldDef("IsDefault", "boolean"),
        ), updateable=False),
    ]


# --- errors ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Err:
    code: str
    message: str
    fields: tuple[str, ...] = ()

    def entry(self) -> dict[str, Any]:  # a per-record error inside a SaveResult
        return {"statusCode": self.code, "message": self.message, "fields": list(self.fields)}


class _ApiError(Exception):
    """A whole-request failure, answered as Salesforce's list of {message, errorCode}."""

    def __init__(self, status: int, code: str, message: str, fields: Iterable[str] | None = None) -> None:
        super().__init__(message)
        self.response = Response(status, [{
            "message": message, "errorCode": code, **({"fields": list(fields)} if fields is not None else {}),
        }])


_NOT_FOUND = (404, "NOT_FOUND", "The requested resource does not exist")
_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_DATA_RE = re.compile(r"/services/data(?:/v(?P<version>\d+\.\d)(?P<rest>/.*)?)?/?$")
_MAX_CURSORS = 64  # like Salesforce, old query locators are dropped: INVALID_QUERY_LOCATOR


@dataclass
class _Cursor:
    entity: str
    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    rows: list[tuple[Any, ...]]  # Id first, then the columns: a snapshot taken when the query ran
    batch: int
    endpoint: str
    locator: str = ""


_KEY_LOCK = threading.Lock()
_KEY: rsa.RSAPrivateKey | None = None


def _jwt_key() -> rsa.RSAPrivateKey:
    """One throwaway RSA key per process: generating one per sandbox would slow every test down."""
    global _KEY
    with _KEY_LOCK:
        if _KEY is None:
            _KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _KEY


class SalesforceSandbox:
    """One Salesforce org on https://127.0.0.1:PORT, serving both the OAuth login and the REST API."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        daily_limit: int = 5_000_000,
        api_version: str = "62.0",
        client_id: str = "sandbox-client-id",
        client_secret: str = "sandbox-client-secret",
        username: str = "admin@sandbox.test",
        password: str = "sandbox-password",
        seed: int = 0,
        ca: trustme.CA | None = None,
    ) -> None:
        self.api_version = api_version
        self.client_id, self.client_secret = client_id, client_secret
        self.username, self.password = username, password
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._pod = "Sb" + _B62[seed % 62]
        self._counter = 1
        self._objects: dict[str, _SObject] = {}
        self._by_prefix: dict[str, _SObject] = {}
        self._custom_prefixes = 0
        self._tokens: dict[str, str] = {}  # access token -> user Id
        self._used, self._limit = 0, daily_limit
        self._writes: list[tuple[str, str, dict[str, Any]]] = []
        self._injected: dict[str, list[Any]] = {}  # Id -> [code, message, times left]
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._tmp: Path | None = None
        self._url = ""
        self._admin_id = self._person_id = ""
        ca = ca or trustme.CA()  # a given CA: a restarted sandbox that clients already trust
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(tls)
        self._ca = ca
        self.server = LoopbackServer(self.handle, tls=tls, latency=latency)
        self.org_id = self._new_id("00D")
        for sobject in _standard_objects():
            self._add_object(sobject)
        self._seed_users_and_statuses()

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self, port: int = 0) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="sf-sandbox-"))
        self._ca.cert_pem.write_to_path(str(self._tmp / "ca.pem"))
        key = _jwt_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (self._tmp / "jwt-key.pem").write_bytes(key)
        self.server.start(port)
        self._url = self.server.url

    def stop(self) -> None:
        self.server.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> SalesforceSandbox:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("the sandbox is not started")
        return self._url

    @property
    def ca_pem(self) -> str:
        return str(self._started_dir() / "ca.pem")

    @property
    def jwt_private_key_pem(self) -> str:
        return str(self._started_dir() / "jwt-key.pem")

    def _started_dir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("the sandbox is not started")
        return self._tmp

    # --- the org, as an admin or a person shapes it ----------------------------------------------
    def define_object(self, name: str, fields: Mapping[str, list[str] | None], restricted: bool = True) -> None:
        """Add a custom object, or add fields to an existing one: a list makes a picklist of those values."""
        defs = [_pick(n, list(v), restricted=restricted) if v is not None else FieldDef(n, "string")
                for n, v in fields.items()]
        with self._lock:
            existing = self._objects.get(name)
            if existing is None:
                prefix = f"a{_B62[self._custom_prefixes // 62]}{_B62[self._custom_prefixes % 62]}"
                self._custom_prefixes += 1
                base = [f for f in defs if f.name != "Name"]
                self._add_object(_SObject(name, prefix, _fields(FieldDef("Name", "string"), _ref("OwnerId", "User"),
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
            named = sobject.name in _PERSON_NAMED
            for given in records:
                if not known >= given.keys():
                    raise ValueError(f"no such field on {obj}: {sorted(given.keys() - known)}")
            ids = self._new_ids(sobject.key_prefix, len(records))
            stamps = []
            for rid, given in zip(ids, records, strict=True):
                record = template.copy()
                record.update(given)
                record["Id"] = rid
                if not timed.isdisjoint(given):
                    for name in timed.intersection(given):
                        record[name] = self._typed(sobject.fields[name], given[name])
                if named:
                    record["Name"] = _person_name(record)
                sobject.records[rid] = record
                stamps.append((record["SystemModstamp"], rid))
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
            record = self._existing(sobject, record_id)
            for name, value in fields.items():
                if name not in sobject.fields:
                    raise ValueError(f"no such field on {obj}: {name}")
                record[name] = self._typed(sobject.fields[name], value)
            self._touch(sobject, record, self._now(), self._person_id)

    def record(self, obj: str, record_id: str) -> dict[str, Any]:
        """A copy of the stored fields (datetimes as aware datetimes), deleted records included."""
        with self._lock:
            return dict(self._existing(self._sobject(obj), record_id))

    def delete(self, obj: str, record_id: str) -> None:
        with self._lock:
            sobject = self._sobject(obj)
            record = self._existing(sobject, record_id)
            record["IsDeleted"] = True
            self._touch(sobject, record, self._now(), self._person_id)

    def merge(self, obj: str, winner_id: str, loser_id: str) -> None:
        with self._lock:
            sobject, now = self._sobject(obj), self._now()
            winner, loser = self._existing(sobject, winner_id), self._existing(sobject, loser_id)
            loser.update(IsDeleted=True, MasterRecordId=winner["Id"])
            self._touch(sobject, loser, now, self._person_id)
            self._touch(sobject, winner, now, self._person_id)

    def convert_lead(self, record_id: str, *, create_contact: bool = True) -> None:
        """Like the Convert button: the lead is closed and, by default, an Account and a Contact appear."""
        with self._lock:
            leads, now = self._sobject("Lead"), self._now()
            lead = self._existing(leads, record_id)
            if lead["IsConverted"]:
                raise ValueError(f"lead {record_id} is already converted")
            lead.update(IsConverted=True, Status=_CONVERTED_STATUS, ConvertedDate=now.date())
            if create_contact:
                (account,) = self.seed("Account", [{"Name": lead["Company"] or lead["LastName"]}], modstamp=now)
                (contact,) = self.seed("Contact", [{
                    "FirstName": lead["FirstName"], "LastName": lead["LastName"], "Email": lead["Email"],
                    "AccountId": account, "OwnerId": lead["OwnerId"], "Country": lead["Country"],
                }], modstamp=now)
                lead.update(ConvertedAccountId=account, ConvertedContactId=contact)
            self._touch(leads, lead, now, self._person_id)

    def expire_sessions(self) -> None:
        """Every token issued so far now gets 401 INVALID_SESSION_ID; a new login works."""
        with self._lock:
            self._tokens.clear()

    def fail_writes(self, record_ids: Iterable[str], error_code: str, message: str, times: int = 1) -> None:
        """The next `times` API writes to each record fail with this per-record error (e.g. UNABLE_TO_LOCK_ROW)."""
        with self._lock:
            for rid in record_ids:
                self._injected[normalize_id(rid) or rid] = [error_code, message, times]

    def set_api_usage(self, used: int) -> None:
        with self._lock:
            self._used = used

    @property
    def api_usage(self) -> tuple[int, int]:
        with self._lock:
            return self._used, self._limit

    def writes(self, obj: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Every successful API update or create, in order, with the fields as the client sent them.

        Rolled-back and refused records are absent, so exactly-once checks can count on it.
        """
        with self._lock:
            return [(rid, dict(fields)) for name, rid, fields in self._writes if obj is None or name == obj]

    # --- internals of the org --------------------------------------------------------------------
    def _add_object(self, sobject: _SObject) -> None:
        self._objects[sobject.name] = sobject
        self._by_prefix[sobject.key_prefix] = sobject

    def _seed_users_and_statuses(self) -> None:
        people = [("Admin User", self.username, True), ("Sam Seller", "sam@sandbox.test", True),
                  ("Riley Rep", "riley@sandbox.test", True), ("Former Employee", "former@sandbox.test", False)]
        epoch = _ORG_BORN
        users = self.seed("User", [{"Name": n, "Username": u, "Email": u, "IsActive": a} for n, u, a in people],
                          modstamp=epoch)
        # The API's user is the admin; a person's edits in the UI come from a sales rep.
        self._admin_id, self._person_id = users[0], users[1]
        for rid in users:
            self._objects["User"].records[rid].update(CreatedById=self._admin_id, LastModifiedById=self._admin_id)
        self._lead_status_rows(LEAD_STATUSES, 1, epoch)

    def _lead_status_rows(self, values: list[str], first_order: int, when: datetime | None = None) -> None:
        rows = [{"MasterLabel": v, "ApiName": v, "SortOrder": first_order + i, "IsConverted": v == _CONVERTED_STATUS,
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
            block, first = divmod(n, len(_PAIRS))
            last = min(len(_PAIRS), first + end - n)
            digits = []
            for _ in range(7):
                block, digit = divmod(block, 62)
                digits.append(_B62[digit])
            head = prefix + self._pod + "".join(reversed(digits))  # the first 13 of 15 characters
            fixed = _SUFFIX[_caps(head[:5])] + _SUFFIX[_caps(head[5:10])]
            high = _caps(head[10:])
            out.extend([head + _PAIRS[j] + fixed + _SUFFIX[high | _PAIR_CAPS[j] << 3] for j in range(first, last)])
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

    def _sobject(self, name: str) -> _SObject:
        found = self._objects.get(name) or next(
            (o for o in self._objects.values() if o.name.lower() == name.lower()), None
        )
        if found is None:
            raise KeyError(f"no such object: {name}")
        return found

    def _existing(self, sobject: _SObject, record_id: str) -> dict[str, Any]:
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
        return value

    def _touch(self, sobject: _SObject, record: dict[str, Any], now: datetime, user: str) -> None:
        index, key = sobject.by_modstamp, (record["SystemModstamp"], record["Id"])
        at = bisect_left(index, key)
        if at < len(index) and index[at] == key:
            del index[at]
        new = (now, record["Id"])
        if not index or index[-1] <= new:
            index.append(new)
        else:
            insort(index, new)
        record.update(SystemModstamp=now, LastModifiedDate=now, LastModifiedById=user)
        if sobject.name in _PERSON_NAMED:
            record["Name"] = _person_name(record)

    # --- HTTP -----------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.path.rstrip("/") == "/services/oauth2/token" and request.method == "POST":
            return self._oauth(request)
        match = _DATA_RE.match(request.path)
        if match is None:
            return _ApiError(*_NOT_FOUND).response
        if match["version"] is None:
            return Response(200, [{"label": "Sandbox", "url": f"/services/data/v{self.api_version}",
                                   "version": self.api_version}])
        try:
            response = self._data(request, match["version"], match["rest"] or "/")
        except _ApiError as error:
            response = error.response
        with self._lock:
            response.headers["Sforce-Limit-Info"] = f"api-usage={self._used}/{self._limit}"
        return response

    def _data(self, request: Request, version: str, rest: str) -> Response:
        if tuple(map(int, version.split("."))) > tuple(map(int, self.api_version.split("."))):
            raise _ApiError(*_NOT_FOUND)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            user = self._tokens.get(token) if scheme in ("Bearer", "OAuth") else None
            if user is None:
                raise _ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
            if self._used >= self._limit:
                raise _ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            self._used += 1
        allowed: list[str] = []
        for methods, pattern, handler in _ROUTES:
            matched = pattern.fullmatch(rest)
            if matched is not None and request.method in methods:
                return handler(self, request, version, user, **matched.groupdict())
            allowed += methods if matched is not None else ()
        if allowed:
            raise _ApiError(405, "METHOD_NOT_ALLOWED",
                            f"HTTP Method '{request.method}' not allowed. Allowed are {','.join(allowed)}")
        raise _ApiError(*_NOT_FOUND)

    # --- OAuth ------------------------------------------------------------------------------------
    def _oauth(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode(errors="replace")).items()}
        grant = form.get("grant_type")
        if grant == "client_credentials":
            client_id, secret = form.get("client_id"), form.get("client_secret")
            scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
            if scheme == "Basic":
                try:
                    client_id, _, secret = base64.b64decode(encoded + "==").decode(errors="replace").partition(":")
                except ValueError:
                    client_id = secret = None
            return self._client_checked(client_id, secret) or self._issue(self._admin_id)
        if grant == "password":
            failure = self._client_checked(form.get("client_id"), form.get("client_secret"))
            if failure is None and (form.get("username"), form.get("password")) != (self.username, self.password):
                failure = _oauth_error("invalid_grant", "authentication failure")
            return failure or self._issue(self._admin_id)
        if grant == _JWT_GRANT:
            return self._jwt_login(form.get("assertion", ""))
        return _oauth_error("unsupported_grant_type", "grant type not supported")

    def _client_checked(self, client_id: str | None, secret: str | None) -> Response | None:
        if client_id != self.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if secret != self.client_secret:
            return _oauth_error("invalid_client", "invalid client credentials")
        return None

    def _jwt_login(self, assertion: str) -> Response:
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return _oauth_error("invalid_grant", "invalid assertion")
        if claims.get("iss") != self.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        try:
            jwt.decode(assertion, _jwt_key().public_key(), algorithms=["RS256"],
                       options={"require": ["exp"], "verify_aud": False})
        except jwt.ExpiredSignatureError:
            return _oauth_error("invalid_grant", "expired authorization code")
        except jwt.InvalidTokenError:
            return _oauth_error("invalid_grant", "invalid assertion")
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        allowed = {self.url, "https://login.salesforce.com", "https://test.salesforce.com"}
        if not any(isinstance(a, str) and a.rstrip("/") in allowed for a in audiences):
            return _oauth_error("invalid_grant", "audience is invalid")
        if claims.get("sub") != self.username:
            return _oauth_error("invalid_grant", "invalid assertion")
        return self._issue(self._admin_id)

    def _issue(self, user: str) -> Response:
        with self._lock:
            token = self.org_id[:15] + "!" + "".join(self._rng.choices(_B62 + ".", k=96))
            self._tokens[token] = user
        identity = f"{self.url}/id/{self.org_id}/{user}"
        issued_at = str(int(time.time() * 1000))
        digest = hmac.new(self.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        return Response(200, {
            "access_token": token, "instance_url": self.url, "id": identity, "token_type": "Bearer",
            "issued_at": issued_at, "signature": base64.b64encode(digest).decode(),
        })

    # --- query --------------------------------------------------------------------------------------
    def _query(self, request: Request, version: str, user: str, endpoint: str) -> Response:
        text = request.param("q")
        if not text:
            raise _ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            plan = soql.bind(soql.parse(text), self._entity, normalize_id)
        except soql.SoqlError as error:
            raise _ApiError(400, error.code, error.message) from None
        with self._lock:
            sobject = self._objects[plan.entity]
            rows, presorted = self._candidates(sobject, plan)
            if endpoint == "query":
                rows = (r for r in rows if not r["IsDeleted"])
            result = plan.run(rows, presorted=presorted)
            if plan.count_only:
                return Response(200, {"totalSize": len(result), "done": True, "records": []})
            snapshot = soql.project(result, ("Id", *plan.columns))
        cursor = _Cursor(plan.entity, plan.columns, plan.kinds, snapshot, _batch_size(request), endpoint)
        return self._page(cursor, 0, version)

    def _query_more(self, _request: Request, version: str, user: str, endpoint: str, locator: str,
                    offset: str) -> Response:
        with self._lock:
            cursor = self._cursors.get(locator)
        if cursor is None or int(offset) >= len(cursor.rows):
            raise _ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(cursor, int(offset), version)

    def _candidates(self, sobject: _SObject, plan: soql.Plan) -> tuple[Iterable[dict[str, Any]], bool]:
        """The rows that can match, and whether they already come in the query's order."""
        records = sobject.records
        if plan.id_hint is not None:
            return [records[i] for i in sorted(plan.id_hint) if i in records], plan.follows("Id")
        index = sobject.by_modstamp
        floor = plan.floor("SystemModstamp", "Id")
        if floor is None and not (plan.order and plan.follows("SystemModstamp", "Id")):
            return records.values(), plan.follows("Id")  # Ids are handed out in ascending order
        start = bisect_left(index, floor) if floor is not None else 0
        rows = (records[index[i][1]] for i in range(start, len(index)))
        return rows, plan.follows("SystemModstamp", "Id")

    def _page(self, cursor: _Cursor, start: int, version: str) -> Response:
        end = min(start + cursor.batch, len(cursor.rows))
        render = [(name, _RENDER.get(kind)) for name, kind in zip(cursor.columns, cursor.kinds, strict=True)]
        prefix = f"/services/data/v{version}/sobjects/{cursor.entity}/"
        records = []
        for row in cursor.rows[start:end]:
            item: dict[str, Any] = {"attributes": {"type": cursor.entity, "url": prefix + row[0]}}
            for (name, fn), value in zip(render, row[1:], strict=True):
                item[name] = fn(value) if fn is not None and value is not None else value
            records.append(item)
        body: dict[str, Any] = {"totalSize": len(cursor.rows), "done": end >= len(cursor.rows), "records": records}
        if end < len(cursor.rows):
            with self._lock:
                cursor.locator = cursor.locator or self._new_id("01g")
                self._cursors[cursor.locator] = cursor
                self._cursors.move_to_end(cursor.locator)
                while len(self._cursors) > _MAX_CURSORS:
                    self._cursors.popitem(last=False)
            body["nextRecordsUrl"] = f"/services/data/v{version}/{cursor.endpoint}/{cursor.locator}-{end}"
        return Response(200, body, records=len(records))

    def _entity(self, name: str) -> soql.Entity | None:
        with self._lock:
            try:
                return self._sobject(name).entity()
            except KeyError:
                return None

    # --- describe, records, limits -------------------------------------------------------------
    def _describe_global(self, _request: Request, version: str, user: str) -> Response:
        with self._lock:
            objects = [{k: v for k, v in o.describe().items() if k != "fields"} for o in self._objects.values()]
        return Response(200, {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": objects})

    def _describe(self, _request: Request, version: str, user: str, obj: str) -> Response:
        with self._lock:
            return Response(200, self._api_sobject(obj).describe())

    def _resources(self, _request: Request, version: str, user: str) -> Response:
        base = f"/services/data/v{version}"
        return Response(200, {name: f"{base}/{name}" for name in ("sobjects", "query", "queryAll", "composite",
                                                                   "limits")})

    def _limits(self, _request: Request, version: str, user: str) -> Response:
        with self._lock:
            return Response(200, {"DailyApiRequests": {"Max": self._limit, "Remaining": self._limit - self._used}})

    def _api_sobject(self, name: str) -> _SObject:
        try:
            return self._sobject(name)
        except KeyError:
            raise _ApiError(*_NOT_FOUND) from None

    def _one_record(self, request: Request, version: str, user: str, obj: str, rid: str) -> Response:
        with self._lock:
            sobject = self._api_sobject(obj)
            normal = normalize_id(rid)
            if normal is None:
                raise _ApiError(404, "NOT_FOUND",
                                f"Provided external ID field does not exist or is not accessible: {rid}")
            record = sobject.records.get(normal)
            if record is None:
                raise _ApiError(*_NOT_FOUND)
            if record["IsDeleted"]:
                raise _ApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
            if request.method == "GET":
                wanted = (request.param("fields") or "").split(",") if request.param("fields") else None
                return Response(200, self._render(sobject, record, version, wanted), records=1)
            if request.method == "DELETE":
                record["IsDeleted"] = True
                self._touch(sobject, record, self._now(), user)
                return Response(204)
            changes, raw = self._bind_fields(sobject, _json_object(request))
            error = self._validate(sobject, record, changes)
            if error is not None:
                raise _ApiError(400, error.code, error.message, error.fields)
            self._apply(sobject, record, changes, raw, user)
            return Response(204, records=1)

    def _create(self, request: Request, version: str, user: str, obj: str) -> Response:
        with self._lock:
            sobject = self._api_sobject(obj)
            changes, raw = self._bind_fields(sobject, _json_object(request))
            record = sobject.template()
            missing = [n for n, f in sobject.fields.items()
                       if not f.nillable and f.updateable and record[n] is None and changes.get(n) is None]
            error = self._validate(sobject, record, changes) or (
                _Err("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", tuple(missing))
                if missing else None
            )
            if error is not None:
                raise _ApiError(400, error.code, error.message, error.fields)
            (rid,) = self.seed(sobject.name, [{"OwnerId": user} if "OwnerId" in sobject.fields else {}])
            created = sobject.records[rid]
            created.update(CreatedById=user)
            self._apply(sobject, created, changes, raw, user)
            return Response(201, {"id": rid, "success": True, "errors": []}, records=1)

    def _changed(self, request: Request, version: str, user: str, obj: str, kind: str) -> Response:
        """getUpdated / getDeleted: which records changed (or were deleted) between start and end."""
        try:
            start, end = (self._stamp(datetime.fromisoformat(request.param(p) or "")) for p in ("start", "end"))
        except ValueError:
            raise _ApiError(400, "INVALID_REPLICATION_DATE", "start and end must be ISO 8601 datetimes") from None
        with self._lock:
            sobject = self._api_sobject(obj)
            index = sobject.by_modstamp
            hits = [sobject.records[rid] for _, rid in index[bisect_left(index, (start,)) :]]
            hits = [r for r in hits if r["SystemModstamp"] <= end and r["IsDeleted"] == (kind == "deleted")]
        covered = soql.format_datetime(end)
        if kind == "updated":
            return Response(200, {"ids": [r["Id"] for r in hits], "latestDateCovered": covered})
        deleted = [{"id": r["Id"], "deletedDate": soql.format_datetime(r["SystemModstamp"])} for r in hits]
        return Response(200, {"deletedRecords": deleted, "earliestDateAvailable": soql.format_datetime(_ORG_BORN),
                              "latestDateCovered": covered})

    # --- sObject Collections ---------------------------------------------------------------------
    def _collection_update(self, request: Request, version: str, user: str) -> Response:
        body = _json_object(request)
        items = body.get("records")
        if not isinstance(items, list):
            raise _ApiError(400, "JSON_PARSER_ERROR", "records: a list of sObjects is required")
        if len(items) > 200:
            raise _ApiError(400, "EXCEEDED_ID_LIMIT",
                            "record limit reached. cannot submit more than 200 records into this call")
        with self._lock:
            bound = [self._bind_item(item) for item in items]
            checked: list[tuple[_SObject, dict[str, Any] | None, dict[str, Any], dict[str, Any], _Err | None]] = []
            for sobject, raw_id, changes, raw in bound:
                record, error = self._resolve(sobject, raw_id)
                if record is not None and error is None:
                    error = self._validate(sobject, record, changes)
                checked.append((sobject, record, changes, raw, error))
            rolled_back = body.get("allOrNone") is True and any(c[4] is not None for c in checked)
            results: list[dict[str, Any]] = []
            for sobject, record, changes, raw, error in checked:
                result: dict[str, Any] = {"id": record["Id"]} if record is not None else {}
                if error is not None or rolled_back:
                    error = error or _Err("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all "
                                          "records were valid and the request was using AllOrNone header")
                    results.append({**result, "success": False, "errors": [error.entry()]})
                    continue
                assert record is not None
                self._apply(sobject, record, changes, raw, user)
                results.append({**result, "success": True, "errors": []})
        return Response(200, results, records=len(items))

    def _collection_retrieve(self, request: Request, version: str, user: str, obj: str) -> Response:
        if request.method == "POST":
            body = _json_object(request)
            ids, fields = body.get("ids") or [], body.get("fields") or []
        else:
            ids = [i for i in (request.param("ids") or "").split(",") if i]
            fields = [f for f in (request.param("fields") or "").split(",") if f]
        if not fields:
            raise _ApiError(400, "MISSING_ARGUMENT", "fields: the fields to retrieve are required")
        if len(ids) > 2000:
            raise _ApiError(400, "EXCEEDED_ID_LIMIT",
                            "record limit reached. cannot submit more than 2000 records into this call")
        with self._lock:
            sobject = self._api_sobject(obj)
            found: list[dict[str, Any] | None] = []
            for rid in ids:
                normal = normalize_id(rid) if isinstance(rid, str) else None
                if normal is None:
                    raise _ApiError(400, "MALFORMED_ID", f"malformed id {rid}")
                record = sobject.records.get(normal)
                found.append(None if record is None or record["IsDeleted"] else record)
            return Response(200, [r and self._render(sobject, r, version, fields) for r in found],
                            records=sum(r is not None for r in found))

    # --- writing one record ---------------------------------------------------------------------
    def _bind_item(self, item: Any) -> tuple[_SObject, Any, dict[str, Any], dict[str, Any]]:
        if not isinstance(item, dict):
            raise _ApiError(400, "JSON_PARSER_ERROR", "each record must be a JSON object")
        kind = (item.get("attributes") or {}).get("type")
        if not isinstance(kind, str):
            raise _ApiError(400, "INVALID_TYPE", "Each record must name its sObject type in attributes.type")
        try:
            sobject = self._sobject(kind)
        except KeyError:
            raise _ApiError(400, "INVALID_TYPE", f"sObject type '{kind}' is not supported.") from None
        fields = {k: v for k, v in item.items() if k not in ("attributes", "id", "Id")}
        return (sobject, item.get("id") or item.get("Id"), *self._bind_fields(sobject, fields))

    def _bind_fields(self, sobject: _SObject, body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """JSON onto fields, as Salesforce's deserializer does: a bad name or type fails the whole request."""
        lower, changes, raw = sobject.lower, {}, {}
        for key, value in body.items():
            name = lower.get(key.lower())
            if name is None:
                raise _ApiError(400, "INVALID_FIELD", f"No such column '{key}' on sobject of type {sobject.name}")
            definition = sobject.fields[name]
            try:
                changes[name] = self._json_value(definition, value)
            except (TypeError, ValueError):
                raise _ApiError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {definition.type} "
                                f"from value {value!r} for field {name}") from None
            raw[name] = value
        return changes, raw

    def _json_value(self, definition: FieldDef, value: Any) -> Any:
        if value is None:
            return None
        expected = {"boolean": bool, "int": int}.get(definition.type, str)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise TypeError(definition.type)
        if definition.type == "datetime" and soql.parse_datetime(str(value)) is None:
            datetime.fromisoformat(str(value))  # the other ISO forms Salesforce also accepts; raises if neither
        return self._typed(definition, value)

    def _resolve(self, sobject: _SObject, raw_id: Any) -> tuple[dict[str, Any] | None, _Err | None]:
        if not raw_id:
            return None, _Err("MISSING_ARGUMENT", "Id not specified in an update call")
        normal = normalize_id(raw_id) if isinstance(raw_id, str) else None
        if normal is None:
            return None, _Err("MALFORMED_ID", f"malformed id {raw_id}")
        if normal[:3] != sobject.key_prefix:
            return None, _Err("MALFORMED_ID", f"{sobject.name} ID: id value of incorrect type: {raw_id}", ("Id",))
        record = sobject.records.get(normal)
        if record is None:
            return None, _Err("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        if record["IsDeleted"]:
            return record, _Err("ENTITY_IS_DELETED", "entity is deleted")
        return record, None

    def _validate(self, sobject: _SObject, record: dict[str, Any], changes: dict[str, Any]) -> _Err | None:
        """Per-record checks, in Salesforce's order: access, row lock, then field values."""
        if not sobject.updateable:
            return _Err("INVALID_TYPE_FOR_OPERATION", f"entity type cannot be updated: {sobject.name}")
        injected = self._injected.get(record["Id"]) if record["Id"] else None
        if injected is not None:
            injected[2] -= 1
            if injected[2] <= 0:
                del self._injected[record["Id"]]
            return _Err(injected[0], injected[1])
        if record.get("IsConverted"):
            return _Err("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
        for name, value in changes.items():
            definition = sobject.fields[name]
            if not definition.updateable:
                return _Err("INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {name}. Please "
                            "check the security settings of this field and verify that it is read/write for your "
                            "profile or permission set.", (name,))
            if value is None and not definition.nillable:
                return _Err("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", (name,))
            if value is not None and definition.picklist is not None and definition.restricted \
                    and value not in definition.picklist:
                return _Err("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                            f"bad value for restricted picklist field: {value}", (name,))
            if value is not None and definition.type == "reference":
                target = normalize_id(value)
                owner = self._by_prefix.get(target[:3]) if target else None
                if target is None or owner is None or owner.name not in definition.reference_to:
                    return _Err("MALFORMED_ID", f"{definition.label}: id value of incorrect type: {value}", (name,))
                if target not in owner.records:
                    return _Err("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", (name,))
                changes[name] = target
        return None

    def _apply(self, sobject: _SObject, record: dict[str, Any], changes: dict[str, Any], raw: dict[str, Any],
               user: str) -> None:
        record.update(changes)
        self._touch(sobject, record, self._now(), user)
        self._writes.append((sobject.name, record["Id"], dict(raw)))

    def _render(self, sobject: _SObject, record: Mapping[str, Any], version: str,
                fields: list[str] | None) -> dict[str, Any]:
        lower = sobject.lower
        names = list(sobject.fields) if fields is None else [lower.get(f.strip().lower()) or "" for f in fields]
        for asked, name in zip(fields or [], names, strict=False):
            if not name:
                raise _ApiError(400, "INVALID_FIELD", f"No such column '{asked}' on entity '{sobject.name}'. If "
                                "you are attempting to use a custom field, be sure to append the '__c' after the "
                                "custom field name. Please reference your WSDL or the describe call for the "
                                "appropriate names.")
        url = f"/services/data/v{version}/sobjects/{sobject.name}/{record['Id']}"
        out: dict[str, Any] = {"attributes": {"type": sobject.name, "url": url}}
        for name in names:
            fn = _RENDER.get(_KINDS[sobject.fields[name].type])
            value = record[name]
            out[name] = fn(value) if fn is not None and value is not None else value
        return out


_RENDER: dict[str, Callable[[Any], Any]] = {soql.DATETIME: soql.format_datetime, soql.DATE: date.isoformat}
_ROUTES: list[tuple[tuple[str, ...], re.Pattern[str], Callable[..., Response]]] = [
    (("GET",), re.compile(r"/(?P<endpoint>query|queryAll)/?"), SalesforceSandbox._query),
    (("GET",), re.compile(r"/(?P<endpoint>query|queryAll)/(?P<locator>01g\w{15})-(?P<offset>\d+)"),
     SalesforceSandbox._query_more),
    (("GET",), re.compile(r"/sobjects/?"), SalesforceSandbox._describe_global),
    (("GET",), re.compile(r"/sobjects/(?P<obj>\w+)/describe/?"), SalesforceSandbox._describe),
    (("GET",), re.compile(r"/sobjects/(?P<obj>\w+)/(?P<kind>updated|deleted)/?"), SalesforceSandbox._changed),
    (("POST",), re.compile(r"/sobjects/(?P<obj>\w+)/?"), SalesforceSandbox._create),
    (("GET", "PATCH", "DELETE"), re.compile(r"/sobjects/(?P<obj>\w+)/(?P<rid>\w+)/?"), SalesforceSandbox._one_record),
    (("PATCH",), re.compile(r"/composite/sobjects/?"), SalesforceSandbox._collection_update),
    (("GET", "POST"), re.compile(r"/composite/sobjects/(?P<obj>\w+)/?"), SalesforceSandbox._collection_retrieve),
    (("GET",), re.compile(r"/limits/?"), SalesforceSandbox._limits),
    (("GET",), re.compile(r"/?"), SalesforceSandbox._resources),
]


def _batch_size(request: Request) -> int:
    """Sforce-Query-Options: batchSize=N, which Salesforce treats as a hint within 200..2000."""
    match = re.search(r"batchSize\s*=\s*(\d+)", request.headers.get("sforce-query-options", ""))
    return min(max(int(match.group(1)), 200), 2000) if match else 2000


def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError as error:
        raise _ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character: {error}") from None
    if not isinstance(body, dict):
        raise _ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    return body


def _oauth_error(error: str, description: str) -> Response:
    return Response(400, {"error": error, "error_description": description})


def _person_name(record: Mapping[str, Any]) -> str:
    return " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p)
