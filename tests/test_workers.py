"""Several worker processes, one /metrics: merging snapshots (pure)."""

from __future__ import annotations

from logproxy.metrics import Metrics
from logproxy.workers.metrics_merge import merge, render, snapshot


def test_counters_gauges_and_histograms_add_up() -> None:
    main, worker = Metrics(), Metrics()
    main.requests.labels("r", "200").inc(3)
    worker.requests.labels("r", "200").inc(4)
    worker.requests.labels("r", "404").inc()
    main.in_flight.inc(2)
    worker.in_flight.inc(1)
    main.upstream_headers.labels("r").observe(0.02)
    worker.upstream_headers.labels("r").observe(3)
    text = render(merge([snapshot(main.registry), snapshot(worker.registry)])).decode()
    assert 'logproxy_requests_total{route="r",status="200"} 7.0' in text
    assert 'logproxy_requests_total{route="r",status="404"} 1.0' in text
    assert "logproxy_in_flight_requests 3.0" in text
    assert 'logproxy_upstream_header_seconds_count{route="r"} 2.0' in text
    assert 'logproxy_upstream_header_seconds_bucket{le="0.025",route="r"} 1.0' in text
    assert 'logproxy_upstream_header_seconds_bucket{le="+Inf",route="r"} 2.0' in text
    assert text.count("# TYPE logproxy_requests_total counter") == 1


def test_created_timestamps_take_the_earliest() -> None:
    snap_a = [
        {
            "name": "x",
            "type": "counter",
            "help": "h",
            "samples": [["x_total", {}, 1.0], ["x_created", {}, 100.0]],
        }
    ]
    snap_b = [
        {
            "name": "x",
            "type": "counter",
            "help": "h",
            "samples": [["x_total", {}, 2.0], ["x_created", {}, 50.0]],
        }
    ]
    merged = merge([snap_a, snap_b])
    values = {name: value for name, _, value in merged[0]["samples"]}
    assert values == {"x_total": 3.0, "x_created": 50.0}


def test_a_snapshot_survives_json() -> None:
    import json

    metrics = Metrics()
    metrics.requests.labels("r", "200").inc()
    snap = json.loads(json.dumps(snapshot(metrics.registry)))
    assert 'logproxy_requests_total{route="r",status="200"} 1.0' in render(merge([snap])).decode()
