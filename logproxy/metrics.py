"""Prometheus metrics, one registry per running service (no module globals, so tests
and several services in one process do not share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Upstream time-to-headers: LLM calls range from milliseconds to minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "logproxy_requests",
            "Requests answered, by route and status",
            ["route", "status"],
            registry=r,
        )
        self.body_bytes = Counter(
            "logproxy_body_bytes",
            "Body bytes relayed, by route and direction",
            ["route", "direction"],
            registry=r,
        )
        self.in_flight = Gauge("logproxy_in_flight_requests", "Requests in flight", registry=r)
        self.upstream_headers = Histogram(
            "logproxy_upstream_header_seconds",
            "Time from request start to upstream headers",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "logproxy_upstream_errors",
            "Upstream failures, by route and kind",
            ["route", "kind"],
            registry=r,
        )
        self.capture_errors = Counter(
            "logproxy_capture_errors",
            "Capture failures (write errors, dropped data), by kind",
            ["kind"],
            registry=r,
        )
        self.capture_bytes_lost = Counter(
            "logproxy_capture_bytes_lost",
            "Capture bytes dropped because the writer fell behind",
            registry=r,
        )
        self.capture_fallbacks = Counter(
            "logproxy_capture_fallback_streams",
            "Capture streams written to the local log_dir because the logging server was down",
            registry=r,
        )
        self.captures = Counter(
            "logproxy_captures",
            "Capture streams finished, by outcome",
            ["outcome"],
            registry=r,
        )
        self.retention_deleted = Counter(
            "logproxy_retention_deleted_captures",
            "Captures deleted by logging.retention",
            registry=r,
        )
        self.retention_bytes = Counter(
            "logproxy_retention_deleted_bytes",
            "Bytes deleted by logging.retention",
            registry=r,
        )
        self.logserver_streams = Counter(
            "logproxy_logserver_streams",
            "Streams received by the logging server, by outcome",
            ["outcome"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
