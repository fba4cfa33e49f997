"""
What every answer gets, as CLIProxyAPI's middleware gives it, before the
client routes, the management API or the panel see a request:

  - CORS on every route: C{Access-Control-Allow-Origin: *}, the methods
    and headers allowed, and the headers a browser script may read
    (L{EXPOSED}), on the answer to every request that has an C{Origin}
    (as every cross-origin request a browser makes has; CLIProxyAPI adds
    them to every answer); an C{OPTIONS} request (a preflight) is answered
    204 with them there and then, on any path, without reaching a route or
    the access check.
  - C{X-CPA-VERSION}, C{X-CPA-COMMIT} and C{X-CPA-BUILD-DATE} on every
    management answer (C{/v0/management...}), errors included: the
    Management Center reads its server's version from them; and
    C{X-CPA-SUPPORT-PLUGIN: false}, so it shows no plugin pages.
  - C{/management.html}: the panel (L{cliproxyd.management.panel.Panel}).
  - Every other request is handed to the L{RequestRecorder} (request logs,
    error logs, main.log's access lines), then to the client routes.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from cliproxyd._version import build_info
from cliproxyd.management.logs import RequestRecorder

#: The response headers a cross-origin script may read (CLIProxyAPI's list).
EXPOSED = (
    "X-CPA-TRACE-ID", "X-CPA-VERSION", "X-CPA-COMMIT", "X-CPA-BUILD-DATE", "X-CPA-SUPPORT-PLUGIN",
    "X-CPA-HOME-VERSION", "X-CPA-HOME-BUILD-DATE", "X-SERVER-VERSION", "X-SERVER-BUILD-DATE",
    "Location", "Retry-After", "X-Request-Id", "OpenAI-Request-Id",
)

CORS_HEADERS = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    (b"access-control-allow-headers", b"*"),
    (b"access-control-expose-headers", ", ".join(EXPOSED).encode()),
)

_MANAGEMENT = b"/v0/management"
_PANEL = b"/management.html"


def version_headers() -> tuple[tuple[bytes, bytes], ...]:
    """The C{X-CPA-*} headers of this build (L{build_info}; worked out once)."""
    version, commit, build_date = build_info()
    return (
        (b"x-cpa-version", version.encode()),
        (b"x-cpa-commit", commit.encode()),
        (b"x-cpa-build-date", build_date.encode()),
        # No plugins: the Management Center then neither asks for them nor shows their pages.
        (b"x-cpa-support-plugin", b"false"),
    )


class Root(Resource):
    """
    The site's root: the headers above, the panel at C{/management.html},
    every other path to C{inner} (the client routes, which mount the
    management API).
    """

    isLeaf = True

    def __init__(self, inner: IResource, panel: IResource | None = None,
                 versions: tuple[tuple[bytes, bytes], ...] | None = None,
                 recorder: RequestRecorder | None = None) -> None:
        super().__init__()
        self._inner = inner
        self._panel = panel
        self._recorder = recorder
        self._versions = version_headers() if versions is None else versions

    def render(self, request: IRequest) -> Any:
        headers = request.responseHeaders
        if request.method == b"OPTIONS":
            for name, value in CORS_HEADERS:
                headers.setRawHeaders(name, [value])
            request.setResponseCode(204)
            return b""
        if request.requestHeaders.hasHeader(b"origin"):
            # A browser's cross-origin request (they all carry Origin): the
            # headers it needs; an SDK or curl, which sends none, is spared them.
            for name, value in CORS_HEADERS:
                headers.setRawHeaders(name, [value])
        path = request.path
        if path.startswith(_MANAGEMENT) and (len(path) == len(_MANAGEMENT) or path[len(_MANAGEMENT)] == 47):
            for name, value in self._versions:
                headers.setRawHeaders(name, [value])
        elif path == _PANEL and self._panel is not None:
            return self._panel.render(request)
        elif self._recorder is not None:
            self._recorder.start(request)
        return self._inner.render(request)
