"""A mock OpenAI/Anthropic API: a realistic, controllable upstream for tests and benchmarks.

Run it with ``twistd -n logproxy-mock --port 5600`` or ``python -m logproxy.mockllm --port 5600``
(``--host``, ``--tls-cert``/``--tls-key`` for HTTPS, ``--access-log``); in-process,
``reactor.listenTCP(0, build_site())``. Responses are deterministic, streamed exactly like the
real APIs, and never buffered whole: big bodies come from a push producer honouring backpressure.

Endpoints: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/responses``, ``/v1/messages``; ``GET /v1/models`` (Anthropic's shape when the request has
``anthropic-version``). Request bodies may be gzip/deflate/br/zstd encoded. The reply is
``expected_text(chunks, chunk_size)`` (``"word1 word2 ... wordN"``), or the last user message with
``echo``; prompt tokens = words in the prompt, completion tokens = content deltas. With ``tools``
and a last user message containing "call a tool", the first tool is called instead.

Knobs, in a ``mock`` object in the JSON body (``extra_body={"mock": {...}}``) or as headers
``X-Mock-Chunks``, ``X-Mock-Interval``, ... (the body wins):

- ``chunks`` (5): content deltas; ``chunk_size`` (one word): characters per delta.
- ``ttft`` (0): seconds before the first content delta (preamble events and headers go at once);
  ``interval`` (0): seconds between later deltas. Non-streamed replies wait the same total.
- ``status``: answer with this HTTP status and the API's error body (>= 400).
- ``drop_after``: reset the connection after N SSE events (N body bytes when not streaming).
- ``gzip``: ``Content-Encoding: gzip``, flushed per SSE event; ``echo``: repeat the user.
- ``openrouter``: chat answers carry OpenRouter's extras (``usage.cost``, ``provider``).

Helpers: ``GET /mock/bytes?size=N&chunk=M&chunked=1``, ``/mock/echo`` (any method),
``/mock/status/<code>``, ``/mock/slow-headers?delay=S``, ``/mock/drop?after=N``,
``/mock/sse?events=N&interval=S&size=B``.
"""

from __future__ import annotations

from ._common import KNOB_HEADERS, PATTERN, TOOL_TRIGGER, Knobs, expected_text
from ._helpers import BYTE_PATTERN
from ._openai import MODEL_SUFFIX
from ._service import Options, main, makeService
from ._site import MockResource, MockSite, build_site

__all__ = [
    "BYTE_PATTERN",
    "KNOB_HEADERS",
    "MODEL_SUFFIX",
    "PATTERN",
    "TOOL_TRIGGER",
    "Knobs",
    "MockResource",
    "MockSite",
    "Options",
    "build_site",
    "expected_text",
    "main",
    "makeService",
]
