"""The ``logproxy`` command line (SPEC §9): look at, export, replay and follow captures.

``logproxy ls|show|export|replay|tail|reindex``, reading the capture files of
``--log-dir DIR`` or of the ``logging.log_dir`` in ``--config FILE`` (default
``./config.yaml``; without that file, ``./logs`` or ``$LOGPROXY_LOG_DIR``). Every
failure is one line on stderr and a non-zero exit status; no tracebacks (set
``LOGPROXY_DEBUG=1`` to get one for a bug).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn

from logproxy import __version__
from logproxy.cli.export import FORMATS, cmd_export
from logproxy.cli.replay import cmd_replay
from logproxy.cli.store import CliError, Store
from logproxy.cli.tail import cmd_tail
from logproxy.cli.view import cmd_ls, cmd_show
from logproxy.config import ConfigError, load_config

__all__ = ["CliError", "build_parser", "main", "resolve_log_dir"]

Handler = Callable[[Any, Store, IO[str], IO[str]], int]

_TIMES = (
    "TIME is RFC 3339 (2025-09-13T02:00:00Z), a UTC date (2025-09-13) or an age (90s, 30m, 1h, 2d)."
)


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (``logproxy ls: error: ...``), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    group = parser.add_argument_group("where the captures are")
    group.add_argument(
        "--log-dir", metavar="DIR", default=default, help="capture directory (beats --config)"
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="read logging.log_dir from this config (default ./config.yaml, else ./logs)",
    )


def _filters(parser: argparse.ArgumentParser, limit: bool) -> None:
    parser.add_argument("--route", metavar="R", help="route name (glob; '-' for unmatched)")
    parser.add_argument("--model", metavar="M", help="requested or answering model (glob)")
    parser.add_argument(
        "--status",
        metavar="S",
        help="200, 4xx, error, inflight or ok; several comma-separated",
    )
    parser.add_argument("--since", metavar="TIME", help="started at or after TIME")
    parser.add_argument("--until", metavar="TIME", help="started before TIME")
    if limit:
        parser.add_argument(
            "--limit",
            metavar="N",
            type=int,
            default=50,
            help="show at most N captures (default 50; 0: all)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="logproxy",
        description="Look at, export, replay and follow the captures logproxy wrote.",
        epilog=_TIMES,
    )
    parser.add_argument("--version", action="version", version=f"logproxy {__version__}")
    _common(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, handler: Handler, epilog: str = _TIMES) -> Any:
        p = sub.add_parser(name, help=summary, description=summary, epilog=epilog)
        _common(p, argparse.SUPPRESS)
        p.set_defaults(handler=handler)
        return p

    ls = command(
        "ls",
        "List captures, newest first.",
        cmd_ls,
        "Marker column: ~ in flight, ! ended with an error or lost capture bytes. " + _TIMES,
    )
    _filters(ls, limit=True)
    ls.add_argument("--json", action="store_true", help="one response metadata document per line")

    show = command("show", "Show one capture: metadata, headers, bodies, reply.", cmd_show, "")
    show.add_argument("id", help="capture id or a unique prefix of it")
    show.add_argument(
        "--json", action="store_true", help="both metadata documents, headers and bodies as JSON"
    )

    export = command(
        "export", "Export captures (oldest first) as JSONL, HAR or chat data.", cmd_export
    )
    export.add_argument(
        "--format",
        choices=FORMATS,
        default="jsonl",
        help="jsonl (one record per call, default), har (HAR 1.2), "
        "openai-chat (fine-tuning lines; non-chat calls skipped)",
    )
    _filters(export, limit=False)
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default stdout)")
    export.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    replay = command(
        "replay",
        "Send a captured request again and diff the new response body with the captured one.",
        cmd_replay,
        "Redacted credentials come from LOGPROXY_REPLAY_AUTHORIZATION (the whole Authorization "
        "value), else OPENAI_API_KEY (Authorization: Bearer), ANTHROPIC_API_KEY (x-api-key), "
        "ANTHROPIC_AUTH_TOKEN, AZURE_OPENAI_API_KEY (api-key).",
    )
    replay.add_argument("id", help="capture id or a unique prefix of it")
    replay.add_argument(
        "--to", metavar="ORIGIN", help="send to this scheme://host:port instead (path kept)"
    )
    replay.add_argument(
        "--via-proxy",
        action="store_true",
        help="send to the URL the client used (X-Proxy-Path), so the proxy captures it again",
    )
    replay.add_argument(
        "--timeout", metavar="SECONDS", type=float, default=600.0, help="default 600"
    )

    tail = command("tail", "Follow new captures: a line as each starts and as it ends.", cmd_tail)
    tail.add_argument("--since", metavar="TIME", help="first print the captures since TIME")

    reindex = command(
        "reindex",
        "Rebuild the capture index (for the logging server's query API) from the files.",
        _reindex,
        "Stop the logproxy that writes this log directory first: it holds the index (and "
        "brings it up to date by itself when it starts).",
    )
    reindex.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    reindex.add_argument(
        "--like", action="store_true", help=argparse.SUPPRESS
    )  # build the LIKE fallback (what a SQLite without FTS5 gets); for tests
    return parser


def _reindex(args: Any, store: Store, out: IO[str], err: IO[str]) -> int:
    # imported here: the index imports logproxy.cli.parse, so not at module level
    from logproxy.cli.reindex import cmd_reindex

    return cmd_reindex(args, store, out, err)


def resolve_log_dir(log_dir: str | None, config: str | None) -> str:
    """``--log-dir``, else ``logging.log_dir`` of the config (``LOGPROXY_LOG_DIR`` applies)."""
    if log_dir:
        return os.path.abspath(log_dir)
    path = config if config is not None else "config.yaml"
    try:
        cfg = load_config(path, require_file=config is not None)
    except ConfigError as e:
        raise CliError(f"{path}: {e}") from None
    return cfg.logging.log_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (the console script exits with it)."""
    out, err = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    prog = f"logproxy {args.command}"
    try:
        store = Store(resolve_log_dir(args.log_dir, args.config))
        handler: Handler = args.handler
        return handler(args, store, out, err)
    except CliError as e:
        err.write(f"{prog}: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except Exception as e:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("LOGPROXY_DEBUG"):
            raise
        err.write(f"{prog}: internal error: {type(e).__name__}: {e}\n")
        return 1


def _silence_stdout() -> None:
    """After EPIPE (``logproxy ls | head``), keep the interpreter's final flush quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
