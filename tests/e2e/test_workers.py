"""server.workers: several reactor processes share the proxy port; one /metrics, one index,
one graceful stop."""

from __future__ import annotations

import http.client
import json
import os
import signal
import urllib.request
from pathlib import Path

import pytest

from .conftest import Mock, free_port, proxy_config, start_logproxy, wait_for

pytestmark = pytest.mark.e2e


def get(port: int, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("localhost", port, timeout=10)
    conn.request("GET", path, headers={"Connection": "close"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def test_two_workers_share_the_port_and_report_as_one(tmp_path: Path, mock: Mock) -> None:
    routes = {"helpers": {"pattern": "/helpers/", "destination": f"{mock.origin}/mock/"}}
    config = proxy_config(
        tmp_path / "logs",
        routes,
        server={"workers": 2},
        logging_server={"port": free_port()},
    )
    lp = start_logproxy(tmp_path, config)
    main_pid = lp.proc.pid
    workers = wait_for(lambda: children_of(main_pid) or None, what="a worker process")
    lp.wait_log(r"\[worker 1\]")  # the worker's log lines reach the main log

    for n in range(60):  # new connections: the kernel spreads them over both processes
        assert get(lp.port, f"/helpers/echo?n={n}").status == 200

    def pids() -> set[int] | None:
        docs = [json.loads(p.read_text()) for p in lp.log_dir.glob("*/*_response_metadata.json")]
        done = [d for d in docs if d.get("completed_at")]
        return {d["writer_pid"] for d in done} if len(done) == 60 else None

    writers = wait_for(pids, what="60 finished captures")
    assert writers == {main_pid} | workers, "both processes served requests"

    metrics = f"{lp.logserver_url}/metrics"

    def merged() -> str | None:
        text = urllib.request.urlopen(metrics, timeout=5).read().decode()
        return (
            text if 'logproxy_requests_total{route="helpers",status="200"} 60.0' in text else None
        )

    assert wait_for(merged, what="/metrics to count the worker's requests too")

    def indexed() -> int | None:
        url = f"{lp.logserver_url}/api/requests?route=helpers&limit=100"
        items = json.loads(urllib.request.urlopen(url, timeout=5).read())["items"]
        return len(items) if len(items) == 60 else None

    assert wait_for(indexed, what="the index to hold the worker's captures") == 60

    # a worker that dies is restarted
    victim = next(iter(workers))
    os.kill(victim, signal.SIGKILL)
    lp.wait_log(r"worker 1 ended .*restarting")
    wait_for(lambda: (children_of(main_pid) - {victim}) or None, what="a new worker")
    assert get(lp.port, "/helpers/echo?after=restart").status == 200

    # SIGTERM stops every process
    survivors = children_of(main_pid)
    lp.proc.popen.send_signal(signal.SIGTERM)
    assert lp.proc.popen.wait(20) in (0, -signal.SIGTERM)

    def all_gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in survivors)

    assert wait_for(all_gone, what="the workers to exit")
