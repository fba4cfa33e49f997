"""
The Management Center panel at /management.html: where it lives, how it is
served (off the reactor thread, cached until it changes, off when
disable-control-panel), and how it is kept current from a simulated
releases API on loopback (digest checked, written atomically, the old one
kept on any failure, start-up never waiting for it).
"""

from __future__ import annotations

import hashlib
import os

import pytest_twisted
import treq
from twisted.internet.defer import maybeDeferred
from twisted.logger import capturedLogs

from cliproxyd.config.model import RemoteManagement
from cliproxyd.daemon import build_daemon
from cliproxyd.frontend import QuietSite, TrackingSite
from cliproxyd.management.panel import PanelUpdater, panel_path, release_url, sha256_digest, static_dir
from cliproxyd.outbound import OutboundClients, make_http_client
from cliproxyd.testing.releases import SimulatedReleases
from tests.management_support import ManagementRig

OLD = b"<html>old panel</html>"
NEW = b"<html>new panel</html>"


# -- where the panel lives ------------------------------------------------------------------


def test_static_dir_is_beside_the_config_file(tmp_path):
    config = str(tmp_path / "etc" / "config.yaml")
    assert static_dir(config, {}) == str(tmp_path / "etc" / "static")
    assert panel_path(config, {}) == str(tmp_path / "etc" / "static" / "management.html")


def test_management_static_path_names_a_directory_or_the_file(tmp_path):
    config = str(tmp_path / "config.yaml")
    assert panel_path(config, {"MANAGEMENT_STATIC_PATH": "/srv/panel"}) == "/srv/panel/management.html"
    assert panel_path(config, {"MANAGEMENT_STATIC_PATH": "/srv/p/management.html"}) == "/srv/p/management.html"
    assert static_dir(config, {"MANAGEMENT_STATIC_PATH": "/srv/p/management.html"}) == "/srv/p"
    assert panel_path(config, {"WRITABLE_PATH": "/var/lib/c"}) == "/var/lib/c/static/management.html"
    assert panel_path(None, {}) == ""


def test_release_url_follows_the_repository_setting():
    base = "http://127.0.0.1:9"
    assert release_url("https://github.com/me/panel", base) == f"{base}/repos/me/panel/releases/latest"
    assert release_url("https://github.com/me/panel.git/", base) == f"{base}/repos/me/panel/releases/latest"
    assert release_url("https://api.github.com/repos/me/p", base) == f"{base}/repos/me/p/releases/latest"
    assert release_url("https://api.github.com/repos/me/p/releases/latest", base) == \
        f"{base}/repos/me/p/releases/latest"
    default = f"{base}/repos/router-for-me/Cli-Proxy-API-Management-Center/releases/latest"
    assert release_url("https://example.com/x/y", base) == default
    assert release_url("", base) == default


def test_only_sha256_digests_count():
    hexdigest = hashlib.sha256(b"x").hexdigest()
    assert sha256_digest("sha256:" + hexdigest.upper()) == hexdigest
    assert sha256_digest("sha512:" + hexdigest) == ""
    assert sha256_digest(hexdigest) == ""
    assert sha256_digest("sha256:abc") == ""
    assert sha256_digest(None) == ""


# -- serving it --------------------------------------------------------------------------------


def _page(rig: ManagementRig, method: str = "GET"):
    response = rig.settle(rig.front.request(method, "http://127.0.0.1:8317/management.html"))
    return response.code, rig.settle(rig.front.content(response)), response


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_panel(tmp_path, data: bytes) -> str:
    static = tmp_path / "static"
    static.mkdir(exist_ok=True)
    path = static / "management.html"
    path.write_bytes(data)
    return str(path)


def test_the_panel_is_served_from_static_beside_the_config(tmp_path):
    _write_panel(tmp_path, OLD)
    rig = ManagementRig(tmp_path)
    code, body, response = _page(rig)
    assert (code, body) == (200, OLD)
    assert response.headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]


def test_the_panel_is_read_in_a_thread_and_kept_until_it_changes(tmp_path):
    path = _write_panel(tmp_path, OLD)
    rig = ManagementRig(tmp_path)
    d = rig.front.get("http://127.0.0.1:8317/management.html")
    rig.front.flush()
    # The read waits for the thread: nothing is read on the reactor thread.
    assert [job[1].__name__ for job in rig.threads.waiting] == ["_load"]
    assert rig.settle(d).code == 200
    reads = []
    real_open = open

    def counting_open(name, *args, **kw):
        if str(name) == path:
            reads.append(name)
        return real_open(name, *args, **kw)

    import builtins
    builtins.open = counting_open
    try:
        assert _page(rig)[1] == OLD
        assert reads == []  # unchanged: served from memory after a stat
        with real_open(path, "wb") as f:
            f.write(NEW + b"  ")
        assert _page(rig)[1] == NEW + b"  "
        assert len(reads) == 1
    finally:
        builtins.open = real_open


def test_a_missing_panel_is_404_and_asks_for_a_download(tmp_path):
    rig = ManagementRig(tmp_path)
    asked = []
    rig.daemon.panel_updater.sync = lambda: asked.append(1)
    assert _page(rig)[0] == 404
    assert _page(rig)[0] == 404
    assert asked == [1]  # once: later requests within MIN_SYNC_INTERVAL do not ask again
    rig.clock.advance(31)
    assert _page(rig)[0] == 404
    assert asked == [1, 1]


def test_disable_control_panel_turns_the_page_off(tmp_path):
    _write_panel(tmp_path, OLD)
    rig = ManagementRig(tmp_path)
    assert _page(rig)[0] == 200
    text = rig.config.read_bytes().replace(b"remote-management:\n", b"remote-management:\n  disable-control-panel: true\n")
    assert rig.call("PUT", "/config.yaml", raw=text)[0] == 200
    asked = []
    rig.daemon.panel_updater.sync = lambda: asked.append(1)
    assert _page(rig)[0] == 404
    assert asked == []


def test_disable_control_panel_stops_the_download(tmp_path):
    rig = ManagementRig(tmp_path)
    updater = PanelUpdater(str(tmp_path / "p.html"), _NoClient(), rig.clock,
                           lambda: RemoteManagement(disable_control_panel=True), run_in_thread=rig.threads)
    rig.settle(updater.sync())
    assert not os.path.exists(tmp_path / "p.html")


class _NoClient:
    def get(self, *a, **kw):
        raise AssertionError("no request may be made")


# -- keeping it current, against a simulated releases API on loopback ---------------------------


class _Releases:
    def __init__(self, reactor) -> None:
        self.server = SimulatedReleases()
        self.port = reactor.listenTCP(0, QuietSite(self.server), interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.pool, self.client = make_http_client(reactor, 5)

    def updater(self, reactor, path: str, settings: RemoteManagement | None = None) -> PanelUpdater:
        from twisted.internet.threads import deferToThread

        return PanelUpdater(path, self.client, reactor, lambda: settings or RemoteManagement(),
                            run_in_thread=deferToThread, api_base=self.base)

    async def close(self) -> None:
        await self.port.stopListening()
        await self.pool.closeCachedConnections()


@pytest_twisted.async_yield_fixture
async def releases(reactor):
    """The simulated releases API on a loopback port, and an HTTP client to reach it."""
    server = _Releases(reactor)
    yield server
    await server.close()


@pytest_twisted.ensureDeferred
async def test_a_missing_panel_is_fetched_verified_and_served(reactor, tmp_path, releases):
    digest = releases.server.publish(NEW)
    path = str(tmp_path / "static" / "management.html")
    await releases.updater(reactor, path).sync()
    assert hashlib.sha256(_read(path)).hexdigest() == digest
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert releases.server.requests == ["/repos/router-for-me/Cli-Proxy-API-Management-Center/releases/latest",
                                        "/download/management.html"]
    # Up to date: the next look downloads nothing.
    await releases.updater(reactor, path).sync()
    assert len(releases.server.requests) == 3


@pytest_twisted.ensureDeferred
async def test_a_bad_digest_is_not_written_and_the_old_panel_stays(reactor, tmp_path, releases):
    path = _write_panel(tmp_path, OLD)
    releases.server.publish(NEW)
    releases.server.digest["management.html"] = "sha256:" + "0" * 64
    with capturedLogs() as events:
        await releases.updater(reactor, path).sync()
    assert _read(path) == OLD
    assert any("digest mismatch" in e.get("log_format", "") for e in events)
    assert [n for n in os.listdir(tmp_path / "static")] == ["management.html"]  # no temp file left
    # No digest at all: not installed either.
    releases.server.digest["management.html"] = ""
    await releases.updater(reactor, path).sync()
    assert _read(path) == OLD


@pytest_twisted.ensureDeferred
async def test_a_new_release_replaces_the_panel_unless_auto_update_is_off(reactor, tmp_path, releases):
    path = _write_panel(tmp_path, OLD)
    releases.server.publish(NEW)
    await releases.updater(reactor, path, RemoteManagement(disable_auto_update_panel=True)).sync()
    assert _read(path) == OLD
    assert releases.server.requests == []
    await releases.updater(reactor, path).sync()
    assert _read(path) == NEW


@pytest_twisted.ensureDeferred
async def test_a_releases_server_that_is_down_never_stops_start_up(reactor, tmp_path, releases):
    path = _write_panel(tmp_path, OLD)
    config = tmp_path / "config.yaml"
    config.write_text("host: 127.0.0.1\nremote-management:\n  secret-key: k\n")
    releases.server.down = True
    pool, client = make_http_client(reactor, 5)
    daemon = build_daemon(reactor, client, config_path=str(config), poll=0, panel_api_base=releases.base)
    site = TrackingSite(daemon.resource(), daemon.in_flight, daemon.source)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        started = reactor.seconds()
        for service in daemon.services:
            service.startService()
        # Every service started at once: the look at the release runs in the background.
        assert reactor.seconds() - started < 1
        await _until(reactor, lambda: releases.server.requests)
        await daemon.panel_updater.sync()
        response = await treq.get(f"http://127.0.0.1:{port.getHost().port}/management.html", pool=pool)
        assert response.code == 200
        assert await response.content() == OLD
    finally:
        for service in reversed(daemon.services):
            await maybeDeferred(service.stopService)
        await port.stopListening()
        await pool.closeCachedConnections()


async def _until(reactor, condition, timeout: float = 10.0) -> None:
    from twisted.internet.task import deferLater

    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await deferLater(reactor, 0.02)
    raise AssertionError("condition not met in time")


@pytest_twisted.ensureDeferred
async def test_the_panel_download_goes_through_the_configured_proxy_never_direct(reactor, tmp_path, releases):
    releases.server.publish(NEW)
    dead = reactor.listenTCP(0, QuietSite(SimulatedReleases()), interface="127.0.0.1")
    proxy_port = dead.getHost().port
    await dead.stopListening()  # nothing listens there: the proxy is down
    config = tmp_path / "config.yaml"
    config.write_text(f"host: 127.0.0.1\nproxy-url: http://127.0.0.1:{proxy_port}\n")
    client = OutboundClients(reactor, 5)
    daemon = build_daemon(reactor, client, config_path=str(config), poll=0, panel_api_base=releases.base)
    try:
        for service in daemon.services:
            service.startService()
        await daemon.panel_updater.sync()
        assert releases.server.requests == []  # nothing went direct to the releases API
        assert not os.path.exists(tmp_path / "static" / "management.html")
    finally:
        for service in reversed(daemon.services):
            await maybeDeferred(service.stopService)
        await client.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_the_daemon_fetches_a_missing_panel_at_start_and_serves_it(reactor, tmp_path, releases):
    releases.server.publish(NEW)
    config = tmp_path / "config.yaml"
    config.write_text("host: 127.0.0.1\n")
    pool = client = OutboundClients(reactor, 5)  # what tap gives the daemon (a pool of pools)
    daemon = build_daemon(reactor, client, config_path=str(config), poll=0, panel_api_base=releases.base)
    port = reactor.listenTCP(0, TrackingSite(daemon.resource(), daemon.in_flight, daemon.source),
                             interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}/management.html"
    try:
        assert (await client.direct.get(url)).code == 404  # before start: nothing there yet
        for service in daemon.services:
            service.startService()
        await _until(reactor, lambda: os.path.exists(tmp_path / "static" / "management.html"))
        response = await client.direct.get(url)
        assert response.code == 200 and await response.content() == NEW
    finally:
        for service in reversed(daemon.services):
            await maybeDeferred(service.stopService)
        await port.stopListening()
        await pool.closeCachedConnections()
