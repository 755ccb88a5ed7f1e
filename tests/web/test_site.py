"""The health site over real HTTP on SQLite and PostgreSQL: escaping, /healthz, the token; `server` settings."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from connector.config import Config, Server, load_config
from connector.engine import Engine
from connector.errors import ConfigError
from connector.metrics import Metrics
from connector.rules import Cause, RecordState, SetBy, Transition
from connector.store import repo
from connector.store.db import Store, open_store
from connector.store.schema import OutboxItem
from connector.web.queries import HealthFacts
from connector.web.server import ServeError, serve
from connector.web.state import ObjectState, object_state
from connector.web.view import FunnelCache, page_data
from tests.support import offline_config

MAPPING = """\
stages:
  - {name: New, category: in_progress}
  - {name: Working, category: in_progress}
  - {name: Won, category: succeeded}
statuses:
  Open: New
  Contacted: Working
  Closed Won: Won
triggers:
  - {name: replied, on: email_replied, from: [New], to: Working}
"""
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NASTY = '<script>alert("x")</script>'
TOKEN = "a-long-enough-server-token"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(offline_config(tmp_path, MAPPING, objects=("Lead", "Contact")), environ={})


def record(
    external_id: str,
    stage: str | None,
    *,
    quarantined: str | None = None,
    writeback: str | None = None,
    rule: str | None = None,
) -> repo.RecordWrite:
    moves = [Transition(NOW - timedelta(hours=1), None, "New", Cause.EXTERNAL, "Open")]
    if stage == "Working":
        moves.append(Transition(NOW, "New", "Working", Cause.EVENT, "email_replied", rule=rule))
    return repo.RecordWrite(
        external_id=external_id,
        record_id=None,
        state=RecordState(
            stage=stage, set_by=SetBy.TRIGGER, remote_status="Open", stage_entered_at=NOW, quarantined=quarantined
        ),
        transitions=moves,
        writeback=writeback,
    )


class Site:
    def __init__(self, config: Config, store: Store, token: str | None = None) -> None:
        settings = Server(listen="127.0.0.1:0", token=token)
        self.server = serve(settings, Metrics(), Engine(config, store, {}), lambda: NOW)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
        request = urllib.request.Request(self.base + path, headers=headers)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=10) as answer:
                return answer.status, dict(answer.headers), answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture
def site(config: Config, store: Store) -> Iterator[Site]:
    with store.transaction() as session:
        repo.save_records(
            session,
            "crm",
            "Lead",
            [
                record("L1", "Working", writeback="Contacted", rule="replied"),
                record("L2", None, quarantined=NASTY),
                record("L3", "New"),
            ],
            NOW,
        )
        session.execute(
            update(OutboxItem).values(
                state="dead", attempts=8, last_error=f"FIELD_CUSTOM_VALIDATION_EXCEPTION: {NASTY}"
            )
        )
        lead = repo.health(session, "crm", "Lead")
        lead.last_outcome, lead.last_error, lead.last_error_at, lead.last_run_at = (
            "failed",
            "INVALID_SESSION_ID",
            NOW,
            NOW,
        )
        contact = repo.health(session, "crm", "Contact")
        contact.last_outcome, contact.last_run_at = "ok", NOW
        contact.writeback_error, contact.writeback_error_at = "INVALID_FIELD_FOR_INSERT_UPDATE: Status", NOW
    running = Site(config, store)
    yield running
    running.server.shutdown()
    running.server.server_close()


def test_the_page_escapes_crm_values_and_forbids_inline_script(site: Site) -> None:
    status, headers, body = site.get("/")
    assert status == 200
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert NASTY not in body and "<script" not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body  # the quarantined status, as text
    assert "connector outbox retry crm Lead --ids L1" in body
    assert '<rect x="170" y="' in body  # the funnel is drawn, sized by attributes
    assert "trigger <q>replied</q>" in body
    css_status, css_headers, css = site.get("/static/health.css")
    assert css_status == 200 and css_headers["Content-Type"].startswith("text/css") and ".state-failing" in css
    assert site.get("/nowhere")[0] == 404
    # Without a token, only a browser that asked for a loopback name is answered (no DNS rebinding).
    assert site.get("/", Host="localhost:8080")[0] == 200  # an SSH tunnel's local port
    assert site.get("/healthz", Host="[::1]:9108")[0] in (200, 503)
    assert site.get("/", Host="rebound.example.com:9108")[0] == 403


def test_healthz_lists_every_failing_or_paused_object(site: Site) -> None:
    status, _, body = site.get("/healthz")
    detail = json.loads(body)
    assert status == 503 and detail["ok"] is False
    assert detail["problems"] == [
        "crm Lead: failing: INVALID_SESSION_ID",
        "crm Contact: paused: INVALID_FIELD_FOR_INSERT_UPDATE: Status",
    ]
    assert [o["state"] for o in detail["objects"]] == ["failing", "paused"]


def test_a_record_lookup_shows_what_explain_says(site: Site) -> None:
    status, _, body = site.get("/record?object=crm/Lead&id=L2")
    assert status == 200 and "quarantined: the CRM status <q>&lt;script&gt;" in body
    status, _, body = site.get("/record?object=crm/Lead&id=L9")
    assert status == 404 and "no record &#x27;L9&#x27; in crm Lead" in body
    assert site.get("/record?object=crm/Nope&id=L1")[0] == 404


def test_the_token_is_checked_on_every_request(config: Config, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/token.db")
    site = Site(config, store, TOKEN)
    try:
        for path in ("/", "/healthz", "/metrics", "/static/health.css"):
            status, headers, _ = site.get(path)
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer", path
            assert "Content-Security-Policy" in headers
        assert site.get("/healthz", Authorization=f"Bearer {TOKEN}x")[0] == 401
        assert site.get("/healthz", Authorization=f"Bearer {TOKEN}")[0] == 200
        assert site.get("/metrics", Authorization=f"Bearer {TOKEN}")[0] == 200
        status, headers, _ = site.get(f"/record?token={TOKEN}&id=L1")
        assert status == 303 and headers["Location"] == "/record?id=L1"
        assert site.get(f"//elsewhere.example?token={TOKEN}")[1]["Location"] == "/elsewhere.example"
        assert site.get("/", Host="anything.example", Authorization=f"Bearer {TOKEN}")[0] == 200
        cookie = headers["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        assert site.get("/", Cookie=cookie)[0] == 200
        assert site.get("/", Cookie="connector_token=guess")[0] == 401
        assert site.get("/?token=guess")[0] == 401
        assert TOKEN not in site.get("/", Cookie=cookie)[2]
    finally:
        site.server.shutdown()
        site.server.server_close()
        store.close()


@pytest.mark.parametrize(
    ("server", "error"),
    [
        ("{listen: '0.0.0.0:9108'}", "server: listen 0.0.0.0:9108 is reachable from other machines: set server.token"),
        ("{listen: 'health.example.com:9108'}", "is reachable from other machines"),
        ("{listen: '9108'}", "'9108' is not HOST:PORT"),
        ("{listen: '0.0.0.0:9108', token: short}", "token must be at least 16 characters"),
        ("{listen: '[::1]:9108'}", None),
        ("{listen: 'localhost:9108'}", None),
        ("{listen: '0.0.0.0:9108', token: '${HEALTH_TOKEN}'}", None),
    ],
)
def test_listening_beyond_loopback_requires_a_token(tmp_path: Path, server: str, error: str | None) -> None:
    path = offline_config(tmp_path, MAPPING, extra=f"server: {server}\n")
    if error is None:
        loaded = load_config(path, environ={"HEALTH_TOKEN": TOKEN})
        assert loaded.model.server is not None
        return
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert f"{path}:9: " in str(raised.value) and error in str(raised.value)


def test_the_state_of_an_object_is_the_one_status_reports_with_since_when() -> None:
    base = {
        "state": "ok",
        "problems": [],
        "last_error_at": None,
        "paused": False,
        "paused_until": None,
        "last_run": "2026-03-02T09:00:00Z",
    }
    facts = HealthFacts("MISSING_SCOPES", NOW - timedelta(hours=1), "INVALID_FIELD", NOW - timedelta(hours=2), 0)
    assert object_state(base, None) == ObjectState("ok", None, None)
    assert object_state({**base, "last_run": None}, None).words == "not run yet"
    problems = [{"kind": "activity", "message": "activity cannot be read: MISSING_SCOPES"}]
    degraded = object_state({**base, "state": "degraded", "problems": problems}, facts)
    assert degraded == ObjectState("degraded", "activity cannot be read: MISSING_SCOPES", "2026-03-02T08:00:00Z")
    problems = [{"kind": "writeback_paused", "message": "INVALID_FIELD"}, {"kind": "activity", "message": "x"}]
    paused = object_state({**base, "state": "paused", "problems": problems}, facts)
    assert (paused.words, paused.since) == ("INVALID_FIELD; x", "2026-03-02T07:00:00Z")


def test_the_funnel_is_recomputed_when_moves_were_written_at_most_once_a_minute(config: Config, store: Store) -> None:
    engine = Engine(config, store, {})
    clock = [0.0]
    cache = FunnelCache(max_age=60, clock=lambda: clock[0])

    def new_stage(at: datetime) -> tuple[int, int]:
        views = page_data(engine, at, cache)
        stage = next(s for s in views[0].funnel.stages if s.stage == "New")
        return stage.count, stage.entered

    assert new_stage(NOW) == (0, 0)
    with store.transaction() as session:
        repo.save_records(session, "crm", "Lead", [record("L1", "New")], NOW)
    clock[0] = 5.0
    assert new_stage(NOW + timedelta(seconds=5)) == (1, 0)  # records per stage now; the rest within the minute
    assert cache.computed_at == NOW
    clock[0] = 61.0
    assert new_stage(NOW + timedelta(seconds=61)) == (1, 1)
    assert cache.computed_at == NOW + timedelta(seconds=61)
    clock[0] = 200.0
    new_stage(NOW + timedelta(seconds=200))
    assert cache.computed_at == NOW + timedelta(seconds=61)  # nothing new: not recomputed


def test_an_address_in_use_is_a_message_not_a_traceback(config: Config, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/busy.db")
    first = Site(config, store)
    try:
        taken = f"127.0.0.1:{first.server.server_address[1]}"
        with pytest.raises(ServeError, match=f"cannot listen on {taken} \\(server.listen\\): Address already in use"):
            serve(Server(listen=taken), Metrics(), Engine(config, store, {}), lambda: NOW)
    finally:
        first.server.shutdown()
        first.server.server_close()
        store.close()
