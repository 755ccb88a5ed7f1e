"""The sandbox org sends Outbound Messages as Salesforce does, to a real loopback listener that runs our
SalesforceReceiver: on person edits, data loads and API writes (simple-salesforce over HTTPS), not on
deletions, for a merge's winner only; batched by 100, rendered with the latest data, retried until
acknowledged, dropped when too old. Every message sent is recorded and can be replayed or tampered with.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import trustme
from pydantic import SecretStr
from simple_salesforce import Salesforce

from connector.config import SalesforceWebhooks
from connector.sandbox.salesforce import SalesforceSandbox
from connector.webhooks.base import Notice, RefusalReason, Refused, WebhookRequest
from connector.webhooks.salesforce import ACK, SalesforceReceiver, read_message

WORKING, NEW = "Working - Contacted", "Open - Not Contacted"


@dataclass
class Listener:
    """A tiny HTTP server standing for `connector run`'s /webhooks/sfdc: our receiver behind real HTTP."""

    receiver: SalesforceReceiver
    failures: list[tuple[int, bytes]] = field(default_factory=list)  # answered first, one per request
    notices: list[Notice] = field(default_factory=list)
    requests: list[WebhookRequest] = field(default_factory=list)
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = WebhookRequest("POST", f"{listener.base}{self.path}",
                                     {k.lower(): v for k, v in self.headers.items()}, body, datetime.now(UTC))
                status, content_type, answer = listener.answer(req)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/webhooks/sfdc"

    def answer(self, req: WebhookRequest) -> tuple[int, str, bytes]:
        with self._lock:
            self.requests.append(req)
            if self.failures:
                status, body = self.failures.pop(0)
                return status, "text/xml; charset=utf-8", body
        try:
            notices, reply = self.receiver.receive(req)
        except Refused as refusal:
            return refusal.status, "text/plain; charset=utf-8", refusal.message.encode()
        with self._lock:
            self.notices.extend(notices)
        return reply.status, reply.content_type, reply.body

    def ids(self) -> list[str]:
        with self._lock:
            return [rid for notice in self.notices for rid in notice.record_ids]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def org() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def listener(org: SalesforceSandbox) -> Iterator[Listener]:
    hooks = SalesforceWebhooks(organization_id=org.org_id[:15], token=SecretStr("t0ken"))
    served = Listener(SalesforceReceiver("sfdc", hooks, ("Lead", "Contact")))
    yield served
    served.close()


@pytest.fixture
def sf(org: SalesforceSandbox) -> Iterator[Salesforce]:
    http = requests.Session()
    http.trust_env, http.verify = False, org.ca_pem
    answer = http.post(org.url + "/services/oauth2/token", data={"grant_type": "client_credentials"},
                       auth=(org.client_id, org.client_secret))
    token = answer.json()["access_token"]
    yield Salesforce(instance_url=org.url, session_id=token, session=http, version="62.0")
    http.close()


def seed_leads(org: SalesforceSandbox, n: int, status: str = NEW) -> list[str]:
    return org.seed("Lead", [{"LastName": f"L{i}", "Company": "Acme", "Status": status} for i in range(n)])


def endpoint(listener: Listener) -> str:
    return listener.url + "?token=t0ken"


def test_a_person_edit_is_sent_received_and_acknowledged(org: SalesforceSandbox, listener: Listener) -> None:
    (lead,) = seed_leads(org, 1)
    action = org.add_outbound_message("Lead", endpoint(listener), ("Status", "LastModifiedDate"))
    org.edit_as_person("Lead", lead, Status=WORKING)
    assert org.outbound.wait_idle()

    assert listener.notices == [Notice("Lead", (lead,))]
    (sent,) = org.outbound.messages()
    assert sent.acked and sent.status == 200 and sent.url == endpoint(listener)
    assert sent.headers["Content-Type"] == "text/xml; charset=utf-8"
    message = read_message(sent.body)
    assert (message.organization_id, message.action_id, message.records) == (org.org_id, action, (("Lead", lead),))
    assert f"<sf:Status>{WORKING}</sf:Status>".encode() in sent.body


def test_the_org_id_is_the_one_its_identity_url_names(org: SalesforceSandbox, sf: Salesforce,
                                                      listener: Listener) -> None:
    """The admin copies the org Id from Setup (Company Information); the OAuth identity URL carries it."""
    http = requests.Session()
    http.trust_env, http.verify = False, org.ca_pem
    identity = http.post(org.url + "/services/oauth2/token", data={"grant_type": "client_credentials"},
                         auth=(org.client_id, org.client_secret)).json()["id"]
    http.close()
    assert identity.split("/")[-2] == org.org_id and org.org_id.startswith("00D") and len(org.org_id) == 18


def test_api_creations_and_updates_fire_the_rule(org: SalesforceSandbox, sf: Salesforce,
                                                 listener: Listener) -> None:
    org.add_outbound_message("Lead", endpoint(listener), ("Status",))
    created = sf.Lead.create({"LastName": "Api", "Company": "Acme", "Status": NEW})["id"]
    assert org.outbound.wait_idle()
    sf.Lead.update(created, {"Status": WORKING})
    assert org.outbound.wait_idle()
    assert listener.ids() == [created, created]
    assert len(org.outbound.messages()) == 2  # the create is one notification, not a create and an edit


def test_an_api_insert_is_seen_by_created_rules_with_its_fields(org: SalesforceSandbox, sf: Salesforce,
                                                                listener: Listener) -> None:
    org.add_outbound_message("Lead", endpoint(listener), ("Status",), when="created_or_edited_to_meet",
                             criteria=lambda r: r["Status"] == WORKING)
    sf.Lead.create({"LastName": "Cold", "Company": "Acme", "Status": NEW})
    hot = sf.Lead.create({"LastName": "Hot", "Company": "Acme", "Status": WORKING})["id"]
    assert org.outbound.wait_idle()
    assert listener.ids() == [hot]


def test_created_only_rules_ignore_edits_and_no_rule_fires_on_delete(org: SalesforceSandbox,
                                                                     listener: Listener) -> None:
    org.add_outbound_message("Lead", endpoint(listener), when="created")
    (lead,) = seed_leads(org, 1)
    org.edit_as_person("Lead", lead, Status=WORKING)
    org.delete("Lead", lead)
    assert org.outbound.wait_idle()
    assert listener.ids() == [lead]


def test_deletions_send_nothing_and_a_merge_sends_its_winner(org: SalesforceSandbox, listener: Listener) -> None:
    winner, loser, gone = seed_leads(org, 3)
    org.add_outbound_message("Lead", endpoint(listener))
    org.delete("Lead", gone)
    org.merge("Lead", winner, loser)
    assert org.outbound.wait_idle()
    assert listener.ids() == [winner]


def test_rule_criteria_subsequently_met(org: SalesforceSandbox, listener: Listener) -> None:
    (lead,) = seed_leads(org, 1)
    org.add_outbound_message("Lead", endpoint(listener), ("Status",), when="created_or_edited_to_meet",
                             criteria=lambda r: r["Status"] == WORKING)
    org.edit_as_person("Lead", lead, Company="Other")  # does not meet
    org.edit_as_person("Lead", lead, Status=WORKING)  # now meets: fires
    assert org.outbound.wait_idle()
    org.edit_as_person("Lead", lead, Company="Again")  # still meets: does not fire again
    assert org.outbound.wait_idle()
    assert listener.ids() == [lead]


def test_unsynced_objects_are_acknowledged_too(org: SalesforceSandbox, listener: Listener) -> None:
    (account,) = org.seed("Account", [{"Name": "Acme"}])
    org.add_outbound_message("Account", endpoint(listener), ("Name",))
    org.edit_as_person("Account", account, Name="Acme Inc")
    assert org.outbound.wait_idle()
    (sent,) = org.outbound.messages()
    assert sent.acked and listener.notices == []


def test_batches_of_100_with_the_latest_data(org: SalesforceSandbox, listener: Listener) -> None:
    leads = seed_leads(org, 150)
    org.add_outbound_message("Lead", endpoint(listener), ("Status",))
    org.outbound.pause()
    for lead in leads:
        org.edit_as_person("Lead", lead, Status=WORKING)
    org.edit_as_person("Lead", leads[0], Status="Closed - Not Converted")  # after queuing: the latest is sent
    org.outbound.resume()
    assert org.outbound.wait_idle()
    sizes = [len(m.record_ids) for m in org.outbound.messages()]
    assert sizes == [100, 50]
    assert sorted(listener.ids()) == sorted(leads)
    first = org.outbound.messages()[0].body.decode()
    assert first.count("<Notification>") == 100 and first.count(WORKING) == 99
    assert "Closed - Not Converted" in first


def test_a_message_not_acknowledged_is_retried_with_the_same_notification_ids(
        org: SalesforceSandbox, listener: Listener) -> None:
    (lead,) = seed_leads(org, 1)
    org.add_outbound_message("Lead", endpoint(listener))
    not_ack = ACK.replace(b"<Ack>true</Ack>", b"<Ack>false</Ack>")
    listener.failures += [(500, b"<html>oops</html>"), (200, not_ack), (200, b"OK")]
    org.edit_as_person("Lead", lead, Status=WORKING)
    assert org.outbound.wait_idle()
    sent = org.outbound.messages()
    assert [(m.status, m.acked) for m in sent] == [(500, False), (200, False), (200, False), (200, True)]
    assert len({m.notification_ids for m in sent}) == 1
    assert [m.retry_in for m in sent] == [0.05, 0.1, 0.2, None]  # growing intervals (retry_first 0.05)
    assert all(b.at - a.at >= a.retry_in for a, b in itertools.pairwise(sent) if a.retry_in)
    assert listener.ids() == [lead]


def test_a_refused_message_is_retried_until_too_old_then_dropped(org: SalesforceSandbox) -> None:
    hooks = SalesforceWebhooks(organization_id="00D000000000001")  # the receiver of another org
    other = Listener(SalesforceReceiver("sfdc", hooks, ("Lead",)))
    try:
        (lead,) = seed_leads(org, 1)
        org.outbound.give_up_after, org.outbound.retry_max = 1.0, 0.1
        org.add_outbound_message("Lead", other.url)
        org.edit_as_person("Lead", lead, Status=WORKING)
        assert org.outbound.wait_idle()
        sent = org.outbound.messages()
        assert len(sent) >= 2 and {m.status for m in sent} == {403}
        assert [rid for _, rid in org.outbound.dropped] == [lead]
    finally:
        other.close()


def test_a_recorded_message_replays_and_tampering_is_refused(org: SalesforceSandbox, listener: Listener) -> None:
    (lead,) = seed_leads(org, 1)
    org.add_outbound_message("Lead", endpoint(listener))
    org.edit_as_person("Lead", lead, Status=WORKING)
    assert org.outbound.wait_idle()
    (sent,) = org.outbound.messages()

    replay = requests.post(sent.url, data=sent.body, headers=sent.headers, timeout=5)
    assert replay.status_code == 200 and replay.content == ACK  # at-least-once: a repeat is harmless
    forged = sent.body.replace(org.org_id.encode(), b"00D000000000001AAA")
    assert requests.post(sent.url, data=forged, headers=sent.headers, timeout=5).status_code in (400, 403)
    no_token = requests.post(listener.url, data=sent.body, headers=sent.headers, timeout=5)
    assert no_token.status_code == 401
    with pytest.raises(Refused) as caught:
        listener.receiver.receive(WebhookRequest("POST", sent.url, {}, sent.body.replace(
            org.org_id[:15].encode(), b"00D000000000002"), datetime.now(UTC)))
    assert caught.value.reason in (RefusalReason.ORGANIZATION, RefusalReason.MALFORMED)


def test_the_api_users_own_writes_can_be_muted(org: SalesforceSandbox, sf: Salesforce,
                                               listener: Listener) -> None:
    """Salesforce's advice against loops: the integration user's profile lacks "Send Outbound Messages"."""
    (lead,) = seed_leads(org, 1)
    org.add_outbound_message("Lead", endpoint(listener))
    org.mute_outbound_messages()
    sf.Lead.update(lead, {"Status": WORKING})
    org.edit_as_person("Lead", lead, Status=NEW)
    assert org.outbound.wait_idle()
    assert listener.ids() == [lead]
    assert len(org.outbound.messages()) == 1


def test_https_endpoints_are_called_over_tls_and_their_certificate_checked(
        org: SalesforceSandbox, tmp_path: Any) -> None:
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    hooks = SalesforceWebhooks(organization_id=org.org_id)
    secure = Listener(SalesforceReceiver("sfdc", hooks, ("Lead",)), tls=tls)
    try:
        (lead,) = seed_leads(org, 1)
        org.add_outbound_message("Lead", secure.url)
        org.outbound.give_up_after = 0.3
        org.edit_as_person("Lead", lead, Status=WORKING)  # our CA is not trusted yet: no delivery
        assert org.outbound.wait_idle()
        assert secure.requests == [] and [rid for _, rid in org.outbound.dropped] == [lead]

        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        org.outbound.verify = str(tmp_path / "ca.pem")
        org.edit_as_person("Lead", lead, Status=NEW)
        assert org.outbound.wait_idle()
        assert secure.ids() == [lead] and org.outbound.messages()[-1].acked
    finally:
        secure.close()


def test_endpoints_follow_salesforces_port_rules(org: SalesforceSandbox) -> None:
    for bad in ("ftp://example.com/x", "https://example.com:80/x", "http://example.com:443/x",
                "http://example.com:8/x"):
        with pytest.raises(ValueError):
            org.add_outbound_message("Lead", bad)
    with pytest.raises(ValueError, match="no such field"):
        org.add_outbound_message("Lead", "https://example.com/x", ("Nope",))


def test_stopping_the_sandbox_stops_the_sender_promptly() -> None:
    """Even with a POST in flight to an endpoint that never answers."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections (backlog), never answers
    sandbox = SalesforceSandbox()
    sandbox.start()
    try:
        (lead,) = seed_leads(sandbox, 1)
        sandbox.add_outbound_message("Lead", f"http://127.0.0.1:{silent.getsockname()[1]}/webhooks/sfdc")
        sandbox.edit_as_person("Lead", lead, Status=WORKING)
        deadline = time.monotonic() + 2
        while sandbox.outbound.pending() and not sandbox.outbound.in_flight() and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
    finally:
        sandbox.stop()
        silent.close()
    assert time.monotonic() - started < 2.0
