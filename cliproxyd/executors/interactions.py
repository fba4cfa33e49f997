"""
The C{interactions-api-key} executor: Google's Interactions API,
C{POST {base-url}/v1beta/interactions} with C{x-goog-api-key}, as
CLIProxyAPI's C{gemini-interactions} provider sends it. The request's API
revision is the client's C{Api-Revision} header when it sent one, else
L{cliproxyd.formats.interactions.API_REVISION}.
"""

from __future__ import annotations

from typing import Iterable

from twisted.web.http_headers import Headers

from cliproxyd.credentials import Credential
from cliproxyd.executors.upstreams import HTTPExecutor
from cliproxyd.formats import interactions
from cliproxyd.replies import Outbound

REVISION = b"api-revision"


class InteractionsExecutor(HTTPExecutor):
    """Interactions: one URL for every model (the body names it), streamed when the body says C{stream}."""

    format = interactions
    protocol = "interactions"

    def prepare(self, creds: Iterable[Credential]) -> None:
        creds = tuple(creds)
        #: the credentials whose entry sets its own revision (it wins over the client's, as in CLIProxyAPI)
        self._own_revision = frozenset(c.id for c in creds if any(n.lower() == "api-revision" for n, _ in c.headers))
        super().prepare(creds)

    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        return {b"x-goog-api-key": [cred.api_key.encode("latin-1")], REVISION: [interactions.API_REVISION]}

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        return f"{cred.base_url}/v1beta/interactions"

    def from_client(self, cred: Credential, req: Outbound, headers: Headers) -> None:
        client = getattr(req, "headers", None)
        revision = client.getRawHeaders(REVISION) if client is not None else None
        if revision and cred.id not in self._own_revision:
            headers.setRawHeaders(REVISION, revision[:1])
