"""Prometheus metrics of several worker processes, shown as one (``/metrics`` of the main).

Each worker sends :func:`snapshot` of its registry every few seconds; the main process
renders :func:`merged` of its own registry and the latest snapshot of every worker:
counters, gauges and histogram buckets add up, ``*_created`` timestamps take the
earliest. Pure functions over prometheus_client's data model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

Snapshot = list[dict[str, Any]]


def snapshot(registry: CollectorRegistry) -> Snapshot:
    """The registry's current samples as JSON-able data."""
    out: Snapshot = []
    for family in registry.collect():
        out.append(
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "samples": [[s.name, s.labels, s.value] for s in family.samples],
            }
        )
    return out


def _key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """One snapshot: the sum of all (``*_created``: the minimum)."""
    families: dict[str, dict[str, Any]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for snap in snapshots:
        for family in snap:
            name = family["name"]
            if name not in families:
                families[name] = {"name": name, "type": family["type"], "help": family["help"]}
                values[name] = {}
            bucket = values[name]
            for sample_name, labels, value in family["samples"]:
                key = _key(sample_name, labels)
                if key not in bucket:
                    bucket[key] = float(value)
                elif sample_name.endswith("_created"):
                    bucket[key] = min(bucket[key], float(value))
                else:
                    bucket[key] += float(value)
    merged: Snapshot = []
    for name, family in families.items():
        samples = [[n, dict(labels), v] for (n, labels), v in values[name].items()]
        merged.append({**family, "samples": samples})
    return merged


class _Static:
    def __init__(self, snap: Snapshot) -> None:
        self._snap = snap

    def collect(self) -> Iterable[Metric]:
        for family in self._snap:
            metric = Metric(family["name"], family["help"], family["type"])
            for sample_name, labels, value in family["samples"]:
                metric.add_sample(sample_name, labels, value)
            yield metric


def render(snap: Snapshot) -> bytes:
    """Prometheus text exposition of a snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(snap))  # type: ignore[arg-type]
    return generate_latest(registry)
