"""
For the browser walk (tests/test_panel_browser.py): one origin that serves
a built Management Center at C{/management.html} and passes every other
path to the daemon, so the panel talks to the daemon as it does when the
daemon serves it itself (same origin, no CORS).

    python -m tests.panel_front --port 8400 --daemon 8317 --html /tmp/panel/management.html
"""

from __future__ import annotations

import argparse

from twisted.internet import reactor
from twisted.web.proxy import ReverseProxyResource
from twisted.web.server import Site
from twisted.web.static import File


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--daemon", type=int, required=True)
    parser.add_argument("--html", required=True)
    options = parser.parse_args()
    root = ReverseProxyResource("127.0.0.1", options.daemon, b"")
    root.putChild(b"management.html", File(options.html, defaultType="text/html"))
    reactor.listenTCP(options.port, Site(root), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
