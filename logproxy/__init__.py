"""logproxy: a Twisted reverse proxy that captures LLM traffic, streaming included."""

__version__ = "0.1.0"
