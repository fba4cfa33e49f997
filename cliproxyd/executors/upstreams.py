"""
The API-key executors, one per upstream wire protocol, over the shared HTTP
client: OpenAI-compatible chat completions, Anthropic Messages, Gemini
generateContent and OpenAI Responses (Codex).
"""

from __future__ import annotations

import json
import uuid
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any, Callable, Iterable
from urllib.parse import quote

from attrs import field, frozen
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from cliproxyd import jsontext
from cliproxyd.config.model import ClaudeHeaderDefaults, CodexHeaderDefaults, Config, Timeouts
from cliproxyd.credentials import Credential
from cliproxyd.credentials.refresh import SaveFn
from cliproxyd.replies import Outbound, Reply, StreamReply, UpstreamError
from cliproxyd.executors.stream import (
    MAX_ERROR_BODY,
    BodyCollector,
    StreamRelay,
    describe,
    is_cancellation,
    json_answer,
    retry_hint_from_body,
)
from cliproxyd.executors import cloak
from cliproxyd.executors.payload import PayloadRules
from cliproxyd.formats import canonical as C
from cliproxyd.formats import claude, gemini, openai_chat, responses
from cliproxyd.formats.request import COMPACT
from cliproxyd.modelnames import parse_model
from cliproxyd.outbound import OutboundClients, client_chooser, post

ANTHROPIC_VERSION = b"2023-06-01"


def parse_retry_after(value: bytes | None, now: float) -> float | None:
    """Seconds from a C{Retry-After} header: delta-seconds or an HTTP date."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError):
            return None
    return max(seconds, 0.0)


def _no_connection(e: BaseException) -> bool:
    """Whether C{e} (or what it wraps) says no connection was made: refused, unreachable, timed out, no address."""
    if isinstance(e, ConnectError):
        return True
    return any(r.check(ConnectError) for r in getattr(e, "reasons", None) or ())


@frozen
class WireSettings:
    """
    What the config says about the bytes executors send: payload rules
    (compiled; None when there are none) and the header defaults merged
    into OAuth executors' fixed headers.
    """

    payload: PayloadRules | None = field(default=None, eq=False)
    claude_defaults: ClaudeHeaderDefaults = ClaudeHeaderDefaults()
    codex_defaults: CodexHeaderDefaults = CodexHeaderDefaults()
    #: disable-claude-cloak-mode: Claude credentials cloak only when their own settings say so
    disable_claude_cloak: bool = False
    #: codex.disable-codex-cloaking: the client's User-Agent and Originator go to Codex as sent
    disable_codex_cloaking: bool = False

    @classmethod
    def from_config(cls, config: Config) -> "WireSettings":
        return cls(PayloadRules.of(config.payload), config.claude_header_defaults, config.codex_header_defaults,
                   config.disable_claude_cloak_mode, config.disable_codex_cloaking)


def dynamic_headers(cred: Credential) -> tuple[tuple[bytes, bytes], ...]:
    """
    A credential's C{headers} whose value is C{$NAME}: (header, client
    header) pairs, copied from the client's request when it sent one.
    """
    return tuple((name.lower().encode("latin-1"), value[1:].strip().lower().encode("latin-1"))
                 for name, value in cred.headers if value.startswith("$") and value[1:].strip())


class HTTPExecutor:
    """
    One upstream wire protocol over the shared HTTP client: what every
    API-key executor shares (timeouts, error bodies and their retry hints,
    streams handed to a L{StreamRelay} at their first payload). A subclass
    says where requests go and how the key is sent.
    """

    log = Logger()
    #: the format module of the upstream's wire format
    format: ModuleType = openai_chat
    #: the upstream protocol, as payload rules name it
    protocol = "openai"
    #: whether the upstream may be another proxy, which gets the request's retry budget
    forwards_budget = False

    def __init__(self, client: HTTPClient | OutboundClients, clock: IReactorTime, timeouts: Timeouts,
                 wire: WireSettings = WireSettings(), save_account: SaveFn | None = None) -> None:
        self._client_for = client_chooser(client)
        #: writes an OAuth account's file back (what an executor learns of an account, say its project)
        self._save_account = save_account
        #: account file -> the project lookup running for it (L{cliproxyd.executors.oauth.GeminiCLIExecutor})
        self._discoveries: dict[str, Any] = {}
        self._clock = clock
        self._timeouts = timeouts
        self._wire = wire
        self._payload = wire.payload
        self._headers: dict[str, dict[bytes, list[bytes]]] = {}
        self._clients: dict[str, HTTPClient] = {}
        #: credential id -> its $NAME headers, for the credentials that have any
        self._dynamic: dict[str, tuple[tuple[bytes, bytes], ...]] = {}

    def prepare(self, creds: Iterable[Credential]) -> None:
        """Precompute each credential's headers and HTTP client (its proxy's), at config load, not per request."""
        creds = tuple(creds)
        # The entry's own headers last: they win over the executor's, as in CLIProxyAPI.
        self._headers = {c.id: {**c.request_headers(), **self.auth_headers(c), **c.custom_headers()} for c in creds}
        self._dynamic = {c.id: d for c in creds if (d := dynamic_headers(c))}
        self._clients = {c.id: self._client_for(c.proxy) for c in creds}

    def body(self, req: Outbound, upstream: str) -> bytes:
        """The body for C{upstream}, with the payload rules applied (when the config has any)."""
        body = req.body_for(upstream, self.format)
        if self._payload is not None:
            body = self._payload.apply(body, self.protocol, upstream, req)
        return body

    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        return {b"authorization": [b"Bearer " + cred.api_key.encode("latin-1")]}

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        raise NotImplementedError

    def count_url(self, cred: Credential, model: str) -> str | None:
        """Where the upstream counts tokens, or None to estimate them here."""
        return None

    #: the client endpoints besides generation (by C{req.alt}: L{COMPACT}) every credential of this
    #: kind serves; an C{openai-compatibility} provider serves compaction when its config says so
    #: (L{cliproxyd.assembly.providers_serving})
    alternates: frozenset[str] = frozenset()

    def compact_body(self, data: dict[str, Any]) -> None:
        """A compaction is answered whole: the body says nothing of streaming."""
        data.pop("stream", None)

    async def execute_alternate(self, cred: Credential, req: Outbound, upstream: str) -> Reply:
        """
        C{req} at the endpoint C{req.alt} names: for L{COMPACT}, the client's
        Responses body (payload rules applied where the upstream speaks
        Responses) at C{{base}/responses/compact}, answered with one
        C{response.compaction} object, passed on as a Responses answer.
        """
        alt = getattr(req, "alt", "")
        if alt != COMPACT:
            raise UpstreamError("http", f"{cred.provider} does not serve /{alt}", status=501)
        body = self.body(req, upstream) if self.format is responses else req.body_for(upstream, responses)
        data = dict(jsontext.loads(body))
        self.compact_body(data)
        response = await self._send(cred, cred.base_url + "/responses/compact", jsontext.dumps(data), False, req)
        content_type = (response.headers.getRawHeaders(b"content-type") or [b"application/json"])[0]
        return await self._whole(cred, response, content_type, responses)

    def shape(self, cred: Credential, req: Outbound, body: bytes) -> bytes:
        """The body as C{cred}'s upstream gets it (L{ClaudeExecutor} cloaks it); as it is by default."""
        return body

    async def execute(self, cred: Credential, req: Outbound, upstream: str) -> Reply | StreamReply:
        body = self.shape(cred, req, self.body(req, upstream))
        url = self.url(cred, parse_model(upstream).base, req.stream)
        response = await self._send(cred, url, body, req.stream, req)
        content_type = (response.headers.getRawHeaders(b"content-type") or [b"application/json"])[0]
        if req.stream and content_type.startswith(b"text/event-stream"):
            return await self._relay(cred, response)
        return await self._whole(cred, response, content_type)

    async def _whole(self, cred: Credential, response: Any, content_type: bytes,
                     fmt: ModuleType | None = None) -> Reply:
        """
        A whole answer, once its body is known to be a JSON object (else
        L{UpstreamError}, see L{json_answer}), of format C{fmt} (by default
        the upstream's).
        """
        name = (fmt or self.format).NAME
        body = await self._read(response)
        data = self._answer_object(cred, body, name)
        return Reply(response.code, content_type, body, fmt=name, data=data, headers=response.headers)

    def _answer_object(self, cred: Credential, body: bytes, fmt: str = "") -> dict[str, Any]:
        """L{json_answer} of C{body}; an error it raises names the credential by its fingerprint, never its key."""
        try:
            return json_answer(body, fmt or self.format.NAME, self._clock.seconds())
        except UpstreamError as e:
            redact = self.redact(cred)
            e.body = redact(e.body)
            e.message = redact(e.message.encode()).decode("utf-8", "replace")
            raise

    async def _relay(self, cred: Credential, response: Any,
                     relay_class: type[StreamRelay] = StreamRelay) -> StreamReply:
        """A stream reply once the upstream's first generated event is in (a failure before it raises)."""
        content_type = (response.headers.getRawHeaders(b"content-type") or [b"text/event-stream"])[0]
        relay = relay_class(self._clock, self._timeouts.stream_idle, self.format, self.redact(cred))
        response.deliverBody(relay)
        await relay.first
        return StreamReply(response.code, content_type, relay, self.format.NAME, headers=response.headers)

    @staticmethod
    def redact(cred: Credential) -> Callable[[bytes], bytes]:
        """
        What keeps the credential's secret out of upstream bytes we log or
        pass on (an upstream that echoes the key back): its fingerprint
        instead.
        """
        secret = cred.secret.encode() if cred.secret else b""

        def redact(data: bytes) -> bytes:
            return data.replace(secret, cred.fingerprint.encode()) if secret and secret in data else data

        return redact

    async def count_tokens(self, cred: Credential, req: Outbound, upstream: str) -> Reply:
        model = parse_model(upstream).base
        url = self.count_url(cred, model)
        if url is None:
            return Reply(200, b"application/json", b"", local=True, tokens=estimate_tokens(req.canonical))
        response = await self._send(cred, url, req.count_body_for(upstream, self.format), False, req)
        body = await self._read(response)
        try:
            tokens = self.format.count_from_body(jsontext.loads(body))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UpstreamError("broken", "the upstream count is not a count", status=502) from None
        return Reply(response.code, b"application/json", body, fmt=self.format.NAME, tokens=tokens)

    def from_client(self, cred: Credential, req: Outbound, headers: Headers) -> None:
        """Take what this upstream passes on of the client's own headers into C{headers} (nothing by default)."""

    def request_headers(self, cred: Credential) -> Headers:
        """The headers of one request (a fresh object: the caller may add to it)."""
        return Headers(self._headers[cred.id])

    async def _send(self, cred: Credential, url: str, body: bytes, stream: bool, req: Outbound | None = None,
                    method: bytes = b"POST", headers: Iterable[tuple[bytes, bytes]] = ()) -> Any:
        """POST C{body} (or C{method} it, with C{headers} added); the response when its status is 2xx, else L{UpstreamError}."""
        extra = headers
        headers = self.request_headers(cred)
        for name, value in extra:
            headers.setRawHeaders(name, [value])
        dynamic = self._dynamic.get(cred.id) if self._dynamic else None
        if dynamic:
            client = getattr(req, "headers", None)
            for name, source in dynamic:
                values = client.getRawHeaders(source) if client is not None else None
                if values:
                    headers.setRawHeaders(name, values)
                else:
                    headers.removeHeader(name)
        if req is not None:
            self.from_client(cred, req, headers)
        if stream:
            headers.setRawHeaders(b"accept", [b"text/event-stream"])
        if self.forwards_budget:
            budget = getattr(req, "retry_budget", None)
            if budget is not None:
                headers.setRawHeaders(b"x-cliproxyd-retry-budget", [budget.header()])
        client = self._clients.get(cred.id) or self._client_for(cred.proxy)
        d = post(client, url, headers, body, method)
        timed_out = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        limit = self._timeouts.response
        deadline = self._clock.callLater(limit, expire) if limit > 0 else None
        try:
            response = await d
        except Exception as e:
            if timed_out:
                raise UpstreamError("timeout", f"no response within {limit:g}s") from None
            if is_cancellation(e):
                # The client went away: no other credential gets tried.
                raise CancelledError() from None
            # No connection could be made: the upstream is down or
            # unreachable, and cools. A connection that was made and then
            # closed without an answer (often a pooled one the upstream had
            # let go) moves on without cooling the key.
            kind = "connect" if _no_connection(e) else "dropped"
            raise UpstreamError(kind, describe(e)) from None
        finally:
            if deadline is not None and deadline.active():
                deadline.cancel()
        if 200 <= response.code < 300:
            return response
        try:
            error = await self._read(response, MAX_ERROR_BODY)
        except UpstreamError:
            error = b""
        now = self._clock.seconds()
        retry_after = parse_retry_after((response.headers.getRawHeaders(b"retry-after") or [None])[0], now)
        if retry_after is None:
            retry_after = retry_hint_from_body(error, now)
        # An upstream that echoes the key back must not put it in our
        # logs or in the client's error.
        error = self.redact(cred)(error)
        raise UpstreamError("http", _error_message(error) or f"HTTP {response.code}", status=response.code,
                            body=error, retry_after=retry_after, fmt=self.format.NAME, headers=response.headers)

    async def _read(self, response: Any, limit: int | None = None) -> bytes:
        collector = BodyCollector(self._clock, self._timeouts.stream_idle, limit)
        response.deliverBody(collector)
        return await collector.done


class OpenAICompatExecutor(HTTPExecutor):
    """
    C{POST {base-url}/chat/completions} with a bearer key; a compaction (for
    a provider with C{responses-compact}) at C{{base-url}/responses/compact},
    with the client's Responses body.
    """

    format = openai_chat
    forwards_budget = True

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        return cred.base_url + "/chat/completions"


class ClaudeExecutor(HTTPExecutor):
    """
    Anthropic Messages: C{POST {base-url}/v1/messages} with C{x-api-key}; a
    key with a C{cloak} block (and every Claude OAuth account, see
    L{cliproxyd.executors.cloak}) sends Claude Code's identity.
    """

    format = claude
    protocol = "claude"

    def prepare(self, creds: Iterable[Credential]) -> None:
        creds = tuple(creds)
        disabled = self._wire.disable_claude_cloak
        #: credential id -> its cloak policy, for the credentials that cloak
        self._cloak = {c.id: p for c in creds if (p := cloak.policy_for(c, disabled)) is not None}
        #: credential id -> the session id its cloaked requests carry (header and user_id)
        self._sessions = {c: str(uuid.uuid4()) for c in self._cloak}
        self._user_ids: dict[str, str] = {}
        self._version = cloak.claude_code_version(self._wire.claude_defaults)
        super().prepare(creds)

    def identity_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        """Claude Code's headers, for a credential that cloaks (none for one that does not)."""
        if cred.id not in self._cloak:
            return {}
        headers = cloak.identity_headers(self._wire.claude_defaults, oauth=cred.account is not None)
        headers[b"x-claude-code-session-id"] = [self._sessions[cred.id].encode()]
        return headers

    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        return {**self.identity_headers(cred), b"x-api-key": [cred.api_key.encode("latin-1")],
                b"anthropic-version": [ANTHROPIC_VERSION]}

    def shape(self, cred: Credential, req: Outbound, body: bytes) -> bytes:
        policy = self._cloak.get(cred.id)
        if policy is None:
            return body
        try:
            data = jsontext.loads(body)
        except ValueError:
            return body
        if not isinstance(data, dict) or cloak.is_claude_code(getattr(req, "headers", None), data):
            return body
        return jsontext.dumps(cloak.cloak(data, policy, self._version, lambda: self._user_id(cred, policy)))

    def _user_id(self, cred: Credential, policy: cloak.CloakPolicy) -> str:
        if not policy.cache_user_id:
            return cloak.new_user_id()
        user_id = self._user_ids.get(cred.id)
        if user_id is None:
            user_id = self._user_ids[cred.id] = cloak.new_user_id(self._sessions[cred.id])
        return user_id

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        return cred.base_url + "/v1/messages"

    def count_url(self, cred: Credential, model: str) -> str:
        return cred.base_url + "/v1/messages/count_tokens"


class GeminiExecutor(HTTPExecutor):
    """Gemini: C{POST {base-url}/v1beta/models/{model}:generateContent} with C{x-goog-api-key}."""

    format = gemini
    protocol = "gemini"

    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        return {b"x-goog-api-key": [cred.api_key.encode("latin-1")]}

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{cred.base_url}/v1beta/models/{quote(model, safe='')}:{method}"

    def count_url(self, cred: Credential, model: str) -> str:
        return f"{cred.base_url}/v1beta/models/{quote(model, safe='')}:countTokens"


class CodexExecutor(HTTPExecutor):
    """OpenAI Responses (what Codex speaks): C{POST {base-url}/responses} with a bearer key."""

    format = responses
    protocol = "codex"
    alternates = frozenset({COMPACT})

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        return cred.base_url + "/responses"


def estimate_tokens(req: C.Request) -> int:
    """
    A local input-token estimate for upstreams with no count endpoint: about
    four characters a token over the text the model reads. An estimate, as
    CLIProxyAPI's local tokenizer count is for these upstreams.
    """
    chars = len(req.system)
    for m in req.messages:
        for p in m.parts:
            chars += len(getattr(p, "text", "") or getattr(p, "arguments", "") or getattr(p, "content", ""))
    for t in req.tools:
        chars += len(t.name) + len(t.description) + len(json.dumps(t.parameters))
    return max(1, (chars + 3) // 4)


def _error_message(body: bytes) -> str:
    """The message of an OpenAI-shaped error body, for logs; empty if there is none."""
    try:
        data = jsontext.loads(body)  # an upstream's body: never parsed by a recursive reader
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:500]
        if isinstance(err, str):
            return err[:500]
    return ""
