"""
The conductor's one executor: it sends each credential's requests to the
executor of the credential's kind (API key or OAuth account, per provider).
"""

from __future__ import annotations

from typing import Awaitable, Iterable

from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime

from cliproxyd.config.model import Timeouts
from cliproxyd.credentials import Credential
from cliproxyd.executors.accounts import (
    IFlowExecutor,
    KimiExecutor,
    QwenExecutor,
    VertexAPIKeyExecutor,
    VertexExecutor,
)
from cliproxyd.credentials.refresh import SaveFn
from cliproxyd.executors.images import (
    CodexAccountImagesExecutor,
    CodexKeyImagesExecutor,
    CompatImagesExecutor,
    XAIImagesExecutor,
)
from cliproxyd.executors.interactions import InteractionsExecutor
from cliproxyd.executors.oauth import (
    AntigravityExecutor,
    ClaudeOAuthExecutor,
    GeminiCLIExecutor,
)
from cliproxyd.executors.upstreams import (
    ClaudeExecutor,
    GeminiExecutor,
    HTTPExecutor,
    WireSettings,
)
from cliproxyd.executors.quota import QUOTA_CALLS, QuotaReading, read_quota
from cliproxyd.modelnames import parse_model
from cliproxyd.formats.images import ImageRequest
from cliproxyd.replies import Outbound, Reply, StreamReply

#: The executor class of each credential kind.
EXECUTORS: dict[str, type[HTTPExecutor]] = {
    "openai-compatibility": CompatImagesExecutor,
    "claude-api-key": ClaudeExecutor,
    "gemini-api-key": GeminiExecutor,
    "codex-api-key": CodexKeyImagesExecutor,
    "claude": ClaudeOAuthExecutor,
    "codex": CodexAccountImagesExecutor,
    "gemini-cli": GeminiCLIExecutor,
    "antigravity": AntigravityExecutor,
    "xai": XAIImagesExecutor,
    "xai-api-key": XAIImagesExecutor,
    "kimi": KimiExecutor,
    "vertex": VertexExecutor,
    "vertex-api-key": VertexAPIKeyExecutor,
    "qwen": QwenExecutor,
    "iflow": IFlowExecutor,
    "interactions-api-key": InteractionsExecutor,
}


class Executors:
    """The conductor's one executor: each credential's request goes to the executor of its kind."""

    def __init__(self, client: HTTPClient, clock: IReactorTime, timeouts: Timeouts,
                 creds: Iterable[Credential] = (), wire: WireSettings = WireSettings(),
                 save_account: SaveFn | None = None) -> None:
        self._by_kind = {kind: cls(client, clock, timeouts, wire, save_account) for kind, cls in EXECUTORS.items()}
        self._clock = clock
        creds = tuple(creds)
        # Headers and URLs are worked out once per credential, here, not per request.
        for kind, executor in self._by_kind.items():
            executor.prepare(c for c in creds if c.kind == kind)

    def execute(self, cred: Credential, req: Outbound, upstream: str) -> Awaitable[Reply | StreamReply]:
        if getattr(req, "alt", ""):  # another endpoint than generation (/v1/responses/compact)
            return self._by_kind[cred.kind].execute_alternate(cred, req, upstream)
        if type(req) is ImageRequest:  # /v1/images/*: the executor's Images path (cliproxyd.executors.images)
            return self._by_kind[cred.kind].images(cred, req, upstream)
        return self._by_kind[cred.kind].execute(cred, req, upstream)

    def count_tokens(self, cred: Credential, req: Outbound, upstream: str) -> Awaitable[Reply]:
        return self._by_kind[cred.kind].count_tokens(cred, req, upstream)

    def read_quota(self, cred: Credential, upstream: str) -> Awaitable[QuotaReading] | None:
        """C{cred}'s usage endpoint read for model C{upstream}, or None when its kind has none (L{QUOTA_CALLS})."""
        if cred.kind not in QUOTA_CALLS:
            return None
        return read_quota(self._by_kind[cred.kind], cred, parse_model(upstream).base, self._clock.seconds)


def alternate_kinds(alt: str) -> frozenset[str]:
    """The credential kinds whose executors serve the client endpoint C{alt} (L{HTTPExecutor.alternates})."""
    return frozenset(kind for kind, cls in EXECUTORS.items() if alt in cls.alternates)
