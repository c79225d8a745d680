"""``twistd logproxy``: command-line options and the service they build."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from twisted.application.service import IService, MultiService
from twisted.logger import Logger
from twisted.python import usage

from logproxy.config import ConfigError, load_config
from logproxy.service import LogproxyService, StartupError, tune_process


class Options(usage.Options):
    synopsis = "[--config config.yaml] [--host HOST] [--port PORT]"
    longdesc = "Run the logproxy reverse proxy and its logging server."
    optParameters = [
        ["config", "c", "config.yaml", "Path to the YAML config file."],
        ["host", None, None, "Proxy listen address (overrides server.host)."],
        ["port", "p", None, "Proxy listen port (overrides server.port)."],
    ]


def _fail(message: str) -> NoReturn:
    """One line on stderr and a non-zero exit: no traceback, no usage dump."""
    sys.stderr.write(f"logproxy: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


log = Logger()


class _Root(MultiService):
    """Turns a start-up failure (port taken) into one clear line and an exit."""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except StartupError as e:
            if _daemonized():
                # twistd reports an ordinary exception to the waiting parent through its
                # status pipe ("An error has occurred: ...", 100 bytes at most, hence a
                # builtin exception without a module prefix); SystemExit would leave the
                # parent waiting forever.
                log.error("{message}", message=str(e))
                raise RuntimeError(str(e)) from None
            _fail(str(e))


def _daemonized() -> bool:
    """twistd without ``-n`` points stderr at /dev/null after forking."""
    try:
        return os.path.samestat(os.fstat(2), os.stat(os.devnull))
    except OSError:
        return True


def makeService(options: Any) -> IService:
    port: int | None = None
    if options["port"] is not None:
        try:
            port = int(options["port"])
        except ValueError:
            _fail(f"--port: expected an integer, got {options['port']!r}")
    try:
        config = load_config(options["config"], host=options["host"], port=port, require_file=True)
    except ConfigError as e:
        _fail(str(e))
    root = _Root()
    LogproxyService(config).setServiceParent(root)
    from twisted.internet import reactor

    reactor.callWhenRunning(tune_process)
    return root
