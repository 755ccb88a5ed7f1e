"""The Sync Health page of a running `connector run`, loaded in headless Chromium over the sandbox CRMs.

What a RevOps user sees: each object's state in the CRM's words, a dead letter with the CRM's message and
the command to retry it, a quarantined status with the mapping line to add, the funnel with the numbers of
`report funnel`, and a record lookup. A CRM value written as a script stays text; the page needs the token.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.salesforce import SalesforceSandbox
from tests.daemon_support import (
    NEW_LEAD,
    WORKING_LEAD,
    Procs,
    StoreReader,
    wait_for,
    write_config,
)

XSS_STATUS = '<script>alert("owned")</script><img src=x onerror=alert(2)>'
CRM_MESSAGE = "Company size must be set before a lead is worked <b>now</b>"
TOKEN = "health-page-token-0123456789"
SCREENSHOT = os.environ.get("CONNECTOR_SCREENSHOT")  # set to refresh docs/health-page.png


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def crms() -> Iterator[tuple[SalesforceSandbox, HubSpotSandbox]]:
    sf, hs = SalesforceSandbox(), HubSpotSandbox()
    sf.start()
    hs.start()
    try:
        yield sf, hs
    finally:
        sf.stop()
        hs.stop()


@pytest.fixture
def children(tmp_path: Path, crms: Any) -> Iterator[Procs]:
    folder = tmp_path / "logs"
    folder.mkdir()
    started = Procs(folder)
    try:
        yield started
    finally:
        started.close()


def daemon_config(folder: Path, sf: SalesforceSandbox, hs: HubSpotSandbox, server: dict[str, str]) -> Path:
    """Salesforce Lead healthy; HubSpot contacts and companies both failing on a revoked token."""
    path = write_config(folder, f"sqlite:///{folder}/connector.db", sf=sf, hs=hs)
    config = json.loads(path.read_text(encoding="utf-8"))
    company = resources.files("connector") / "examples" / "mappings" / "hubspot-company.yaml"
    (folder / "mappings" / "hubspot-company.yaml").write_text(company.read_text(encoding="utf-8"), encoding="utf-8")
    hubspot = config["sources"]["hubspot"]
    hubspot["auth"]["access_token"] = "revoked-token"
    hubspot["objects"]["companies"] = {"status_field": "company_stage", "mapping": "mappings/hubspot-company.yaml"}
    config["server"] = server
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def test_the_health_page_shows_what_a_user_needs_and_keeps_crm_values_as_text(
    tmp_path: Path,
    crms: tuple[SalesforceSandbox, HubSpotSandbox],
    children: Procs,
    browser: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sf, hs = crms
    sf.add_picklist_value("Lead", "Status", XSS_STATUS)
    rows = [{"LastName": f"Lead{i}", "Company": "Acme", "Status": NEW_LEAD} for i in range(4)]
    rows += [{"LastName": "Busy", "Company": "Acme", "Status": WORKING_LEAD}]
    rows += [{"LastName": "Odd", "Company": "Acme", "Status": XSS_STATUS}]
    ids = sf.seed("Lead", rows)
    replied, odd = ids[0], ids[-1]
    monkeypatch.setenv("WEB_TEST_TOKEN", TOKEN)
    base = f"http://127.0.0.1:{free_port()}"
    config = daemon_config(tmp_path, sf, hs, {"token": "${WEB_TEST_TOKEN}"})
    store = StoreReader(f"sqlite:///{tmp_path}/connector.db")
    daemon = children.start("run", "run", "--config", str(config), "--listen", base.removeprefix("http://"))
    try:
        wait_for(lambda: len(store.records("sfdc", "Lead")) == len(ids), 60, "the first sync of sfdc Lead")
        # A reply moves the lead New -> Working; Salesforce refuses the write for good: a dead letter.
        sf.fail_writes([replied], "FIELD_CUSTOM_VALIDATION_EXCEPTION", CRM_MESSAGE, times=100)
        sf.seed("Task", [{"WhoId": replied, "Type": "Email", "Subject": "RE: pricing", "Status": "Completed"}])
        wait_for(lambda: store.outbox("sfdc", "Lead").get("dead"), 60, "the dead letter")
        wait_for(
            lambda: store.scalar("SELECT count(*) FROM source_health WHERE last_outcome = 'failed'") == 2,
            60,
            "both HubSpot objects failing",
        )
        report = children.run("report", "report", "funnel", "--format", "json", "--config", str(config))
        funnel = json.loads(report.stdout())["objects"]
        see_the_page(browser, base, sf, hs, replied, odd, funnel)
    except BaseException:
        print(children.diagnostics())
        raise
    finally:
        store.close()
    assert daemon.running(), daemon.diagnostics()


def see_the_page(
    browser: Any,
    base: str,
    sf: SalesforceSandbox,
    hs: HubSpotSandbox,
    replied: str,
    odd: str,
    funnel: list[dict[str, Any]],
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        # Without the token: refused, and so are the JSON endpoints.
        assert page.goto(f"{base}/").status == 401
        assert page.goto(f"{base}/healthz").status == 401
        assert page.goto(f"{base}/?token=not-the-token-at-all").status == 401
        # With it once in the address: a cookie from then on, and the token leaves the address bar.
        response = page.goto(f"{base}/?token={TOKEN}")
        assert response.status == 200
        assert "token" not in page.url
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp

        summary = {
            tuple(row.locator("td").all_inner_texts()[:3]) for row in page.locator("table.summary tbody tr").all()
        }
        assert ("sfdc", "Lead", "OK") in {(s, o, st.upper()) for s, o, st in summary}
        states = {(s, o): st.lower() for s, o, st in summary}
        assert states[("hubspot", "contacts")] == "failing"
        assert states[("hubspot", "companies")] == "failing"
        contacts = page.locator("#obj-hubspot-contacts")
        assert "Authentication credentials not found" in contacts.locator(".words").inner_text()

        lead = page.locator("#obj-sfdc-Lead")
        dead = lead.locator("table.dead tbody tr").first.locator("td").all_inner_texts()
        assert dead[0] == replied and dead[1] == WORKING_LEAD, dead
        assert CRM_MESSAGE in dead[2], dead  # the CRM's words, markup and all, as text
        assert f"connector outbox retry sfdc Lead --ids {replied}" in lead.inner_text()
        assert "connector outbox retry sfdc Lead --dead" in lead.inner_text()

        # The unmapped status is shown as the text it is, with the line to add; no script ran.
        quarantine = lead.locator("ul.quarantine li").first
        assert quarantine.locator(".status").inner_text() == XSS_STATUS
        assert f"{json.dumps(XSS_STATUS)}: <Stage>" in quarantine.inner_text()
        assert page.locator("script").count() == 0 and page.locator("img").count() == 0

        # The funnel: the numbers `report funnel` prints.
        bars = lead.locator("svg.funnel g.stage")
        drawn = {g.locator(".label").text_content(): int(g.locator(".count").text_content()) for g in bars.all()}
        reported = next(o for o in funnel if o["source"] == "sfdc" and o["object"] == "Lead")["stages"]
        assert drawn == {s["stage"]: s["count"] for s in reported}
        assert drawn["Working"] == 2 and drawn["New"] == 3

        moves = lead.locator("table.moves tbody tr").first.inner_text()
        assert replied in moves and "replied" in moves  # newest first: the trigger's move

        secrets = [TOKEN, sf.client_secret, hs.token, "revoked-token"]
        assert not [s for s in secrets if s in page.content()]
        if SCREENSHOT:
            page.screenshot(path=SCREENSHOT, full_page=True)

        # The record lookup: what `explain` says.
        page.select_option("form.lookup select", "sfdc/Lead")
        page.fill("form.lookup input[name=id]", replied)
        page.click("form.lookup button")
        record = page.locator("section.record")
        assert record.locator("dd.stage").inner_text() == "Working (in_progress)"
        assert "email_replied, trigger replied" in record.locator("table.history").inner_text()
        assert CRM_MESSAGE in record.locator("table.writebacks").inner_text()
        page.fill("form.lookup input[name=id]", odd)
        page.click("form.lookup button")
        assert XSS_STATUS in page.locator("section.record").inner_text()
        page.fill("form.lookup input[name=id]", "00Q000000000404")
        page.click("form.lookup button")
        assert "no record '00Q000000000404' in sfdc Lead" in page.locator(".problem").inner_text()

        health = page.goto(f"{base}/healthz")
        assert health.status == 503
        problems = json.loads(page.locator("body").inner_text())["problems"]
        assert sorted(p.split(":")[0] for p in problems) == ["hubspot companies", "hubspot contacts"]
        assert dialogs == []
    finally:
        context.close()


@pytest.mark.parametrize("where", ["config", "--listen"])
def test_a_daemon_listening_beyond_loopback_without_a_token_refuses_to_start(
    tmp_path: Path, crms: tuple[SalesforceSandbox, HubSpotSandbox], children: Procs, where: str
) -> None:
    sf, hs = crms
    listen = f"0.0.0.0:{free_port()}"
    if where == "config":
        config = daemon_config(tmp_path, sf, hs, {"listen": listen})
        daemon = children.run("run", "run", "--config", str(config), timeout=60)
        expected = f"{config}:"
    else:
        config = daemon_config(tmp_path, sf, hs, {"listen": "127.0.0.1:9108"})
        daemon = children.run("run", "run", "--config", str(config), "--listen", listen, timeout=60)
        expected = f"error: --listen: listen {listen} is reachable from other machines"
    assert daemon.popen.returncode == 2, daemon.diagnostics()
    assert expected in daemon.stderr() and "server.token" in daemon.stderr(), daemon.stderr()
    assert "Traceback" not in daemon.stderr()
