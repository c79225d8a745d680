"""The scenarios: what is measured through each proxy, and how often.

A proxy is started once for rps and rps-mock, once for sse and llm, and afresh for each
repeat of ``big`` and of ``idle``, whose memory readings need a process that has done
nothing else. Each measurement is repeated ``Settings.repeats`` times; the medians are
what the report shows.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import load
from bench.procs import Proc
from bench.proxies import Proxy, request_json

SESSIONS = (("rps", "rps-mock"), ("sse", "llm"))  # run against one process per group
ALL = (*SESSIONS[0], *SESSIONS[1], "big", "idle")
MiB = 1 << 20


@dataclass
class Settings:
    quick: bool
    repeats: int
    wrk_seconds: int
    concurrencies: tuple[int, ...]
    mock_concurrency: int
    sse_streams: int
    sse_events: int
    sse_interval_ms: int
    llm_chunks: int
    llm_interval: float
    big_bytes: int
    big_timeout: float
    idle_streams: int

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(
                quick=True, repeats=1, wrk_seconds=2, concurrencies=(1, 16, 64),
                mock_concurrency=16, sse_streams=20, sse_events=50, sse_interval_ms=20,
                llm_chunks=40, llm_interval=0.02, big_bytes=256 * MiB, big_timeout=40.0,
                idle_streams=200,
            )  # fmt: skip
        return cls(
            quick=False, repeats=3, wrk_seconds=4, concurrencies=(1, 16, 64),
            mock_concurrency=16, sse_streams=20, sse_events=200, sse_interval_ms=10,
            llm_chunks=100, llm_interval=0.01, big_bytes=1024 * MiB, big_timeout=90.0,
            idle_streams=1000,
        )  # fmt: skip


class Runner:
    """Runs scenarios for one proxy and collects ``results[scenario][proxy]``."""

    def __init__(
        self, settings: Settings, upstreams: dict[str, str], disk: Path, shm: Path,
        log: Callable[[str], None],
    ) -> None:  # fmt: skip
        self.s = settings
        self.upstreams = upstreams
        self.disk = disk
        self.shm = shm
        self.log = log
        self._results: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.scripts = disk / "wrk"
        self.scripts.mkdir(parents=True, exist_ok=True)
        self.static_lua = load.wrk_script(self.scripts / "static.lua", request_json())
        self.mock_lua = load.wrk_script(
            self.scripts / "mock.lua", request_json(mock={"chunks": 100})
        )
        self._session = 0

    # -- sessions

    def run_session(self, proxy: Proxy, scenarios: list[str]) -> None:
        """Start ``proxy``, run ``scenarios`` against it, stop it, delete its capture."""
        self._session += 1
        tag = f"{proxy.name}-{self._session}"
        workdir = self.disk / "proc" / tag
        capture_root = (self.shm if proxy.tmpfs else self.disk) / "capture" / tag
        try:
            t0 = time.monotonic()
            proxy.start(self.upstreams, workdir, capture_root)
            startup = time.monotonic() - t0
        except Exception as exc:
            for name in scenarios:
                self._record(name, proxy, {"error": f"start failed: {exc}"})
            self.log(f"  {proxy.name}: start failed: {exc}")
            proxy.stop()
            return
        try:
            for name in scenarios:
                t0 = time.monotonic()
                cap0 = self._settled_capture(proxy)
                try:
                    result = getattr(self, "_" + name.replace("-", "_"))(proxy)
                except Exception as exc:
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                    self.log(traceback.format_exc(limit=3))
                if proxy.captures:
                    result["capture_bytes"] = self._settled_capture(proxy) - cap0
                result["startup_s"] = startup
                result["seconds"] = time.monotonic() - t0
                self._record(name, proxy, result)
                self.log(f"  {proxy.name:17} {name:8} {_brief(result)}")
                if proxy.proc is not None and not proxy.proc.alive():
                    self.log(f"  {proxy.name} died:\n{proxy.proc.log_tail()}")
                    break
        finally:
            proxy.stop()
            proxy.cleanup()

    def _record(self, scenario: str, proxy: Proxy, result: dict[str, Any]) -> None:
        self._results.setdefault(scenario, {}).setdefault(proxy.name, []).append(result)

    @property
    def results(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``results[scenario][proxy]``: a scenario run in several sessions (big, idle)
        gives the median of each number, every session's runs, and any error/problem."""
        merged: dict[str, dict[str, dict[str, Any]]] = {}
        for scenario, rows in self._results.items():
            for proxy, sessions in rows.items():
                merged.setdefault(scenario, {})[proxy] = _merge(sessions)
        return merged

    def _settled_capture(self, proxy: Proxy, limit: float = 30.0) -> int:
        """The capture's size once it stops growing (writers flush behind the traffic)."""
        return self._settle(proxy, limit)[0]

    def _settle(self, proxy: Proxy, limit: float) -> tuple[int, float]:
        """(bytes, when they stopped changing): unchanged for 0.3 s, checked every 0.1 s,
        for at most ``limit`` seconds. "When" is the end of the first look that saw the
        final size, not the end of the wait: walking 100,000 capture files takes ~0.5 s,
        which must not count as the capture's lag."""
        if not proxy.captures:
            return 0, time.monotonic()
        last, stable_since = (-1, -1), time.monotonic()
        deadline = stable_since + limit
        while time.monotonic() < deadline:
            stats = proxy.capture_stats()
            now = time.monotonic()
            if stats != last:
                last, stable_since = stats, now
            elif now - stable_since >= 0.3:
                break
            time.sleep(0.1)
        return last[0], stable_since

    def _cpu(self, proxy: Proxy) -> float:
        return proxy.proc.cpu_seconds() if proxy.proc is not None else 0.0

    # -- scenarios

    def _rps(self, proxy: Proxy) -> dict[str, Any]:
        url = proxy.url("static") + "/static/chat"
        return self._wrk(proxy, url, self.static_lua, self.s.concurrencies, request_json())

    def _rps_mock(self, proxy: Proxy) -> dict[str, Any]:
        url = proxy.url("mock") + "/v1/chat/completions"
        body = request_json(mock={"chunks": 100})
        return self._wrk(proxy, url, self.mock_lua, (self.s.mock_concurrency,), body)

    def _wrk(
        self, proxy: Proxy, url: str, script: Path, concurrencies: tuple[int, ...], body: bytes
    ) -> dict[str, Any]:
        load.warm(url, 20, body)
        requests = 20
        if not self.s.quick:  # pools, caches
            requests += load.run_wrk(url, script, max(concurrencies), 1)["requests"]
        out: dict[str, Any] = {"runs": {}}
        for c in concurrencies:
            runs = []
            for _ in range(self.s.repeats):
                cpu0 = self._cpu(proxy)
                run = load.run_wrk(url, script, c, self.s.wrk_seconds)
                if proxy.proc is not None and run["requests"]:
                    run["cpu_us_per_req"] = (self._cpu(proxy) - cpu0) * 1e6 / run["requests"]
                requests += run["requests"]
                runs.append(run)
            out["runs"][str(c)] = runs
            for key in ("rps", "p50_us", "p99_us", "errors", "cpu_us_per_req"):
                if key in runs[0]:
                    out[f"{key}_c{c}"] = load.median([r[key] for r in runs])
            errors = sum(r["errors"] for r in runs)
            if errors:
                out["problem"] = f"{errors:.0f} errors at c={c} of {requests} requests"
        out["units"] = requests  # everything that went through, for capture bytes per unit
        if proxy.proc is not None:
            out["peak_rss_mb"] = proxy.proc.hwm_kb() / 1024
        if proxy.captures:
            # How long the capture keeps growing once the traffic stopped: its lag.
            t0 = time.monotonic()
            _, settled_at = self._settle(proxy, 60.0)
            out["capture_lag_s"] = settled_at - t0
        return out

    def _sse(self, proxy: Proxy) -> dict[str, Any]:
        s = self.s
        url = (
            proxy.url("sse")
            + f"/sse/stream?events={s.sse_events}&interval={s.sse_interval_ms}&pad=64"
        )
        load.sse_timing(url.replace(f"events={s.sse_events}", "events=3"), 4, 10)  # warm-up
        timeout = s.sse_events * s.sse_interval_ms / 1000 * 3 + 10
        runs = [asdict(load.sse_timing(url, s.sse_streams, timeout)) for _ in range(s.repeats)]
        out: dict[str, Any] = {"runs": runs, "units": s.sse_streams * s.repeats + 4}
        for key in ("delay_p50_us", "delay_p99_us", "ttfe_p50_us", "ttfe_p99_us"):
            out[key] = load.median([r[key] for r in runs])
        out["ok"] = min(r["ok"] for r in runs)
        out["events"] = load.median([r["events"] for r in runs])
        if out["ok"] < s.sse_streams or out["events"] < s.sse_streams * s.sse_events:
            out["problem"] = (
                f"{out['ok']}/{s.sse_streams} streams, {out['events']:.0f} events completed; "
                f"{runs[0]['errors'][:2]}"
            )
        return out

    def _llm(self, proxy: Proxy) -> dict[str, Any]:
        s = self.s
        url = proxy.url("mock") + "/v1/chat/completions"
        body = request_json(mock={"chunks": s.llm_chunks, "interval": s.llm_interval}).replace(
            b'"model"', b'"stream":true,"model"', 1
        )
        timeout = s.llm_chunks * s.llm_interval * 3 + 10
        runs = [load.llm_streams(url, body, s.sse_streams, timeout) for _ in range(s.repeats)]
        out: dict[str, Any] = {"runs": runs, "units": s.sse_streams * s.repeats}
        for key in ("ttfe_p50_us", "ttfe_p99_us", "total_p50_us", "gap_p99_us"):
            out[key] = load.median([r[key] for r in runs])
        out["ok"] = min(r["ok"] for r in runs)
        if out["ok"] < s.sse_streams:
            out["problem"] = f"{out['ok']:.0f}/{s.sse_streams} LLM streams completed"
        return out

    def _big(self, proxy: Proxy) -> dict[str, Any]:
        assert proxy.proc is not None or proxy.name == "direct"
        url = proxy.url("static") + "/static/big"
        rss0 = proxy.proc.rss_kb() if proxy.proc else 0
        cpu0 = self._cpu(proxy)
        # One download per process: repeats are separate sessions (a fresh process each,
        # so that its peak RSS is this download's).
        runs = [load.big_download(url, self.s.big_bytes, self.s.big_timeout)]
        cpu = self._cpu(proxy) - cpu0
        moved = sum(r["bytes"] for r in runs)
        out: dict[str, Any] = {"runs": runs, "size": self.s.big_bytes, "units": len(runs)}
        out["mb_s"] = load.median([r["mb_s"] for r in runs])
        out["complete"] = min(r["complete"] for r in runs)
        if not out["complete"]:
            out["problem"] = "incomplete download: " + ", ".join(
                f"{r['bytes'] / MiB:.0f} MiB in {r['seconds']:.0f}s (status {r['status']:.0f})"
                for r in runs
            )
        if proxy.proc is not None:
            out["rss_start_mb"] = rss0 / 1024
            out["peak_rss_mb"] = proxy.proc.hwm_kb() / 1024
            out["cpu_s_per_gib"] = cpu / (moved / (1 << 30)) if moved else float("nan")
        return out

    def _idle(self, proxy: Proxy) -> dict[str, Any]:
        url = proxy.url("sse") + "/sse/idle"
        proc: Proc | None = proxy.proc
        # Warm-up: a few streams opened and closed, so lazy imports/pools are not counted.
        load.idle_streams(url, 10, dict, timeout=20)
        time.sleep(0.3)
        rss0 = proc.rss_kb() if proc else 0

        def hold() -> dict[str, float]:
            return {"rss_held_kb": float(proc.rss_kb() if proc else 0)}

        run = load.idle_streams(url, self.s.idle_streams, hold, timeout=60)
        out: dict[str, Any] = {"runs": [run], "units": self.s.idle_streams + 10}
        out.update(run)
        if proc is not None:
            out["rss_before_mb"] = rss0 / 1024
            out["rss_held_mb"] = run["rss_held_kb"] / 1024
            opened = max(run["opened"], 1.0)
            out["kb_per_stream"] = (run["rss_held_kb"] - rss0) / opened
        if run["opened"] < self.s.idle_streams or run["alive"] < run["opened"]:
            out["problem"] = (
                f"{run['opened']:.0f}/{self.s.idle_streams} idle streams opened, "
                f"{run['alive']:.0f} alive, {run['errors']:.0f} errors"
            )
        return out


def _merge(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    if len(sessions) == 1:
        return sessions[0]
    good = [r for r in sessions if "error" not in r] or sessions[:1]
    out: dict[str, Any] = {"sessions": len(sessions), "runs": []}
    for r in good:
        out["runs"].extend(r.get("runs", []))
    for key, value in good[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = load.median([r[key] for r in good if isinstance(r.get(key), int | float)])
        elif key != "runs":
            out.setdefault(key, value)
    out["units"] = sum(r.get("units", 0) for r in good)
    if "capture_bytes" in out:
        out["capture_bytes"] = sum(r.get("capture_bytes", 0) for r in good)
    for key in ("error", "problem"):
        found = [r[key] for r in sessions if key in r]
        if found:
            out[key] = f"{len(found)}/{len(sessions)} sessions: {found[0]}"
    return out


def _brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return "ERROR " + str(result["error"])[:200]
    keys = [
        k for k in result
        if isinstance(result[k], float | int) and k not in ("startup_s",) and not k.endswith("_c1")
    ]  # fmt: skip
    return " ".join(f"{k}={result[k]:.4g}" for k in keys[:9])
