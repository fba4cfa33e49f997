"""
The OAuth executors, for the CLI tools' accounts in C{auth-dir}.

Each OAuth executor speaks the same wire format as an API-key executor and
differs in where it sends the request and how it authenticates: the
account's current access token as a bearer, read per request because the
refresher replaces it. A credential file's C{base_url} overrides where the
requests go.

- C{claude}: Anthropic Messages with the OAuth beta header and Claude
  Code's identity (L{cliproxyd.executors.cloak}).
- C{codex}: the ChatGPT Codex Responses endpoint, which only streams; an
  answer the client wants whole is collected from the stream's
  C{response.completed} event.
- C{gemini-cli}, C{antigravity}: Google's Code Assist C{v1internal} API,
  whose bodies wrap a Gemini request (C{{"model", "project", "request"}})
  and whose answers wrap a Gemini answer (C{{"response"}}); Antigravity
  falls back to its second endpoint when the first fails.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from cliproxyd.credentials import Credential
from cliproxyd.credentials.authfiles import OAUTH_BASE_URLS
from cliproxyd.replies import Outbound, Reply, StreamReply, UpstreamError
from cliproxyd.executors import cloak, projects
from cliproxyd.executors.stream import StreamConsumer, StreamRelay, first_error, stream_error
from cliproxyd.executors.upstreams import (
    ANTHROPIC_VERSION,
    ClaudeExecutor,
    CodexExecutor,
    GeminiExecutor,
)
from cliproxyd.formats.request import dumps, loads
from cliproxyd.modelnames import parse_model

#: What Codex (its terminal UI) sends, as CLIProxyAPI does.
CODEX_USER_AGENT = b"codex-tui/0.146.0 (Mac OS 26.5.0; arm64) iTerm.app/3.6.10 (codex-tui; 0.146.0)"
CODEX_ORIGINATOR = b"codex-tui"
GEMINI_CLI_USER_AGENT = b"GeminiCLI/0.17.1"
ANTIGRAVITY_USER_AGENT = b"antigravity/1.11.9 linux/amd64"


class _Bearer:
    """The account's current access token as a bearer, looked up per request."""

    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        return {}

    def request_headers(self, cred: Credential) -> Headers:
        headers = Headers(self._headers[cred.id])  # type: ignore[attr-defined]
        assert cred.account is not None
        headers.setRawHeaders(b"authorization", [b"Bearer " + cred.account.access_token.encode("latin-1")])
        return headers


class ClaudeOAuthExecutor(_Bearer, ClaudeExecutor):
    """
    Anthropic Messages for a Claude Code account: always Claude Code's
    headers and the OAuth beta; the body cloaked unless its cloak mode is
    C{never} (L{cliproxyd.executors.cloak}).
    """

    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        headers = cloak.identity_headers(self._wire.claude_defaults, oauth=True)
        headers.update(self.identity_headers(cred))
        headers[b"anthropic-version"] = [ANTHROPIC_VERSION]
        return headers

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        return cred.base_url + "/v1/messages?beta=true"

    def count_url(self, cred: Credential, model: str) -> str:
        return cred.base_url + "/v1/messages/count_tokens?beta=true"


def completed_response(body: bytes) -> bytes | None:
    """The answer inside a Responses stream: the C{response} of its C{response.completed} event."""
    for line in body.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if b'"response.completed"' not in payload:
            continue
        try:
            event = loads(payload)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("type") == "response.completed":
            response = event.get("response")
            if isinstance(response, dict):
                return dumps(response)
    return None


class CodexOAuthExecutor(_Bearer, CodexExecutor):
    """
    The ChatGPT Codex backend for a Codex account: always a stream upstream,
    with the account id header and Codex's identity: its C{User-Agent}
    (C{codex-header-defaults.user-agent} over the built-in one) and
    C{Originator}, whatever the client sent, unless
    C{codex.disable-codex-cloaking}, where a client's own two go as sent.
    """

    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        agent = self._wire.codex_defaults.user_agent
        headers = {b"originator": [CODEX_ORIGINATOR],
                   b"user-agent": [agent.encode("latin-1") if agent else CODEX_USER_AGENT]}
        assert cred.account is not None
        if cred.account.account_id:
            headers[b"chatgpt-account-id"] = [cred.account.account_id.encode("latin-1")]
        return headers

    def from_client(self, cred: Credential, req: Outbound, headers: Headers) -> None:
        client = getattr(req, "headers", None)
        if not self._wire.disable_codex_cloaking or client is None:
            return
        for name in (b"user-agent", b"originator"):
            values = client.getRawHeaders(name)
            if values:
                headers.setRawHeaders(name, values[:1])

    def stream_body(self, data: dict[str, Any]) -> None:
        """Make C{data} what the backend takes: it answers only streams, keeps nothing and wants instructions."""
        data["stream"] = True
        data["store"] = False
        data.setdefault("instructions", "")
        data.pop("previous_response_id", None)
        data.pop("max_output_tokens", None)

    def compact_body(self, data: dict[str, Any]) -> None:
        """A compaction at the backend: answered whole, and with instructions, as its streams want them."""
        super().compact_body(data)
        data.setdefault("instructions", "")

    async def execute(self, cred: Credential, req: Outbound, upstream: str) -> Reply | StreamReply:
        data = dict(loads(self.body(req, upstream)))
        self.stream_body(data)
        body = dumps(data)
        url = self.url(cred, parse_model(upstream).base, True)
        response = await self._send(cred, url, body, True, req)
        if req.stream:
            return await self._relay(cred, response)
        whole = await self._read(response)
        answer = completed_response(whole)
        if answer is None:
            error = first_error(whole, self.format)
            if error is not None:
                raise stream_error(*error, self.format.NAME, self._clock.seconds(), self.redact(cred))
            raise UpstreamError("broken", "the Codex stream ended without response.completed", status=502)
        return Reply(response.code, b"application/json", answer, fmt=self.format.NAME, headers=response.headers)


class _Unwrap:
    """A stream consumer that hands on C{v1internal} SSE events with their C{response} envelope removed."""

    def __init__(self, inner: StreamConsumer) -> None:
        self._inner = inner
        self._pending = b""

    def write(self, data: bytes) -> None:
        data = self._pending + data
        complete, sep, self._pending = data.rpartition(b"\n")
        if not sep:
            self._pending = data
            return
        self._inner.write(b"\n".join(_unwrap_line(line) for line in complete.split(b"\n")) + b"\n")

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._inner.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if self._pending:
            self._inner.write(_unwrap_line(self._pending))
            self._pending = b""
        self._inner.unregisterProducer()


def _unwrap_line(line: bytes) -> bytes:
    if not line.startswith(b"data:") or b'"response"' not in line:
        return line
    try:
        event = loads(line[5:].strip())
    except ValueError:
        return line
    if isinstance(event, dict) and isinstance(event.get("response"), dict):
        return b"data: " + dumps(event["response"])
    return line


class UnwrappingRelay(StreamRelay):
    """A C{v1internal} stream: its events judged, and relayed, without their C{response} envelope."""

    def unwrap(self, data: dict[str, Any]) -> dict[str, Any]:
        inner = data.get("response")
        return inner if isinstance(inner, dict) else data

    def attach(self, consumer: StreamConsumer):
        return super().attach(_Unwrap(consumer))


class GeminiCLIExecutor(_Bearer, GeminiExecutor):
    """
    Code Assist C{v1internal} for a Gemini CLI account, with the account's
    project. An account whose file names none has it found (and is
    onboarded) before its first request (L{cliproxyd.executors.projects}),
    once however many requests wait for it; the project is written back to
    the file, as Gemini CLI's login would have.
    """

    protocol = "gemini-cli"
    #: whether an account without a project has one looked up (Antigravity's files always name theirs)
    discovers_project = True

    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        return {b"user-agent": [GEMINI_CLI_USER_AGENT],
                b"x-goog-api-client": [b"google-genai-sdk/1.30.0 gl-node/v22.19.0"]}

    def base_urls(self, cred: Credential) -> tuple[str, ...]:
        return (cred.base_url,)

    @staticmethod
    def _url(base: str, method: str) -> str:
        return f"{base}/v1internal:{method}"

    def url(self, cred: Credential, model: str, stream: bool) -> str:
        return self._url(cred.base_url, "streamGenerateContent?alt=sse" if stream else "generateContent")

    def count_url(self, cred: Credential, model: str) -> str:
        return self._url(cred.base_url, "countTokens")

    def project(self, cred: Credential) -> str:
        assert cred.account is not None
        # "p1,p2": with quota-exceeded.switch-project each project is a
        # credential of its own (credentials.authfiles.project_credentials);
        # without it the first project is used.
        return cred.project or cred.account.project_id.split(",")[0].strip()

    def envelope(self, cred: Credential, model: str, body: bytes, project: str) -> bytes:
        return b'{"model":' + dumps(model) + b',"project":' + dumps(project) + b',"request":' + body + b"}"

    async def known_project(self, cred: Credential) -> str:
        """The project the account's requests name: its file's, else the one found on Code Assist."""
        project = self.project(cred)
        if project or not self.discovers_project:
            return project
        assert cred.account is not None
        key = cred.account.path
        # Each request waits on its own Deferred: one that is cancelled (its
        # client went away) leaves the lookup running for the others.
        waiter: Deferred[str] = Deferred()
        waiters = self._discoveries.get(key)
        if waiters is None:
            self._discoveries[key] = [waiter]
            Deferred.fromCoroutine(self._discover(cred)).addBoth(self._discovered, key)
        else:
            waiters.append(waiter)
        return await waiter

    def _discovered(self, result: Any, key: str) -> None:
        for waiter in self._discoveries.pop(key, ()):
            if not waiter.called:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)

    async def _discover(self, cred: Credential) -> str:
        account = cred.account
        assert account is not None

        async def call(method: str, body: dict[str, Any]) -> dict[str, Any]:
            response = await self._send(cred, self._url(cred.base_url, method), dumps(body), False)
            return self._answer_object(cred, await self._read(response))

        try:
            project = await projects.discover(call, self._clock)
        except projects.NoProject as e:
            self.log.warn("{cred}: no Google Cloud project: {why}", cred=cred.fingerprint, why=str(e))
            raise UpstreamError("http", f"the Gemini CLI account has no project: {e}", status=403,
                                fmt=self.format.NAME) from None
        if not self.project(cred):
            account.data["project_id"] = project
            self.log.info("{cred}: Google Cloud project {project} found on Code Assist",
                          cred=cred.fingerprint, project=project)
            if self._save_account is not None:
                try:
                    await self._save_account(account)
                except Exception as e:  # noqa: BLE001 - the project is known; only the file lags
                    self.log.warn("{cred}: could not write the project back to its file: {why}",
                                  cred=cred.fingerprint, why=str(e) or type(e).__name__)
        return self.project(cred)

    async def execute(self, cred: Credential, req: Outbound, upstream: str) -> Reply | StreamReply:
        model = parse_model(upstream).base
        body = self.envelope(cred, model, self.body(req, upstream), await self.known_project(cred))
        method = "streamGenerateContent?alt=sse" if req.stream else "generateContent"
        bases = self.base_urls(cred)
        for i, base in enumerate(bases):
            try:
                response = await self._send(cred, self._url(base, method), body, req.stream, req)
                break
            except UpstreamError as e:
                if i + 1 == len(bases) or not (e.status == 429 or e.status >= 500 or e.status == 0):
                    raise
        content_type = (response.headers.getRawHeaders(b"content-type") or [b"application/json"])[0]
        if req.stream and content_type.startswith(b"text/event-stream"):
            return await self._relay(cred, response, UnwrappingRelay)
        return await self._whole(cred, response, content_type)

    async def _whole(self, cred: Credential, response: Any, content_type: bytes) -> Reply:
        """A C{v1internal} answer as the Gemini answer inside it (checked as an API key's is)."""
        body = await self._read(response)
        data = self._answer_object(cred, body)
        inner = data.get("response")
        if isinstance(inner, dict):
            data, body = inner, dumps(inner)
        return Reply(response.code, content_type, body, fmt=self.format.NAME, data=data, headers=response.headers)

    async def count_tokens(self, cred: Credential, req: Outbound, upstream: str) -> Reply:
        model = parse_model(upstream).base
        inner = loads(req.count_body_for(upstream, self.format)).get("generateContentRequest", {})
        body = dumps({"request": {"model": f"models/{model}", "contents": inner.get("contents", [])}})
        response = await self._send(cred, self.count_url(cred, model), body, False, req)
        raw = await self._read(response)
        try:
            tokens = self.format.count_from_body(loads(raw))
        except (ValueError, TypeError, AttributeError):
            raise UpstreamError("broken", "the upstream count is not a count", status=502) from None
        return Reply(response.code, b"application/json", raw, fmt=self.format.NAME, tokens=tokens)


class AntigravityExecutor(GeminiCLIExecutor):
    """Antigravity's C{v1internal}: its own envelope and user agent, two endpoints tried in turn."""

    protocol = "antigravity"

    def auth_headers(self, cred: Credential) -> dict[bytes, list[bytes]]:
        assert cred.account is not None
        agent = cred.account.data.get("user_agent")
        return {b"user-agent": [agent.encode("latin-1") if isinstance(agent, str) and agent
                                else ANTIGRAVITY_USER_AGENT]}

    def base_urls(self, cred: Credential) -> tuple[str, ...]:
        assert cred.account is not None
        if cred.account.data.get("base_url"):
            return (cred.base_url,)
        return OAUTH_BASE_URLS["antigravity"]

    discovers_project = False

    def envelope(self, cred: Credential, model: str, body: bytes, project: str) -> bytes:
        request = loads(body)
        request["sessionId"] = f"-{uuid.uuid4().int % 10**18}"
        return dumps({
            "model": model,
            "userAgent": "antigravity",
            "requestType": "agent",
            "project": project,
            "requestId": f"agent-{uuid.uuid4()}",
            "request": request,
        })
