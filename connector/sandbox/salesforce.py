"""A loopback Salesforce org: SOQL query/queryAll, describe, sObject and sObject Collections over HTTPS.

Driven by the real simple-salesforce client, so the bodies, status codes, error codes and headers
follow Salesforce's REST API closely. The org's data and what people and admins do to it (the back
door: `seed`, `edit_as_person`, `merge`, `long_transaction`, `deny_read`, ...) live in
`salesforce_org`; its schema in `salesforce_schema`; its OAuth token endpoint in `salesforce_oauth`;
months of past life in `salesforce_history`. docs/crm-behaviour.md lists every behaviour
with its source.
"""

from __future__ import annotations

import re
import shutil
import ssl
import tempfile
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import trustme
from cryptography.hazmat.primitives import serialization

from connector.sandbox import soql
from connector.sandbox._http import LoopbackServer, Request, Response
from connector.sandbox.salesforce_oauth import OAuthEndpoint, jwt_key
from connector.sandbox.salesforce_schema import (
    KINDS,
    LEAD_STATUSES,
    NUMERIC,
    ORG_BORN,
    FieldDef,
    SObject,
    normalize_id,
)

__all__ = ["LEAD_STATUSES", "SalesforceSandbox", "normalize_id"]


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
_MALFORMED = {
    "html": b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body><h1>Salesforce is down for "
            b"maintenance</h1><p>We'll be back shortly.</p></body></html>",
    "truncated": b'{"totalSize":3,"done":true,"records":[{"attributes":{"type":"Lead","url":"/services/data/v62.0/s',
}
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


class SalesforceSandbox(OAuthEndpoint):
    """One Salesforce org on https://127.0.0.1:PORT, serving both the OAuth login and the REST API.

    `login_host` is the host this loopback URL stands for when it serves the OAuth token endpoint:
    None for the org's own My Domain (the default), or "login.salesforce.com" / "test.salesforce.com"
    for the generic login servers, which refuse the client-credentials flow. A request whose Host
    header names one of those is treated the same. `is_sandbox_org` decides which JWT audience the
    org accepts (test.salesforce.com for a sandbox org, login.salesforce.com otherwise).
    """

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
        login_host: str | None = None,
        is_sandbox_org: bool = False,
        ca: trustme.CA | None = None,
    ) -> None:
        super().__init__(seed=seed, client_id=client_id, client_secret=client_secret, username=username,
                         password=password, login_host=login_host, is_sandbox_org=is_sandbox_org)
        self.api_version = api_version
        self._used, self._limit = 0, daily_limit
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._tmp: Path | None = None
        self._url = ""
        ca = ca or trustme.CA()  # a given CA: a restarted sandbox that clients already trust
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(tls)
        self._ca = ca
        self.server = LoopbackServer(self.handle, tls=tls, latency=latency)

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self, port: int = 0) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="sf-sandbox-"))
        self._ca.cert_pem.write_to_path(str(self._tmp / "ca.pem"))
        key = jwt_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (self._tmp / "jwt-key.pem").write_bytes(key)
        self.server.start(port)
        self._url = self.server.url
        self.instance_url = self._url

    def stop(self) -> None:
        self.stop_outbound()
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

    def set_api_usage(self, used: int) -> None:
        with self._lock:
            self._used = used

    @property
    def api_usage(self) -> tuple[int, int]:
        with self._lock:
            return self._used, self._limit

    def answer_malformed(self, kind: str = "html", times: int = 1) -> None:
        """The next `times` calls get a 200 whose body is not the API's JSON: a proxy's or maintenance
        page (`html`), or an answer cut off mid-way (`truncated`)."""
        body = _MALFORMED[kind]
        self.server.faults.queue(Response(200, body), times)

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
            self.settle()  # edits whose transaction has committed by now become visible
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

    def _candidates(self, sobject: SObject, plan: soql.Plan) -> tuple[Iterable[dict[str, Any]], bool]:
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
                sobject = self._sobject(name)
            except KeyError:
                return None
            return sobject.entity() if self.visible(sobject.name) else None

    # --- describe, records, limits -------------------------------------------------------------
    def _describe_global(self, _request: Request, version: str, user: str) -> Response:
        with self._lock:
            objects = [{k: v for k, v in o.describe().items() if k != "fields"} for o in self._objects.values()
                       if self.visible(o.name)]
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

    def _api_sobject(self, name: str) -> SObject:
        try:
            sobject = self._sobject(name)
        except KeyError:
            raise _ApiError(*_NOT_FOUND) from None
        if not self.visible(sobject.name):
            raise _ApiError(*_NOT_FOUND)
        return sobject

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
                self._commit(sobject, self._stamped(sobject, record, {"IsDeleted": True}, self._now(), user), user)
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
            with self.outbound_held():  # the insert fires its rules once, with the fields it was made with
                (rid,) = self.seed(sobject.name, [{"OwnerId": user} if "OwnerId" in sobject.fields else {}])
            created = sobject.records[rid]
            created.update(CreatedById=user)
            self._apply(sobject, created, changes, raw, user, created=True)
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
        return Response(200, {"deletedRecords": deleted, "earliestDateAvailable": soql.format_datetime(ORG_BORN),
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
            checked: list[tuple[SObject, dict[str, Any] | None, dict[str, Any], dict[str, Any], _Err | None]] = []
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
    def _bind_item(self, item: Any) -> tuple[SObject, Any, dict[str, Any], dict[str, Any]]:
        if not isinstance(item, dict):
            raise _ApiError(400, "JSON_PARSER_ERROR", "each record must be a JSON object")
        kind = (item.get("attributes") or {}).get("type")
        if not isinstance(kind, str):
            raise _ApiError(400, "INVALID_TYPE", "Each record must name its sObject type in attributes.type")
        try:
            sobject = self._sobject(kind)
        except KeyError:
            sobject = None
        if sobject is None or not self.visible(sobject.name):
            raise _ApiError(400, "INVALID_TYPE", f"sObject type '{kind}' is not supported.")
        fields = {k: v for k, v in item.items() if k not in ("attributes", "id", "Id")}
        return (sobject, item.get("id") or item.get("Id"), *self._bind_fields(sobject, fields))

    def _bind_fields(self, sobject: SObject, body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
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
        number = (int, float) if definition.type in NUMERIC else None
        expected: type | tuple[type, ...] = number or {"boolean": bool, "int": int}.get(definition.type, str)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise TypeError(definition.type)
        if definition.type == "datetime" and soql.parse_datetime(str(value)) is None:
            datetime.fromisoformat(str(value))  # the other ISO forms Salesforce also accepts; raises if neither
        return self._typed(definition, value)

    def _resolve(self, sobject: SObject, raw_id: Any) -> tuple[dict[str, Any] | None, _Err | None]:
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

    def _validate(self, sobject: SObject, record: dict[str, Any], changes: dict[str, Any]) -> _Err | None:
        """Per-record checks, in Salesforce's order: access, row lock, then field values."""
        if not sobject.updateable:
            return _Err("INVALID_TYPE_FOR_OPERATION", f"entity type cannot be updated: {sobject.name}")
        if not self.editable(sobject.name):
            return _Err("INSUFFICIENT_ACCESS_OR_READONLY", f"insufficient access rights on object id: {record['Id']}")
        if record["Id"] in self._locked:
            return _Err("UNABLE_TO_LOCK_ROW", f"unable to obtain exclusive access to this record or 1 records: "
                        f"{record['Id']}")
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

    def _apply(self, sobject: SObject, record: dict[str, Any], changes: dict[str, Any], raw: dict[str, Any],
               user: str, *, created: bool = False) -> None:
        self._commit(sobject, self._stamped(sobject, record, changes, self._now(), user), user, created=created)
        self._writes.append((sobject.name, record["Id"], dict(raw)))

    def _render(self, sobject: SObject, record: Mapping[str, Any], version: str,
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
            fn = _RENDER.get(KINDS[sobject.fields[name].type])
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
