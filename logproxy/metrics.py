"""Prometheus metrics, one registry per running service (no module globals, so tests
and several services in one process do not share counters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Upstream time-to-headers: LLM calls range from milliseconds to minutes.
_TOKEN_KINDS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cached_input", "cached_input_tokens"),
    ("cache_write_input", "cache_write_input_tokens"),
    ("reasoning", "reasoning_tokens"),
)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: The latest snapshots of the worker processes (main process with server.workers).
        self.workers: Callable[[], list[Any]] | None = None
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
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
        self.capture_held = Counter(
            "logproxy_capture_held_requests",
            "Requests held at their start while the capture writer caught up",
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
        self.llm_calls = Counter(
            "logproxy_llm_calls",
            "LLM calls understood, by route, api and model",
            ["route", "api", "model"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "logproxy_llm_tokens",
            "LLM tokens, by route, model and kind",
            ["route", "model", "kind"],
            registry=r,
        )
        self.logserver_streams = Counter(
            "logproxy_logserver_streams",
            "Streams received by the logging server, by outcome",
            ["outcome"],
            registry=r,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: prometheus_client validates the labels
        and takes a lock on every ``labels()`` call, which costs more than the increment
        itself on the per-request path."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count_llm(self, route: str, llm: dict[str, Any]) -> None:
        """An understood LLM call: calls by api and model, tokens by kind."""
        model = str(llm.get("response_model") or llm.get("model") or "unknown")
        self.child(self.llm_calls, route, str(llm.get("api") or "unknown"), model).inc()
        usage = llm.get("usage") or {}
        for kind, key in _TOKEN_KINDS:
            value = usage.get(key)
            if isinstance(value, int) and value > 0:
                self.child(self.llm_tokens, route, model, kind).inc(value)

    def render(self) -> bytes:
        """This process's metrics, plus those of its worker processes when it has some."""
        if self.workers is None:
            return generate_latest(self.registry)
        from logproxy.workers.metrics_merge import merge, render, snapshot

        return render(merge([snapshot(self.registry), *self.workers()]))
