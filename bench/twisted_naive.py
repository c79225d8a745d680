"""The naive baseline: Twisted's own ``twisted.web.proxy.ReverseProxyResource``.

``python bench/twisted_naive.py --port P --route static=127.0.0.1:8001 --route sse=...``
forwards ``/static/...`` to ``127.0.0.1:8001/static/...`` (the path is kept). No capture and
no access log (logproxy has none either). ReverseProxyResource speaks HTTP/1.0 with
``Connection: close`` upstream and applies no backpressure to the upstream read.
"""

from __future__ import annotations

import argparse

from twisted.internet import reactor
from twisted.web import proxy, resource, server


class QuietSite(server.Site):
    def log(self, request):  # type: ignore[no-untyped-def]
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--route", action="append", default=[], help="prefix=host:port")
    args = parser.parse_args()
    root = resource.Resource()
    for spec in args.route:
        prefix, _, target = spec.partition("=")
        host, _, port = target.rpartition(":")
        root.putChild(
            prefix.encode(), proxy.ReverseProxyResource(host, int(port), b"/" + prefix.encode())
        )
    site = QuietSite(root)
    site.noisy = False
    reactor.listenTCP(args.port, site, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
