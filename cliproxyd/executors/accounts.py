"""
The executors of the account types beyond the four CLI tools': xAI (Grok),
Kimi, Vertex AI, and Qwen and iFlow (whose accounts CLIProxyAPI has since
dropped; their files still work here). Each speaks a wire format cliproxyd
already has and differs in where requests go and what they carry:

- C{xai} (OAuth) and C{xai-api-key}: OpenAI Responses at C{{base}/responses},
  always a stream upstream (as Codex's backend), an answer the client wants
  whole collected from C{response.completed}. On Grok CLI's chat proxy (an
  OAuth account's default) the requests carry the Grok CLI's identity.
- C{kimi}: OpenAI chat completions at C{{base}/v1/chat/completions}, the
  model named without its C{kimi-} (L{kimi_upstream_model}), with Kimi's
  device headers.
- C{qwen}: OpenAI chat completions at the account's C{resource_url}.
- C{iflow}: OpenAI chat completions with the account's API key, and a
  session id, timestamp and signature per request (as iFlow's CLI sends).
- C{vertex} (a service account): Gemini at C{projects/P/locations/L/
  publishers/google/models/M:generateContent}, with the access token the
  service account's signed assertion bought.
- C{vertex-api-key}: Gemini at C{/v1/publishers/google/models/M:...} with
  the key as C{x-goog-api-key}.

Every one of them is an ordinary executor to the conductor: cooldowns,
quota groups, warmups, affinity and pins apply as to any other credential.
"""

from __future__ import annotations

import hashlib
import hmac
import platform
import socket
import uuid
from typing import Any, Iterable
from urllib.parse import quote

from twisted.web.http_headers import Headers

from cliproxyd._version import __version__
from cliproxyd.credentials import Credential
from cliproxyd.credentials.authfiles import XAI_CLI_BASE_URL
from cliproxyd.executors.oauth import CodexOAuthExecutor
from cliproxyd.executors.upstreams import GeminiExecutor, OpenAICompatExecutor
from cliproxyd.replies import Outbound

#: what Grok CLI's chat proxy wants to see (the Grok CLI version it expects)
XAI_CLIENT_VERSION = "0.2.120"
XAI_CLI_HEADERS = {
    b"x-xai-token-auth": [b"xai-grok-cli"],
    b"x-grok-client-version": [XAI_CLIENT_VERSION.encode()],
    b"user-agent": [b"xai-grok-workspace/" + XAI_CLIENT_VERSION.encode()],
    b"x-grok-client-identifier": [b"grok-shell"],
    b"x-authenticateresponse": [b"authenticate-response"],
}
QWEN_USER_AGENT = b"QwenCode/0.14.2 (darwin; arm64)"
IFLOW_USER_AGENT = "iFlow-Cli"


class _Secret:
    """The credential's current secret (an account's bearer, read per request: the refresher replaces it)."""

    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        return {}

    def request_headers(self, cred: Credential) -> Headers:
        headers = Headers(self._headers[cred.id])  # type: ignore[attr-defined]
        headers.setRawHeaders(b"authorization", [b"Bearer " + cred.secret.encode("latin-1")])
        return headers


class XAIExecutor(_Secret, CodexOAuthExecutor):
    """xAI's Responses API, for an xAI account or an C{xai-api-key} entry."""

    alternates = frozenset()  # xAI has no /responses/compact

    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        return dict(XAI_CLI_HEADERS) if cred.base_url == XAI_CLI_BASE_URL else {}

    def stream_body(self, data: dict[str, Any]) -> None:
        """A stream always; what xAI refuses goes (a server-side conversation, OpenAI's cache and safety keys)."""
        data["stream"] = True
        for name in ("previous_response_id", "prompt_cache_retention", "safety_identifier", "stream_options"):
            data.pop(name, None)


def kimi_upstream_model(model: str) -> str:
    """The name Kimi's coding API knows a model by: without C{kimi-}, K2.7 Code as C{kimi-for-coding}."""
    base = model.strip().lower().removesuffix("[1m]")
    special = {"kimi-k2.7-code": "kimi-for-coding", "k2.7-code": "kimi-for-coding",
               "kimi-k2.7-code-highspeed": "kimi-for-coding-highspeed",
               "k2.7-code-highspeed": "kimi-for-coding-highspeed"}
    if base in special:
        return special[base]
    return base.removeprefix("kimi-")


class KimiExecutor(_Secret, OpenAICompatExecutor):
    """Kimi's coding API (chat completions) for a Kimi account."""


    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        assert cred.account is not None
        headers = {
            b"x-msh-platform": [b"cliproxyd"],
            b"x-msh-version": [__version__.encode()],
            b"x-msh-device-name": [_ascii(socket.gethostname()) or b"unknown"],
            b"x-msh-device-model": [_ascii(f"{platform.system()} {platform.machine()}")],
        }
        device = cred.account.data.get("device_id")
        if isinstance(device, str) and device.strip():
            headers[b"x-msh-device-id"] = [_ascii(device.strip())]
        return headers

    def body(self, req: Outbound, upstream: str) -> bytes:
        return super().body(req, kimi_upstream_model(upstream))

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        return cred.base_url + "/v1/chat/completions"


class QwenExecutor(_Secret, OpenAICompatExecutor):
    """Qwen Code's chat completions for a Qwen account, at its C{resource_url}."""


    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        return {
            b"user-agent": [QWEN_USER_AGENT],
            b"x-dashscope-useragent": [QWEN_USER_AGENT],
            b"x-dashscope-authtype": [b"qwen-oauth"],
            b"x-dashscope-cachecontrol": [b"enable"],
            b"x-stainless-lang": [b"js"],
            b"x-stainless-runtime": [b"node"],
            b"x-stainless-package-version": [b"5.11.0"],
        }

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        return cred.base_url + "/chat/completions"


def iflow_signature(api_key: str, session_id: str, timestamp_ms: int, user_agent: str = IFLOW_USER_AGENT) -> str:
    """iFlow's request signature: HMAC-SHA256, keyed by the API key, of C{UA:SESSION:TIMESTAMP}."""
    payload = f"{user_agent}:{session_id}:{timestamp_ms}".encode()
    return hmac.new(api_key.encode(), payload, hashlib.sha256).hexdigest()


class IFlowExecutor(_Secret, OpenAICompatExecutor):
    """iFlow's chat completions, with the account's API key, signed per request."""


    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        return {b"user-agent": [IFLOW_USER_AGENT.encode()]}

    def request_headers(self, cred: Credential) -> Headers:
        headers = super().request_headers(cred)
        session = f"session-{uuid.uuid4()}"
        # The signature is over the clock's milliseconds (the wall clock's, on the reactor), as iFlow checks it.
        stamp = int(self._clock.seconds() * 1000)
        headers.setRawHeaders(b"session-id", [session.encode()])
        headers.setRawHeaders(b"x-iflow-timestamp", [b"%d" % stamp])
        secret = cred.secret
        if secret:
            headers.setRawHeaders(b"x-iflow-signature", [iflow_signature(secret, session, stamp).encode()])
        return headers

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        return cred.base_url + "/chat/completions"


class _VertexPaths(GeminiExecutor):
    """Gemini bodies at Vertex AI's paths: each credential's C{.../publishers/google/models/} worked out at load."""

    def models_base(self, cred: Credential) -> str:
        raise NotImplementedError

    def prepare(self, creds: Iterable[Credential]) -> None:
        creds = tuple(creds)
        super().prepare(creds)
        self._models_base = {c.id: self.models_base(c) for c in creds}

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self._models_base[cred.id]}{quote(model, safe='')}:{method}"

    def count_url(self, cred: Credential, model: str) -> str:
        return f"{self._models_base[cred.id]}{quote(model, safe='')}:countTokens"


class VertexExecutor(_Secret, _VertexPaths):
    """Vertex AI's Gemini for a service account: its project and location in the path, a bearer token."""

    def models_base(self, cred: Credential) -> str:
        location = cred.account.vertex_location if cred.account is not None else ""
        return (f"{cred.base_url}/v1/projects/{quote(cred.project, safe='')}/locations/"
                f"{quote(location, safe='')}/publishers/google/models/")


class VertexAPIKeyExecutor(_VertexPaths):
    """Vertex AI's Gemini for a C{vertex-api-key} entry (express mode): no project in the path, C{x-goog-api-key}."""

    def models_base(self, cred: Credential) -> str:
        return f"{cred.base_url}/v1/publishers/google/models/"


def _ascii(text: str) -> bytes:
    return text.encode("ascii", "replace")
