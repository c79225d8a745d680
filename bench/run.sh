#!/usr/bin/env bash
# Install what the benchmark needs (idempotently), then run it on loopback:
#   bench/run.sh [--quick] [--only rps,sse,...] [--proxies logproxy,...] [--out DIR]
# Debian: nginx, wrk (apt-get); mitmproxy in its own venv (bench/.venv-mitm);
# matplotlib (for the chart) and logproxy itself in the Python that runs the suite
# ($PYTHON, default python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "bench: apt-get install ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

venv="$here/.venv-mitm"
if [ ! -x "$venv/bin/mitmdump" ]; then
    echo "bench: creating $venv with mitmproxy" >&2
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q mitmproxy
fi

"$py" -c 'import matplotlib' 2>/dev/null || "$py" -m pip install -q matplotlib
"$py" -c 'import logproxy' 2>/dev/null || "$py" -m pip install -q -e "$root"

cd "$root"
export BENCH_COMMAND="bench/run.sh${*:+ $*}"
exec "$py" -m bench "$@"
