"""Turn raw results into the published numbers: a markdown table, JSON and a PNG chart.

Every metric is shown as a value and as its ratio to ``direct`` and to ``nginx``, where
that ratio means something (a proxy's memory has no ``direct`` counterpart; a delay a
proxy *adds* is zero for ``direct``). "Added" metrics are a proxy's median minus
``direct``'s median from the same run.

``python -m bench.report bench/results/results.json [--readme README.md]`` re-renders the
markdown and chart from a saved JSON, and optionally replaces the part of a README between
``<!-- bench:begin -->`` and ``<!-- bench:end -->``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NA = "n/a"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Metric:
    scenario: str
    key: str  # result key; "added:" prefix = minus direct's value of the same key
    label: str
    unit: str
    digits: int = 0
    vs_direct: bool = True
    vs_nginx: bool = True
    higher_is_better: bool = True

    @property
    def id(self) -> str:
        return f"{self.scenario}.{self.key}"


def _more(scenario: str, key: str, label: str, unit: str, digits: int = 0) -> Metric:
    """Higher is better; ratios to direct and nginx."""
    return Metric(scenario, key, label, unit, digits)


def _less(scenario: str, key: str, label: str, unit: str, digits: int = 0) -> Metric:
    """Lower is better; a cost direct does not have, so only the ratio to nginx."""
    return Metric(scenario, key, label, unit, digits, vs_direct=False, higher_is_better=False)


METRICS: list[Metric] = [
    _more("rps", "rps_c1", "req/s c=1", "req/s"),
    _more("rps", "rps_c16", "req/s c=16", "req/s"),
    _more("rps", "rps_c64", "req/s c=64", "req/s"),
    _less("rps", "added:p50_us_c1", "added p50 c=1", "µs"),
    _less("rps", "added:p99_us_c1", "added p99 c=1", "µs"),
    _less("rps", "added:p99_us_c64", "added p99 c=64", "µs"),
    _less("rps", "cpu_us_per_req_c64", "proxy CPU/req c=64", "µs"),
    _less("rps", "peak_rss_mb", "peak RSS under load", "MiB", 1),
    _more("rps-mock", "rps_c16", "req/s c=16 (mock LLM)", "req/s"),
    _less("rps-mock", "added:p50_us_c16", "added p50 c=16 (mock LLM)", "µs"),
    _less("sse", "added:delay_p50_us", "added delay/event p50", "µs"),
    _less("sse", "added:delay_p99_us", "added delay/event p99", "µs"),
    Metric("sse", "ttfe_p50_us", "time to 1st event p50", "µs", higher_is_better=False),
    _less("sse", "added:ttfe_p50_us", "added time to 1st event p50", "µs"),
    _less("llm", "added:ttfe_p50_us", "LLM stream: added TTFT p50", "µs"),
    _less("llm", "added:total_p50_us", "LLM stream: added total p50", "µs"),
    _more("big", "mb_s", "throughput", "MB/s"),
    _less("big", "peak_rss_mb", "peak RSS", "MiB", 1),
    _less("big", "cpu_s_per_gib", "proxy CPU per GiB", "s", 2),
    _less("idle", "kb_per_stream", "RSS per idle stream", "KiB", 1),
    _less("idle", "rss_held_mb", "RSS holding all streams", "MiB", 1),
]

TABLES: list[tuple[str, str, list[str]]] = [
    ("Request rate", "1 KiB JSON POST, 1 KiB JSON response from a static nginx upstream "
     "(never the bottleneck), and a non-streamed chat completion from the mock LLM",
     ["rps.rps_c1", "rps.rps_c16", "rps.rps_c64", "rps-mock.rps_c16"]),
    ("Added latency and cost", "same runs; p99 at c=1 is sensitive to anything else "
     "running on the machine",
     ["rps.added:p50_us_c1", "rps.added:p99_us_c1", "rps.added:p99_us_c64",
      "rps-mock.added:p50_us_c16", "rps.cpu_us_per_req_c64", "rps.peak_rss_mb"]),
    ("Streaming (SSE)", "20 concurrent streams started over 100 ms; delay = receive time "
     "minus the upstream's send timestamp in each event; LLM = streamed chat completions "
     "from the mock LLM",
     ["sse.added:delay_p50_us", "sse.added:delay_p99_us", "sse.ttfe_p50_us",
      "sse.added:ttfe_p50_us", "llm.added:ttfe_p50_us"]),
    ("Big response and idle streams", "",
     ["big.mb_s", "big.peak_rss_mb", "big.cpu_s_per_gib", "idle.kb_per_stream",
      "idle.rss_held_mb"]),
]  # fmt: skip

BY_ID = {m.id: m for m in METRICS}


def _value(results: dict[str, Any], metric: Metric, proxy: str) -> float | None:
    scenario = results.get(metric.scenario, {})
    row = scenario.get(proxy)
    if not row or "error" in row:
        return None
    key = metric.key
    if key.startswith("added:"):
        key = key[6:]
        direct = scenario.get("direct", {})
        if row.get(key) is None or direct.get(key) is None:
            return None
        value = row[key] - direct[key]
    else:
        value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def compute(results: dict[str, Any], proxies: list[str]) -> dict[str, Any]:
    """``{metric id: {proxy: {"value", "x_direct", "x_nginx"}}}``."""
    table: dict[str, Any] = {}
    for metric in METRICS:
        column: dict[str, Any] = {}
        for proxy in proxies:
            value = _value(results, metric, proxy)
            if value is None:
                continue
            entry: dict[str, Any] = {"value": value}
            for ref, wanted in (("direct", metric.vs_direct), ("nginx", metric.vs_nginx)):
                ref_value = _value(results, metric, ref) if wanted else None
                entry[f"x_{ref}"] = (
                    value / ref_value if ref_value is not None and ref_value > 0 else None
                )
            column[proxy] = entry
        table[metric.id] = column
    return table


def capture_rows(results: dict[str, Any], proxies: list[str]) -> dict[str, dict[str, Any]]:
    """Capture bytes written per scenario, per request/stream (and % of the big body)."""
    rows: dict[str, dict[str, Any]] = {}
    for proxy in proxies:
        row: dict[str, Any] = {}
        for scenario in ("rps", "rps-mock", "sse", "llm", "big", "idle"):
            r = results.get(scenario, {}).get(proxy)
            if not r or "capture_bytes" not in r:
                continue
            units = r.get("units") or 1
            row[scenario] = r["capture_bytes"] / units
            if scenario == "big":
                row["big_pct"] = 100.0 * r["capture_bytes"] / (r["size"] * units)
            if "capture_lag_s" in r:
                row["lag"] = r["capture_lag_s"]
        if row:
            rows[proxy] = row
    return rows


def _header(m: Metric) -> str:
    return m.label if m.unit in m.label else f"{m.label} ({m.unit})"


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return NA
    if abs(value) >= 100 or digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return NA
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def markdown(data: dict[str, Any]) -> str:
    meta, settings = data["meta"], data["settings"]
    proxies = list(data["proxies"])
    table = data["metrics"]
    out = [
        f"Command: `{meta['command']}` ({meta['date']}, logproxy {meta.get('commit', '?')})",
        "",
        f"Machine: {meta['nproc']} cores ({meta['cpu']}), {meta['memory']}, "
        f"Linux {meta['kernel']}, Python {meta['python']}; {meta['versions']}.",
        f"Pinning: proxy on core {meta['proxy_cpu']}; upstreams, load generators and the "
        f"harness share core {meta['load_cpu']} (the load generator shares the machine). "
        f"Medians of {settings['repeats']} repeat(s); wrk runs of {settings['wrk_seconds']} s.",
        "",
        "Each cell: value (ratio to direct / ratio to nginx); n/a where a ratio means nothing. "
        "\"added\" = the proxy's median minus direct's.",
        "",
    ]
    for title, note, ids in TABLES:
        metrics = [BY_ID[i] for i in ids if any(table.get(i, {}).values())]
        if not metrics:
            continue
        out.append(f"**{title}**" + (f" — {note}" if note else ""))
        out.append("")
        out.append("| proxy | " + " | ".join(_header(m) for m in metrics) + " |")
        out.append("|---|" + "---:|" * len(metrics))
        for proxy in proxies:
            cells = []
            for m in metrics:
                e = table.get(m.id, {}).get(proxy)
                if e is None:
                    cells.append(NA)
                    continue
                cell = _fmt(e["value"], m.digits)
                if proxy == "direct" and m.key.startswith("added:"):
                    pass  # 0 by definition
                elif e.get("x_direct") is not None or e.get("x_nginx") is not None:
                    cell += f" ({_ratio(e.get('x_direct'))} / {_ratio(e.get('x_nginx'))})"
                cells.append(cell)
            if any(c != NA for c in cells):
                out.append(f"| {proxy} | " + " | ".join(cells) + " |")
        out.append("")
    big = settings["big_bytes"]
    cap = data["capture"]
    if cap:
        out.append(
            "**Capture written** — bytes on disk per request or stream "
            "(a proxy that doesn't capture doesn't win); big: share of the "
            f"{_bytes(big)} body kept; lag: how long the capture kept growing after the "
            "request-rate load stopped"
        )
        out.append("")
        out.append(
            "| proxy | 1 KiB req/resp | mock LLM call | SSE stream | LLM stream "
            "| big body | idle stream | lag |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for proxy, row in cap.items():
            cells = [_bytes(row[k]) if k in row else NA for k in ("rps", "rps-mock", "sse", "llm")]
            cells.append(f"{row['big_pct']:.0f} %" if "big_pct" in row else NA)
            cells.append(_bytes(row["idle"]) if "idle" in row else NA)
            cells.append(f"{row['lag']:.1f} s" if "lag" in row else NA)
            out.append(f"| {proxy} | " + " | ".join(cells) + " |")
        out.append("")
    problems = data.get("problems") or []
    out.append("Proxies: " + "; ".join(
        f"**{name}** {desc}" for name, desc in data["proxies"].items()
    ) + ".")  # fmt: skip
    out.append("")
    for note in data.get("notes", []):
        out.append(f"- {note}")
    for problem in problems:
        out.append(f"- ⚠ {problem}")
    return "\n".join(out).rstrip() + "\n"


CHART = [
    "rps.rps_c1", "rps.rps_c64", "rps.added:p50_us_c1",
    "sse.added:delay_p99_us", "sse.added:ttfe_p50_us", "big.mb_s",
    "big.peak_rss_mb", "idle.kb_per_stream", "rps.cpu_us_per_req_c64",
]  # fmt: skip


def chart(data: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    proxies = list(data["proxies"])
    table = data["metrics"]
    ids = [i for i in CHART if table.get(i)]
    cols = 3
    rows = max(1, math.ceil(len(ids) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.4 * rows), squeeze=False)
    palette = {
        "direct": "#9e9e9e", "nginx": "#2e7d32", "twisted": "#8d6e63",
        "mitmdump": "#f9a825", "mitmdump-shm": "#fbc02d",
    }  # fmt: skip
    for ax, metric_id in zip(axes.flat, ids, strict=False):
        m = BY_ID[metric_id]
        names = [p for p in proxies if p in table[metric_id]][::-1]
        values = [table[metric_id][p]["value"] for p in names]
        colors = [palette.get(p, "#1565c0" if "logproxy" in p else "#607d8b") for p in names]
        ax.barh(names, values, color=colors)
        positive = [v for v in values if v > 0]
        if positive and min(values) > 0 and max(positive) / min(positive) > 30:
            ax.set_xscale("log")  # direct and nginx would flatten everything else
        arrow = "higher is better" if m.higher_is_better else "lower is better"
        ax.set_title(f"{m.scenario}: {_header(m)}, {arrow}", fontsize=10)
        ax.tick_params(labelsize=8)
        for y, v in enumerate(values):
            ax.text(v, y, f" {_fmt(v, m.digits)}", va="center", fontsize=7)
        ax.margins(x=0.25)
    for ax in list(axes.flat)[len(ids) :]:
        ax.axis("off")
    fig.suptitle(f"logproxy benchmark — {data['meta']['command']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def build(
    meta: dict[str, Any], settings: dict[str, Any], proxies: dict[str, str],
    results: dict[str, Any], notes: list[str], problems: list[str],
) -> dict[str, Any]:  # fmt: skip
    names = list(proxies)
    return {
        "meta": meta,
        "settings": settings,
        "proxies": proxies,
        "metrics": compute(results, names),
        "capture": capture_rows(results, names),
        "notes": notes,
        "problems": problems,
        "results": results,
    }


def write(data: dict[str, Any], out: Path, readme: Path | None = None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(data, indent=1, default=str) + "\n")
    md = markdown(data)
    paths["markdown"].write_text(md)
    if chart(data, out / "results.png"):
        paths["png"] = out / "results.png"
    if readme is not None:
        update_readme(readme, md)
        paths["readme"] = readme
    return paths


def update_readme(readme: Path, md: str) -> None:
    """Replace the text between the bench markers (which must already be there)."""
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} markers")
    readme.write_text(text[: start + len(BEGIN)] + "\n" + md + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description="Re-render a saved benchmark result.")
    parser.add_argument("json", type=Path)
    parser.add_argument("--readme", type=Path)
    args = parser.parse_args()
    saved = json.loads(args.json.read_text())
    data = build(saved["meta"], saved["settings"], saved["proxies"], saved["results"],
                 saved.get("notes", []), saved.get("problems", []))  # fmt: skip
    for kind, path in write(data, args.json.parent, args.readme).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
