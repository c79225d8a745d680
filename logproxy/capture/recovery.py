"""After a crash: captures a dead process left ``completed: false`` become ``interrupted``.

Every stream document names the process writing it (``writer_pid``). At start-up a
scan (in the thread pool, off the reactor) finds documents still open whose writer is
gone -- or is this very process, which has written nothing yet -- and finalises them:
``error: "interrupted"``, ``completed_at`` the ``.bin`` file's last write,
``bytes_written`` its size. Documents are replaced atomically, so a SIGKILL at any
moment leaves valid JSON behind.
"""

from __future__ import annotations

import os
import re
from typing import Any

from logproxy.capture.model import parse_rfc3339, read_document, rfc3339
from logproxy.capture.writer import write_json_atomically

INTERRUPTED = "interrupted"
_METADATA = re.compile(r"\d{4}-\d{2}-\d{2}_.*_(request|response)_metadata\.json")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a previous process with our pid (files we write are skipped by time)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    return True


def _finalise(meta_path: str, doc: dict[str, Any]) -> None:
    bin_path = os.path.join(os.path.dirname(meta_path), str(doc.get("filename", "")))
    try:
        stat = os.stat(bin_path)
        size, last_write = stat.st_size, stat.st_mtime
    except OSError:
        size, last_write = 0, os.stat(meta_path).st_mtime
    try:
        started = parse_rfc3339(doc.get("started_at"))
        duration = round(max(0.0, last_write - started) * 1000, 3)
    except ValueError:
        duration = None
    doc.update(
        completed=False,
        completed_at=rfc3339(last_write),
        duration_ms=duration,
        bytes_written=size,
        error=doc.get("error") or INTERRUPTED,
    )
    write_json_atomically(meta_path, doc)


def recover(log_dir: str, before: float) -> int:
    """Finalise every open capture whose writer is gone; returns how many.

    Only documents last written before ``before`` (this process's start) are looked at:
    the scan runs while this process already writes captures of its own.
    """
    count = 0
    try:
        days = [e.path for e in os.scandir(log_dir) if e.is_dir()]
    except OSError:
        return 0
    for day in days:
        try:
            entries = [e for e in os.scandir(day) if _METADATA.fullmatch(e.name)]
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat().st_mtime >= before:
                    continue
            except OSError:
                continue
            doc = read_document(entry.path)
            if doc is None or doc.get("completed_at") is not None:
                continue
            pid = doc.get("writer_pid")
            if isinstance(pid, int) and _alive(pid):
                continue
            try:
                _finalise(entry.path, doc)
            except OSError:
                continue
            count += 1
    return count
