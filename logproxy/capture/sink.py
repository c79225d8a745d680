"""The capture sink interface: what the proxy core knows about storage.

The proxy calls these on the reactor thread for each captured exchange. Where the
bytes end up (local files through a writer thread, or a remote logging server over
HTTP PUT) is the store's business.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from logproxy.capture.llmtap import LLMTap
from logproxy.capture.model import Metadata, StreamHead, StreamKind


class CaptureStream(Protocol):
    """One direction (request or response) of one capture.

    Ordering: ``begin`` once, then ``write`` zero or more times, then ``end`` once;
    ``end`` may come without ``begin`` (nothing to write, e.g. the response never
    arrived), and then writes nothing. All calls are on the reactor thread.

    Re-entrancy and failure: no method may raise or block. A store that cannot keep up
    drops data and records ``truncated`` with the bytes lost; a store that fails
    records the error in the metadata and carries on. The proxied traffic never waits
    for a capture.
    """

    def begin(self, head: StreamHead | None, exchange: Metadata) -> None:
        """Start the stream: the metadata file appears with ``completed: false``.

        ``exchange`` is the capture's shared metadata (id, route, urls, ...); the
        store takes a snapshot, the caller may go on changing its dict.
        """

    def write(self, data: bytes) -> None:
        """A raw body chunk, as on the wire (still content-encoded)."""

    def end(self, exchange: Metadata, error: str | None, extra: Metadata | None = None) -> None:
        """The body ended (``error is None``: whole) and the final metadata is written.

        ``extra`` adds top-level fields to the final document (e.g. ``llm``).
        """


class CaptureStore(Protocol):
    """Creates capture streams and owns whatever they write through."""

    def open_stream(
        self, capture_id: str, started: float, kind: StreamKind, tap: LLMTap | None = None
    ) -> CaptureStream:
        """A new stream; ``started`` is the request's start time, used in file names.
        ``tap``: for a recognised LLM call, shared by its request and response streams;
        the store feeds it the stored bodies and reports its result (on the reactor)."""

    def stop(self) -> Deferred[None]:
        """Flush everything written so far and stop; fires when done (at shutdown)."""
