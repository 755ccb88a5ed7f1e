"""`connector sandbox`: both sandbox CRMs on loopback, and a folder whose config.yaml points at them.

The folder remembers what a config in it relies on, so that it works again after a restart: the
ports (`sandbox.json`) and the Salesforce sandbox's CA (`sandbox-ca.pem`, with its key beside it),
since the config's `ca_bundle` names that file. `connector demo --keep` leaves such a folder too.
The sandboxes hold their records in memory: every start seeds a fresh set.
"""

from __future__ import annotations

import json
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from connector.errors import UsageError
from connector.sandbox.hubspot import HubSpotSandbox
from connector.sandbox.salesforce import SalesforceSandbox

STATE = "sandbox.json"
CA_CERT = "sandbox-ca.pem"
CA_KEY = "sandbox-ca-key.pem"
LISTEN = "127.0.0.1:9108"  # where `connector run` takes the sandboxes' webhooks (the config's server.listen)
APP_SECRET = "sandbox-app-secret"  # the sandbox HubSpot app's secret: it signs the webhooks it sends
OURS = ("Written by `connector sandbox`", "Written by `connector demo`")  # the header of a config we wrote
LEADS = 40
CONTACTS = 40
LEAD_STATUSES = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"]
CONTACT_STATUSES = ["NEW", "OPEN", "IN_PROGRESS", "ATTEMPTED_TO_CONTACT", "CONNECTED", "UNQUALIFIED"]


@dataclass
class Sandboxes:
    """Both sandboxes, started, and the folder they belong to."""

    folder: Path
    salesforce: SalesforceSandbox
    hubspot: HubSpotSandbox

    @property
    def ca_bundle(self) -> Path:
        return self.folder / CA_CERT

    def stop(self) -> None:
        self.salesforce.stop()
        self.hubspot.stop()


def start_sandboxes(folder: Path, *, hubspot_rate_limit: int = 100) -> Sandboxes:
    """Start both sandboxes on the ports recorded in `folder` (free ones the first time) with its CA."""
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    state_file = folder / STATE
    ports = _ports(state_file)
    cert, key = folder / CA_CERT, folder / CA_KEY
    ca = trustme.CA.from_pem(cert.read_bytes(), key.read_bytes()) if cert.is_file() and key.is_file() else None
    sf = SalesforceSandbox(seed=1, ca=ca)
    hs = HubSpotSandbox(seed=1, rate_limit=hubspot_rate_limit, rate_window=10.0)
    started: list[SalesforceSandbox | HubSpotSandbox] = []
    try:
        for crm, name in ((sf, "salesforce"), (hs, "hubspot")):
            port = ports.get(name, 0)
            try:
                crm.start(port)
            except OSError as exc:
                raise UsageError(
                    f"cannot listen on 127.0.0.1:{port}, the {name} port recorded in {state_file}: {exc.strerror}; "
                    f"stop what uses it, or delete {state_file} (the config will then be rewritten with new ports)"
                ) from None
            started.append(crm)
    except BaseException:
        for crm in started:
            crm.stop()
        raise
    if ca is None:
        key.write_bytes(sf._ca.private_key_pem.bytes())
        key.chmod(0o600)
        sf._ca.cert_pem.write_to_path(str(cert))
    state_file.write_text(json.dumps({"salesforce": sf.server.port, "hubspot": hs.server.port}) + "\n")
    return Sandboxes(folder, sf, hs)


def _ports(state_file: Path) -> dict[str, int]:
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}


def seed(crms: Sandboxes, rng: random.Random | None = None) -> tuple[list[str], list[str]]:
    """A few leads and contacts in every status, some with activity: enough to try each command on."""
    rng = rng or random.Random(7)
    leads = crms.salesforce.seed(
        "Lead",
        [
            {"FirstName": f"Lead{i}", "LastName": "Sandbox", "Company": f"Acme {i}",
             "Status": LEAD_STATUSES[i % len(LEAD_STATUSES)] if i % 3 else LEAD_STATUSES[0]}
            for i in range(LEADS)
        ],
    )
    contacts = crms.hubspot.seed(
        "contacts",
        [
            {"email": f"c{i}@example.com", "firstname": f"Contact{i}", "hs_lead_status": rng.choice(CONTACT_STATUSES)}
            for i in range(CONTACTS)
        ],
    )
    crms.salesforce.seed(
        "Task", [{"WhoId": rid, "Type": "Email", "Subject": "RE: pricing", "Status": "Completed"} for rid in leads[:3]]
    )
    when = datetime.now(UTC) - timedelta(days=1)
    for cid in contacts[:3]:
        crms.hubspot.add_engagement("emails", cid, {"hs_email_direction": "INCOMING_EMAIL"}, at=when)
    return leads, contacts


def write_config(
    folder: Path, crms: Sandboxes, *, header: str = "Written by `connector sandbox`.", ca_bundle: str = CA_CERT
) -> Path:
    """config.yaml and the example mappings, pointing at `crms`; paths relative to the folder."""
    from importlib import resources

    mappings = folder / "mappings"
    mappings.mkdir(exist_ok=True)
    for name in ("salesforce-lead.yaml", "hubspot-contact.yaml"):
        target = mappings / name
        if not target.exists():
            source = resources.files("connector") / "examples" / "mappings" / name
            target.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    sf, hs = crms.salesforce, crms.hubspot
    config = folder / "config.yaml"
    config.write_text(
        f"""# {header} Point it at a real org by changing the URLs and auth.
database: sqlite:///connector.db
sources:
  sfdc:
    type: salesforce
    instance_url: {sf.url}
    auth:
      method: client_credentials
      login_url: {sf.url}
      client_id: {sf.client_id}
      client_secret: {sf.client_secret}
    ca_bundle: {ca_bundle}
    webhooks: {{organization_id: {sf.org_id}}}
    objects:
      Lead: {{status_field: Status, mapping: mappings/salesforce-lead.yaml}}
  hubspot:
    type: hubspot
    base_url: {hs.url}
    auth: {{method: token, access_token: {hs.token}}}
    webhooks: {{app_secret: {APP_SECRET}}}
    objects:
      contacts: {{status_field: hs_lead_status, mapping: mappings/hubspot-contact.yaml}}
server:
  listen: {LISTEN}   # `connector run` serves the health page here, and the sandboxes' webhooks
""",
        encoding="utf-8",
    )
    return config


def _config_matches(config: Path, crms: Sandboxes) -> bool:
    try:
        text = config.read_text(encoding="utf-8")
    except OSError:
        return False
    return crms.salesforce.url in text and crms.hubspot.url in text and crms.salesforce.org_id in text


def subscribe(crms: Sandboxes) -> None:
    """Both sandboxes send their webhooks to `connector run` on LISTEN, as the CRMs' own settings would."""
    base = f"http://{LISTEN}/webhooks"
    crms.salesforce.add_outbound_message("Lead", f"{base}/sfdc", ("Id", "Status"))
    crms.hubspot.subscribe_webhooks(
        f"{base}/hubspot",
        APP_SECRET,
        [("contact.propertyChange", "hs_lead_status"), ("contact.creation", None), ("contact.deletion", None),
         ("contact.merge", None)],
    )


def serve(folder: Path, echo: Callable[[str], None], stop: threading.Event | None = None) -> int:
    """Serve until SIGINT or SIGTERM (or `stop` is set); 0 on a clean stop."""
    stop = stop or threading.Event()
    config = folder / "config.yaml"
    if config.is_file() and not any(m in config.read_text(encoding="utf-8", errors="replace") for m in OURS):
        # Someone's own config: never overwrite it with one that points at the sandboxes.
        raise UsageError(f"{config} exists and was not written by `connector sandbox` or `connector demo`; "
                         "give another --dir")
    crms = start_sandboxes(folder)
    try:
        kept = _config_matches(config, crms)
        if not kept:
            write_config(folder, crms)
        leads, contacts = seed(crms)
        subscribe(crms)
        _install_stop_handlers(stop)
        sf, hs = crms.salesforce, crms.hubspot
        echo(f"Sandbox Salesforce: {sf.url} (TLS; its CA is {crms.ca_bundle}), client id {sf.client_id}")
        echo(f"Sandbox HubSpot:    {hs.url} (private app token {hs.token})")
        echo(f"Seeded {len(leads)} leads and {len(contacts)} contacts, in memory: reseeded at each start.")
        echo(f"{'Kept' if kept else 'Wrote'} {config}")
        echo(f"Both send webhooks to http://{LISTEN}/webhooks/... : with `connector run` going, an edit in a")
        echo("sandbox reaches the store within a second instead of at the next poll.")
        c = f"--config {config}"
        echo("Try, in another terminal:")
        for command in (
            f"connector validate --live {c}",
            f"connector sync --once {c}",
            f"connector status {c}",
            f"connector explain sfdc Lead {leads[0]} {c}",
            f"connector stage set sfdc Lead {leads[1]} Converted {c}",
            f"connector outbox {c}",
            f"connector report funnel {c}",
            f"connector mapping init hubspot contacts --field lifecyclestage {c}",
        ):
            echo(f"  {command}")
        echo("Serving until Ctrl-C (or SIGTERM).")
        while not stop.wait(0.2):
            pass
        echo("Stopped.")
        return 0
    finally:
        crms.stop()


def _install_stop_handlers(stop: threading.Event) -> None:
    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)
