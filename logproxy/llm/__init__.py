"""Understanding LLM traffic: which API a call is, and what it cost and said (SPEC §8).

``observe()`` picks the calls worth watching; the returned :class:`Observer`
is fed the decoded bodies as they flow and yields the ``llm`` metadata block.
Pure and stdlib-only: no I/O, no Twisted.

Choices the SPEC leaves open, so that readers of the metadata know:

* ``ttfb_ms``: when ``start_response`` was called (the first response byte);
  the first body chunk if it never was.
* ``ttft_ms``: streams: the chunk that completed the SSE event carrying the
  first non-empty text delta or any tool-call delta (reasoning/thinking
  deltas do not count); non-streamed: the first body byte of a 2xx answer
  without an API error; otherwise null.
* ``output_text``: choice 0 only; Anthropic thinking and Responses reasoning
  are left out; null when there was no text. ``tool_calls`` arguments are
  the streamed fragments joined, or a non-streamed ``input`` object as
  compact JSON; a Responses call's ``id`` is its ``call_id``.
* ``finish_reason`` for Responses: ``status``, or the incomplete reason
  (``max_output_tokens``) when the status is ``incomplete``.
* ``partial``: the exchange was cut (``complete=False``), SSE data was lost
  (invalid JSON, an over-long line), a 2xx stream ended without its end
  marker (``[DONE]``/finish_reason, ``message_stop``, ``response.completed``)
  or a 2xx body was empty or not JSON. ``warnings`` names the reasons.
* ``error``: the API's error message, else ``"HTTP <status>"`` for >= 400.
* Extra keys, always present: ``message_count``, ``provider_hint``,
  ``error``, ``output_truncated``, ``warnings``.
* A call recognised only by its request body whose answer matches no known
  API (Ollama's NDJSON, say) gets a minimal block with ``api: null``; a
  request body that is not LLM-shaped gives ``None``.
"""

from __future__ import annotations

from .detect import api_for_path, never_llm
from .observer import Observer

__all__ = ["Observer", "api_for_path", "observe"]


def observe(method: str, path: str, content_type: str | None) -> Observer | None:
    """An observer for a request that may be an LLM call, else ``None``.

    A POST to a known path tail (``chat/completions``, ``completions``,
    ``embeddings``, ``responses``, ``messages``; any route prefix) is watched
    as that API. Any other POST with a JSON (or no) content type gets an
    observer that decides from the body: a string ``model`` plus
    ``messages``/``input``/``prompt`` makes it an LLM call, and the response
    shape then names the API. GET is watched the same body-decided way (it
    rarely has one); other methods never, nor token-counting and model-list
    paths (``.../count_tokens``, ``.../input_tokens``, ``.../models``).
    """
    try:
        verb = method.upper()
        if verb not in ("POST", "GET"):
            return None
        if never_llm(path):
            return None
        api = api_for_path(path)
        if verb == "POST" and api is not None:
            return Observer(api)
        kind = (content_type or "").split(";", 1)[0].strip().lower()
        if verb == "GET" and api is None:
            return None
        if kind and "json" not in kind:
            return None
        return Observer(None)
    except Exception:
        return None
