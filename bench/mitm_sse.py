"""mitmdump addon: stream Server-Sent Events instead of buffering them.

mitmproxy buffers whole responses by default, which swallows SSE (mitmproxy issue 4469);
this is the workaround its own warning points to. Streamed bodies are not kept in the
saved flows.
"""

from __future__ import annotations


def responseheaders(flow):  # type: ignore[no-untyped-def]
    if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
        flow.response.stream = True
