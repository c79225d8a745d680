"""logging.retention: the oldest whole captures go first, young ones are never touched."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest_twisted
from support import make_config, start_service, wait_for

from logproxy.capture.model import CaptureName
from logproxy.capture.retention import GRACE, choose, enforce, scan


def make_capture(log_dir: Path, started: float, size: int = 100) -> str:
    capture_id = str(uuid.uuid4())
    for kind in ("request", "response"):
        name = CaptureName(capture_id, started, kind)  # type: ignore[arg-type]
        folder = log_dir / name.folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name.bin_name).write_bytes(b"x" * size)
        (folder / name.metadata_name).write_text("{}")
    return capture_id


def ids_left(log_dir: Path) -> set[str]:
    return {p.name.split("_")[2] for p in log_dir.rglob("*.bin")}


def test_scan_groups_the_four_files_of_a_capture(tmp_path: Path) -> None:
    now = time.time()
    older = make_capture(tmp_path, now - 7200)
    newer = make_capture(tmp_path, now - 3600)
    (tmp_path / "README.txt").write_text("not a capture")
    captures = scan(str(tmp_path))
    assert [c.stem.split("_")[2] for c in captures] == [older, newer]
    assert all(len(c.paths) == 4 and c.size == 2 * 100 + 2 * 2 for c in captures)


def test_max_age_deletes_only_older_captures(tmp_path: Path) -> None:
    now = time.time()
    old = [make_capture(tmp_path, now - 86400 * d) for d in (40, 35)]
    recent = make_capture(tmp_path, now - 86400 * 2)
    count, freed = enforce(str(tmp_path), max_age=30 * 86400, max_bytes=None)
    assert count == 2 and freed == 2 * 204
    assert ids_left(tmp_path) == {recent}
    assert not any(i in str(p) for i in old for p in tmp_path.rglob("*"))
    # empty day folders of deleted captures are removed too
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def test_max_bytes_deletes_the_oldest_until_under_the_limit(tmp_path: Path) -> None:
    now = time.time()
    ids = [make_capture(tmp_path, now - 3600 * (10 - n), size=1000) for n in range(5)]
    count, _ = enforce(str(tmp_path), max_age=None, max_bytes=3 * 2004 + 10)
    assert count == 2
    assert ids_left(tmp_path) == set(ids[2:])


def test_young_captures_are_never_deleted(tmp_path: Path) -> None:
    now = time.time()
    young = make_capture(tmp_path, now - GRACE / 2, size=10_000)
    assert choose(scan(str(tmp_path)), now, max_age=1, max_bytes=1) == []
    enforce(str(tmp_path), max_age=1, max_bytes=1)
    assert ids_left(tmp_path) == {young}


@pytest_twisted.ensureDeferred
async def test_the_service_runs_retention_at_start(tmp_path: Path, services: list[Any]) -> None:
    log_dir = tmp_path / "logs"
    make_capture(log_dir, time.time() - 40 * 86400)
    keep = make_capture(log_dir, time.time() - 86400)
    service = start_service(make_config(tmp_path, {}, logging={"retention": {"max_age": "30d"}}))
    services.append(service)
    counted = "logproxy_retention_deleted_captures_total 1.0"
    await wait_for(lambda: counted in service.metrics.render().decode(), 5, "a retention pass")
    assert ids_left(log_dir) == {keep}
    assert os.path.isdir(log_dir)
