"""``logproxy reindex``: rebuild the capture index of ``log_dir`` from the capture files.

The index is built in a temporary file beside the old one and renamed over it at the
end, so a failure or Ctrl-C leaves the old index in place. A running logproxy holds the
index (a shared ``flock`` on ``.logproxy-index.lock``): reindex refuses to run beside
it; a restarted logproxy brings its index up to date by itself.
"""

from __future__ import annotations

import os
import time
from typing import IO, Any

from logproxy.cli.store import CliError, Store
from logproxy.index.reconcile import IndexLocked, exclusive_lock, rebuild
from logproxy.index.schema import LIKE, IndexUnavailable, index_path


class _Progress:
    """``indexed 12,000/1,000,000 captures`` on stderr, at most once a second."""

    def __init__(self, err: IO[str], quiet: bool) -> None:
        self._err = err
        self._quiet = quiet
        self._last = 0.0
        self._tty = err.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self._quiet:
            return
        now = time.monotonic()
        if now - self._last < 1.0 and done < total:
            return
        self._last = now
        line = f"indexed {done:,}/{total:,} captures"
        if self._tty:
            self._err.write(f"\r{line}")
        elif done < total or total == 0:
            self._err.write(f"{line}\n")
        self._err.flush()

    def end(self) -> None:
        if self._tty and not self._quiet:
            self._err.write("\n")


def cmd_reindex(args: Any, store: Store, out: IO[str], err: IO[str]) -> int:
    log_dir = store.log_dir
    if not os.path.isdir(log_dir):
        raise CliError(f"cannot read log directory {log_dir}: no such directory")
    progress = _Progress(err, args.quiet)
    started = time.monotonic()
    try:
        with exclusive_lock(log_dir):
            count, info = rebuild(
                log_dir,
                index_path(log_dir),
                LIKE if args.like else None,
                progress,
            )
    except IndexLocked as e:
        raise CliError(str(e)) from None
    except IndexUnavailable as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot write the index in {log_dir}: {e.strerror or e}") from None
    progress.end()
    elapsed = time.monotonic() - started
    size = os.path.getsize(info.path)
    if not args.quiet:
        err.write(
            f"indexed {count:,} captures in {elapsed:.1f}s: {info.path} "
            f"({size / 1e6:.1f} MB, text search: {info.text_search})\n"
        )
    return 0
