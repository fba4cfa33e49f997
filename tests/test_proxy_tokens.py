"""Token calls leave as their account's upstream calls do: refreshes through the account's proxy, logins through the config's."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from cliproxyd.assembly import GenerationSource
from cliproxyd.config import parse_config
from cliproxyd.credentials.authfiles import scan_auth_dir
from cliproxyd.credentials.login import LoginError, resolve_proxy
from cliproxyd.credentials.refresh import account_refresher
from cliproxyd.daemon import _proxy_of
from cliproxyd.outbound import OutboundClients
from cliproxyd.proxies import INHERIT


class Refused(Exception):
    pass


class RecordingClients(OutboundClients):
    """Outbound clients that note which setting each call asked for, and whose clients refuse every call."""

    def __init__(self) -> None:
        super().__init__(MemoryReactorClock(), 5)
        self.asked: list = []

    def client_for(self, setting):
        self.asked.append(setting)

        class Client:
            def post(self, *a, **kw):
                raise Refused()

            request = post

        return Client()


def accounts(tmp_path, **files):
    for name, extra in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"type": "claude", "access_token": "access-1",
                                                           "refresh_token": "refresh-1", **extra}))
    return scan_auth_dir(str(tmp_path)).accounts


def test_a_refresh_goes_through_the_accounts_proxy_else_the_global_one(tmp_path):
    found = accounts(tmp_path, own={"proxy_url": "socks5h://u:pw@own.test:1080"}, plain={})
    source = GenerationSource()
    source.current = SimpleNamespace(config=parse_config({"proxy-url": "http://global.test:3128"})[0])
    clients = RecordingClients()
    refresh = account_refresher(clients, Clock(), _proxy_of(source))
    for name in ("own.json", "plain.json"):
        failure = []
        refresh(found[name]).addErrback(failure.append)
        assert failure and "cannot reach the token endpoint: Refused" in str(failure[0].value)
    assert [s.describe() for s in clients.asked] == ["socks5h://u:***@own.test:1080", "http://global.test:3128"]


def test_without_a_generation_or_a_proxy_a_refresh_inherits_the_environment(tmp_path):
    found = accounts(tmp_path, plain={})
    clients = RecordingClients()
    account_refresher(clients, Clock(), _proxy_of(GenerationSource()))(found["plain.json"]).addErrback(lambda f: None)
    assert clients.asked == [INHERIT]


def test_login_with_a_config_takes_its_proxy_url(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("proxy-url: socks5h://u:hunter2@p.test:1080\n")
    assert resolve_proxy(str(config)).describe() == "socks5h://u:***@p.test:1080"
    assert resolve_proxy(None) is INHERIT
    config.write_text("proxy-url: socks4://u:hunter2@p.test\n")
    with pytest.raises(LoginError, match="proxy-url: unsupported proxy scheme 'socks4'") as info:
        resolve_proxy(str(config))
    assert "hunter2" not in str(info.value)


def test_login_makes_its_client_for_the_proxy_it_is_given(tmp_path, monkeypatch):
    import io

    from twisted.internet.defer import Deferred, succeed

    from cliproxyd import outbound
    from cliproxyd.credentials.login import login
    from cliproxyd.credentials.providers import PROVIDERS
    from cliproxyd.proxies import parse_proxy_setting

    made: list[RecordingClients] = []

    class Made(RecordingClients):
        def __init__(self, reactor, timeout, environment):
            super().__init__()
            made.append(self)

    monkeypatch.setattr(outbound, "OutboundClients", Made)
    proxy = parse_proxy_setting("http://p.test:3128")
    d = Deferred.fromCoroutine(login(MemoryReactorClock(), PROVIDERS["claude"], str(tmp_path), no_browser=True,
                                     out=io.StringIO(), read_line=lambda: succeed("code#not-our-state"),
                                     proxy=proxy))
    failures: list = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(LoginError)
    assert [c.asked for c in made] == [[proxy]]
