"""The Salesforce stand-in, driven the way the connector drives it: simple-salesforce over real HTTPS."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connector.sandbox import soql
from connector.sandbox._http import Call, Response
from connector.sandbox.salesforce import LEAD_STATUSES, SalesforceSandbox, normalize_id

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
TOKEN_PATH = "/services/oauth2/token"


@pytest.fixture
def sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox() as sb:
        yield sb


@pytest.fixture
def http(sandbox: SalesforceSandbox) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify
    session.verify = sandbox.ca_pem
    yield session
    session.close()


def login(sandbox: SalesforceSandbox, http: requests.Session) -> str:
    answer = http.post(sandbox.url + TOKEN_PATH, data={"grant_type": "client_credentials"},
                       auth=(sandbox.client_id, sandbox.client_secret))
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


@pytest.fixture
def sf(sandbox: SalesforceSandbox, http: requests.Session) -> Salesforce:
    return Salesforce(instance_url=sandbox.url, session_id=login(sandbox, http), session=http, version="62.0")


@pytest.fixture(scope="module")
def org() -> Iterator[SalesforceSandbox]:
    """One org for the tests that change no data, since stopping a server takes its poll interval."""
    with SalesforceSandbox() as sb:
        yield sb


@pytest.fixture(scope="module")
def org_http(org: SalesforceSandbox) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env, session.verify = False, org.ca_pem
        yield session


@pytest.fixture(scope="module")
def shared_sf(org: SalesforceSandbox, org_http: requests.Session) -> Salesforce:
    return Salesforce(instance_url=org.url, session_id=login(org, org_http), session=org_http, version="62.0")


def leads(n: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"LastName": f"Lead {i}", "Company": "Acme", "Email": f"lead{i}@example.com", **fields} for i in range(n)]


def update(sf: Salesforce, records: list[dict[str, Any]], all_or_none: bool = False) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = sf.restful("composite/sobjects", method="PATCH",
                                              json={"allOrNone": all_or_none, "records": records})
    return result


def settled_calls(sandbox: SalesforceSandbox, expected: int) -> list[Call]:
    """The call log, once `expected` calls are in: the server logs a call just after answering it."""
    deadline = time.monotonic() + 2
    while len(calls := sandbox.server.calls()) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return calls


def codes(result: dict[str, Any]) -> list[str]:
    return [e["statusCode"] for e in result["errors"]]


# --- OAuth -----------------------------------------------------------------------------------------
def test_client_credentials_by_basic_auth_or_form(org: SalesforceSandbox, org_http: requests.Session) -> None:
    sandbox, http = org, org_http
    by_header = http.post(sandbox.url + TOKEN_PATH, data={"grant_type": "client_credentials"},
                          auth=(sandbox.client_id, sandbox.client_secret)).json()
    by_form = http.post(sandbox.url + TOKEN_PATH, data={
        "grant_type": "client_credentials", "client_id": sandbox.client_id, "client_secret": sandbox.client_secret,
    }).json()
    for answer in (by_header, by_form):
        assert answer["instance_url"] == sandbox.url
        assert answer["token_type"] == "Bearer"
        assert {"access_token", "id", "issued_at", "signature"} <= answer.keys()
    assert by_header["access_token"] != by_form["access_token"]


def test_password_grant(org: SalesforceSandbox, org_http: requests.Session) -> None:
    sandbox, http = org, org_http
    form = {"grant_type": "password", "client_id": sandbox.client_id, "client_secret": sandbox.client_secret,
            "username": sandbox.username, "password": sandbox.password}
    assert http.post(sandbox.url + TOKEN_PATH, data=form).status_code == 200
    cases = [({"password": "wrong"}, "invalid_grant"), ({"client_secret": "wrong"}, "invalid_client"),
             ({"client_id": "nobody"}, "invalid_client_id")]
    for change, error in cases:
        answer = http.post(sandbox.url + TOKEN_PATH, data={**form, **change})
        assert answer.status_code == 400
        assert answer.json()["error"] == error
        assert answer.json()["error_description"]


def _assertion(sandbox: SalesforceSandbox, key: Any = None, **claims: Any) -> str:
    if key is None:
        with open(sandbox.jwt_private_key_pem, "rb") as pem:
            key = pem.read()
    payload = {"iss": sandbox.client_id, "sub": sandbox.username, "aud": "https://login.salesforce.com",
               "exp": int((datetime.now(UTC) + timedelta(minutes=3)).timestamp()), **claims}
    return jwt.encode(payload, key, algorithm="RS256")


def test_jwt_bearer_grant(org: SalesforceSandbox, org_http: requests.Session) -> None:
    sandbox, http = org, org_http
    def post(assertion: str) -> requests.Response:
        return http.post(sandbox.url + TOKEN_PATH, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})

    good = post(_assertion(sandbox))
    assert good.status_code == 200
    token = good.json()["access_token"]
    query = http.get(sandbox.url + "/services/data/v62.0/query/", params={"q": "SELECT Id FROM User"},
                     headers={"Authorization": f"Bearer {token}"})
    assert query.status_code == 200

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    past = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp())
    cases = [
        (_assertion(sandbox, exp=past), "invalid_grant", "expired authorization code"),
        (_assertion(sandbox, key=other_key), "invalid_grant", "invalid assertion"),
        (_assertion(sandbox, aud="https://example.com"), "invalid_grant", "audience is invalid"),
        # The org's own URL (its My Domain) is not an audience, nor is test.salesforce.com for a production org.
        (_assertion(sandbox, aud=sandbox.url), "invalid_grant", "audience is invalid"),
        (_assertion(sandbox, aud="https://test.salesforce.com"), "invalid_grant", "audience is invalid"),
        (_assertion(sandbox, iss="someone-else"), "invalid_client_id", "client identifier invalid"),
        (_assertion(sandbox, sub="stranger@example.com"), "invalid_grant", "invalid assertion"),
        ("not-a-jwt", "invalid_grant", "invalid assertion"),
    ]
    for assertion, error, description in cases:
        answer = post(assertion)
        assert answer.status_code == 400
        assert answer.json() == {"error": error, "error_description": description}


def test_unknown_grant_type(org: SalesforceSandbox, org_http: requests.Session) -> None:
    answer = org_http.post(org.url + TOKEN_PATH, data={"grant_type": "authorization_code", "code": "x"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"


def test_calls_without_a_valid_token_are_refused(org: SalesforceSandbox, org_http: requests.Session) -> None:
    used = org.api_usage[0]
    for headers in ({}, {"Authorization": "Bearer forged"}):
        answer = org_http.get(org.url + "/services/data/v62.0/limits/", headers=headers)
        assert answer.status_code == 401
        assert answer.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert org.api_usage[0] == used  # refused calls are not counted


def test_expired_sessions_raise_and_a_new_login_works(sandbox: SalesforceSandbox, http: requests.Session,
                                                     sf: Salesforce) -> None:
    sf.query("SELECT Id FROM User")
    sandbox.expire_sessions()
    with pytest.raises(SalesforceExpiredSession) as raised:
        sf.query("SELECT Id FROM User")
    assert raised.value.content[0]["errorCode"] == "INVALID_SESSION_ID"
    fresh = Salesforce(instance_url=sandbox.url, session_id=login(sandbox, http), session=http, version="62.0")
    assert fresh.query("SELECT COUNT() FROM User")["totalSize"] == 4


# --- query ---------------------------------------------------------------------------------------------
def test_query_pages_through_next_records_url(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    ids = sandbox.seed("Lead", leads(5000))
    first = sf.query("SELECT Id, LastName, Status, SystemModstamp FROM Lead")
    assert (first["totalSize"], first["done"], len(first["records"])) == (5000, False, 2000)
    assert first["nextRecordsUrl"].startswith("/services/data/v62.0/query/01g")
    assert first["nextRecordsUrl"].endswith("-2000")
    record = first["records"][0]
    assert record["attributes"] == {"type": "Lead", "url": f"/services/data/v62.0/sobjects/Lead/{record['Id']}"}
    assert record["Status"] == "Open - Not Contacted"
    assert record["SystemModstamp"].endswith(".000+0000")

    settled_calls(sandbox, 2)  # the login and the first query
    sandbox.server.reset_calls()
    pages_of_500 = {"Sforce-Query-Options": "batchSize=500"}
    seen = [r["Id"] for r in sf.query_all_iter("SELECT Id FROM Lead", headers=pages_of_500)]
    assert sorted(seen) == sorted(ids) and len(seen) == 5000
    calls = settled_calls(sandbox, 10)
    assert len(calls) == 10 and all(c.status == 200 and c.records == 500 for c in calls)


def test_pages_come_from_a_snapshot(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    ids = sandbox.seed("Lead", leads(2500))
    first = sf.query("SELECT Id, Status FROM Lead ORDER BY Id")
    sandbox.edit_as_person("Lead", ids[-1], Status="Working - Contacted")
    rest = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert rest["done"] and rest["records"][-1]["Status"] == "Open - Not Contacted"
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query_more(first["nextRecordsUrl"].replace("-2000", "-9000"), identifier_is_url=True)
    assert raised.value.content[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_keyset_paging_over_one_shared_modstamp(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    ids = sandbox.seed("Lead", leads(3000), modstamp=T0)
    settled_calls(sandbox, 1)  # the login
    sandbox.server.reset_calls()
    cursor_stamp, cursor_id, seen = "2000-01-01T00:00:00Z", "000000000000000AAA", []
    while True:
        page = sf.query(
            "SELECT Id, SystemModstamp FROM Lead "
            f"WHERE (SystemModstamp > {cursor_stamp} OR (SystemModstamp = {cursor_stamp} AND Id > '{cursor_id}')) "
            "ORDER BY SystemModstamp, Id LIMIT 700"
        )
        assert page["done"]
        if not page["records"]:
            break
        seen += [r["Id"] for r in page["records"]]
        cursor_stamp, cursor_id = page["records"][-1]["SystemModstamp"], page["records"][-1]["Id"]
    assert cursor_stamp == "2024-05-01T12:00:00.000+0000"
    assert seen == ids  # each once, in creation order
    assert len(settled_calls(sandbox, math.ceil(3000 / 700) + 1)) == math.ceil(3000 / 700) + 1


def test_query_all_includes_deleted_and_merged(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    a, b, c = sandbox.seed("Lead", leads(3))
    sandbox.delete("Lead", a)
    sandbox.merge("Lead", b, c)
    live = sf.query("SELECT Id FROM Lead")
    assert [r["Id"] for r in live["records"]] == [b]
    every = sf.query_all("SELECT Id, IsDeleted, MasterRecordId FROM Lead ORDER BY Id", include_deleted=True)
    assert [(r["Id"], r["IsDeleted"], r["MasterRecordId"]) for r in every["records"]] == [
        (a, True, None), (b, False, None), (c, True, b)]
    assert sandbox.record("Lead", a)["IsDeleted"] is True


def test_where_order_limit_and_count(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    sandbox.seed("Lead", [
        {"LastName": "Ames", "Company": "A", "Email": "Ames@Example.com", "Country": "US"},
        {"LastName": "Baker", "Company": "B", "Email": "baker@example.com", "Country": None},
        {"LastName": "O'Hara", "Company": "C", "Email": "ohara@example.org", "Country": "IE",
         "Status": "Working - Contacted"},
    ])

    def names(where: str, tail: str = "ORDER BY LastName") -> list[str]:
        return [r["LastName"] for r in sf.query(f"SELECT LastName FROM Lead WHERE {where} {tail}")["records"]]

    assert names("Email = 'ames@example.COM'") == ["Ames"]  # text compares ignore case
    assert names("Country != 'US'") == ["Baker", "O'Hara"]  # != keeps nulls, as in SOQL
    assert names("Country = null") == ["Baker"]
    assert names("LastName = 'O\\'Hara'") == ["O'Hara"]
    assert names("Email LIKE '%example.com'") == ["Ames", "Baker"]
    assert names("Status IN ('Working - Contacted', 'Closed - Converted')") == ["O'Hara"]
    assert names("NOT (Country IN ('US', 'IE'))") == ["Baker"]
    assert names("Country NOT IN ('US')") == ["Baker", "O'Hara"]
    assert names("(Country = 'US' OR Country = 'IE') AND IsConverted = false") == ["Ames", "O'Hara"]
    assert names("CreatedDate >= 2000-01-01T00:00:00.000+0000") == ["Ames", "Baker", "O'Hara"]
    assert names("LastName != null", "ORDER BY Country DESC NULLS LAST LIMIT 2") == ["Ames", "O'Hara"]
    assert names("LastName != null", "ORDER BY Country NULLS FIRST LIMIT 1 OFFSET 1") == ["O'Hara"]
    assert sf.query("SELECT COUNT() FROM Lead WHERE Country != null") == {
        "totalSize": 2, "done": True, "records": []}


@pytest.mark.parametrize(("query", "code", "says"), [
    ("SELECT Id FROM Lead WHERE", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
    ("SELECT Id FROM Lead WHERE Country = 'US' AND Email = 'x' OR Id = null", "MALFORMED_QUERY",
     "unexpected token: 'OR'"),
    ("SELECT Id, Foo FROM Lead", "INVALID_FIELD", "No such column 'Foo' on entity 'Lead'"),
    ("SELECT Id FROM Leed", "INVALID_TYPE", "sObject type 'Leed' is not supported"),
    ("SELECT Id FROM Lead WHERE SystemModstamp > '2024-01-01T00:00:00Z'", "INVALID_FIELD",
     "must be of type dateTime and should not be enclosed in quotes"),
    ("SELECT Id FROM Lead WHERE Id = 'nope'", "INVALID_QUERY_FILTER_OPERATOR", "invalid ID field: nope"),
    ("SELECT Id FROM Lead GROUP BY Status", "MALFORMED_QUERY", "unexpected token: 'GROUP'"),
])
def test_refused_queries_surface_as_client_exceptions(shared_sf: Salesforce, query: str, code: str,
                                                       says: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as raised:
        shared_sf.query(query)
    (error,) = raised.value.content
    assert error["errorCode"] == code
    assert says in error["message"]
    assert "ERROR at Row:1:Column:" in error["message"]


def test_soql_datetime_literals_and_error_position() -> None:
    for literal in ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000+0000", "2024-05-01T14:00:00+02:00"):
        assert soql.parse_datetime(literal) == T0
    assert soql.format_datetime(T0) == "2024-05-01T12:00:00.000+0000"
    with pytest.raises(soql.SoqlError) as raised:
        soql.parse("SELECT Id\nFROM Lead\nWHERE Status = = 'x'")
    assert raised.value.message == (
        "\nWHERE Status = = 'x'\n               ^\nERROR at Row:3:Column:16\nunexpected token: '='"
    )


# --- describe -------------------------------------------------------------------------------------------
def test_describe_lists_picklists(shared_sf: Salesforce) -> None:
    sf = shared_sf
    lead = sf.Lead.describe()
    assert (lead["name"], lead["keyPrefix"]) == ("Lead", "00Q")
    status = next(f for f in lead["fields"] if f["name"] == "Status")
    assert status["type"] == "picklist" and status["restrictedPicklist"] is True
    assert [v["value"] for v in status["picklistValues"]] == LEAD_STATUSES
    assert [v["value"] for v in status["picklistValues"] if v["defaultValue"]] == ["Open - Not Contacted"]
    assert status["picklistValues"][0] == {"active": True, "defaultValue": True, "label": "Open - Not Contacted",
                                           "value": "Open - Not Contacted", "validFor": None}
    types = {f["name"]: f["type"] for f in lead["fields"]}
    assert types["Id"] == "id" and types["SystemModstamp"] == "datetime" and types["OwnerId"] == "reference"
    assert types["IsConverted"] == "boolean" and types["LastName"] == "string"
    stage = next(f for f in sf.Contact.describe()["fields"] if f["name"] == "Stage__c")
    assert [v["value"] for v in stage["picklistValues"]][:2] == ["Prospect", "Engaged"]
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful("sobjects/Nothing__c/describe")


def test_lead_statuses_are_queryable(shared_sf: Salesforce) -> None:
    rows = shared_sf.query("SELECT MasterLabel, SortOrder, IsConverted, IsDefault FROM LeadStatus ORDER BY SortOrder")
    assert [(r["MasterLabel"], r["IsConverted"], r["IsDefault"]) for r in rows["records"]] == [
        ("Open - Not Contacted", False, True), ("Working - Contacted", False, False),
        ("Closed - Converted", True, False), ("Closed - Not Converted", False, False)]


def test_custom_object(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    sandbox.define_object("Deal__c", {"Phase__c": ["Open", "Won", "Lost"], "Note__c": None})
    (deal,) = sandbox.seed("Deal__c", [{"Name": "Big", "Phase__c": "Open"}])
    assert deal.startswith("a00") and normalize_id(deal) == deal
    assert sf.query("SELECT Name, Phase__c FROM Deal__c")["records"][0]["Phase__c"] == "Open"
    (bad,) = update(sf, [{"attributes": {"type": "Deal__c"}, "id": deal, "Phase__c": "Maybe"}])
    assert codes(bad) == ["INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"]


# --- writes -----------------------------------------------------------------------------------------
def test_collection_update_reports_each_record_in_order(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    ok, picky, converted, deleted, locked = sandbox.seed("Lead", leads(5))
    sandbox.convert_lead(converted)
    sandbox.delete("Lead", deleted)
    sandbox.fail_writes([locked], "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")
    missing = ok[:3] + "zzzzzzzzzzzz"
    missing = normalize_id(missing[:15]) or ""

    def lead(rid: str, status: str = "Working - Contacted") -> dict[str, Any]:
        return {"attributes": {"type": "Lead"}, "id": rid, "Status": status}

    results = update(sf, [lead(ok), lead(picky, "Nurturing"), lead(converted), lead(deleted), lead(locked),
                          lead(missing), lead("00Qbogus")])
    assert [r["success"] for r in results] == [True] + [False] * 6
    assert results[0] == {"id": ok, "success": True, "errors": []}
    assert [codes(r) for r in results[1:]] == [
        ["INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"], ["CANNOT_UPDATE_CONVERTED_LEAD"], ["ENTITY_IS_DELETED"],
        ["UNABLE_TO_LOCK_ROW"], ["INVALID_CROSS_REFERENCE_KEY"], ["MALFORMED_ID"]]
    assert results[1]["errors"][0] == {"statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                       "message": "bad value for restricted picklist field: Nurturing",
                                       "fields": ["Status"]}
    assert results[4]["id"] == locked
    assert sandbox.record("Lead", ok)["Status"] == "Working - Contacted"
    assert sandbox.record("Lead", picky)["Status"] == "Open - Not Contacted"
    assert sandbox.writes() == [(ok, {"Status": "Working - Contacted"})]
    # the injected failure was used up: the retry succeeds
    assert update(sf, [lead(locked)])[0]["success"] is True


def test_all_or_none_rolls_everything_back(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    a, b, c = sandbox.seed("Lead", leads(3))
    before = sandbox.record("Lead", a)["SystemModstamp"]
    results = update(sf, [{"attributes": {"type": "Lead"}, "id": rid, "Status": status} for rid, status in
                          [(a, "Working - Contacted"), (b, "Bogus"), (c, "Closed - Not Converted")]], all_or_none=True)
    assert [codes(r) for r in results] == [["ALL_OR_NONE_OPERATION_ROLLED_BACK"],
                                           ["INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"],
                                           ["ALL_OR_NONE_OPERATION_ROLLED_BACK"]]
    assert [r["id"] for r in results] == [a, b, c]
    assert sandbox.record("Lead", a)["Status"] == "Open - Not Contacted"
    assert sandbox.record("Lead", a)["SystemModstamp"] == before
    assert sandbox.writes() == []


def test_collections_refuse_more_than_200_records(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    ids = sandbox.seed("Lead", leads(201))
    with pytest.raises(SalesforceMalformedRequest) as raised:
        update(sf, [{"attributes": {"type": "Lead"}, "id": rid, "Status": "Working - Contacted"} for rid in ids])
    assert raised.value.content == [{
        "message": "record limit reached. cannot submit more than 200 records into this call",
        "errorCode": "EXCEEDED_ID_LIMIT"}]
    assert sandbox.writes() == []


def test_unknown_field_fails_the_whole_request(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    (rid,) = sandbox.seed("Lead", leads(1))
    with pytest.raises(SalesforceMalformedRequest) as raised:
        update(sf, [{"attributes": {"type": "Lead"}, "id": rid, "Stage__c": "Engaged"}])
    assert raised.value.content[0]["errorCode"] == "INVALID_FIELD"
    (readonly,) = update(sf, [{"attributes": {"type": "Lead"}, "id": rid, "IsConverted": True}])
    assert codes(readonly) == ["INVALID_FIELD_FOR_INSERT_UPDATE"]


def test_single_record_endpoints(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    live, converted, gone = sandbox.seed("Lead", leads(3))
    sandbox.convert_lead(converted)
    sandbox.delete("Lead", gone)
    assert sf.Lead.update(live, {"Status": "Working - Contacted"}) == 204
    assert sf.Lead.get(live)["Status"] == "Working - Contacted"
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Lead.update(converted, {"Status": "Working - Contacted"})
    assert raised.value.content[0]["errorCode"] == "CANNOT_UPDATE_CONVERTED_LEAD"
    with pytest.raises(SalesforceResourceNotFound) as missing:
        sf.Lead.get(gone)
    assert missing.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"
    created = sf.Contact.create({"LastName": "New", "Stage__c": "Prospect"})
    assert created["success"] and created["id"].startswith("003")
    assert sandbox.writes("Lead") == [(live, {"Status": "Working - Contacted"})]
    assert sandbox.writes("Contact") == [(created["id"], {"LastName": "New", "Stage__c": "Prospect"})]


def test_collection_retrieve(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    a, gone = sandbox.seed("Lead", leads(2))
    sandbox.delete("Lead", gone)
    got = sf.restful("composite/sobjects/Lead", params={"ids": f"{a},{gone}", "fields": "Id,Status"})
    assert got == [{"attributes": {"type": "Lead", "url": f"/services/data/v62.0/sobjects/Lead/{a}"},
                    "Id": a, "Status": "Open - Not Contacted"}, None]


def test_convert_lead(sandbox: SalesforceSandbox) -> None:
    (rid,) = sandbox.seed("Lead", leads(1, FirstName="Ada"))
    sandbox.convert_lead(rid)
    lead = sandbox.record("Lead", rid)
    assert lead["IsConverted"] is True and lead["Status"] == "Closed - Converted"
    contact = sandbox.record("Contact", lead["ConvertedContactId"])
    assert (contact["Name"], contact["AccountId"]) == ("Ada Lead 0", lead["ConvertedAccountId"])


# --- time ---------------------------------------------------------------------------------------------
def test_edits_bump_the_modstamp_to_the_second(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    a, b = sandbox.seed("Lead", leads(2), modstamp=T0)
    sandbox.clock = lambda: T0 + timedelta(minutes=5, microseconds=750_000)
    sandbox.edit_as_person("Lead", a, Status="Working - Contacted")
    edited = sandbox.record("Lead", a)
    assert edited["SystemModstamp"] == edited["LastModifiedDate"] == T0 + timedelta(minutes=5)
    assert edited["CreatedDate"] == T0
    assert sandbox.writes() == []  # a person's edit is not an API write
    changed = sf.query("SELECT Id, Status, SystemModstamp FROM Lead WHERE SystemModstamp > 2024-05-01T12:00:00Z")
    assert [(r["Id"], r["SystemModstamp"]) for r in changed["records"]] == [(a, "2024-05-01T12:05:00.000+0000")]

    sandbox.clock = lambda: T0 + timedelta(minutes=9)
    update(sf, [{"attributes": {"type": "Lead"}, "id": b, "Status": "Working - Contacted"}])
    assert sandbox.record("Lead", b)["SystemModstamp"] == T0 + timedelta(minutes=9)
    newest = sf.query("SELECT Id FROM Lead ORDER BY SystemModstamp DESC LIMIT 1")
    assert newest["records"][0]["Id"] == b


# --- API limits -----------------------------------------------------------------------------------------
def test_limit_info_header_and_request_limit() -> None:
    small = SalesforceSandbox(daily_limit=3, latency=0.01)
    assert small.server.latency == 0.01
    with small:
        session = requests.Session()
        session.trust_env, session.verify = False, small.ca_pem
        with session:
            sf = Salesforce(instance_url=small.url, session_id=login(small, session), session=session,
                            version="62.0")
            sf.query("SELECT Id FROM User")
            assert sf.api_usage["api-usage"].used == 1 and sf.api_usage["api-usage"].total == 3
            raw = session.get(small.url + "/services/data/v62.0/limits/",
                              headers={"Authorization": sf.headers["Authorization"]})
            assert raw.headers["Sforce-Limit-Info"] == "api-usage=2/3"
            assert raw.json()["DailyApiRequests"] == {"Max": 3, "Remaining": 1}
            sf.query("SELECT Id FROM User")
            with pytest.raises(SalesforceRefusedRequest) as raised:
                sf.query("SELECT Id FROM User")
            assert raised.value.content == [{"message": "TotalRequests Limit exceeded.",
                                             "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
            assert small.api_usage == (3, 3)
            small.set_api_usage(0)
            sf.query("SELECT Id FROM User")
            assert small.api_usage == (1, 3)


def test_injected_faults_pass_through(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    sandbox.server.faults.queue(Response(503, [{"message": "down", "errorCode": "SERVER_UNAVAILABLE"}]))
    with pytest.raises(Exception, match="503"):
        sf.query("SELECT Id FROM User")
    assert sf.query("SELECT Id FROM User")["totalSize"] == 4


def test_concurrent_writers(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    ids = sandbox.seed("Lead", leads(400))
    batches = [ids[i : i + 50] for i in range(0, 400, 50)]
    errors: list[BaseException] = []

    def push(batch: list[str]) -> None:
        try:
            update(sf, [{"attributes": {"type": "Lead"}, "id": rid, "Status": "Working - Contacted"}
                        for rid in batch])
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=push, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(rid for rid, _ in sandbox.writes("Lead")) == ids
    assert sf.query("SELECT COUNT() FROM Lead WHERE Status = 'Working - Contacted'")["totalSize"] == 400


# --- an org that behaves like a real one -------------------------------------------------------------
def test_an_object_the_user_may_not_see_answers_invalid_type(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    sandbox.deny_read("Task")
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query("SELECT Id FROM Task")
    assert raised.value.content == [{
        "message": "\nSELECT Id FROM Task\n               ^\nERROR at Row:1:Column:16\nsObject type 'Task' is not "
                   "supported. If you are attempting to use a custom object, be sure to append the '__c' after the "
                   "entity name. Please reference your WSDL or the describe call for the appropriate names.",
        "errorCode": "INVALID_TYPE",
    }]
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful("sobjects/Task/describe")
    assert "Task" not in [o["name"] for o in sf.describe()["sobjects"]]
    sandbox.allow("Task")
    assert sf.query("SELECT Id FROM Task")["totalSize"] == 0


def test_client_credentials_are_refused_on_the_generic_login_hosts(sandbox: SalesforceSandbox,
                                                                    http: requests.Session) -> None:
    def ask(**headers: str) -> requests.Response:
        return http.post(sandbox.url + TOKEN_PATH, data={"grant_type": "client_credentials"},
                         auth=(sandbox.client_id, sandbox.client_secret), headers=headers)

    refused = {"error": "invalid_grant", "error_description": "request not supported on this domain"}
    for host in ("login.salesforce.com", "test.salesforce.com"):
        answer = ask(Host=host)
        assert (answer.status_code, answer.json()) == (400, refused)
    assert ask().status_code == 200  # the org's own domain
    sandbox.login_host = "login.salesforce.com"
    assert ask().json() == refused


def test_a_late_commit_appears_with_its_old_stamp(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    now = [T0]
    sandbox.clock = lambda: now[0]
    early, late = sandbox.seed("Lead", leads(2))
    with sandbox.long_transaction(5):
        sandbox.edit_as_person("Lead", late, Status="Working - Contacted")  # stamped T0, visible at T0 + 5
    now[0] = T0 + timedelta(seconds=1)
    sandbox.edit_as_person("Lead", early, Status="Closed - Not Converted")  # stamped T0 + 1, visible now

    def statuses() -> dict[str, str]:
        rows = sf.query("SELECT Id, Status, SystemModstamp FROM Lead ORDER BY SystemModstamp, Id")["records"]
        return {r["Id"]: r["Status"] for r in rows}

    assert statuses() == {early: "Closed - Not Converted", late: "Open - Not Contacted"}
    assert sf.Lead.get(late)["Status"] == "Open - Not Contacted"  # by Id: the same database
    now[0] = T0 + timedelta(seconds=5)
    rows = sf.query("SELECT Id, Status, SystemModstamp FROM Lead ORDER BY SystemModstamp, Id")["records"]
    assert [(r["Id"], r["Status"], r["SystemModstamp"]) for r in rows] == [
        (late, "Working - Contacted", "2024-05-01T12:00:00.000+0000"),  # behind a record seen earlier
        (early, "Closed - Not Converted", "2024-05-01T12:00:01.000+0000"),
    ]


def test_field_history_is_kept_for_tracked_fields(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    (lead,) = sandbox.seed("Lead", leads(1))
    update(sf, [{"attributes": {"type": "Lead"}, "id": lead, "Status": "Working - Contacted"}])
    assert sf.query("SELECT Id FROM LeadHistory")["totalSize"] == 0  # off by default
    sandbox.track_history("Lead", "Status")
    update(sf, [{"attributes": {"type": "Lead"}, "id": lead, "Status": "Closed - Not Converted"}])
    sandbox.edit_as_person("Lead", lead, LastName="Other")
    rows = sf.query(f"SELECT LeadId, Field, OldValue, NewValue, CreatedDate FROM LeadHistory WHERE LeadId = '{lead}'")
    assert [(r["LeadId"], r["Field"], r["OldValue"], r["NewValue"]) for r in rows["records"]] == [
        (lead, "Status", "Working - Contacted", "Closed - Not Converted")]
    with pytest.raises(SalesforceMalformedRequest, match="INVALID_TYPE"):
        sf.query("SELECT Id FROM Thing__History")  # a custom object's history exists only when tracked


def test_activities_roll_up_to_their_account(sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    (account,) = sandbox.seed("Account", [{"Name": "Acme"}])
    (contact,) = sandbox.seed("Contact", [{"LastName": "C", "AccountId": account}])
    (lead,) = sandbox.seed("Lead", leads(1))
    event = sandbox.log_activity("Event", who=[contact, lead], Subject="Demo", Type="Meeting")
    row = sf.query(f"SELECT WhoId, AccountId FROM Event WHERE Id = '{event}'")["records"][0]
    assert (row["WhoId"], row["AccountId"]) == (contact, account)
    relations = sf.query(f"SELECT RelationId, IsWhat, AccountId FROM EventRelation WHERE EventId = '{event}'")
    assert [(r["RelationId"], r["IsWhat"], r["AccountId"]) for r in relations["records"]] == [
        (contact, False, account), (lead, False, None)]


def test_a_maintenance_page_can_be_injected(sandbox: SalesforceSandbox, http: requests.Session) -> None:
    token = login(sandbox, http)
    sandbox.answer_malformed("html")
    answer = http.get(sandbox.url + "/services/data/v62.0/query/", params={"q": "SELECT Id FROM Lead"},
                      headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.text.startswith("<!DOCTYPE html>")
