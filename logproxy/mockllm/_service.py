"""Running the mock: twistd ``Options``/``makeService`` and the ``python -m`` entry point."""

from __future__ import annotations

import sys
from pathlib import Path

from OpenSSL import SSL
from twisted.application import internet
from twisted.application.service import IService
from twisted.internet import ssl
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python import usage

from ._site import build_site

log = Logger()


class Options(usage.Options):
    """``twistd logproxy-mock`` / ``python -m logproxy.mockllm`` options."""

    optParameters = [
        ["port", "p", 5600, "TCP port to listen on (0: any free port).", int],
        ["host", None, "127.0.0.1", "Interface to listen on."],
        ["tls-cert", None, None, "PEM certificate (may include the key): serve HTTPS."],
        ["tls-key", None, None, "PEM private key (default: read from --tls-cert)."],
    ]
    optFlags = [
        ["access-log", None, "Log every request (off by default: it is a benchmark upstream)."],
    ]

    def postOptions(self) -> None:
        if self["tls-key"] and not self["tls-cert"]:
            raise usage.UsageError("--tls-key needs --tls-cert")
        for name in ("tls-cert", "tls-key"):
            if self[name] and not Path(self[name]).is_file():
                raise usage.UsageError(f"--{name}: no such file: {self[name]}")


class PemContextFactory(ssl.ContextFactory):
    """Server TLS from PEM files: the certificate chain, and the key (may share the file)."""

    def __init__(self, cert_path: str, key_path: str | None = None) -> None:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.use_certificate_chain_file(cert_path)
        context.use_privatekey_file(key_path or cert_path)
        context.check_privatekey()
        self._context = context

    def getContext(self) -> SSL.Context:
        return self._context


def tls_options(cert_path: str, key_path: str | None) -> PemContextFactory:
    """Server TLS settings for ``listenSSL`` (fails early on a bad or mismatched pair)."""
    return PemContextFactory(cert_path, key_path)


def makeService(options: Options) -> IService:
    """The twistd service: one HTTP (or HTTPS) listener."""
    site = build_site(access_log=bool(options["access-log"]))
    port, host = options["port"], options["host"]
    service: IService
    if options["tls-cert"]:
        context = tls_options(options["tls-cert"], options["tls-key"])
        service = internet.SSLServer(port, site, context, interface=host)  # type: ignore[attr-defined,arg-type]
    else:
        service = internet.TCPServer(port, site, interface=host)  # type: ignore[attr-defined,arg-type]
    return service


def main(argv: list[str] | None = None) -> int:
    """Run in the foreground until interrupted: ``python -m logproxy.mockllm --port N``."""
    options = Options()  # type: ignore[no-untyped-call]
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)  # type: ignore[no-untyped-call]
    except usage.UsageError as exc:
        sys.stderr.write(f"{options}\nlogproxy.mockllm: {exc}\n")
        return 2
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    site = build_site(reactor, access_log=bool(options["access-log"]))
    host, scheme = options["host"], "http"
    if options["tls-cert"]:
        context = tls_options(options["tls-cert"], options["tls-key"])
        port = reactor.listenSSL(options["port"], site, context, interface=host)  # type: ignore[attr-defined,arg-type]
        scheme = "https"
    else:
        port = reactor.listenTCP(options["port"], site, interface=host)  # type: ignore[attr-defined,arg-type]
    address = port.getHost()
    log.info("mockllm listening on {url}", url=f"{scheme}://{address.host}:{address.port}")
    reactor.run()  # type: ignore[attr-defined,arg-type]
    return 0
