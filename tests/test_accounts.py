"""
Issue 14's account types: xAI (Grok) OAuth, Kimi, Vertex service accounts,
and Qwen and iFlow (which CLIProxyAPI has dropped, and whose files users
still have). Their files load with CLIProxyAPI's fields, each one reaches
the simulated upstream the way the real service wants it, through the real
frontend, conductor and executors on loopback, and its tokens are renewed
at its provider's token server (simulated: refresh grants, iFlow's API key
fetch, a service account's signed JWT traded at the file's token_uri).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
import pytest_twisted
import treq
from attrs import evolve
from twisted.internet.task import Clock

from cliproxyd.assembly import Assembly
from cliproxyd.config import parse_config
from cliproxyd.credentials import providers
from cliproxyd.credentials.authfiles import (
    XAI_API_BASE_URL,
    XAI_CLI_BASE_URL,
    credential_for,
    oauth_credentials,
    parse_account,
    scan_auth_dir,
)
from cliproxyd.credentials.refresh import Refresher, account_refresher
from cliproxyd.credentials.tokens import TokenError, service_account_assertion
from cliproxyd.executors.accounts import (
    XAIExecutor,
    iflow_signature,
    kimi_upstream_model,
)
from cliproxyd.frontend import Frontend, InFlight, QuietSite, TrackingSite
from cliproxyd.outbound import make_http_client
from cliproxyd.runtime import Runtime
from cliproxyd.state import MemoryStateStore
from cliproxyd.testing.authserver import SimulatedAuthServer
from cliproxyd.testing.upstream import SimulatedUpstream
from tests.test_oauth_accounts import answer_text, write

CONFIG, _ = parse_config({})


def read(path) -> dict:
    with open(path) as f:
        return json.load(f)


# What CLIProxyAPI writes for each type (its logins' and vertex/import's fields).
XAI_FILE = {"type": "xai", "auth_kind": "oauth", "access_token": "xai-at", "refresh_token": "xai-rt",
            "token_type": "Bearer", "expires_in": 3600, "expired": "2026-12-02T10:00:00Z",
            "last_refresh": "2026-12-02T09:00:00Z", "email": "g@x.ai", "sub": "user-1",
            "base_url": XAI_API_BASE_URL, "token_endpoint": "https://auth.x.ai/oauth2/token"}
KIMI_FILE = {"type": "kimi", "access_token": "kimi-at", "refresh_token": "kimi-rt", "token_type": "Bearer",
             "scope": "", "device_id": "dev-1234", "expired": "2026-12-02T10:00:00Z"}
QWEN_FILE = {"type": "qwen", "access_token": "qwen-at", "refresh_token": "qwen-rt", "last_refresh": "",
             "resource_url": "portal.qwen.ai", "email": "q@example.com", "expired": "2026-12-02T10:00:00Z"}
IFLOW_FILE = {"type": "iflow", "access_token": "iflow-at", "refresh_token": "iflow-rt", "api_key": "sk-iflow-1",
              "email": "i@example.com", "token_type": "bearer", "scope": "read", "cookie": "",
              "expired": "2026-12-02T10:00:00Z", "last_refresh": "2026-12-02T09:00:00Z"}


@pytest.fixture(scope="module")
def sa_server():
    """An auth server playing Google's token endpoint for service accounts, and one service account's key file."""
    server = SimulatedAuthServer(providers.VERTEX, Clock())
    sa = server.service_account("https://oauth2.googleapis.com/token", project="vx-proj")
    return server, sa


def vertex_file(sa: dict, **extra) -> dict:
    return {"type": "vertex", "service_account": sa, "project_id": sa["project_id"],
            "email": sa["client_email"], "location": "europe-west4", **extra}


# -- files ------------------------------------------------------------------------


def test_each_type_of_file_loads_as_an_account_with_its_settings(tmp_path, sa_server):
    common = {"prefix": "team", "priority": 3, "weight": 5, "proxy_url": "socks5://proxy.test:1080"}
    write(tmp_path, "xai-g@x.ai.json", {**XAI_FILE, **common})
    write(tmp_path, "kimi-1.json", {**KIMI_FILE, **common})
    write(tmp_path, "qwen-q.json", {**QWEN_FILE, **common})
    write(tmp_path, "iflow-i.json", {**IFLOW_FILE, **common})
    write(tmp_path, "vertex-vx-proj.json", {**vertex_file(sa_server[1]), **common, "disabled": True})
    scan = scan_auth_dir(str(tmp_path))
    assert scan.problems == {}
    creds, problems = oauth_credentials(scan.accounts, CONFIG)
    assert problems == {}
    by_kind = {c.kind: c for c in creds}
    assert sorted(by_kind) == ["iflow", "kimi", "qwen", "vertex", "xai"]
    for cred in creds:
        assert (cred.priority, cred.weight, cred.prefix) == (3, 5, "team")
        assert cred.proxy.describe() == "socks5://proxy.test:1080"
        assert any(r.name.startswith("team/") for r in cred.routes)
    assert by_kind["vertex"].disabled and not by_kind["kimi"].disabled
    # Where each one's requests go, by CLIProxyAPI's rules.
    assert by_kind["xai"].base_url == XAI_CLI_BASE_URL
    assert by_kind["qwen"].base_url == "https://portal.qwen.ai/v1"
    assert by_kind["iflow"].base_url == "https://apis.iflow.cn/v1"
    assert by_kind["kimi"].base_url == "https://api.kimi.com/coding"
    assert by_kind["vertex"].base_url == "https://europe-west4-aiplatform.googleapis.com"
    assert by_kind["vertex"].project == "vx-proj"
    # iFlow requests carry the account's API key, the others its access token.
    assert by_kind["iflow"].secret == "sk-iflow-1" and by_kind["kimi"].secret == "kimi-at"


def test_xai_goes_to_the_public_api_only_when_the_file_says_using_api(tmp_path):
    def base(**fields):
        account = parse_account("x.json", json.dumps({**XAI_FILE, **fields}).encode())
        return credential_for(account, CONFIG).base_url

    assert base() == XAI_CLI_BASE_URL
    assert base(using_api=True) == XAI_API_BASE_URL
    assert base(using_api="true", base_url="https://gw.test/v1") == "https://gw.test/v1"
    assert base(base_url="https://gw.test/v1") == "https://gw.test/v1"
    assert base(base_url=None) == XAI_CLI_BASE_URL


def test_vertex_global_location_has_no_region_in_the_host(sa_server):
    account = parse_account("v.json", json.dumps(vertex_file(sa_server[1], location="global")).encode())
    assert credential_for(account, CONFIG).base_url == "https://aiplatform.googleapis.com"
    account = parse_account("v.json", json.dumps({**vertex_file(sa_server[1]), "location": ""}).encode())
    assert credential_for(account, CONFIG).base_url == "https://us-central1-aiplatform.googleapis.com"


@pytest.mark.parametrize("change, reason", [
    ({"service_account": "x"}, "service_account must be the service account's key object"),
    ({"service_account": {"client_email": "a@b"}}, "service_account.private_key must be a non-empty string"),
    ({"service_account": {"client_email": "a@b", "private_key": "nope"}}, "not a PEM private key"),
    ({"project_id": "", "service_account": "KEEP-NO-PROJECT"}, "has no project_id"),
])
def test_an_unusable_vertex_file_is_reported(tmp_path, sa_server, change, reason):
    data = vertex_file(sa_server[1])
    if change.get("service_account") == "KEEP-NO-PROJECT":
        change = {"project_id": "", "service_account": {k: v for k, v in data["service_account"].items()
                                                        if k != "project_id"}}
    write(tmp_path, "v.json", {**data, **change})
    scan = scan_auth_dir(str(tmp_path))
    assert scan.accounts == {}
    assert reason in scan.problems["v.json"]


def test_an_iflow_file_needs_an_api_key_or_a_refresh_token(tmp_path):
    write(tmp_path, "cookie.json", {"type": "iflow", "api_key": "sk-i", "cookie": "BXAuth=1"})
    write(tmp_path, "empty.json", {"type": "iflow", "access_token": "at"})
    scan = scan_auth_dir(str(tmp_path))
    assert list(scan.accounts) == ["cookie.json"]
    assert "neither api_key nor refresh_token" in scan.problems["empty.json"]


def test_kimi_upstream_names():
    assert kimi_upstream_model("kimi-k2") == "k2"
    assert kimi_upstream_model("kimi-k2-thinking") == "k2-thinking"
    assert kimi_upstream_model("kimi-k2.7-code") == "kimi-for-coding"
    assert kimi_upstream_model("kimi-k2.7-code-highspeed[1m]") == "kimi-for-coding-highspeed"


def test_the_grok_cli_identity_goes_only_to_grok_clis_chat_proxy():
    executor = XAIExecutor(None, Clock(), CONFIG.timeouts)
    cli = credential_for(parse_account("a.json", json.dumps(XAI_FILE).encode()), CONFIG)
    api = credential_for(parse_account("b.json", json.dumps({**XAI_FILE, "using_api": True}).encode()), CONFIG)
    executor.prepare((cli, api))
    on_cli, on_api = executor.request_headers(cli), executor.request_headers(api)
    assert on_cli.getRawHeaders(b"x-xai-token-auth") == [b"xai-grok-cli"]
    assert on_cli.getRawHeaders(b"user-agent")[0].startswith(b"xai-grok-workspace/")
    assert not on_api.hasHeader(b"x-xai-token-auth")
    assert on_cli.getRawHeaders(b"authorization") == on_api.getRawHeaders(b"authorization") == [b"Bearer xai-at"]


def test_a_service_account_assertion_is_an_rs256_jwt_google_takes(sa_server):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    server, sa = sa_server
    account = parse_account("v.json", json.dumps(vertex_file(sa)).encode())
    jwt = service_account_assertion(account.signing_key, sa["client_email"], sa["token_uri"],
                                    providers.VERTEX.scopes, 1_800_000_000, "sim-key-1")
    head, claims, signature = jwt.split(".")

    def part(text):
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    assert part(head) == {"alg": "RS256", "typ": "JWT", "kid": "sim-key-1"}
    assert part(claims) == {"iss": sa["client_email"], "aud": sa["token_uri"], "iat": 1_800_000_000,
                            "exp": 1_800_003_600, "scope": "https://www.googleapis.com/auth/cloud-platform"}
    server.service_keys[sa["client_email"]].verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)), f"{head}.{claims}".encode(),
        padding.PKCS1v15(), hashes.SHA256())


# -- on loopback ------------------------------------------------------------------


class AccountStack:
    """
    The frontend, conductor and executors over one account of each type,
    whose requests go to the simulated upstream, and whose tokens come from
    simulated token servers (the providers pointed at them).
    """

    def __init__(self, reactor, auth_dir, monkeypatch, sa_server, config=CONFIG) -> None:
        self.reactor = reactor
        self.upstream = SimulatedUpstream(reactor)
        self.ports = [reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")]
        base = f"http://127.0.0.1:{self.ports[0].getHost().port}"
        self.auth = {}
        for kind in ("xai", "kimi", "qwen", "iflow"):
            server = SimulatedAuthServer(providers.PROVIDERS[kind], reactor)
            port = reactor.listenTCP(0, QuietSite(server.resource()), interface="127.0.0.1")
            self.ports.append(port)
            at = f"http://127.0.0.1:{port.getHost().port}"
            monkeypatch.setitem(providers.PROVIDERS, kind, server.provider_at(at))
            self.auth[kind] = (server, at)
        sa_auth, sa = sa_server
        sa_auth.clock = reactor
        port = reactor.listenTCP(0, QuietSite(sa_auth.resource()), interface="127.0.0.1")
        self.ports.append(port)
        sa = {**sa, "token_uri": f"http://127.0.0.1:{port.getHost().port}/token"}
        self.auth["vertex"] = (sa_auth, sa["token_uri"])
        xai_at = self.auth["xai"][1]
        self.files = {
            "xai.json": {**XAI_FILE, "using_api": True, "base_url": base + "/v1", "token_endpoint": xai_at + "/token",
                         "refresh_token": self.auth["xai"][0].issue_refresh_token()},
            "kimi.json": {**KIMI_FILE, "base_url": base, "refresh_token": self.auth["kimi"][0].issue_refresh_token()},
            "qwen.json": {**QWEN_FILE, "resource_url": base, "refresh_token": self.auth["qwen"][0].issue_refresh_token()},
            "iflow.json": {**IFLOW_FILE, "base_url": base + "/v1",
                           "refresh_token": self.auth["iflow"][0].issue_refresh_token()},
            "vertex.json": {**vertex_file(sa), "base_url": base},
        }
        self.paths = {name: write(auth_dir, name, data) for name, data in self.files.items()}
        self.pool, self.client = make_http_client(reactor, 5)
        self.refresher = Refresher(reactor, account_refresher(self.client, reactor), _save, _Source(self))
        assembly = Assembly(self.client, reactor, MemoryStateStore(), on_unauthorized=self.refresher.refresh_now)
        self.runtime = Runtime(assembly, config=evolve(config, auth_dir=str(auth_dir)), poll=0)
        self.runtime.start()
        assert self.runtime.current.problems == {}
        frontend = Frontend(self.runtime.source, reactor)
        site = TrackingSite(frontend.resource(), InFlight(reactor, 5), self.runtime.source)
        self.ports.append(reactor.listenTCP(0, site, interface="127.0.0.1"))
        self.url = f"http://127.0.0.1:{self.ports[-1].getHost().port}"

    def account(self, name: str):
        return self.runtime.current.accounts[name]

    async def chat(self, model: str, stream: bool = False):
        body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        response = await treq.post(self.url + "/v1/chat/completions", json=body)
        return response.code, await response.content()

    async def close(self) -> None:
        for port in self.ports:
            await port.stopListening()
        await self.pool.closeCachedConnections()


class _Source:
    def __init__(self, stack: AccountStack) -> None:
        self._stack = stack

    @property
    def current(self):
        return self._stack.runtime.current


def _save(account):
    from twisted.internet.defer import succeed

    from cliproxyd.fileio import atomic_write

    atomic_write(account.path, account.to_bytes())
    return succeed(None)


@pytest_twisted.async_yield_fixture
async def stack(tmp_path, monkeypatch, sa_server):
    from twisted.internet import reactor

    s = AccountStack(reactor, tmp_path, monkeypatch, sa_server)
    yield s
    await s.close()


CASES = [
    ("grok-4.5", "xai.json", "/v1/responses"),
    ("kimi-k2.5", "kimi.json", "/v1/chat/completions"),
    ("coder-model", "qwen.json", "/v1/chat/completions"),
    ("glm-4.6", "iflow.json", "/v1/chat/completions"),
    ("gemini-2.5-pro", "vertex.json", "/v1/projects/vx-proj/locations/europe-west4/publishers/google/models/"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model, name, path", CASES)
@pytest_twisted.ensureDeferred
async def test_each_account_type_answers_an_openai_client(stack, model, name, path, stream):
    if name == "vertex.json":
        # A service account has no token until it buys one; the refresher does at start.
        assert stack.refresher.check() >= 1
        while stack.refresher.running_refreshes:
            await _tick(stack.reactor)
    code, body = await stack.chat(model, stream)
    assert code == 200, body
    text = answer_text(body, stream)
    assert text.startswith("Hello from the simulated upstream")
    seen = stack.upstream.seen[-1]
    assert seen.path.startswith(path)
    assert seen.headers["authorization"] == f"Bearer {stack.account(name).bearer}"


async def _tick(reactor):
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_xai_always_streams_upstream(stack):
    code, body = await stack.chat("grok-4.5", stream=False)
    assert code == 200 and json.loads(body)["object"] == "chat.completion"
    seen = stack.upstream.seen[-1]
    assert seen.stream is True and seen.format == "responses" and seen.model == "grok-4.5"


@pytest_twisted.ensureDeferred
async def test_xai_drops_what_it_refuses_and_keeps_the_clients_limits(stack):
    response = await treq.post(stack.url + "/v1/responses", json={
        "model": "grok-4.5", "input": "hi", "max_output_tokens": 50, "previous_response_id": "resp_1",
        "stream_options": {"include_usage": True}})
    assert response.code == 200, await response.content()
    assert (await response.json())["object"] == "response"
    body = stack.upstream.seen[-1].body
    assert body["max_output_tokens"] == 50 and body["stream"] is True
    assert "previous_response_id" not in body and "stream_options" not in body and "store" not in body


@pytest_twisted.ensureDeferred
async def test_kimi_asks_for_the_upstream_name_with_its_device_headers(stack):
    await stack.chat("kimi-k2-thinking")
    seen = stack.upstream.seen[-1]
    assert seen.model == "k2-thinking"
    assert seen.headers["x-msh-device-id"] == "dev-1234" and seen.headers["x-msh-platform"]


@pytest_twisted.ensureDeferred
async def test_iflow_requests_are_signed_with_the_api_key(stack):
    await stack.chat("glm-4.6")
    await stack.chat("glm-4.6")
    first, second = list(stack.upstream.seen)[-2:]
    h = first.headers
    assert h["authorization"] == "Bearer sk-iflow-1" and h["user-agent"] == "iFlow-Cli"
    expected = hmac.new(b"sk-iflow-1", f"iFlow-Cli:{h['session-id']}:{h['x-iflow-timestamp']}".encode(),
                        hashlib.sha256).hexdigest()
    assert h["x-iflow-signature"] == expected == iflow_signature("sk-iflow-1", h["session-id"],
                                                                  int(h["x-iflow-timestamp"]))
    assert second.headers["session-id"] != h["session-id"]


@pytest_twisted.ensureDeferred
async def test_qwen_requests_go_to_the_accounts_resource_url_as_qwen_code(stack):
    await stack.chat("coder-model")
    seen = stack.upstream.seen[-1]
    assert seen.headers["x-dashscope-authtype"] == "qwen-oauth"
    assert seen.headers["user-agent"].startswith("QwenCode/")


@pytest.mark.parametrize("name", ["xai.json", "kimi.json", "qwen.json", "iflow.json"])
@pytest_twisted.ensureDeferred
async def test_a_401_refreshes_the_account_at_its_token_server_and_the_request_goes_on(stack, name):
    account = stack.account(name)
    old = account.bearer
    stack.upstream.script(old, "status:401")
    model = {"xai.json": "grok-4.5", "kimi.json": "kimi-k2.5", "qwen.json": "coder-model",
             "iflow.json": "glm-4.6"}[name]
    code, body = await stack.chat(model)
    assert code == 200, body
    assert account.bearer != old or name == "iflow.json"
    seen = stack.upstream.seen[-1]
    assert seen.headers["authorization"] == f"Bearer {account.bearer}"
    server = stack.auth[name.split(".")[0]][0]
    assert server.calls["refresh_token"] == 1
    if name == "kimi.json":
        assert server.last_headers["x-msh-device-id"] == "dev-1234"  # Kimi's refreshes carry the device
    on_disk = read(stack.paths[name])
    assert on_disk["access_token"] == account.access_token != stack.files[name]["access_token"]
    assert on_disk["refresh_token"] == account.refresh_token != stack.files[name]["refresh_token"]


@pytest_twisted.ensureDeferred
async def test_an_iflow_refresh_fetches_the_accounts_api_key(stack):
    server = stack.auth["iflow"][0]
    server.iflow_api_key = "sk-iflow-2"
    account = stack.account("iflow.json")
    assert await stack.refresher.refresh_now(credential_for(account, CONFIG)) is True
    assert account.bearer == "sk-iflow-2" and read(stack.paths["iflow.json"])["api_key"] == "sk-iflow-2"
    assert server.calls["userinfo"] == 1
    await stack.chat("glm-4.6")
    assert stack.upstream.seen[-1].headers["authorization"] == "Bearer sk-iflow-2"


@pytest_twisted.ensureDeferred
async def test_a_qwen_refresh_takes_the_resource_url_it_names(stack):
    server = stack.auth["qwen"][0]
    server.resource_url = "qwen-elsewhere.test"
    account = stack.account("qwen.json")
    assert await stack.refresher.refresh_now(credential_for(account, CONFIG)) is True
    assert read(stack.paths["qwen.json"])["resource_url"] == "qwen-elsewhere.test"


@pytest_twisted.ensureDeferred
async def test_xai_finds_its_token_endpoint_by_discovery_when_the_file_names_none(stack):
    account = stack.account("xai.json")
    del account.data["token_endpoint"]
    assert await stack.refresher.refresh_now(credential_for(account, CONFIG)) is True
    assert stack.auth["xai"][0].calls["discovery"] == 1


@pytest_twisted.ensureDeferred
async def test_a_vertex_token_is_bought_with_a_signed_assertion_and_never_written(stack):
    server, token_uri = stack.auth["vertex"]
    account = stack.account("vertex.json")
    before = Path(stack.paths["vertex.json"]).read_bytes()
    assert account.can_refresh and account.access_token == ""
    stack.refresher.check()
    while stack.refresher.running_refreshes:
        await _tick(stack.reactor)
    assert account.access_token.startswith("ya29.sim-sa-") and account.expires_at is not None
    assert server.last_assertion["aud"] == token_uri
    assert server.last_assertion["iss"] == stack.files["vertex.json"]["service_account"]["client_email"]
    assert Path(stack.paths["vertex.json"]).read_bytes() == before
    # An expired one (a 401) is bought again, and the request goes on.
    stack.upstream.script(account.access_token, "status:401")
    old = account.access_token
    code, _ = await stack.chat("gemini-2.5-flash")
    assert code == 200 and account.access_token != old


@pytest_twisted.ensureDeferred
async def test_vertex_counts_tokens_at_its_count_path(stack):
    stack.refresher.check()
    while stack.refresher.running_refreshes:
        await _tick(stack.reactor)
    response = await treq.post(stack.url + "/v1beta/models/gemini-2.5-pro:countTokens",
                               json={"contents": [{"role": "user", "parts": [{"text": "hello"}]}]})
    assert response.code == 200 and (await response.json())["totalTokens"] > 0
    assert stack.upstream.seen[-1].path.endswith("/publishers/google/models/gemini-2.5-pro:countTokens")


@pytest_twisted.ensureDeferred
async def test_a_service_account_the_token_server_refuses_is_a_permanent_refresh_error(sa_server):
    from twisted.internet import reactor

    from cliproxyd.credentials import tokens

    server, sa = sa_server
    server.clock = reactor
    port = reactor.listenTCP(0, QuietSite(server.resource()), interface="127.0.0.1")
    pool, client = make_http_client(reactor, 5)
    try:
        impostor = SimulatedAuthServer(providers.VERTEX, Clock()).service_account("http://x/token")
        account = parse_account("v.json", json.dumps(vertex_file({**impostor, "client_email": sa["client_email"]}))
                                .encode())
        with pytest.raises(TokenError) as e:
            await tokens.service_account_token(client, providers.VERTEX, account.signing_key, sa["client_email"],
                                               token_url=f"http://127.0.0.1:{port.getHost().port}/token",
                                               clock=reactor)
        assert e.value.permanent and "invalid_grant" in e.value.message
        assert "BEGIN" not in e.value.message
    finally:
        await port.stopListening()
        await pool.closeCachedConnections()


# -- management ---------------------------------------------------------------------


def test_the_panels_vertex_import_writes_a_file_that_serves(tmp_path, sa_server):
    from tests.management_support import AUTH, ManagementRig

    rig = ManagementRig(tmp_path)
    sa = json.dumps(sa_server[1]).encode()
    boundary = "----WebKitFormBoundaryVx"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"key.json\"\r\n"
            f"Content-Type: application/json\r\n\r\n").encode() + sa + \
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"location\"\r\n\r\nasia-east1\r\n--{boundary}--\r\n" \
        .encode()
    code, answer = rig.call("POST", "/vertex/import", raw=body,
                            headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert code == 200, answer
    assert answer == {"status": "ok", "auth-file": "vertex-vx-proj.json", "project_id": "vx-proj",
                      "email": sa_server[1]["client_email"], "location": "asia-east1"}
    data = read(rig.auth_dir / "vertex-vx-proj.json")
    assert data["type"] == "vertex" and data["service_account"] == sa_server[1] and data["location"] == "asia-east1"
    files = {f["name"]: f for f in rig.call("GET", "/auth-files")[1]["files"]}
    assert files["vertex-vx-proj.json"]["type"] == "vertex"
    assert "gemini-2.5-pro" in rig.models()
    assert rig.call("POST", "/vertex/import", raw=b'{"type": "service_account"}', headers=AUTH) == \
        (400, {"error": "project_id missing"})


def test_accounts_of_the_new_types_are_listed_like_any_other(tmp_path, sa_server):
    from tests.management_support import ManagementRig

    rig = ManagementRig(tmp_path)
    for name, data in (("xai.json", XAI_FILE), ("kimi.json", KIMI_FILE), ("qwen.json", QWEN_FILE),
                       ("iflow.json", IFLOW_FILE), ("vertex.json", vertex_file(sa_server[1]))):
        assert rig.call("POST", f"/auth-files?name={name}", raw=json.dumps(data).encode())[0] == 200
    files = {f["name"]: f for f in rig.call("GET", "/auth-files")[1]["files"]}
    assert {n: f["type"] for n, f in files.items()} == {"xai.json": "xai", "kimi.json": "kimi", "qwen.json": "qwen",
                                                        "iflow.json": "iflow", "vertex.json": "vertex"}
    assert all(f["status"] == "active" for f in files.values()), files
    assert rig.call("PATCH", "/auth-files/status", {"name": "kimi.json", "disabled": True})[0] == 200
    assert read(rig.auth_dir / "kimi.json")["disabled"] is True
    assert "kimi-k2.5" not in rig.models() and "grok-4.5" in rig.models()


# -- API keys, and the conductor's rules ---------------------------------------------


class Served:
    """The real frontend and conductor over C{make(base)}'s config, its upstream the simulated one, on loopback."""

    def __init__(self, reactor, make, warm: bool = False) -> None:
        from cliproxyd.conductor.warmup import Warmups

        self.reactor = reactor
        self.upstream = SimulatedUpstream(reactor)
        self.ports = [reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")]
        config, self.warnings = parse_config(make(f"http://127.0.0.1:{self.ports[0].getHost().port}"))
        self.pool, client = make_http_client(reactor, 5)
        state = MemoryStateStore()
        assembly = Assembly(client, reactor, state, warmups=Warmups(state, reactor) if warm else None)
        runtime = Runtime(assembly, config=config, poll=0)
        runtime.start()
        frontend = Frontend(runtime.source, reactor)
        self.ports.append(reactor.listenTCP(0, TrackingSite(frontend.resource(), InFlight(reactor, 5), runtime.source),
                                            interface="127.0.0.1"))
        self.url = f"http://127.0.0.1:{self.ports[-1].getHost().port}"

    async def chat(self, model: str):
        response = await treq.post(self.url + "/v1/chat/completions",
                                   json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        return response, await response.json()

    async def close(self) -> None:
        for port in self.ports:
            await port.stopListening()
        await self.pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_xai_and_vertex_api_keys_serve_through_the_frontend():
    from twisted.internet import reactor

    served = Served(reactor, lambda base: {
        "xai-api-key": [{"api-key": "xai-key-1", "base-url": base + "/v1", "prefix": "x"}],
        "vertex-api-key": [{"api-key": "vx-key-1", "base-url": base,
                            "models": [{"name": "gemini-2.5-flash", "alias": "vertex-flash"}]}],
    })
    try:
        assert served.warnings == []
        for model, path, key_header, key in (
                ("x/grok-4.5", "/v1/responses", "authorization", "Bearer xai-key-1"),
                ("vertex-flash", "/v1/publishers/google/models/gemini-2.5-flash:generateContent",
                 "x-goog-api-key", "vx-key-1")):
            response, body = await served.chat(model)
            assert response.code == 200, body
            assert body["choices"][0]["message"]["content"].startswith("Hello from the simulated upstream")
            seen = served.upstream.seen[-1]
            assert seen.path == path and seen.headers[key_header] == key
        # Grok is always a stream upstream; the public API gets no Grok CLI identity.
        await served.chat("x/grok-4.5")
        seen = served.upstream.seen[-1]
        assert seen.stream is True and "x-xai-token-auth" not in seen.headers
    finally:
        await served.close()


@pytest_twisted.ensureDeferred
async def test_cooldowns_and_quota_groups_apply_to_the_new_accounts_as_to_any(tmp_path):
    from twisted.internet import reactor

    def make(base):
        for name, token in (("kimi-a.json", "kimi-at-a"), ("kimi-b.json", "kimi-at-b")):
            write(tmp_path, name, {**KIMI_FILE, "access_token": token, "base_url": base})
        write(tmp_path, "iflow-c.json", {**IFLOW_FILE, "base_url": base + "/v1", "api_key": "sk-iflow-c"})
        return {"auth-dir": str(tmp_path), "routing": {"strategy": "fill-first"},
                "oauth-quota-groups": [{"id": "kimi-k2", "providers": ["kimi"], "models": ["kimi-k2*"]}]}

    served = Served(reactor, make)
    upstream = served.upstream
    try:
        upstream.script("kimi-at-a", "status:429:600", "ok")
        assert (await served.chat("kimi-k2.5"))[0].code == 200  # a's 429: b answers, the client sees nothing
        assert [s.key for s in upstream.seen] == ["kimi-at-a", "kimi-at-b"]
        upstream.seen.clear()
        await served.chat("kimi-k2.6")  # the group is suspended on a: another model of it goes to b at once
        await served.chat("glm-4.6")  # iFlow's: no group of its own, served where it is
        assert [s.key for s in upstream.seen] == ["kimi-at-b", "sk-iflow-c"]
        # Every account of the group out: the client gets the format's 429 with Retry-After.
        upstream.script("kimi-at-b", "status:429:600")
        response, body = await served.chat("kimi-k2-thinking")
        assert response.code == 429 and response.headers.getRawHeaders(b"retry-after")
        assert body["error"]["message"]
    finally:
        await served.close()


@pytest_twisted.ensureDeferred
async def test_a_fill_first_warmup_reaches_a_kimi_account_behind_an_iflow_one(tmp_path):
    from twisted.internet import reactor

    def make(base):
        write(tmp_path, "kimi-a.json", {**KIMI_FILE, "access_token": "kimi-at-a", "base_url": base})
        write(tmp_path, "iflow-c.json", {**IFLOW_FILE, "base_url": base + "/v1", "api_key": "sk-iflow-c",
                                         "priority": 1})
        return {"auth-dir": str(tmp_path),
                "routing": {"strategy": "fill-first", "warmup": {"enabled": True, "providers": ["kimi"]}}}

    served = Served(reactor, make, warm=True)
    try:
        response, body = await served.chat("kimi-k2")
        assert response.code == 200 and "flow-c)" in body["choices"][0]["message"]["content"]
        for _ in range(100):
            if len(served.upstream.seen) == 2:
                break
            await _tick(reactor)
        keys = {s.key: s for s in served.upstream.seen}
        assert set(keys) == {"sk-iflow-c", "kimi-at-a"}
        assert keys["kimi-at-a"].model == "k2" and keys["kimi-at-a"].body["max_tokens"] == 1
    finally:
        await served.close()
