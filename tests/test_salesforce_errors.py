"""How the Salesforce source classifies failures, through its real client calls against strict HTTP fakes;
plus the small pure parts it is built from (SOQL quoting, the keyset window, Task rules, the session)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from connector.config import SalesforceSource
from connector.errors import ConfigError
from connector.sources.base import Cursor, StatusWrite
from connector.sources.errors import Action, CrmError, SourcePaused, salesforce_error
from connector.sources.salesforce import Salesforce
from connector.sources.salesforce_activity import event_of, occurred_at, parse_rules
from connector.sources.salesforce_http import ApiMeter, CrmSession
from connector.sources.salesforce_soql import Window, id_chunks, later, quote

INSTANCE = "https://acme.my.salesforce.com"
LOGIN = "https://login.example.com/services/oauth2/token"
QUERY = re.compile(re.escape(INSTANCE) + r"/services/data/v62\.0/queryAll/.*")
QUERY_LIST = re.compile(re.escape(INSTANCE) + r"/services/data/v62\.0/query/.*")
COLLECTION = INSTANCE + "/services/data/v62.0/composite/sobjects"
NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
SECRET = "s3cr3t-client-secret"


def settings(**changes: Any) -> SalesforceSource:
    data: dict[str, Any] = {
        "type": "salesforce",
        "instance_url": INSTANCE,
        "auth": {"method": "client_credentials", "login_url": "https://login.example.com", "client_id": "cid",
                 "client_secret": SECRET},
        "max_retries": 3,
        "objects": {"Lead": {"status_field": "Status", "mapping": "lead.yaml"}},
        **changes,
    }
    return SalesforceSource.model_validate(data)


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


def source(sleeps: list[float], **changes: Any) -> Salesforce:
    return Salesforce("sfdc", settings(**changes), sleep=sleeps.append)


def token(http: responses.RequestsMock, times: int = 1) -> None:
    for n in range(times):
        http.post(LOGIN, json={"access_token": f"tok{n}", "instance_url": INSTANCE})


def page(*records: dict[str, Any], limit: str = "api-usage=10/1000") -> dict[str, Any]:
    return {"json": {"totalSize": len(records), "done": True, "records": list(records)},
            "headers": {"Sforce-Limit-Info": limit}}


LEAD = {"Id": "00Q000000000001AAA", "Status": "Open - Not Contacted", "SystemModstamp": "2025-03-03T08:00:00.000+0000",
        "IsDeleted": False, "OwnerId": "005000000000001AAA", "IsConverted": False}
EXPIRED = {"status": 401, "json": [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]}


def pull(salesforce: Salesforce) -> list[Any]:
    try:
        return [r for p in salesforce.pull("Lead", Cursor(), until=NOW) for r in p.records]
    finally:
        salesforce.close()


# --- classification through the client -------------------------------------------------------------
def test_an_expired_session_logs_in_again_and_succeeds(http: responses.RequestsMock, sleeps: list[float]) -> None:
    token(http, 2)
    http.get(QUERY, **EXPIRED)
    http.get(QUERY, **page(LEAD))
    (record,) = pull(source(sleeps))
    assert record.id == LEAD["Id"] and record.modified_at == datetime(2025, 3, 3, 8, tzinfo=UTC)
    assert http.calls[3].request.headers["Authorization"] == "Bearer tok1"  # the fresh token was used
    assert sleeps == [0.0]


def test_a_persistent_401_is_for_the_admin_after_one_login(http: responses.RequestsMock, sleeps: list[float]) -> None:
    token(http, 2)
    http.get(QUERY, **EXPIRED)
    http.get(QUERY, **EXPIRED)
    with pytest.raises(CrmError) as raised:
        pull(source(sleeps))
    assert raised.value.action is Action.ADMIN and "refused a fresh session" in raised.value.message
    assert [c.request.method for c in http.calls] == ["POST", "GET", "POST", "GET"]  # one re-login, no recursion


def test_a_401_with_a_configured_token_is_for_the_admin(http: responses.RequestsMock, sleeps: list[float]) -> None:
    http.get(QUERY, **EXPIRED)
    auth = {"method": "token", "access_token": "given-token", "instance_url": INSTANCE}
    with pytest.raises(CrmError) as raised:
        pull(source(sleeps, auth=auth))
    assert raised.value.action is Action.ADMIN and "token expired or was revoked" in raised.value.message
    assert len(http.calls) == 1


def test_request_limit_exceeded_pauses_the_source(http: responses.RequestsMock, sleeps: list[float]) -> None:
    token(http)
    refusal = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    http.get(QUERY, status=403, json=refusal, headers={"Sforce-Limit-Info": "api-usage=1000/1000"})
    http.get(QUERY, **page(LEAD, limit="api-usage=1/1000"))
    salesforce = source(sleeps)
    with pytest.raises(SourcePaused) as raised:
        list(salesforce.pull("Lead", Cursor(), until=NOW))
    assert raised.value.resume_after == 3600.0 and raised.value.code == "REQUEST_LIMIT_EXCEEDED"
    assert len(pull(salesforce)) == 1  # after the pause, the next call looks again (a new day)
    assert salesforce.usage().used == 1


def test_a_malformed_query_is_for_the_admin(http: responses.RequestsMock, sleeps: list[float]) -> None:
    token(http)
    http.get(QUERY, status=400, json=[{"message": "unexpected token: 'FROM'", "errorCode": "MALFORMED_QUERY"}])
    with pytest.raises(CrmError) as raised:
        pull(source(sleeps))
    assert (raised.value.action, raised.value.code) == (Action.ADMIN, "MALFORMED_QUERY")
    assert len(http.calls) == 2 and sleeps == []  # never retried


def test_503_429_and_dropped_connections_are_retried(http: responses.RequestsMock, sleeps: list[float]) -> None:
    token(http)
    http.get(QUERY, status=503, json=[{"message": "down", "errorCode": "SERVER_UNAVAILABLE"}])
    http.get(QUERY, body=requests.ConnectionError("Connection aborted: RemoteDisconnected"))
    http.get(QUERY, status=429, json=[{"message": "slow down", "errorCode": "REQUEST_LIMIT"}])
    http.get(QUERY, **page(LEAD))
    assert len(pull(source(sleeps))) == 1
    assert len(sleeps) == 3 and all(0 < s <= 60 for s in sleeps)


def test_retries_are_bounded_by_max_retries(http: responses.RequestsMock, sleeps: list[float]) -> None:
    token(http)
    for _ in range(3):
        http.get(QUERY, status=503, json=[{"message": "down", "errorCode": "SERVER_UNAVAILABLE"}])
    with pytest.raises(CrmError) as raised:
        pull(source(sleeps, max_retries=2))
    assert raised.value.action is Action.RETRY and len(sleeps) == 2


def test_a_refused_login_is_for_the_admin_and_keeps_the_secret(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    http.post(LOGIN, status=400, json={"error": "invalid_client_id", "error_description": "client identifier invalid"})
    salesforce = source(sleeps)
    with pytest.raises(CrmError) as raised:
        pull(salesforce)
    assert raised.value.action is Action.ADMIN and "client identifier invalid" in str(raised.value)
    assert SECRET not in str(raised.value) and SECRET not in repr(salesforce)
    assert SECRET not in repr(salesforce.settings)
    assert http.calls[0].request.headers["Authorization"].startswith("Basic ")


def test_a_login_server_error_is_retried(http: responses.RequestsMock, sleeps: list[float]) -> None:
    http.post(LOGIN, status=503, body="unavailable")
    token(http)
    http.get(QUERY, **page(LEAD))
    assert len(pull(source(sleeps))) == 1 and len(sleeps) == 1


def test_the_api_budget_stops_calls_before_the_limit(http: responses.RequestsMock, sleeps: list[float]) -> None:
    token(http)
    http.get(QUERY, **page(LEAD, limit="api-usage=600/1000"))
    http.get(QUERY, **page(LEAD, limit="api-usage=601/1000"))
    salesforce = source(sleeps, api_budget="50%")
    assert len(list(salesforce.pull("Lead", Cursor(), until=NOW))) == 1
    with pytest.raises(SourcePaused) as raised:
        list(salesforce.pull("Lead", Cursor(), until=NOW))  # refused here: no request is made
    assert raised.value.code == "API_BUDGET" and "600 of the org's 1000" in raised.value.message
    assert len(http.calls) == 2
    assert len(pull(salesforce)) == 1  # once the pause is over, one call looks again
    assert salesforce.usage().used == 601 and salesforce.usage().calls == 3


def _results(*codes: str | None) -> list[dict[str, Any]]:
    return [{"id": f"00Q{n:012d}AAA", "success": True, "errors": []} if code is None else
            {"success": False, "errors": [{"statusCode": code, "message": f"{code} says no", "fields": []}]}
            for n, code in enumerate(codes)]


def test_each_write_gets_its_own_outcome(http: responses.RequestsMock, sleeps: list[float]) -> None:
    token(http)
    http.patch(COLLECTION, json=_results(None, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "UNABLE_TO_LOCK_ROW",
                                         "CANNOT_UPDATE_CONVERTED_LEAD"))
    writes = [StatusWrite(f"00Q{n:012d}AAA", "Working - Contacted") for n in range(4)]
    salesforce = source(sleeps)
    try:
        outcomes = salesforce.write_statuses("Lead", writes)
    finally:
        salesforce.close()
    assert [o.record_id for o in outcomes] == [w.record_id for w in writes]
    assert [o.error.action if o.error else None for o in outcomes] == [None, Action.RECORD, Action.RETRY, Action.RECORD]
    assert outcomes[1].error is not None and outcomes[1].error.record_id == writes[1].record_id
    sent = http.calls[1].request
    assert sent.body is not None and b'"allOrNone": false' in sent.body


def test_writes_go_200_a_call_and_a_later_failure_keeps_what_landed(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    token(http)
    http.patch(COLLECTION, json=_results(*[None] * 200))
    for _ in range(2):
        http.patch(COLLECTION, status=503, json=[{"message": "down", "errorCode": "SERVER_UNAVAILABLE"}])
    writes = [StatusWrite(f"00Q{n:012d}AAA", "Working - Contacted", owner="005000000000001AAA") for n in range(250)]
    salesforce = source(sleeps, max_retries=1)
    try:
        outcomes = salesforce.write_statuses("Lead", writes)
    finally:
        salesforce.close()
    assert len(outcomes) == 250 and all(o.ok for o in outcomes[:200])
    assert all(o.error is not None and o.error.action is Action.RETRY for o in outcomes[200:])
    assert b'"OwnerId": "005000000000001AAA"' in (http.calls[1].request.body or b"")


def test_read_statuses_keeps_each_url_short(http: responses.RequestsMock, sleeps: list[float]) -> None:
    token(http)
    for _ in range(3):
        http.get(QUERY, **page(LEAD))
    ids = [f"00Q{n:012d}AAA" for n in range(700)]
    salesforce = source(sleeps)
    try:
        found = salesforce.read_statuses("Lead", ids)
    finally:
        salesforce.close()
    assert set(found) == {LEAD["Id"]}
    assert all(len(c.request.url or "") < 16_000 for c in http.calls)
    assert len(http.calls) == 4


def test_a_repeated_locator_stops_paging(http: responses.RequestsMock, sleeps: list[float]) -> None:
    token(http)
    more = "/services/data/v62.0/queryAll/01g000000000001-2000"
    body = {"totalSize": 4000, "done": False, "nextRecordsUrl": more, "records": [LEAD]}
    http.get(QUERY, json=body)
    http.get(QUERY, json=body)
    with pytest.raises(CrmError, match="twice"):
        pull(source(sleeps))


def test_an_expired_query_locator_resumes_from_the_last_page(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    token(http)
    second = {**LEAD, "Id": "00Q000000000002AAA"}
    more = "/services/data/v62.0/queryAll/01g000000000001-2000"
    http.get(QUERY, json={"totalSize": 3, "done": False, "nextRecordsUrl": more, "records": [LEAD]})
    expired = [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]
    http.get(INSTANCE + more, status=400, json=expired)
    http.get(QUERY, **page(second))
    records = pull(source(sleeps, lookback="5s"))
    assert [r.id for r in records] == [LEAD["Id"], second["Id"]]
    resumed = http.calls[3].request.url or ""
    assert "Id+%3E+%2700Q000000000001AAA%27" in resumed  # exactly after the last record read: no lookback
    assert "2025-03-03T08%3A00%3A00Z" in resumed


def test_bad_names_in_the_config_are_refused() -> None:
    bad = {"Lead": {"status_field": "Status) FROM User --", "mapping": "lead.yaml"}}
    with pytest.raises(ConfigError, match="not a Salesforce API name"):
        Salesforce("sfdc", settings(objects=bad))
    types = {"Lead": {"status_field": "Status", "mapping": "lead.yaml", "activity": {"types": {"Type": "x"}}}}
    with pytest.raises(ConfigError, match="Field=Value"):
        Salesforce("sfdc", settings(objects=types))


# --- the pure parts --------------------------------------------------------------------------------
def test_soql_literals_are_escaped() -> None:
    assert quote("O'Hara") == r"'O\'Hara'"
    assert quote("back\\slash") == r"'back\\slash'"
    assert quote("a\nb") == r"'a\nb'"
    assert quote("x' OR Id != '") == r"'x\' OR Id != \''"


def test_the_keyset_window() -> None:
    until = datetime(2025, 3, 3, 9, 0, 0, 700_000, tzinfo=UTC)
    settle = timedelta(seconds=10)
    assert Window(Cursor(), until, settle).where() == "SystemModstamp <= 2025-03-03T09:00:00Z"
    # A cursor older than the settle window: the exact keyset alone, no lookback.
    at = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
    assert Window(Cursor(at, "00QX'"), until, settle).where() == (
        "(SystemModstamp > 2025-03-03T08:00:00Z OR (SystemModstamp = 2025-03-03T08:00:00Z AND Id > '00QX\\'')) "
        "AND SystemModstamp <= 2025-03-03T09:00:00Z")
    # A cursor inside it: the last `settle` before `until` is read again, whatever the cursor.
    recent = datetime(2025, 3, 3, 8, 59, 55, tzinfo=UTC)
    assert Window(Cursor(recent, "00Q5"), until, settle).where() == (
        "(SystemModstamp > 2025-03-03T08:59:55Z OR (SystemModstamp = 2025-03-03T08:59:55Z AND Id > '00Q5') "
        "OR SystemModstamp >= 2025-03-03T08:59:50Z) AND SystemModstamp <= 2025-03-03T09:00:00Z")
    assert Window(Cursor(at, ""), until).where() == (
        "(SystemModstamp >= 2025-03-03T08:00:00Z) AND SystemModstamp <= 2025-03-03T09:00:00Z")
    mine = Cursor(at, "00Q5")
    assert later(mine, Cursor(at - timedelta(seconds=2), "00Q9")) == mine  # a settle re-read never moves it back
    assert later(mine, Cursor(at, "00Q6")) == Cursor(at, "00Q6")
    assert later(Cursor(), mine) == mine


def test_configuration_faults_on_write_are_for_the_admin() -> None:
    """A field that is unknown or read-only, no edit permission, a picklist value missing: every record
    would fail alike, so the drain pauses the object instead of dead-lettering them one by one."""
    for code in ("INVALID_FIELD_FOR_INSERT_UPDATE", "INSUFFICIENT_ACCESS_OR_READONLY", "INVALID_FIELD",
                 "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"):
        assert salesforce_error(code, "no", record_id="00Q000000000001AAA").action is Action.ADMIN, code
    for code in ("INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY", "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                 "ENTITY_IS_DELETED", "SOMETHING_NEW"):
        assert salesforce_error(code, "no", record_id="00Q000000000001AAA").action is Action.RECORD, code


def test_a_body_that_is_not_json_is_retried_then_reported_escaped(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    token(http)
    page_html = "<html><body>Down for maintenance\n" + "x" * 400 + "</body></html>"
    for _ in range(3):
        http.get(QUERY, body=page_html, status=200, content_type="text/html")
    with pytest.raises(CrmError) as raised:
        pull(source(sleeps, max_retries=2))
    error = raised.value
    assert error.action is Action.RETRY and len(sleeps) == 2
    assert error.message.startswith('Salesforce answered with a body that is not JSON: "<html><body>Down for')
    assert "maintenance\\n" in error.message and "\n" not in error.message  # escaped: one line
    assert len(error.message) < 300


def test_an_activity_is_dated_by_when_it_happened_never_after_it_was_logged() -> None:
    logged = "2025-03-10T15:00:00.000+0000"
    row = {"CreatedDate": logged, "SystemModstamp": logged}
    at = datetime(2025, 3, 10, 15, tzinfo=UTC)
    assert occurred_at(row) == at
    assert occurred_at({**row, "ActivityDate": "2025-02-01"}) == datetime(2025, 2, 1, 23, 59, 59, tzinfo=UTC)
    assert occurred_at({**row, "ActivityDate": "2025-03-10"}) == at  # today's: this afternoon, not midnight
    assert occurred_at({**row, "ActivityDate": "2025-03-17"}) == at  # due next week: logged today
    dated = ("ActivityDateTime", "ActivityDate")
    meeting = {**row, "ActivityDateTime": "2025-03-09T10:00:00.000+0000", "ActivityDate": "2025-03-09"}
    assert occurred_at(meeting, dated) == datetime(2025, 3, 9, 10, tzinfo=UTC)
    booked = {**row, "ActivityDateTime": "2025-03-20T10:00:00.000+0000"}
    assert occurred_at(booked, dated) == at  # booked today for later: booked today


def test_ids_are_chunked_and_checked() -> None:
    chunks = list(id_chunks([f"00Q{n:012d}" for n in range(650)] + ["nope", "00Q' OR '"]))
    assert [len(c) for c in chunks] == [300, 300, 50]


def test_task_rules() -> None:
    rules = parse_rules({})
    assert event_of({"subject": "RE: pricing", "type": "Email"}, rules) == "email_replied"
    assert event_of({"subject": "Pricing", "type": "email"}, rules) == "email_sent"
    assert event_of({"subject": None, "type": "Meeting"}, rules) == "meeting_booked"
    assert event_of({"subject": "x", "type": "Other"}, rules) is None
    custom = parse_rules({"CallDisposition ^= Left voicemail": "custom:voicemail", "Type=Call": "call_logged"})
    assert event_of({"calldisposition": "left VOICEMAIL twice", "type": "Call"}, custom) == "custom:voicemail"
    with pytest.raises(ValueError, match="unknown event 'emailed'"):
        parse_rules({"Type=Email": "emailed"})


def test_the_configured_ca_bundle_wins_and_env_proxies_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/elsewhere/ca.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    bundle = tmp_path / "ca.pem"
    with CrmSession(ca_bundle=bundle, timeout=5.0, meter=ApiMeter(0.5)) as session:
        merged = session.merge_environment_settings(INSTANCE, {}, None, None, None)
    assert merged["verify"] == str(bundle)
    assert merged["proxies"]["https"] == "http://proxy.example:3128"
    with CrmSession(ca_bundle=None, timeout=5.0, meter=ApiMeter(0.5)) as plain:
        assert plain.merge_environment_settings(INSTANCE, {}, None, None, None)["verify"] == "/elsewhere/ca.pem"


def test_every_request_gets_the_configured_timeout(http: responses.RequestsMock) -> None:
    http.get(INSTANCE + "/x", json={})
    with CrmSession(ca_bundle=None, timeout=7.0, meter=ApiMeter(0.5)) as session:
        session.get(INSTANCE + "/x")
    assert http.calls[0].request.req_kwargs["timeout"] == 7.0  # type: ignore[attr-defined]
