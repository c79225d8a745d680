"""The JSON-lines channel from a worker process to the main one (file descriptor 3)."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

#: The file descriptor of the JSON channel to the main process.
CHANNEL_FD = 3


class Channel:
    """JSON lines to the main process on fd 3 (a pipe; the reactor thread is its one writer)."""

    def __init__(self, fd: int = CHANNEL_FD) -> None:
        self._fd = fd

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with contextlib.suppress(OSError):  # the main process is gone; we stop soon
            os.write(self._fd, data)
