"""
C{POST /api-call}, as the Management Center's quota page sends it
(apiCall.ts; the quota providers' data.ts: C{{"authIndex", "method", "url",
"header": {"Authorization": "Bearer $TOKEN$", ...}, "data"}}), against the
simulated quota endpoints and authorization server: the fields the panel
reads (C{status_code}, C{header}, C{body}), the token put in, refreshed
first when expired, and the allow-list that keeps it from being a relay.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from treq.testing import StubTreq
from twisted.web.resource import Resource
from twisted.web.vhost import NameVirtualHost

from cliproxyd.credentials.index import auth_index
from cliproxyd.credentials.providers import PROVIDERS
from cliproxyd.management.apicall import CALL_TIMEOUT
from cliproxyd.outbound import OutboundClients
from cliproxyd.testing.authserver import SimulatedAuthServer
from cliproxyd.testing.quota import SimulatedQuota
from tests.management_support import ManagementRig

CLAUDE_USAGE_URL = "https://api.anthropic.com/api/oauth/usage"
CLAUDE_HEADERS = {"Authorization": "Bearer $TOKEN$", "Content-Type": "application/json",
                  "anthropic-beta": "oauth-2025-04-20"}
NOW = 1_800_000_000.0  # 2027-01-15
ANTIGRAVITY_QUOTA_URL = "https://daily-cloudcode-pa.googleapis.com/v1internal:retrieveUserQuotaSummary"


class QuotaRig(ManagementRig):
    """A management rig whose client reaches the simulated quota endpoints (any host) and auth.test."""

    def __init__(self, tmp_path, provider_type: str = "claude") -> None:
        self.sim = SimulatedAuthServer(PROVIDERS[provider_type], None)
        self.quota = SimulatedQuota(valid=lambda token: token in self.live)
        self.live = {"tok-a"}
        hosts = NameVirtualHost()
        hosts.default = self.quota.resource()
        hosts.addHost(b"auth.test", self.sim.resource())
        super().__init__(tmp_path, client=StubTreq(hosts))
        self.sim.clock = self.clock
        self.clock.advance(NOW)  # expiry times in the files mean what they say

    def add(self, name: str, **fields) -> str:
        """Upload an account file; its auth_index as the list shows it."""
        data = {"type": "claude", "access_token": "tok-a", "refresh_token": "r", "email": "a@x.com",
                "expired": "2099-01-01T00:00:00Z", **fields}
        assert self.call("POST", f"/auth-files?name={name}", raw=json.dumps(data).encode())[0] == 200
        [entry] = [f for f in self.call("GET", "/auth-files")[1]["files"] if f["name"] == name]
        assert isinstance(entry["auth_index"], str)
        return entry["auth_index"]


@pytest.fixture
def rig(tmp_path):
    return QuotaRig(tmp_path)


def test_a_quota_call_goes_out_with_the_accounts_token_and_comes_back_as_the_panel_reads_it(rig):
    index = rig.add("claude-a.json")
    code, body = rig.call("POST", "/api-call", {"authIndex": index, "method": "GET", "url": CLAUDE_USAGE_URL,
                                                 "header": CLAUDE_HEADERS})
    assert code == 200, body
    assert body["status_code"] == 200
    assert isinstance(body["header"], dict) and all(isinstance(v, list) for v in body["header"].values())
    assert body["header"]["Content-Type"] == ["application/json"]
    assert isinstance(body["body"], str) and json.loads(body["body"])["five_hour"]["utilization"] == 12.0
    [(method, path, headers, _)] = rig.quota.requests
    assert (method, path) == ("GET", "/api/oauth/usage")
    assert headers["authorization"] == "Bearer tok-a" and headers["anthropic-beta"] == "oauth-2025-04-20"


def test_an_upstream_refusal_is_relayed_in_status_code(rig):
    index = rig.add("claude-a.json", access_token="tok-dead")
    code, body = rig.call("POST", "/api-call", {"auth_index": index, "method": "GET", "url": CLAUDE_USAGE_URL,
                                                 "header": CLAUDE_HEADERS})
    assert code == 200 and body["status_code"] == 401 and "invalid token" in body["body"]


def test_an_expired_token_is_refreshed_through_the_refresher_before_the_call(rig):
    refresh = rig.sim.issue_refresh_token("a@x.com")
    index = rig.add("claude-a.json", access_token="tok-old", refresh_token=refresh,
                    expired="2000-01-01T00:00:00Z", token_uri="http://auth.test/token")
    rig.live = set(rig.sim.access_tokens)  # what the auth server has issued, and nothing else
    rig.quota.valid = lambda token: token in rig.sim.access_tokens
    code, body = rig.call("POST", "/api-call", {"authIndex": index, "method": "GET", "url": CLAUDE_USAGE_URL,
                                                 "header": CLAUDE_HEADERS})
    assert (code, body["status_code"]) == (200, 200), body
    [token] = rig.sim.access_tokens
    assert rig.quota.requests[-1][2]["authorization"] == f"Bearer {token}"
    assert json.loads((rig.auth_dir / "claude-a.json").read_text())["access_token"] == token
    assert rig.sim.calls["refresh_token"] == 1


def test_a_failed_refresh_is_a_400_that_says_so_and_nothing_goes_out(rig):
    index = rig.add("claude-b.json", access_token="tok-old", refresh_token="dead",
                    expired="2000-01-01T00:00:00Z", token_uri="http://auth.test/token")
    code, body = rig.call("POST", "/api-call", {"authIndex": index, "method": "GET", "url": CLAUDE_USAGE_URL,
                                                 "header": CLAUDE_HEADERS})
    assert code == 400 and "has expired and its refresh failed" in body["error"], body
    assert rig.quota.requests == []


def test_antigravity_quota_posts_its_body(tmp_path):
    rig = QuotaRig(tmp_path)
    index = rig.add("antigravity-a.json", type="antigravity")
    sent = json.dumps({"project": "p-1"})
    code, body = rig.call("POST", "/api-call", {"authIndex": index, "method": "POST", "url": ANTIGRAVITY_QUOTA_URL,
                                                 "header": {"Authorization": "Bearer $TOKEN$",
                                                            "Content-Type": "application/json"},
                                                 "data": sent})
    assert (code, body["status_code"]) == (200, 200), body
    assert rig.quota.requests[-1][:2] == ("POST", "/v1internal:retrieveUserQuotaSummary")
    assert rig.quota.requests[-1][3] == sent.encode()


@pytest.mark.parametrize("method, url", [
    ("GET", "https://evil.test/api/oauth/usage"),
    ("POST", CLAUDE_USAGE_URL),
    ("GET", CLAUDE_USAGE_URL + "?x=1"),
    ("GET", "http://api.anthropic.com/api/oauth/usage"),
    ("GET", "https://api.anthropic.com/v1/messages"),
    ("GET", "https://chatgpt.com/backend-api/wham/usage"),  # a Codex call, with a Claude account
])
def test_anything_but_the_panels_quota_calls_is_a_403_naming_why(rig, method, url):
    index = rig.add("claude-a.json")
    code, body = rig.call("POST", "/api-call", {"authIndex": index, "method": method, "url": url,
                                                 "header": CLAUDE_HEADERS})
    assert code == 403 and "not one of them" in body["error"] and CLAUDE_USAGE_URL in body["error"], body
    assert rig.quota.requests == []


def test_a_call_must_name_an_oauth_credential(rig):
    call = {"method": "GET", "url": CLAUDE_USAGE_URL, "header": {"x-api-key": "sk-mine"}}
    code, body = rig.call("POST", "/api-call", call)
    assert code == 403 and "auth_index" in body["error"]
    assert rig.call("POST", "/api-call", {**call, "authIndex": "0123456789abcdef"}) == \
        (404, {"error": "no credential has auth_index '0123456789abcdef'"})
    key_cred = rig.runtime.current.creds[0]
    assert key_cred.account is None
    code, body = rig.call("POST", "/api-call", {**call, "authIndex": auth_index(key_cred)})
    assert code == 403 and "openai-compatibility credential" in body["error"]
    assert rig.call("POST", "/api-call", {"authIndex": "x", "url": CLAUDE_USAGE_URL}) == \
        (400, {"error": "missing method"})
    assert rig.call("POST", "/api-call", {"authIndex": "x", "method": "GET"}) == (400, {"error": "missing url"})
    code, body = rig.call("POST", "/api-call", {**call, "header": {"X-A": "1\r\nX-Injected: 2"}})
    assert code == 400 and "no line breaks" in body["error"]
    code, body = rig.call("POST", "/api-call", {**call, "colour": 1})
    assert code == 400 and "unknown field 'colour'" in body["error"]
    assert rig.quota.requests == []


def test_an_upstream_that_never_answers_is_a_504_on_the_clock(rig):
    index = rig.add("claude-a.json")
    rig.quota.hang = True
    d = rig.send("POST", "/api-call", {"authIndex": index, "method": "GET", "url": CLAUDE_USAGE_URL,
                                        "header": CLAUDE_HEADERS})
    rig.pump()
    assert not d.called
    rig.clock.advance(CALL_TIMEOUT)
    code, body = rig.settle(d)
    assert code == 504 and "did not answer" in body["error"]


class _Routes(OutboundClients):
    """The daemon's outbound clients as tap makes them, reduced to two routes: direct and one proxy."""

    def __init__(self, direct, proxied) -> None:  # no pools: the routes are stubs
        self._direct, self._proxied_stub = direct, proxied

    def client_for(self, setting):
        return self._proxied_stub if setting.proxy is not None else self._direct


class _Nowhere:
    def request(self, *a, **kw):
        raise AssertionError("this route must not be taken")


@pytest.mark.parametrize("proxy_url", ["socks5h://127.0.0.1:1080", ""])
def test_a_quota_call_leaves_the_way_the_accounts_own_requests_do(tmp_path, proxy_url):
    quota = SimulatedQuota(valid=lambda token: token == "tok-a")
    stub = StubTreq(quota.resource())
    routes = _Routes(_Nowhere(), stub) if proxy_url else _Routes(stub, _Nowhere())
    rig = ManagementRig(tmp_path, client=routes)
    rig.clock.advance(NOW)
    data = {"type": "claude", "access_token": "tok-a", "refresh_token": "r", "email": "a@x.com",
            "expired": "2099-01-01T00:00:00Z", **({"proxy_url": proxy_url} if proxy_url else {})}
    assert rig.call("POST", "/auth-files?name=claude-p.json", raw=json.dumps(data).encode())[0] == 200
    [entry] = rig.call("GET", "/auth-files")[1]["files"]
    code, body = rig.call("POST", "/api-call", {"authIndex": entry["auth_index"], "method": "GET",
                                                 "url": CLAUDE_USAGE_URL, "header": CLAUDE_HEADERS})
    assert code == 200 and body["status_code"] == 200, body
    assert [r[1] for r in quota.requests] == ["/api/oauth/usage"]


class _Models(Resource):
    """A provider's model list (OpenAI's shape) that records who asked, with which headers."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[bytes, bytes, dict[str, str]]] = []

    def render(self, request):
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.asked.append((request.method, request.uri, headers))
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"object": "list", "data": [{"id": "model-a"}, {"id": "model-b"}]}).encode()


@pytest.mark.parametrize("url, header", [
    ("https://new-provider.test/v1/models", {"Authorization": "Bearer sk-typed-in-the-form"}),
    ("https://api.anthropic.com/v1/models", {"x-api-key": "sk-ant-form", "anthropic-version": "2023-06-01"}),
    ("https://generativelanguage.googleapis.com/v1beta/models?pageToken=p2", {"x-goog-api-key": "AIza-form"}),
])
def test_a_provider_forms_model_listing_goes_out_with_the_forms_own_key(tmp_path, url, header):
    models = _Models()
    rig = ManagementRig(tmp_path, client=StubTreq(models))
    code, body = rig.call("POST", "/api-call", {"method": "GET", "url": url, "header": header})
    assert code == 200 and body["status_code"] == 200, body
    assert [m["id"] for m in json.loads(body["body"])["data"]] == ["model-a", "model-b"]
    [(method, uri, seen)] = models.asked
    parts = urlsplit(url)
    assert (method, uri.decode()) == (b"GET", parts.path + (f"?{parts.query}" if parts.query else ""))
    for name, value in header.items():
        assert seen[name.lower()] == value


@pytest.mark.parametrize("call, why", [
    ({"method": "GET", "url": "https://new-provider.test/v1/models", "header": {"Authorization": "Bearer $TOKEN$"}},
     "$TOKEN$"),
    ({"method": "POST", "url": "https://new-provider.test/v1/models", "header": {}}, "auth_index"),
    ({"method": "POST", "url": "https://new-provider.test/v1/chat/completions", "header": {}}, "auth_index"),
    ({"method": "GET", "url": "https://new-provider.test/v1/models/../../admin", "header": {}}, "auth_index"),
    ({"method": "GET", "url": "https://internal.test/admin", "header": {}}, "auth_index"),
])
def test_nothing_but_a_model_listing_goes_out_without_an_auth_index(tmp_path, call, why):
    models = _Models()
    rig = ManagementRig(tmp_path, client=StubTreq(models))
    code, body = rig.call("POST", "/api-call", call)
    assert code == 403 and why in body["error"], body
    assert models.asked == []
