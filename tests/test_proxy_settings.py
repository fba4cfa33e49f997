"""
proxy-url values, where they apply (key entry over provider over global,
auth file over global, direct over everything), the environment as Go's
net/http reads it, and the pools: one per distinct proxy, kept across
reloads, all closed at shutdown.
"""

from __future__ import annotations

import json

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.web.client import URI

from cliproxyd.assembly import Assembly
from cliproxyd.config import ConfigError, parse_config
from cliproxyd.credentials import credentials_from_config
from cliproxyd.credentials.authfiles import AuthFileError, account_proxy, oauth_credentials, scan_auth_dir
from cliproxyd.outbound import HTTPPoolService, OutboundClients, UpstreamPool, client_chooser
from cliproxyd.proxies import (
    DIRECT,
    INHERIT,
    EnvironmentProxies,
    ProxyURL,
    ProxyURLError,
    parse_proxy_setting,
    parse_proxy_url,
)
from cliproxyd.proxies.endpoints import TunnelEndpoint
from cliproxyd.state import MemoryStateStore
from cliproxyd.testing.upstream import SimulatedUpstream
from tests.conftest import decode_request


# -- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("http://p.test", ProxyURL("http", "p.test", 80)),
    ("https://p.test", ProxyURL("https", "p.test", 443)),
    ("socks5://p.test", ProxyURL("socks5", "p.test", 1080)),
    ("SOCKS5H://P.test:9050", ProxyURL("socks5h", "p.test", 9050)),
    ("http://[::1]:3128", ProxyURL("http", "::1", 3128)),
    ("  socks5://u%40x:p%3A%2Fss@10.0.0.1:1081/  ", ProxyURL("socks5", "10.0.0.1", 1081, "u@x", "p:/ss")),
])
def test_proxy_urls_parse_with_default_ports_and_decoded_credentials(text, expected):
    assert parse_proxy_url(text) == expected


@pytest.mark.parametrize("text, setting", [("", INHERIT), ("  ", INHERIT), ("direct", DIRECT), ("NONE", DIRECT),
                                           (" Direct ", DIRECT)])
def test_empty_inherits_and_direct_or_none_go_direct(text, setting):
    assert parse_proxy_setting(text) == setting


@pytest.mark.parametrize("text, says", [
    ("ftp://p.test:21", "unsupported proxy scheme 'ftp'"),
    ("socks4://p.test", "unsupported proxy scheme 'socks4'"),
    ("p.test:3128", "must be a URL"),
    ("http://", "needs a host"),
    ("http://user:pw@:3128", "needs a host"),
    ("http://p.test:http", "bad port in http://p.test:http"),
    ("socks5://u:hunter2@p.test:70000", "bad port in socks5://p.test:70000"),
    ("http://p.test:0", "bad port 0"),
    ("socks5://" + "u" * 256 + ":x@p.test", "user name is longer than 255 bytes"),
])
def test_bad_proxy_urls_are_refused_without_showing_the_password(text, says):
    with pytest.raises(ProxyURLError, match=says) as info:
        parse_proxy_setting(text)
    assert "hunter2" not in str(info.value)


def test_the_password_is_never_in_repr_or_str():
    setting = parse_proxy_setting("socks5h://alice:hunter2@p.test:1080")
    for text in (repr(setting), str(setting.proxy), setting.describe(), repr(parse_config(
            {"proxy-url": "http://alice:hunter2@p.test"})[0])):
        assert "hunter2" not in text
    assert setting.describe() == "socks5h://alice:***@p.test:1080"
    assert parse_proxy_setting("http://bob@p.test").describe() == "http://bob@p.test:80"
    assert INHERIT.describe() == "environment" and DIRECT.describe() == "direct"


# -- the config --------------------------------------------------------------------------------


def provider(**over):
    return {"name": "p", "base-url": "https://up.test/v1", "api-key-entries": [{"api-key": "k"}],
            "models": [{"name": "m"}], **over}


@pytest.mark.parametrize("data, path", [
    ({"proxy-url": "gopher://x"}, "proxy-url"),
    ({"claude-api-key": [{"api-key": "k", "proxy-url": "http://:1"}]}, "claude-api-key[0].proxy-url"),
    ({"gemini-api-key": [{"api-key": "k"}, {"api-key": "j", "proxy-url": "gopher://x"}]},
     "gemini-api-key[1].proxy-url"),
    ({"codex-api-key": [{"api-key": "k", "proxy-url": "socks5://x:port"}]}, "codex-api-key[0].proxy-url"),
    ({"openai-compatibility": [provider(**{"proxy-url": "gopher://x"})]}, "openai-compatibility[0].proxy-url"),
    ({"openai-compatibility": [provider(**{"api-key-entries": [{"api-key": "k", "proxy-url": "gopher://x"}]})]},
     "openai-compatibility[0].api-key-entries[0].proxy-url"),
    ({"proxy-url": 3128}, "proxy-url"),
])
def test_a_bad_proxy_url_stops_the_load_naming_its_yaml_path(data, path):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "c.yaml")
    assert str(info.value).startswith(f"c.yaml: {path}: ")


def test_proxy_url_is_no_longer_a_not_supported_warning():
    _, warnings = parse_config({"proxy-url": "socks5://p.test:1080"})
    assert warnings == []


def by_key(config):
    return {c.api_key: c.proxy for c in credentials_from_config(config)}


def test_a_key_entry_wins_over_its_provider_which_wins_over_the_global_proxy():
    config, _ = parse_config({
        "proxy-url": "http://global.test:3128",
        "openai-compatibility": [
            provider(name="a", **{"proxy-url": "socks5h://provider.test:1080", "api-key-entries": [
                {"api-key": "a-entry", "proxy-url": "socks5://entry.test:1080"},
                {"api-key": "a-direct", "proxy-url": "direct"},
                {"api-key": "a-inherits"}], "api-keys": ["a-legacy"]}),
            provider(name="b", **{"api-key-entries": [{"api-key": "b-inherits"}]}),
        ],
        "claude-api-key": [{"api-key": "c-own", "proxy-url": "https://own.test"}, {"api-key": "c-inherits"}],
        "gemini-api-key": [{"api-key": "g-none", "proxy-url": "none"}],
        "codex-api-key": [{"api-key": "x-inherits"}],
    })
    seen = {key: setting.describe() for key, setting in by_key(config).items()}
    assert seen == {
        "a-entry": "socks5://entry.test:1080",
        "a-direct": "direct",
        "a-inherits": "socks5h://provider.test:1080",
        "a-legacy": "socks5h://provider.test:1080",
        "b-inherits": "http://global.test:3128",
        "c-own": "https://own.test:443",
        "c-inherits": "http://global.test:3128",
        "g-none": "direct",
        "x-inherits": "http://global.test:3128",
    }


def test_with_no_proxy_url_anywhere_credentials_inherit_the_environment():
    config, _ = parse_config({"claude-api-key": [{"api-key": "k"}]})
    assert by_key(config) == {"k": INHERIT}


def test_global_direct_is_kept_so_the_environment_is_ignored():
    config, _ = parse_config({"proxy-url": "direct", "claude-api-key": [{"api-key": "k"}]})
    assert by_key(config) == {"k": DIRECT}


# -- auth files ------------------------------------------------------------------------------------


def write(tmp_path, name, data):
    (tmp_path / name).write_text(json.dumps(data))


def test_an_auth_file_proxy_url_wins_over_the_global_one_and_an_empty_one_inherits_it(tmp_path):
    write(tmp_path, "own.json", {"type": "codex", "access_token": "t", "proxy_url": "socks5h://u:pw@own.test:9"})
    write(tmp_path, "direct.json", {"type": "codex", "access_token": "t", "proxy_url": "direct"})
    write(tmp_path, "plain.json", {"type": "codex", "access_token": "t", "proxy_url": ""})
    config, _ = parse_config({"proxy-url": "http://global.test:3128"})
    creds, problems = oauth_credentials(scan_auth_dir(str(tmp_path)).accounts, config)
    assert problems == {}
    assert {c.account.name: c.proxy.describe() for c in creds} == {
        "own.json": "socks5h://u:***@own.test:9", "direct.json": "direct", "plain.json": "http://global.test:3128"}


def test_a_bad_auth_file_proxy_url_keeps_the_file_out_and_says_why_without_the_password(tmp_path):
    write(tmp_path, "bad.json", {"type": "claude", "access_token": "t", "proxy_url": "socks5://u:hunter2@h:x"})
    write(tmp_path, "odd.json", {"type": "claude", "access_token": "t", "proxy_url": 5})
    creds, problems = oauth_credentials(scan_auth_dir(str(tmp_path)).accounts, parse_config({})[0])
    assert creds == ()
    assert problems["bad.json"].endswith("proxy_url: bad port in socks5://h:x; use a number from 1 to 65535")
    assert "hunter2" not in problems["bad.json"]
    assert "proxy_url must be a string" in problems["odd.json"]


def test_account_proxy_is_what_the_refresh_uses(tmp_path):
    write(tmp_path, "a.json", {"type": "claude", "access_token": "t", "refresh_token": "r"})
    account = scan_auth_dir(str(tmp_path)).accounts["a.json"]
    config, _ = parse_config({"proxy-url": "socks5://g.test:1"})
    assert account_proxy(account, config).describe() == "socks5://g.test:1"
    account.data["proxy_url"] = "ftp://x"
    with pytest.raises(AuthFileError):
        account_proxy(account, config)


# -- the environment -----------------------------------------------------------------------------


def env(**values):
    return EnvironmentProxies.from_environ(values)


def proxy_of(environment, url):
    uri = URI.fromBytes(url.encode())
    found = environment.proxy_for(uri.scheme.decode(), uri.host.decode(), uri.port)
    return found.redacted() if found else None


def test_https_upstreams_use_https_proxy_and_http_ones_http_proxy():
    e = env(HTTPS_PROXY="http://s.test:1", HTTP_PROXY="socks5://h.test:2")
    assert proxy_of(e, "https://api.test/v1") == "http://s.test:1"
    assert proxy_of(e, "http://api.test/v1") == "socks5://h.test:2"
    # No fallback from one to the other (Go has none), and ALL_PROXY is not read.
    assert proxy_of(env(HTTP_PROXY="http://h.test:2"), "https://api.test") is None
    assert env(ALL_PROXY="socks5://a.test:1", all_proxy="socks5://a.test:1").empty


def test_upper_case_names_win_and_lower_case_ones_count_too():
    assert proxy_of(env(HTTPS_PROXY="http://up.test:1", https_proxy="http://low.test:1"),
                    "https://x.test") == "http://up.test:1"
    assert proxy_of(env(https_proxy="http://low.test:1"), "https://x.test") == "http://low.test:1"
    assert proxy_of(env(HTTPS_PROXY="", https_proxy="http://low.test:1"), "https://x.test") == "http://low.test:1"


def test_a_bare_host_port_means_http_and_a_bad_value_names_the_variable():
    assert proxy_of(env(HTTPS_PROXY="p.test:3128"), "https://x.test") == "http://p.test:3128"
    with pytest.raises(ProxyURLError, match="^HTTPS_PROXY: unsupported proxy scheme 'ftp'"):
        env(HTTPS_PROXY="ftp://p.test")


def test_loopback_and_localhost_always_go_direct():
    e = env(HTTPS_PROXY="http://p.test:1", HTTP_PROXY="http://p.test:1")
    for url in ("http://localhost:8080", "https://127.0.0.1", "http://127.9.9.9:1", "https://[::1]:8443"):
        assert proxy_of(e, url) is None, url
    assert proxy_of(e, "https://10.0.0.1") == "http://p.test:1"


@pytest.mark.parametrize("no_proxy, url, direct", [
    ("*", "https://anything.test", True),
    ("example.com", "https://example.com", True),
    ("example.com", "https://api.example.com", True),
    ("example.com", "https://notexample.com", False),
    (".example.com", "https://example.com", False),
    (".example.com", "https://api.example.com", True),
    ("*.example.com", "https://api.example.com", True),
    ("*.example.com", "https://example.com", False),
    ("Example.COM ", "https://API.example.com", True),
    ("example.com:8443", "https://example.com:8443", True),
    ("example.com:8443", "https://example.com", False),
    ("10.0.0.0/8", "https://10.1.2.3", True),
    ("10.0.0.0/8", "https://11.1.2.3", False),
    ("192.168.1.5", "https://192.168.1.5", True),
    ("192.168.1.5:443", "https://192.168.1.5", True),
    ("192.168.1.5:80", "https://192.168.1.5", False),
    ("[2001:db8::1]:443", "https://[2001:db8::1]", True),
    ("2001:db8::/32", "https://[2001:db8::7]", True),
    ("a.test, b.test", "https://b.test", True),
    (",,", "https://b.test", False),
])
def test_no_proxy_as_go_reads_it(no_proxy, url, direct):
    for name in ("NO_PROXY", "no_proxy"):
        e = env(HTTPS_PROXY="http://p.test:1", **{name: no_proxy})
        assert (proxy_of(e, url) is None) is direct


def test_under_cgi_http_proxy_is_not_trusted():
    e = env(HTTP_PROXY="http://p.test:1", HTTPS_PROXY="http://s.test:1", REQUEST_METHOD="GET")
    assert proxy_of(e, "http://x.test") is None
    assert proxy_of(e, "https://x.test") == "http://s.test:1"


# -- pools -----------------------------------------------------------------------------------------


def test_one_client_and_pool_per_distinct_proxy_made_once_and_kept_across_reloads():
    reactor = MemoryReactorClock()
    out = OutboundClients(reactor, 5)
    a = parse_proxy_setting("socks5h://u:p@a.test:1080")
    assert out.client_for(a) is out.client_for(parse_proxy_setting("socks5h://u:p@a.test:1080"))
    others = [out.client_for(parse_proxy_setting(t)) for t in
              ("socks5h://u:other@a.test:1080", "socks5://u:p@a.test:1080", "http://a.test:1080")]
    assert len({id(c) for c in [out.client_for(a), *others]}) == 4
    assert len(out.pools()) == 5  # the direct pool and four proxies
    assert all(isinstance(pool, UpstreamPool) for pool in out.pools())  # none hands out a closing connection
    assert out.client_for(DIRECT) is out.direct
    assert out.client_for(INHERIT) is out.direct  # no environment proxies: inherit is direct
    # A reload builds new credentials from a new config: the same proxy gets the same client.
    first = credentials_from_config(parse_config({"proxy-url": "socks5h://u:p@a.test:1080",
                                                  "claude-api-key": [{"api-key": "k"}]})[0])[0]
    assert client_chooser(out)(first.proxy) is out.client_for(a)


def test_each_proxy_endpoint_tunnels_to_the_upstream_and_tls_goes_on_top():
    out = OutboundClients(MemoryReactorClock(), 5)
    agent = out.agent_for(parse_proxy_url("http://p.test:3128"))
    plain = agent._endpointFactory.endpointForURI(URI.fromBytes(b"http://up.test:8080/v1"))
    assert isinstance(plain, TunnelEndpoint)
    tls = agent._endpointFactory.endpointForURI(URI.fromBytes(b"https://up.test/v1"))
    assert isinstance(tls._wrappedEndpoint, TunnelEndpoint)
    assert tls is agent._endpointFactory.endpointForURI(URI.fromBytes(b"https://up.test/v1/other"))


def test_inherit_follows_the_environment_per_origin_through_that_proxys_own_pool():
    environment = EnvironmentProxies.from_environ({"HTTPS_PROXY": "http://p.test:3128", "NO_PROXY": "near.test"})
    out = OutboundClients(MemoryReactorClock(), 5, environment)
    inherit = out.client_for(INHERIT)
    assert inherit is not out.direct
    agent = inherit._agent
    explicit = out.agent_for(parse_proxy_url("http://p.test:3128"))
    agent.request(b"POST", b"https://far.test/v1/chat")
    agent.request(b"POST", b"https://near.test/v1/chat")
    assert agent._by_origin[b"https://far.test"] is explicit
    assert agent._by_origin[b"https://near.test"] is out.direct._agent
    assert len(out.pools()) == 2


def test_the_pool_service_closes_every_pool():
    out = OutboundClients(MemoryReactorClock(), 5)
    out.client_for(parse_proxy_setting("socks5://a.test:1"))
    closed = []
    for pool in out.pools():
        pool.closeCachedConnections = lambda pool=pool: closed.append(pool) or succeed(None)
    service = HTTPPoolService(out)
    service.startService()
    service.stopService()
    assert closed == out.pools() and len(closed) == 2


# -- the test servers' own rule --------------------------------------------------------------------


def test_a_missing_proxy_server_fails_under_ci_and_skips_elsewhere(monkeypatch):
    from _pytest.outcomes import Failed, Skipped

    from tests import proxy_servers

    monkeypatch.setattr(proxy_servers.shutil, "which", lambda name: None)
    monkeypatch.setattr(proxy_servers.os, "access", lambda path, mode: False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(Failed, match="microsocks is not installed"):
        proxy_servers.need("microsocks")
    monkeypatch.delenv("CI")
    with pytest.raises(Skipped, match=r"tinyproxy is not installed \(apt-get install tinyproxy\)"):
        proxy_servers.need("tinyproxy")


# -- requests take their credential's route ------------------------------------------------------------


class Routes(OutboundClients):
    """Outbound clients whose every route (direct, each proxy) is a simulated upstream of its own, in memory."""

    def __init__(self, clock) -> None:
        super().__init__(MemoryReactorClock(), 5)
        self.clock = clock
        self.upstreams: dict[str, SimulatedUpstream] = {}
        self.stubs: dict[str, StubTreq] = {}

    def client_for(self, setting):
        super().client_for(setting)  # makes the real pool, as production does
        name = setting.describe()
        if name not in self.stubs:
            self.upstreams[name] = SimulatedUpstream(self.clock)
            self.stubs[name] = StubTreq(self.upstreams[name].resource())
        return self.stubs[name]

    def keys_by_route(self) -> dict[str, list[str]]:
        return {name: [s.key for s in up.seen] for name, up in self.upstreams.items() if up.seen}


def test_each_request_leaves_by_its_credentials_route_and_a_rebuild_reuses_the_pools():
    clock = Clock()
    routes = Routes(clock)
    data = {
        "proxy-url": "socks5h://g.test:1080",
        "routing": {"strategy": "round-robin"},
        "openai-compatibility": [{
            "name": "sim", "base-url": "http://upstream.test/v1",
            "models": [{"name": "sim-small", "alias": "gpt-4o-mini"}],
            "api-key-entries": [{"api-key": "sk-via-global"}, {"api-key": "sk-direct", "proxy-url": "direct"},
                                {"api-key": "sk-via-own", "proxy-url": "http://own.test:3128"}],
        }],
    }
    config, _ = parse_config(data)
    assembly = Assembly(routes, clock, MemoryStateStore())
    gen = assembly.build(config)
    for _ in range(3):
        d = Deferred.fromCoroutine(gen.conductor.execute(decode_request(json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode())))
        for stub in routes.stubs.values():
            stub.flush()
        assert d.called
    assert routes.keys_by_route() == {"socks5h://g.test:1080": ["sk-via-global"], "direct": ["sk-direct"],
                                      "http://own.test:3128": ["sk-via-own"]}
    pools = routes.pools()
    assert len(pools) == 3
    assembly.build(parse_config(data)[0])  # a reload: a new config read from the same file
    assert routes.pools() == pools  # the same pools, none made again


def test_start_up_says_which_environment_proxies_apply_and_that_all_proxy_does_not():
    from twisted.logger import capturedLogs, formatEvent

    from cliproxyd.tap import _log_environment

    environ = {"HTTPS_PROXY": "http://u:hunter2@p.test:3128", "ALL_PROXY": "socks5://a.test:1080"}
    with capturedLogs() as events:
        _log_environment(EnvironmentProxies.from_environ(environ), environ)
    text = [formatEvent(e) for e in events]
    assert text == ["environment proxies (where no proxy-url applies): https http://u:***@p.test:3128, http direct",
                    "ALL_PROXY is set but not used (as in CLIProxyAPI): set HTTPS_PROXY, or proxy-url in the config"]
    with capturedLogs() as events:
        _log_environment(EnvironmentProxies(), {})
    assert list(events) == []


def test_a_bad_environment_proxy_stops_start_up(tmp_path, monkeypatch):
    from cliproxyd.tap import Options, StartupError, build

    config = tmp_path / "config.yaml"
    config.write_text("claude-api-key: [{api-key: k}]\n")
    monkeypatch.setenv("HTTPS_PROXY", "ftp://u:hunter2@p.test")
    options = Options()
    options.parseOptions(["--config", str(config), "--listen", "tcp:0:interface=127.0.0.1"])
    with pytest.raises(StartupError, match="HTTPS_PROXY: unsupported proxy scheme 'ftp'") as info:
        build(options, MemoryReactorClock())
    assert "hunter2" not in str(info.value)
