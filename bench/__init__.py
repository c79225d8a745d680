"""logproxy's benchmark suite: ``python -m bench`` (or ``bench/run.sh``); see README.md here."""
