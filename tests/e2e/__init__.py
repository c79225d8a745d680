"""End-to-end tests: real twistd processes (run with: pytest tests/e2e)."""
