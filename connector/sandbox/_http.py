"""A threaded loopback HTTP(S) server shared by the CRM stand-ins.

Each stand-in supplies one `handle(Request) -> Response` function; this module owns the socket, TLS,
per-call latency, injected faults and the call log that tests and benchmarks read.
"""

from __future__ import annotations

import json
import random
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # keys lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    records: int = 0  # how many records the call read or wrote, for the call log


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    status: int
    records: int
    at: float


class Fault:
    """What an injected fault does instead of the real handler."""

    DROP = "drop"  # close the connection without an answer


class FaultPlan:
    """Queued one-shot faults, plus a random transient failure rate. Thread-safe."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Response | str] = deque()
        self._rng = random.Random(seed)
        self.transient_rate = 0.0
        self.transient: Callable[[], Response | str] = lambda: Response(503, {"message": "unavailable"})

    def queue(self, fault: Response | str, count: int = 1) -> None:
        with self._lock:
            self._queue.extend([fault] * count)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self.transient_rate = 0.0

    def take(self) -> Response | str | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self.transient_rate and self._rng.random() < self.transient_rate:
                return self.transient()
        return None


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-request (a read-ahead thread stopped, a killed daemon, a TLS
    handshake cut short) is the client's business: socketserver would print a traceback into the
    process that runs the sandbox, where a test reads it as the connector's."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # ConnectionResetError, BrokenPipeError, ssl.SSLError, timeouts
            return
        super().handle_error(request, client_address)


class LoopbackServer:
    """Serves `handle` on 127.0.0.1 on a free port, in a background thread."""

    def __init__(
        self,
        handle: Callable[[Request], Response],
        *,
        tls: ssl.SSLContext | None = None,
        latency: float = 0.0,
        fault_filter: Callable[[Request], bool] = lambda _r: True,
    ) -> None:
        self._handle = handle
        self._tls = tls
        self.latency = latency
        self.faults = FaultPlan()
        self._fault_filter = fault_filter
        self._calls: list[Call] = []
        self._calls_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, port: int = 0) -> None:
        """Listen on `port` (0: a free one), e.g. the port a kept sandbox folder's config names."""
        server = _QuietServer(("127.0.0.1", port), _make_handler(self))
        server.daemon_threads = True
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        # A short poll interval: stop() returns in 50 ms instead of the default half second.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    # --- call log --------------------------------------------------------------------------
    def calls(self) -> list[Call]:
        with self._calls_lock:
            return list(self._calls)

    def reset_calls(self) -> None:
        with self._calls_lock:
            self._calls.clear()

    def _log(self, call: Call) -> None:
        with self._calls_lock:
            self._calls.append(call)

    # --- one request -----------------------------------------------------------------------
    def dispatch(self, request: Request) -> Response | str:
        if self.latency:
            time.sleep(self.latency)
        fault = self.faults.take() if self._fault_filter(request) else None
        if fault is not None:
            return fault
        try:
            return self._handle(request)
        except Exception as exc:  # a bug in the stand-in must show as a 500, not a hung client
            return Response(500, [{"message": f"sandbox error: {exc!r}", "errorCode": "UNKNOWN_EXCEPTION"}])


def _make_handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle's algorithm the body waits ~40 ms for an ACK.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = Request(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            result = server.dispatch(request)
            if isinstance(result, str):  # Fault.DROP
                server._log(Call(request.method, request.path, 0, 0, time.time()))
                self.close_connection = True
                self.connection.close()
                return
            payload = result.body if isinstance(result.body, bytes) else (
                b"" if result.body is None else json.dumps(result.body).encode()
            )
            # Logged before the answer goes out, so a test that reads calls() right after a call sees it.
            server._log(Call(request.method, request.path, result.status, result.records, time.time()))
            self.send_response(result.status)
            if payload:
                self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in result.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    return Handler
