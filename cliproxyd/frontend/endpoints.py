"""
The client endpoints that ride on the generate path with a twist:
C{POST /v1/completions} (legacy text completions, served by chat) and
C{POST /v1/responses/compact} (a Responses body compacted by an upstream
that has the endpoint).

Each is a hook the frontend's generate route calls once the body is decoded
and the caller's scope is known: it says how the answers look (the client
format), what request the conductor runs, and which providers may serve it.
The conductor runs them as any other request (picks, failover, cooldowns);
nothing in it knows these endpoints.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol

from cliproxyd.formats import completions
from cliproxyd.formats.request import COMPACT, ClientRequest, dumps


class Refused(Exception):
    """A request the endpoint cannot serve: the client's 4xx, said in words."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class ServedView(Protocol):
    """What the hooks read of the generation being served (L{cliproxyd.frontend.app._Served})."""

    conductor: Any
    #: the providers with a credential whose executor serves /v1/responses/compact
    compact_providers: frozenset[str]


def text_completion(served: ServedView, req: ClientRequest,
                    providers: frozenset[str]) -> tuple[Any, ClientRequest, frozenset[str]]:
    """A completion goes to any upstream that answers chat; its answers are C{text_completion}s."""
    return completions.answering(req.data), req, providers


def compact(served: ServedView, req: ClientRequest,
            providers: frozenset[str]) -> tuple[ModuleType | Any, ClientRequest, frozenset[str]]:
    """
    A compaction: never streamed, and only for the providers that serve it
    (within the caller's own, when its key names some). A model served by
    none of them is a 400 saying so.
    """
    if req.stream:
        raise Refused(400, "stream: compact answers are not streamed; leave stream out or false")
    serving = served.conductor.providers(req.model)
    if not serving:
        return req.fmt, _compaction(req), providers  # unknown: the conductor's 404
    able = served.compact_providers.intersection(serving)
    if providers:
        able &= providers
    if not able:
        raise Refused(400, f"No configured upstream serves /v1/responses/compact for the model {req.model!r} "
                           f"(it is served by {', '.join(serving)}; compaction needs a Codex account, a "
                           "codex-api-key or an openai-compatibility provider with responses-compact: true)",
                      "compact_not_supported")
    return req.fmt, _compaction(req), frozenset(able)


def _compaction(req: ClientRequest) -> ClientRequest:
    """The request as the compact endpoint takes it: no C{stream} field, answered whole."""
    data, raw = req.data, req.raw
    if "stream" in data:
        data = {k: v for k, v in data.items() if k != "stream"}
        raw = dumps(data)
    out = ClientRequest(req.fmt, data, raw, req.model, False, headers=req.headers)
    out.alt = COMPACT
    return out
