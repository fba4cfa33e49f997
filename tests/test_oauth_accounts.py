"""
OAuth credential files and the OAuth executors: CLIProxyAPI's auth files are
read as they are, bad ones are reported and skipped, and each account type
reaches the simulated upstream the way the real service wants it (bearer,
beta header, account id, Code Assist envelope, Codex's stream-only backend),
through the real frontend and conductor on loopback.
"""

from __future__ import annotations

import json
import os

import pytest
import pytest_twisted
import treq
from attrs import evolve

from cliproxyd.assembly import Assembly
from cliproxyd.config import parse_config
from cliproxyd.credentials.authfiles import (
    AuthFileError,
    credential_for,
    oauth_credentials,
    parse_account,
    parse_time,
    scan_auth_dir,
)
from cliproxyd.credentials.refresh import file_saver
from cliproxyd.frontend import Frontend, InFlight, QuietSite, TrackingSite
from cliproxyd.outbound import make_http_client
from cliproxyd.runtime import Runtime
from cliproxyd.state import MemoryStateStore
from cliproxyd.testing.upstream import SimulatedUpstream

CONFIG, _ = parse_config({})


def write(directory, name: str, data) -> str:
    path = os.path.join(str(directory), name)
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    return path


# -- files ------------------------------------------------------------------------


def test_cliproxyapi_files_of_every_type_are_read(tmp_path):
    write(tmp_path, "claude-a@x.com.json", {"type": "claude", "access_token": "sk-ant-oat-1", "refresh_token": "r1",
                                           "email": "a@x.com", "expired": "2026-11-22T10:00:00Z"})
    write(tmp_path, "codex-b@x.com-plus.json", {"type": "codex", "access_token": "at2", "refresh_token": "r2",
                                               "account_id": "acct-9", "expired": "2026-11-22T10:00:00+01:00"})
    write(tmp_path, "gemini-c@x.com-proj.json", {"type": "gemini", "email": "c@x.com", "project_id": "proj",
                                                "token": {"access_token": "ya29", "refresh_token": "r3",
                                                          "expiry": "2026-11-22T10:00:00Z"}})
    write(tmp_path, "antigravity-d.json", {"type": "antigravity", "access_token": "ya30", "refresh_token": "r4",
                                           "timestamp": 1_700_000_000_000, "expires_in": 3599})
    write(tmp_path, "other-e.json", {"type": "someday", "access_token": "q"})  # a provider we have no executor for
    write(tmp_path, "notes.txt", "not a credential")
    scan = scan_auth_dir(str(tmp_path))
    assert scan.problems == {}
    accounts = scan.accounts
    assert sorted(a.type for a in accounts.values()) == ["antigravity", "claude", "codex", "gemini-cli"]
    assert accounts["claude-a@x.com.json"].expires_at == parse_time("2026-11-22T10:00:00Z")
    assert accounts["codex-b@x.com-plus.json"].expires_at == parse_time("2026-11-22T09:00:00Z")
    gemini = accounts["gemini-c@x.com-proj.json"]
    assert (gemini.access_token, gemini.refresh_token, gemini.project_id) == ("ya29", "r3", "proj")
    assert accounts["antigravity-d.json"].expires_at == 1_700_000_000 + 3599
    creds, problems = oauth_credentials(accounts, CONFIG)
    assert problems == {}
    assert [c.kind for c in creds] == ["antigravity", "claude", "codex", "gemini-cli"]
    assert creds[1].id == "claude:claude-a@x.com.json"


@pytest.mark.parametrize("content, reason", [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"type": "claude"}', "neither access_token nor refresh_token"),
    ('{"type": "claude", "access_token": 5}', "must be strings"),
])
def test_a_broken_file_is_reported_with_its_reason_and_skipped(tmp_path, content, reason):
    write(tmp_path, "bad.json", content)
    write(tmp_path, "good.json", {"type": "claude", "access_token": "t", "refresh_token": "r"})
    scan = scan_auth_dir(str(tmp_path))
    assert list(scan.accounts) == ["good.json"]
    assert reason in scan.problems["bad.json"]


@pytest.mark.parametrize("fields, reason", [
    ({"priority": "high"}, "priority must be a number"),
    ({"disabled": "yes"}, "disabled must be true or false"),
    ({"prefix": "a/b"}, "one path segment"),
    ({"base_url": "ftp://x"}, "base_url must be an http(s) URL"),
    ({"proxy_url": "socks4://p:1"}, "proxy_url: unsupported proxy scheme 'socks4'"),
    ({"proxy_url": "socks5://u:hunter2@p:99999"}, "proxy_url: bad port in socks5://p:99999"),
    ({"excluded_models": "gpt-5"}, "excluded_models must be a list"),
])
def test_unusable_settings_in_a_file_name_the_field(tmp_path, fields, reason):
    write(tmp_path, "a.json", {"type": "codex", "access_token": "t", **fields})
    scan = scan_auth_dir(str(tmp_path))
    creds, problems = oauth_credentials(scan.accounts, CONFIG)
    assert creds == ()
    assert reason in problems["a.json"]


def test_file_settings_shape_the_credential(tmp_path):
    config, _ = parse_config({"oauth-model-alias": {"codex": [{"name": "gpt-5", "alias": "five"}]},
                              "oauth-excluded-models": {"codex": ["gpt-5.1*"]}})
    account = parse_account(write(tmp_path, "c.json", {
        "type": "codex", "access_token": "t", "prefix": "team", "priority": "3", "disabled": True,
        "request_retry": 2, "disable-cooling": True, "excluded_models": ["gpt-5-codex-mini"]}),
        open(tmp_path / "c.json", "rb").read())
    cred = credential_for(account, config)
    names = {r.name for r in cred.routes}
    assert "team/five" in names and "five" in names and "gpt-5" not in names
    assert not any("gpt-5.1" in n for n in names)
    assert "gpt-5-codex-mini" not in names and "gpt-5-codex" in names
    assert (cred.priority, cred.disabled, cred.request_retry, cred.disable_cooling) == (3, True, 2, True)
    assert cred.fingerprint == "c.json"
    assert "access_token" not in repr(account) and "'t'" not in repr(account)


def test_parse_time_forms():
    assert parse_time("2026-01-02T03:04:05Z") == parse_time("2026-01-02 03:04:05")
    assert parse_time(1_767_323_045) == parse_time(1_767_323_045_000) == 1_767_323_045
    assert parse_time("1767323045") == 1_767_323_045
    assert parse_time("soon") is None and parse_time(True) is None


def test_an_unchanged_file_keeps_its_account_object(tmp_path):
    write(tmp_path, "a.json", {"type": "claude", "access_token": "t", "refresh_token": "r"})
    first = scan_auth_dir(str(tmp_path))
    first.accounts["a.json"].access_token = "refreshed-in-memory"
    again = scan_auth_dir(str(tmp_path), first.accounts)
    assert again.accounts["a.json"] is first.accounts["a.json"]
    write(tmp_path, "a.json", {"type": "claude", "access_token": "t2", "refresh_token": "r"})
    edited = scan_auth_dir(str(tmp_path), first.accounts)
    assert edited.accounts["a.json"].access_token == "t2"


def test_apply_grant_writes_tokens_where_the_file_keeps_them(tmp_path):
    flat = parse_account("a.json", json.dumps({"type": "claude", "access_token": "old", "refresh_token": "r",
                                               "custom": {"kept": 1}}).encode())
    flat.apply_grant("new", "r2", 3600, now=1_800_000_000)
    data = json.loads(flat.to_bytes())
    assert (data["access_token"], data["refresh_token"], data["custom"]) == ("new", "r2", {"kept": 1})
    assert parse_time(data["expired"]) == 1_800_003_600 and parse_time(data["last_refresh"]) == 1_800_000_000
    nested = parse_account("g.json", json.dumps({"type": "gemini", "token": {"access_token": "old",
                                                                              "refresh_token": "r"}}).encode())
    nested.apply_grant("new", "", 3600, now=1_800_000_000)
    data = json.loads(nested.to_bytes())
    assert data["token"]["access_token"] == "new" and data["token"]["refresh_token"] == "r"
    assert parse_time(data["token"]["expiry"]) == 1_800_003_600
    assert "access_token" not in data


# -- executors on loopback --------------------------------------------------------


class OAuthStack:
    """The frontend, conductor and executors over accounts whose base_url is the simulated upstream."""

    def __init__(self, reactor, auth_dir, accounts: dict[str, dict], config=CONFIG) -> None:
        self.upstream = SimulatedUpstream(reactor)
        self.upstream_port = reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")
        base = f"http://127.0.0.1:{self.upstream_port.getHost().port}"
        for name, data in accounts.items():
            suffix = "/backend-api/codex" if data["type"] == "codex" else ""
            write(auth_dir, name, {"base_url": base + suffix, **data})
        self.pool, client = make_http_client(reactor, 5)
        assembly = Assembly(client, reactor, MemoryStateStore(), save_account=file_saver())
        runtime = Runtime(assembly, config=evolve(config, auth_dir=str(auth_dir)), poll=0)
        runtime.start()
        assert runtime.current.problems == {}
        self.conductor = runtime.current.conductor
        frontend = Frontend(runtime.source, reactor)
        site = TrackingSite(frontend.resource(), InFlight(reactor, 5), runtime.source)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    async def chat(self, model: str, stream: bool = False):
        body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        response = await treq.post(self.url + "/v1/chat/completions", json=body)
        return response.code, await response.content()

    async def close(self) -> None:
        await self.port.stopListening()
        await self.upstream_port.stopListening()
        await self.pool.closeCachedConnections()


ACCOUNTS = {
    "claude-a.json": {"type": "claude", "access_token": "sk-ant-oat-claude", "refresh_token": "r"},
    "codex-b.json": {"type": "codex", "access_token": "at-codex", "refresh_token": "r", "account_id": "acct-7"},
    "gemini-c.json": {"type": "gemini", "project_id": "proj-c,proj-d",
                      "token": {"access_token": "ya29-gemini", "refresh_token": "r"}},
    "antigravity-d.json": {"type": "antigravity", "access_token": "ya29-ag", "refresh_token": "r",
                           "project_id": "proj-ag"},
}

CASES = [
    ("claude-haiku-4-5", "sk-ant-oat-claude", "/v1/messages"),
    ("gpt-5-codex", "at-codex", "/backend-api/codex/responses"),
    ("gemini-2.5-pro", "ya29-gemini", "/v1internal:"),
    ("gemini-3-flash-preview", "ya29-ag", "/v1internal:"),
]


@pytest_twisted.async_yield_fixture
async def stack(tmp_path):
    from twisted.internet import reactor

    s = OAuthStack(reactor, tmp_path, ACCOUNTS)
    yield s
    await s.close()


def answer_text(body: bytes, stream: bool) -> str:
    """The text of an OpenAI chat answer, streamed (which must end with [DONE]) or whole."""
    if not stream:
        return json.loads(body)["choices"][0]["message"]["content"]
    assert body.rstrip().endswith(b"data: [DONE]")
    chunks = [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model, token, path", CASES)
@pytest_twisted.ensureDeferred
async def test_each_account_type_answers_an_openai_client(stack, model, token, path, stream):
    code, body = await stack.chat(model, stream)
    assert code == 200, body
    text = answer_text(body, stream)
    assert text.startswith("Hello from the simulated upstream")
    seen = stack.upstream.seen[-1]
    assert seen.headers["authorization"] == f"Bearer {token}"
    assert seen.path.startswith(path)
    assert seen.model == model


@pytest_twisted.ensureDeferred
async def test_claude_accounts_send_the_oauth_beta_and_no_api_key(stack):
    await stack.chat("claude-haiku-4-5")
    seen = stack.upstream.seen[-1]
    assert "oauth-2025-04-20" in seen.headers["anthropic-beta"]
    assert "x-api-key" not in seen.headers


@pytest_twisted.ensureDeferred
async def test_codex_accounts_always_stream_upstream_with_the_account_id(stack):
    code, body = await stack.chat("gpt-5-codex", stream=False)
    assert code == 200
    answer = json.loads(body)
    assert answer["object"] == "chat.completion"
    seen = stack.upstream.seen[-1]
    assert seen.stream is True and seen.body["store"] is False
    assert seen.headers["chatgpt-account-id"] == "acct-7"


@pytest_twisted.ensureDeferred
async def test_code_assist_requests_carry_model_and_project_in_the_envelope(stack):
    await stack.chat("gemini-2.5-pro")
    gemini = stack.upstream.seen[-1]
    assert gemini.envelope == {"model": "gemini-2.5-pro", "project": "proj-c"}
    await stack.chat("gemini-3-flash-preview")
    ag = stack.upstream.seen[-1]
    assert ag.envelope["project"] == "proj-ag" and ag.envelope["userAgent"] == "antigravity"
    assert ag.envelope["requestType"] == "agent" and ag.headers["user-agent"].startswith("antigravity/")


@pytest_twisted.ensureDeferred
async def test_code_assist_counts_tokens(stack):
    response = await treq.post(stack.url + "/v1beta/models/gemini-2.5-pro:countTokens",
                               json={"contents": [{"role": "user", "parts": [{"text": "hello"}]}]})
    assert response.code == 200
    assert (await response.json())["totalTokens"] > 0
    assert stack.upstream.seen[-1].path == "/v1internal:countTokens"


@pytest_twisted.ensureDeferred
async def test_an_upstream_error_echoing_the_token_is_scrubbed(stack):
    stack.upstream.script("at-codex", "status:400")
    # The simulated error does not echo; a 400 still names the account by file, never by token.
    code, body = await stack.chat("gpt-5-codex")
    assert code == 400
    assert b"at-codex" not in body


@pytest_twisted.ensureDeferred
async def test_antigravity_falls_back_to_its_second_endpoint(tmp_path):
    from twisted.internet import reactor

    from cliproxyd.credentials import authfiles

    upstream = SimulatedUpstream(reactor)
    port = reactor.listenTCP(0, QuietSite(upstream.resource()), interface="127.0.0.1")
    dead = reactor.listenTCP(0, QuietSite(SimulatedUpstream(reactor).resource()), interface="127.0.0.1")
    dead_url = f"http://127.0.0.1:{dead.getHost().port}"
    await dead.stopListening()  # nothing listens there now: connection refused
    good_url = f"http://127.0.0.1:{port.getHost().port}"
    saved = authfiles.OAUTH_BASE_URLS["antigravity"]
    authfiles.OAUTH_BASE_URLS["antigravity"] = (dead_url, good_url)
    pool, client = make_http_client(reactor, 5)
    try:
        write(tmp_path, "ag.json", {"type": "antigravity", "access_token": "ya29-ag", "project_id": "p"})
        gen = Assembly(client, reactor, MemoryStateStore()).build(CONFIG, scan_auth_dir(str(tmp_path)))
        conductor = gen.conductor
        from cliproxyd.formats import openai_chat
        from cliproxyd.formats.request import ClientRequest

        req = ClientRequest.decode(openai_chat, json.dumps(
            {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}).encode(), None, None)
        reply = await conductor.execute(req)
        assert reply.status == 200 and json.loads(reply.body)["candidates"]
        assert len(upstream.seen) == 1
    finally:
        authfiles.OAUTH_BASE_URLS["antigravity"] = saved
        await port.stopListening()
        await pool.closeCachedConnections()


def test_auth_file_error_is_an_exception():
    with pytest.raises(AuthFileError):
        parse_account("x.json", b"nope")


@pytest_twisted.ensureDeferred
async def test_a_gemini_client_gets_code_assist_streams_without_the_envelope(stack):
    response = await treq.post(stack.url + "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
                               json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    body = await response.content()
    assert response.code == 200
    events = [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert events and all("response" not in e and "candidates" in e for e in events)
    text = "".join(p.get("text", "") for e in events for p in e["candidates"][0]["content"]["parts"])
    assert text.startswith("Hello from the simulated upstream")


@pytest_twisted.ensureDeferred
async def test_a_codex_whole_answer_whose_stream_opens_with_an_error_is_that_error(stack):
    """Codex answers whole requests with a stream: its error event is the answer's status, not a broken body."""
    stack.upstream.script("at-codex", "error-first:responses")
    code, body = await stack.chat("gpt-5-codex")
    assert code == 429
    assert b"simulated rate limit" in body


@pytest.mark.parametrize("model", ["gemini-2.5-pro", "gemini-3-flash-preview"])
@pytest_twisted.ensureDeferred
async def test_code_assist_stream_faults_are_read_inside_the_envelope(stack, model):
    token = dict((m, t) for m, t, _ in CASES)[model]
    stack.upstream.script(token, "error-first:gemini", "end-early:2", "ok")
    response = await treq.post(stack.url + "/v1/chat/completions",
                               json={"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert response.code == 429  # the only account: its error, with the hint it carried
    assert response.headers.getRawHeaders("retry-after") == ["7"]
    await response.content()
    cred_id = next(c.id for c in stack.conductor.creds if c.secret == token)
    stack.conductor.reset_cooldowns(cred_id)
    stack.conductor.clear_auto(cred_id)  # Antigravity's 429 suspended its quota group too
    code, body = await stack.chat(model, stream=True)
    assert code == 200 and b"[DONE]" not in body
    assert b"ended before its final event" in body.strip().split(b"\n")[-1]


def test_a_credential_file_nested_past_any_limit_is_reported_not_a_crash(tmp_path):
    raw = b'{"type": "claude", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(AuthFileError, match="not JSON"):
        parse_account(str(tmp_path / "deep.json"), raw)


def test_an_upstream_error_body_nested_past_any_limit_is_read_without_recursion():
    from cliproxyd.executors.upstreams import _error_message

    deep = b'{"error": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert _error_message(deep).startswith('{"error": [[[')
