"""A mock OpenAI/Anthropic API: a realistic, controllable upstream for tests and benchmarks.

Run it with ``twistd -n logproxy-mock --port 5600`` or ``python -m logproxy.mockllm --port 5600``;
in-process, ``reactor.listenTCP(0, build_site())``. Responses are deterministic (see
``expected_text``), streamed exactly like the real APIs, and never buffered whole: large bodies
come from a push producer that honours backpressure. Per-request knobs (a ``mock`` object in the
JSON body, or ``X-Mock-*`` headers) control pacing, size and faults; see ``Knobs``.
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
