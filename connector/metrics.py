"""The daemon's Prometheus metrics (served at /metrics by `connector.web.server`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        self.webhooks = Counter(
            "connector_webhook_requests",
            "Webhook requests by outcome: accepted, or why refused (signature, replay, malformed, ...)",
            ["source", "outcome"],
            registry=r,
        )
        self.webhook_records = Counter(
            "connector_webhook_records",
            "Record ids named by accepted webhooks, by kind (change, creation, deletion, merge)",
            [*labels, "kind"],
            registry=r,
        )
        self.webhook_lag = Histogram(
            "connector_webhook_lag_seconds",
            "From a webhook's arrival to its records pulled and their write-backs sent",
            labels,
            registry=r,
            buckets=(0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60),
        )

    def observe(self, outcome: ObjectOutcome) -> None:
        key = (outcome.source, outcome.object)
        self.pulled.labels(*key).inc(outcome.pulled.records)
        for stats in (outcome.pulled, outcome.events.moves, outcome.timers):
            for cause, count in stats.by_cause.items():
                self.transitions.labels(*key, cause).inc(count)
            for reason, count in stats.suppressed_by.items():
                self.suppressed.labels(*key, reason).inc(count)
        drained = outcome.drained
        for name in ("done", "retried", "dead", "conflicts"):
            value = getattr(drained, name)
            if value:
                self.writebacks.labels(*key, name).inc(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
