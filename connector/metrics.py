"""Prometheus metrics and the /metrics and /healthz endpoints of the daemon."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from connector.cycle import ObjectOutcome


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["source", "object"]
        r = self.registry
        self.pulled = Counter("connector_records_pulled", "Records read from the CRM", labels, registry=r)
        self.transitions = Counter("connector_transitions", "Stage moves by cause", [*labels, "cause"], registry=r)
        self.suppressed = Counter(
            "connector_suppressed_triggers",
            "Triggers that did not move a record, by reason",
            [*labels, "reason"],
            registry=r,
        )
        self.writebacks = Counter(
            "connector_writebacks",
            "Write-backs by outcome (done, retried, dead, conflict)",
            [*labels, "outcome"],
            registry=r,
        )
        self.api_calls = Gauge("connector_api_calls", "API calls made by this process", ["source"], registry=r)
        self.api_remaining = Gauge(
            "connector_api_remaining", "The CRM's remaining daily API allocation", ["source"], registry=r
        )
        self.cycle_seconds = Histogram(
            "connector_job_seconds",
            "Duration of a job",
            [*labels, "job"],
            registry=r,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
        )
        self.lag = Gauge("connector_lag_seconds", "Now minus the cursor's modified time", labels, registry=r)
        self.failures = Counter("connector_job_failures", "Jobs that failed", [*labels, "job"], registry=r)

    def observe(self, outcome: ObjectOutcome) -> None:
        key = (outcome.source, outcome.object)
        self.pulled.labels(*key).inc(outcome.pulled.records)
        for stats, cause in (
            (outcome.pulled, "external"),
            (outcome.events.moves, "event"),
            (outcome.timers, "inactive"),
        ):
            if stats.transitions:
                self.transitions.labels(*key, cause).inc(stats.transitions)
            for reason, count in stats.suppressed_by.items():
                self.suppressed.labels(*key, reason).inc(count)
        drained = outcome.drained
        for name in ("done", "retried", "dead", "conflicts"):
            value = getattr(drained, name)
            if value:
                self.writebacks.labels(*key, name).inc(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve(listen: str, metrics: Metrics, health: Callable[[], tuple[bool, dict[str, Any]]]) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz (503 when a source is paused or failing) in a daemon thread."""
    host, _, port = listen.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body, status, kind = metrics.render(), 200, CONTENT_TYPE_LATEST
            elif self.path.startswith("/healthz"):
                ok, detail = health()
                body, status, kind = json.dumps(detail).encode(), 200 if ok else 503, "application/json"
            else:
                body, status, kind = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
