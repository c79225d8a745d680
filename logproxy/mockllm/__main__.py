"""``python -m logproxy.mockllm --port N``: run the mock in the foreground."""

from __future__ import annotations

from logproxy.mockllm import main

raise SystemExit(main())
