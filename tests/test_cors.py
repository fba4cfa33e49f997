"""
CORS and the X-CPA headers, as a browser meets them: the Management
Center opened from another origin sends a preflight, then calls the API
and reads the server's version from the answer's headers. On loopback,
through the daemon's real site; and MANAGEMENT_PASSWORD, in memory.
"""

from __future__ import annotations

import pytest
import pytest_twisted
import treq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from cliproxyd._version import __version__
from cliproxyd.daemon import build_daemon
from cliproxyd.frontend import TrackingSite
from cliproxyd.management.access import ManagementAccess, Refused
from cliproxyd.management.root import EXPOSED
from cliproxyd.outbound import make_http_client
from tests.management_support import SECRET, SECRET_HASH, ManagementRig

ORIGIN = {"Origin": ["http://panel.example:5173"]}


class _Site:
    def __init__(self, reactor, tmp_path, **kw) -> None:
        config = tmp_path / "config.yaml"
        config.write_text(f"host: 127.0.0.1\nremote-management:\n  secret-key: '{SECRET_HASH}'\n")
        self.pool, client = make_http_client(reactor, 5)
        self.daemon = build_daemon(reactor, client, config_path=str(config), poll=0, **kw)
        self.daemon.runtime.start()
        site = TrackingSite(self.daemon.resource(), self.daemon.in_flight, self.daemon.source)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    async def request(self, method: str, path: str, headers: dict | None = None):
        response = await treq.request(method, self.url + path, headers={**ORIGIN, **(headers or {})},
                                      pool=self.pool)
        await response.content()
        return response

    async def close(self) -> None:
        await self.port.stopListening()
        await self.pool.closeCachedConnections()


def _cors(response) -> dict[str, str]:
    return {name: (response.headers.getRawHeaders(name) or [""])[0] for name in (
        "access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers",
        "access-control-expose-headers")}


@pytest_twisted.ensureDeferred
async def test_a_preflight_from_another_origin_is_answered_on_every_route(reactor, tmp_path):
    site = _Site(reactor, tmp_path)
    try:
        preflight = {"Access-Control-Request-Method": ["PUT"],
                     "Access-Control-Request-Headers": ["authorization, content-type"]}
        for path in ("/v0/management/config", "/v0/management/debug", "/v1/chat/completions", "/management.html"):
            response = await site.request("OPTIONS", path, preflight)
            assert response.code == 204, path
            cors = _cors(response)
            assert cors["access-control-allow-origin"] == "*"
            assert cors["access-control-allow-methods"] == "GET, POST, PUT, PATCH, DELETE, OPTIONS"
            assert cors["access-control-allow-headers"] == "*"
            assert "X-CPA-VERSION" in cors["access-control-expose-headers"].split(", ")
    finally:
        await site.close()


@pytest_twisted.ensureDeferred
async def test_management_answers_carry_cors_and_the_version_headers(reactor, tmp_path):
    site = _Site(reactor, tmp_path)
    try:
        ok = await site.request("GET", "/v0/management/debug", {"Authorization": [f"Bearer {SECRET}"]})
        refused = await site.request("GET", "/v0/management/debug")
        client = await site.request("GET", "/v1/models")
        for response in (ok, refused):
            assert response.headers.getRawHeaders("x-cpa-version") == [__version__]
            assert response.headers.getRawHeaders("x-cpa-commit")[0]
            assert response.headers.getRawHeaders("x-cpa-build-date")[0]
            assert response.headers.getRawHeaders("x-cpa-support-plugin") == ["false"]
            assert _cors(response)["access-control-allow-origin"] == "*"
        assert (ok.code, refused.code) == (200, 401)
        # Client routes get CORS, not the management headers.
        assert _cors(client)["access-control-allow-origin"] == "*"
        assert client.headers.getRawHeaders("x-cpa-version") is None
        assert set(EXPOSED) >= {"X-CPA-VERSION", "X-CPA-COMMIT", "X-CPA-BUILD-DATE", "Retry-After"}
    finally:
        await site.close()


# -- MANAGEMENT_PASSWORD ---------------------------------------------------------------------


def _rig(tmp_path, secret: str, password: str = "env-pass-1") -> ManagementRig:
    return ManagementRig(tmp_path, secret=secret, environ={"MANAGEMENT_PASSWORD": password})


def test_management_password_turns_the_api_on_without_a_secret_key(tmp_path):
    rig = _rig(tmp_path, secret="")
    assert rig.call("GET", "/debug", headers={"Authorization": "Bearer env-pass-1"}) == (200, {"debug": False})
    assert rig.call("GET", "/debug", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert rig.call("GET", "/debug", headers={})[0] == 401


def test_without_it_and_without_a_secret_key_the_api_is_off(tmp_path):
    rig = ManagementRig(tmp_path, secret="")
    assert rig.call("GET", "/debug", headers={"Authorization": "Bearer env-pass-1"})[0] == 404


def test_management_password_works_beside_the_secret_key(tmp_path):
    rig = _rig(tmp_path, secret=SECRET_HASH)
    assert rig.call("GET", "/debug", headers={"Authorization": "Bearer env-pass-1"})[0] == 200
    assert rig.call("GET", "/debug", headers={"X-Management-Key": SECRET})[0] == 200
    assert rig.call("GET", "/debug", headers={"Authorization": "Bearer nope"})[0] == 401


def test_management_password_lets_remote_clients_in(tmp_path):

    def remote(key: str) -> DummyRequest:
        request = DummyRequest([b""])
        request.client = IPv4Address("TCP", "203.0.113.9", 5000)
        request.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {key}".encode()])
        return request

    without = ManagementAccess("plain-secret", False, Clock())
    with_env = ManagementAccess("plain-secret", False, Clock(), env_password="env-pass-1")
    with pytest.raises(Refused) as refused:
        without.check(remote("plain-secret"))
    assert refused.value.status == 403
    assert with_env.check(remote("env-pass-1")) is None
    assert with_env.check(remote("plain-secret")) is None


def test_cors_headers_go_to_requests_with_an_origin(tmp_path):
    rig = ManagementRig(tmp_path)
    plain = rig.settle(rig.front.get("http://127.0.0.1:8317/v1/models"))
    browser = rig.settle(rig.front.get("http://127.0.0.1:8317/v1/models", headers={"Origin": "http://a.example"}))
    preflight = rig.settle(rig.front.request("OPTIONS", "http://127.0.0.1:8317/v1/models"))
    assert plain.code == browser.code == 200
    assert plain.headers.getRawHeaders("access-control-allow-origin") is None
    assert browser.headers.getRawHeaders("access-control-allow-origin") == ["*"]
    assert preflight.code == 204 and preflight.headers.getRawHeaders("access-control-allow-origin") == ["*"]
    management = rig.settle(rig.front.get("http://127.0.0.1:8317/v0/management/nope"))
    assert management.headers.getRawHeaders("x-cpa-version") == [__version__]
