"""
The Management Center web panel at C{/management.html}, as CLIProxyAPI
serves it: one HTML file, C{static/management.html} beside the config file
(C{$WRITABLE_PATH/static} when that is set, or C{MANAGEMENT_STATIC_PATH},
a directory or the file itself).

L{Panel} serves the file, read in C{run_in_thread} and kept in memory
until a stat (in the thread too) sees it changed. L{PanelUpdater} keeps it
current off the request path: at start and every L{UPDATE_INTERVAL} it
asks the releases API for the latest release of
C{remote-management.panel-github-repository}, and when that release's
C{management.html} asset has another sha256 digest than the local file,
downloads it, checks the download against the digest and writes it
atomically. An asset without a sha256 digest, a digest that does not
match, a server that is down: the old file stays and the reason is
logged; nothing of it ever delays start-up or a request. (CLIProxyAPI
then falls back to an unverified page from another site; cliproxyd
installs nothing it could not verify.)

C{remote-management.disable-control-panel: true} turns it all off (404,
no download); C{disable-auto-update-panel: true} downloads the panel only
while it is missing.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import treq
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from cliproxyd import jsontext
from cliproxyd.config.model import DEFAULT_PANEL_REPOSITORY, RemoteManagement
from cliproxyd.fileio import atomic_write, daemon_dir
from cliproxyd.service import Periodic

#: The panel's file name, and the name of its release asset.
ASSET = "management.html"
#: The releases API (tests point this at a simulated one).
DEFAULT_API_BASE = "https://api.github.com"
#: How often the latest release is looked at (CLIProxyAPI: 3 hours).
UPDATE_INTERVAL = 3 * 3600.0
#: Looks at the release asked for by requests (the file missing) are at least this far apart.
MIN_SYNC_INTERVAL = 30.0
#: The largest panel download accepted.
MAX_ASSET_BYTES = 50 * 1024 * 1024
#: Seconds each request to the releases API may take.
FETCH_TIMEOUT = 15.0
_USER_AGENT = b"cliproxyd-management-updater"
_DEFAULT_OWNER_NAME = urlsplit(DEFAULT_PANEL_REPOSITORY).path.strip("/")

RunInThread = Callable[..., "Deferred[Any]"]


def static_dir(config_path: str | None, environ: Mapping[str, str]) -> str:
    """
    The directory of C{management.html}, or "" for none: C{MANAGEMENT_STATIC_PATH}
    (a directory, or the file whose directory it is), else C{$WRITABLE_PATH/static},
    else C{static} beside the config file.
    """
    override = environ.get("MANAGEMENT_STATIC_PATH", "").strip()
    if override:
        cleaned = os.path.normpath(override)
        return os.path.dirname(cleaned) if os.path.basename(cleaned).lower() == ASSET else cleaned
    return daemon_dir("static", config_path, environ)


def panel_path(config_path: str | None, environ: Mapping[str, str]) -> str:
    """Where C{management.html} is (see L{static_dir}), or "" for nowhere."""
    override = environ.get("MANAGEMENT_STATIC_PATH", "").strip()
    if override and os.path.basename(os.path.normpath(override)).lower() == ASSET:
        return os.path.normpath(override)
    directory = static_dir(config_path, environ)
    return os.path.join(directory, ASSET) if directory else ""


def release_url(repository: str, api_base: str = DEFAULT_API_BASE) -> str:
    """
    The releases API's latest-release address for C{repository}, written as
    CLIProxyAPI takes it (C{https://github.com/OWNER/NAME}, or an
    C{https://api.github.com/repos/OWNER/NAME} address); anything else
    means CLIProxyAPI's default repository.
    """
    base = api_base.rstrip("/")
    parts = urlsplit(repository.strip())
    host = (parts.hostname or "").lower()
    path = parts.path.rstrip("/")
    if host == "api.github.com":
        if not path.lower().endswith("/releases/latest"):
            path += "/releases/latest"
        return base + path
    segments = [s for s in path.split("/") if s]
    if host == "github.com" and len(segments) >= 2:
        name = segments[1].removesuffix(".git")
        return f"{base}/repos/{segments[0]}/{name}/releases/latest"
    return f"{base}/repos/{_DEFAULT_OWNER_NAME}/releases/latest"


def sha256_digest(digest: Any) -> str:
    """The hex of a release asset's C{digest} (C{sha256:HEX}), or "" when it is not a sha256 digest."""
    if not isinstance(digest, str):
        return ""
    kind, sep, value = digest.strip().partition(":")
    value = value.strip().lower()
    if not sep or kind.strip().lower() != "sha256" or len(value) != 64:
        return ""
    try:
        int(value, 16)
    except ValueError:
        return ""
    return value


def _file_sha256(path: str) -> str | None:
    """The hex sha256 of the file at C{path}; None when it does not exist. Blocking."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


def _load(path: str, known: tuple[int, int, int] | None) -> tuple[tuple[int, int, int] | None, bytes | None]:
    """
    The file's stat key and its bytes; the bytes are None when the key is
    C{known} (unchanged), the key too when there is no file. Blocking.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    if key == known:
        return key, None
    with open(path, "rb") as f:
        return key, f.read()


class PanelUpdater:
    """
    Keeps C{path} the latest release's panel (see the module docstring).
    L{service} is its periodic job; L{sync} runs one look now.

    @param settings: the running C{remote-management} settings (None before the first generation).
    @param client: a treq C{HTTPClient} for the releases API.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        client: Any,
        clock: IReactorTime,
        settings: Callable[[], RemoteManagement | None],
        *,
        run_in_thread: RunInThread,
        api_base: str = DEFAULT_API_BASE,
        interval: float = UPDATE_INTERVAL,
    ) -> None:
        self.path = path
        self._client = client
        self._clock = clock
        self._settings = settings
        self._run_in_thread = run_in_thread
        self.api_base = api_base
        self._running: Deferred[None] | None = None
        self._last_asked = -MIN_SYNC_INTERVAL
        self.service = Periodic("panel-update", interval, self.sync, clock, now=True, on_stop=self._stop)

    def sync(self) -> "Deferred[None]":
        """One look at the latest release (joined if one is under way); never fails."""
        d = self._running
        if d is None:
            d = Deferred.fromCoroutine(self._sync())
            d.addErrback(lambda f: None if f.check(CancelledError) else
                         self.log.failure("management panel update failed", f))
            if not d.called:
                self._running = d
                d.addBoth(self._done)
        return _follow(d)

    def ask(self) -> None:
        """A request found no panel: look at the release now, unless one was asked for lately."""
        now = self._clock.seconds()
        if now - self._last_asked >= MIN_SYNC_INTERVAL:
            self._last_asked = now
            self.sync()

    def _done(self, _: object) -> None:
        self._running = None

    def _stop(self) -> None:
        if self._running is not None:
            self._running.cancel()

    async def _sync(self) -> None:
        settings = self._settings()
        if settings is None or settings.disable_control_panel or not self.path:
            return
        local = await self._run_in_thread(_file_sha256, self.path)
        if local is not None and settings.disable_auto_update_panel:
            return
        url = release_url(settings.panel_github_repository, self.api_base)
        try:
            release = jsontext.loads(await self._get(url, 4 * 1024 * 1024, b"application/vnd.github+json"))
        except Exception as e:
            self.log.warn("could not look up the latest management panel at {url}: {error}", url=url,
                          error=_reason(e))
            return
        assets = release.get("assets") if isinstance(release, dict) else None
        asset = next((a for a in assets or () if isinstance(a, dict)
                      and str(a.get("name", "")).lower() == ASSET), None)
        if asset is None:
            self.log.warn("the latest release at {url} has no {asset}", url=url, asset=ASSET)
            return
        expected = sha256_digest(asset.get("digest"))
        if not expected:
            self.log.warn("the latest {asset} at {url} has no sha256 digest: not installed", asset=ASSET, url=url)
            return
        if expected == local:
            return
        download = asset.get("browser_download_url")
        if not isinstance(download, str) or not download:
            self.log.warn("the latest {asset} at {url} has no download address", asset=ASSET, url=url)
            return
        try:
            data = await self._get(download, MAX_ASSET_BYTES, b"application/octet-stream")
        except Exception as e:
            self.log.warn("could not download the management panel: {error}", error=_reason(e))
            return
        got = hashlib.sha256(data).hexdigest()
        if got != expected:
            self.log.error("management panel digest mismatch (expected sha256:{expected}, got sha256:{got}): "
                           "not installed", expected=expected, got=got)
            return
        await self._run_in_thread(atomic_write, self.path, data, 0o644)
        self.log.info("management panel updated at {path} (sha256:{digest})", path=self.path, digest=got)

    async def _get(self, url: str, limit: int, accept: bytes) -> bytes:
        response = await self._client.get(url, headers={b"user-agent": [_USER_AGENT], b"accept": [accept]},
                                          timeout=FETCH_TIMEOUT)
        chunks: list[bytes] = []
        size = 0

        def take(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > limit:
                raise _Failed(f"larger than {limit} bytes")
            chunks.append(data)

        await treq.collect(response, take)
        if response.code != 200:
            raise _Failed(f"HTTP {response.code}")
        return b"".join(chunks)


class _Failed(Exception):
    pass


def _reason(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _follow(d: "Deferred[None]") -> "Deferred[None]":
    """A Deferred that fires when C{d} does, leaving C{d}'s own chain alone."""
    waiter: Deferred[None] = Deferred()
    d.addBoth(lambda result: (waiter.callback(None), result)[1])
    return waiter


class Panel:
    """
    C{GET /management.html}: the panel file, read off the reactor thread
    and kept in memory until it changes; 404 while it is missing (a look
    at the release is asked for then) or when the control panel is
    disabled.
    """

    app = Klein()
    log = Logger()

    def __init__(
        self,
        path: str,
        settings: Callable[[], RemoteManagement | None],
        *,
        run_in_thread: RunInThread,
        updater: PanelUpdater | None = None,
    ) -> None:
        self.path = path
        self._settings = settings
        self._run_in_thread = run_in_thread
        self._updater = updater
        self._key: tuple[int, int, int] | None = None
        self._data = b""

    def read(self) -> "Deferred[bytes | None]":
        """The panel's bytes (None when there is none), from memory when the file has not changed."""
        if not self.path:
            return succeed(None)
        return self._run_in_thread(_load, self.path, self._key).addCallback(self._loaded)

    def _loaded(self, result: tuple[tuple[int, int, int] | None, bytes | None]) -> bytes | None:
        key, data = result
        if key is None:
            self._key, self._data = None, b""
            return None
        if data is not None:
            self._key, self._data = key, data
        return self._data

    @app.route("/management.html", methods=["GET", "HEAD"])
    async def page(self, request: IRequest) -> bytes:
        settings = self._settings()
        if settings is None or settings.disable_control_panel:
            return _not_found(request)
        data = await self.read()
        if data is None:
            if self._updater is not None:
                self._updater.ask()
            return _not_found(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return data

    @app.handle_errors(Exception)
    def _error(self, request: IRequest, failure: Any) -> bytes:
        self.log.failure("could not serve the management panel", failure)
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"could not read the management panel\n"


def _not_found(request: IRequest) -> bytes:
    request.setResponseCode(404)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"404 page not found\n"
