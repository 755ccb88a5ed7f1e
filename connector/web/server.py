"""The daemon's HTTP server: the health page at /, /record, /healthz and /metrics, behind the token if one is set.

Every answer carries a Content-Security-Policy that allows nothing inline and nothing from elsewhere, so a
CRM value that slipped past escaping still could not run. The site is read-only: GET and HEAD only; the
one POST route is the CRMs' webhooks, which only ask for records to be read sooner.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from connector.config import Server
from connector.engine import Engine
from connector.errors import ConnectorError, UsageError
from connector.explain import explain
from connector.metrics import Metrics
from connector.web.address import is_loopback, split_listen
from connector.web.page import render_page
from connector.web.record import render_record
from connector.web.state import healthz
from connector.web.view import FunnelCache, page_data
from connector.webhooks.base import MAX_BODY, RefusalReason, Refused, WebhookRequest
from connector.webhooks.intake import Intake

log = logging.getLogger("connector.web")

COOKIE = "connector_token"
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "[::1]"}
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request
PAGE_BUILDS = 2  # pages built at once; each reads the store, and the sync needs the cores
PAGE_WAIT = 20.0  # seconds a request waits for its turn before a 503
WEBHOOKS = "/webhooks/"


@dataclass
class Answer:
    status: int
    kind: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _text(status: int, message: str, **headers: str) -> Answer:
    return Answer(status, TEXT, (message + "\n").encode(), headers)


class HealthSite:
    """What each GET answers, apart from the HTTP plumbing."""

    def __init__(self, engine: Engine, metrics: Metrics, clock: Callable[[], datetime], token: str | None) -> None:
        self.engine = engine
        self.metrics = metrics
        self.clock = clock
        self._token = token.encode() if token else None
        self._css = (resources.files("connector.web") / "static" / "health.css").read_bytes()
        self.funnels = FunnelCache()
        self._builds = threading.BoundedSemaphore(PAGE_BUILDS)

    def answer(self, target: str, headers: Any) -> Answer:
        url = urlsplit(target)
        query = parse_qs(url.query)
        refused = self._check_token(url.path, query, headers)
        if refused is not None:
            return refused
        if url.path == "/static/health.css":
            return Answer(200, "text/css; charset=utf-8", self._css, {"Cache-Control": "max-age=300"})
        # Health checks and scrapes never queue behind pages: they have short timeouts of their own.
        page = url.path in ("/", "/record")
        if page and not self._builds.acquire(timeout=PAGE_WAIT):
            return _text(503, "busy: too many pages are being built; try again", **{"Retry-After": "5"})
        try:
            return self._route(url.path, query)
        except Exception:  # the page must keep serving; the details go to the (scrubbed) log only
            log.exception("the health page failed on %s", url.path)
            return _text(500, "the health page could not be built; the daemon's log says why")
        finally:
            if page:
                self._builds.release()

    def _check_token(self, path: str, query: dict[str, list[str]], headers: Any) -> Answer | None:
        if self._token is None:
            # Without a token only loopback is served; a page elsewhere that rebinds its name to 127.0.0.1
            # must not read it, so the browser has to have asked for a loopback name.
            if _host_name(str(headers.get("Host") or "localhost")) not in LOOPBACK_NAMES:
                return _text(403, "this page answers to a loopback address only (127.0.0.1, localhost, [::1])")
            return None
        given = query.get("token", [None])[0]
        if given is not None:
            if not self._matches(given):
                return _text(401, "wrong token", **{"WWW-Authenticate": "Bearer"})
            # Swap the token in the address bar for a cookie, so it stays out of history and bookmarks.
            rest = urlencode([(k, v) for k, values in query.items() if k != "token" for v in values])
            cookie = f"{COOKIE}={quote(given, safe='')}; HttpOnly; SameSite=Strict; Path=/"
            here = "/" + path.lstrip("/")  # never `//elsewhere`: that would send the browser off-site
            return Answer(303, TEXT, b"", {"Location": here + (f"?{rest}" if rest else ""), "Set-Cookie": cookie})
        bearer = str(headers.get("Authorization") or "")
        if bearer.startswith("Bearer ") and self._matches(bearer.removeprefix("Bearer ").strip()):
            return None
        if self._matches(_cookie(str(headers.get("Cookie") or ""), COOKIE)):
            return None
        return _text(
            401,
            "this page needs the server token: send 'Authorization: Bearer TOKEN', or open /?token=TOKEN once",
            **{"WWW-Authenticate": "Bearer"},
        )

    def _matches(self, given: str | None) -> bool:
        return given is not None and self._token is not None and hmac.compare_digest(given.encode(), self._token)

    def _route(self, path: str, query: dict[str, list[str]]) -> Answer:
        if path == "/":
            now = self.clock()
            views = page_data(self.engine, now, self.funnels)
            return Answer(200, HTML, render_page(views, now, self.funnels.computed_at).encode())
        if path == "/record":
            return self._record(query)
        if path == "/healthz":
            ok, detail = healthz(self.engine, self.clock())
            return Answer(200 if ok else 503, "application/json", json.dumps(detail).encode())
        if path == "/metrics":
            return Answer(200, CONTENT_TYPE_LATEST, self.metrics.render())
        return _text(404, "not found")

    def _record(self, query: dict[str, list[str]]) -> Answer:
        objects = [(o.source, o.name) for o in self.engine.objects()]
        wanted = query.get("object", [""])[0]
        record_id = query.get("id", [""])[0].strip()
        chosen = next((o for o in objects if f"{o[0]}/{o[1]}" == wanted), None)
        if not record_id:
            return Answer(200, HTML, render_record(objects, chosen, "", None, None).encode())
        if chosen is None:
            page = render_record(objects, None, record_id, None, f"no object {wanted!r} in the config")
            return Answer(404, HTML, page.encode())
        try:
            data = explain(self.engine, self.engine.synced(*chosen), record_id)
        except UsageError as exc:
            return Answer(404, HTML, render_record(objects, chosen, record_id, None, str(exc)).encode())
        return Answer(200, HTML, render_record(objects, chosen, record_id, data, None).encode())


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rpartition(":")[0] if ":" in host else host


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return unquote(value)
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve(
    settings: Server,
    metrics: Metrics,
    engine: Engine,
    clock: Callable[[], datetime],
    intake: Intake | None = None,
) -> ThreadingHTTPServer:
    """Serve the health page, /healthz (503 when an object is failing or paused) and /metrics in a thread;
    and the CRMs' webhooks at /webhooks/<source> too, unless `server.webhooks` gives them an address of
    their own (`serve_webhooks`).

    The webhook route needs no server token: each request proves itself to its receiver (a signature,
    an organization id), and all it can do is make us read records from the CRM a little sooner.
    """
    host, _ = split_listen(settings.listen)
    token = settings.token.get_secret_value() if settings.token is not None else None
    if token is None and not is_loopback(host):  # the config refuses this too; never serve it regardless
        raise UsageError(f"server.listen {settings.listen} is beyond loopback and server.token is not set")
    site = HealthSite(engine, metrics, clock, token)
    here = intake if settings.webhooks is None else None
    return _listen(settings.listen, "server.listen", _handler(site, here))


def serve_webhooks(address: str, intake: Intake) -> ThreadingHTTPServer:
    """`server.webhooks`: an address that answers /webhooks/<source> and nothing else."""
    return _listen(address, "server.webhooks", _handler(None, intake))


def _listen(address: str, key: str, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    host, port = split_listen(address)
    kind = _Server6 if ":" in host else _Server
    try:
        server = kind((host, port), handler)
    except OSError as exc:
        raise ServeError(f"cannot listen on {address} ({key}): {exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, name=f"http {key}", daemon=True).start()
    return server


def _handler(site: HealthSite | None, intake: Intake | None) -> type[BaseHTTPRequestHandler]:
    """A request handler for the health site, the webhooks, or both (None: not served here)."""

    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT
        server_version = "connector"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            return  # a request line may carry ?token=: never logged

        def _page(self) -> Answer:
            if site is None:
                return _text(404, "not found: this address serves /webhooks/<source> only")
            return site.answer(self.path, self.headers)

        def do_GET(self) -> None:
            self._send(self._page(), body=True)

        def do_HEAD(self) -> None:
            self._send(self._page(), body=False)

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if intake is None or not path.startswith(WEBHOOKS):
                self._send(_text(405 if site is not None else 404, "only webhooks are POSTed here"), body=True)
                return
            self._send(self._webhook(unquote(path.removeprefix(WEBHOOKS)).strip("/")), body=True)

        def _webhook(self, source: str) -> Answer:
            assert intake is not None
            try:
                length = int(self.headers.get("Content-Length") or "")
            except ValueError:
                self.close_connection = True
                return _text(411, "a webhook must say its Content-Length")
            if length > MAX_BODY or length < 0:
                self.close_connection = True  # the body is not read: the connection cannot be reused
                too_large = Refused(413, RefusalReason.TOO_LARGE, f"a webhook body is at most {MAX_BODY} bytes")
                reply = intake.refuse(source, too_large)
            else:
                body = self.rfile.read(length)
                host = str(self.headers.get("Host") or "localhost")
                request = WebhookRequest(
                    "POST",
                    f"http://{host}{self.path}",
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    intake.clock(),
                )
                reply = intake.handle(source, request)
            return Answer(reply.status, reply.content_type, reply.body)

        def _send(self, answer: Answer, *, body: bool) -> None:
            self.send_response(answer.status)
            for name, value in {**SECURITY_HEADERS, **answer.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Type", answer.kind)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if body:
                self.wfile.write(answer.body)

    return Handler


class ServeError(ConnectorError):
    """The address is taken or not this machine's (exit 2: the config's to fix)."""
