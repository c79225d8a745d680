"""twistd plugins: `twistd logproxy` (the proxy) and `twistd logproxy-mock` (a mock LLM API)."""

from twisted.application.service import ServiceMaker

logproxy = ServiceMaker("logproxy", "logproxy.tap", "LLM-logging reverse proxy", "logproxy")
logproxy_mock = ServiceMaker(
    "logproxy-mock", "logproxy.mockllm", "Mock OpenAI/Anthropic API server", "logproxy-mock"
)
