"""A real loopback HTTP endpoint for webhook tests: builds the `WebhookRequest` as a server sees it and
hands it to a receiver, or answers with scripted statuses (a failing or slow target) first."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from connector.webhooks.base import Notice, Receiver, Refused, WebhookRequest


@dataclass
class Catcher:
    """What a loopback endpoint saw and answered."""

    receiver: Receiver | None = None
    scripted: deque[int | float] = field(default_factory=deque)  # an int: answer it; a float: hang so long
    requests: list[WebhookRequest] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    refusals: list[Refused] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: WebhookRequest) -> int:
        with self.lock:
            self.requests.append(request)
            step = self.scripted.popleft() if self.scripted else None
        if isinstance(step, float):
            time.sleep(step)
            return 200
        if step is not None:
            return step
        if self.receiver is None:
            return 200
        try:
            notices, reply = self.receiver.receive(request)
        except Refused as refused:
            with self.lock:
                self.refusals.append(refused)
            return refused.status
        with self.lock:
            self.notices.extend(notices)
        return reply.status


@contextmanager
def catching(receiver: Receiver | None = None, path: str = "/webhooks/hubspot") -> Iterator[Catcher]:
    catcher = Catcher(receiver)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            host, port = self.server.server_address[:2]
            request = WebhookRequest(
                method=self.command,
                url=f"http://{host}:{port}{self.path}",
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                received_at=datetime.now(UTC),
            )
            status = catcher.answer(request)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    catcher.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield catcher
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
