"""
The running configuration and credentials, and how they change without a
restart.

A L{Generation} is everything a config and the auth directory's accounts
make: the credentials, their executors and a L{Conductor}. A reload builds a
whole new generation beside the running one and only then swaps it in, so:

- a config that fails validation (or anything else that goes wrong while
  building) leaves the running generation as it was, with the reason logged;
- requests already in flight finish on the generation they started on (they
  hold its conductor); new requests get the new one;
- cooldowns, cursors and quota-group state live in the shared StateStore and
  so carry over to credentials whose id is unchanged.

Reloads are asked for by a SIGHUP, by the management API after it writes,
and by a poll (a LoopingCall, every C{poll} seconds) that notices the config
file or a C{*.json} file of the auth directory changed. File reads happen off
the reactor thread; an auth file whose bytes did not change keeps its
account object, tokens and all.
"""

from __future__ import annotations

import hashlib
import os
import signal
from typing import Any, Callable

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from cliproxyd.conductor.conductor import Conductor
from cliproxyd.conductor.quota import DEFAULT_GROUPS, compile_groups
from cliproxyd.config import ConfigError
from cliproxyd.config.load import parse_config_bytes
from cliproxyd.config.model import Config
from cliproxyd.credentials import Credential, credentials_from_config
from cliproxyd.credentials.authfiles import (
    AuthDirScan,
    OAuthAccount,
    auth_file_names,
    oauth_credentials,
    scan_auth_dir,
)
from cliproxyd.executors import Executors
from cliproxyd.state import StateStore

#: How often the config file and the auth directory are looked at.
POLL_SECONDS = 2.0

#: Settings a running daemon cannot change; a reload that changes them says so.
RESTART_ONLY = (("listen", "host and port"), ("state_path", "state-file"))


@frozen
class Generation:
    config: Config
    accounts: dict[str, OAuthAccount]
    creds: tuple[Credential, ...]
    conductor: Conductor
    #: auth file name -> why it is not in use
    problems: dict[str, str]


@frozen
class _Snapshot:
    """What a reload read from disk."""

    config_bytes: bytes | None
    scan: AuthDirScan


def _stat_signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _dir_signature(directory: str) -> tuple[Any, ...]:
    try:
        names = auth_file_names(directory)
    except OSError:
        return ()
    return tuple((n, _stat_signature(os.path.join(directory, n))) for n in names)


class Runtime(Service):
    name = "runtime"
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        client: Any,
        state: StateStore,
        config: Config,
        config_path: str | None = None,
        *,
        poll: float = POLL_SECONDS,
        run_in_thread: Callable[..., Deferred[Any]] = deferToThread,
        conductor_hook: Callable[[Conductor], None] | None = None,
    ) -> None:
        self._reactor = reactor
        self._client = client
        self._state = state
        self._config_path = config_path
        self._poll = poll
        self._run = run_in_thread
        #: called with every new conductor before it serves (the refresher's 401 hook, warmups)
        self.conductor_hook = conductor_hook
        self._listeners: list[Callable[[Generation], None]] = []
        self._loop: LoopingCall | None = None
        self._signature: tuple[Any, ...] | None = None
        self._config_digest = ""
        self._reloading: Deferred[bool] | None = None
        self._again = False
        self.reloads = {"applied": 0, "rejected": 0}
        self.last_error = ""
        self._initial = config
        self.current: Generation | None = None

    # -- start-up -----------------------------------------------------------------

    def start(self, config_bytes: bytes | None = None) -> Generation:
        """Build the first generation, reading the auth directory here (before the reactor runs)."""
        config = self._initial
        scan = scan_auth_dir(config.auth_dir) if config.auth_dir else AuthDirScan()
        if config_bytes is not None:
            self._config_digest = hashlib.sha256(config_bytes).hexdigest()
        gen = self._build(config, scan)
        self._report_problems({}, gen.problems)
        self._install(gen)
        self._signature = self._read_signature()
        return gen

    def subscribe(self, listener: Callable[[Generation], None]) -> None:
        """Call C{listener} with every generation that is swapped in (and the current one now)."""
        self._listeners.append(listener)
        if self.current is not None:
            listener(self.current)

    def startService(self) -> None:
        Service.startService(self)
        if self._poll > 0:
            loop = self._loop = LoopingCall(self._check)
            loop.clock = self._reactor
            loop.start(self._poll, now=False).addErrback(lambda f: self.log.failure("reload poll stopped", f))
        if self._config_path and hasattr(self._reactor, "callFromThread"):
            try:
                signal.signal(signal.SIGHUP, self._sighup)
            except ValueError:
                pass  # not the main thread (tests)

    def stopService(self):
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _sighup(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.reload, "SIGHUP")

    # -- watching -----------------------------------------------------------------

    def _read_signature(self) -> tuple[Any, ...]:
        assert self.current is not None
        auth_dir = self.current.config.auth_dir
        return (
            _stat_signature(self._config_path) if self._config_path else None,
            _dir_signature(auth_dir) if auth_dir else (),
        )

    def _check(self) -> Deferred[Any]:
        if self._reloading is not None:
            return succeed(None)

        def compare(signature: tuple[Any, ...]) -> Any:
            if signature != self._signature:
                return self.reload("a file changed")
            return None

        return self._run(self._read_signature).addCallback(compare)

    # -- reloading ----------------------------------------------------------------

    def reload(self, reason: str = "asked") -> Deferred[bool]:
        """
        Re-read the config file and the auth directory and swap in what they
        make. Fires with whether a new generation was installed; never fails.
        Reloads do not overlap: one asked for during another runs after it.
        """
        if self._reloading is not None:
            self._again = True
            waiting: Deferred[bool] = Deferred()
            self._reloading.addBoth(lambda r: (waiting.callback(r is True), r)[1])
            return waiting
        d = self._reloading = Deferred.fromCoroutine(self._reload(reason))

        def done(result: Any) -> Any:
            self._reloading = None
            if self._again:
                self._again = False
                self.reload("changes made during the last reload")
            return result

        d.addBoth(done)
        return d

    async def _reload(self, reason: str) -> bool:
        assert self.current is not None
        running = self.current
        try:
            snapshot = await self._run(self._read, running)
            self._signature = await self._run(self._read_signature)
        except Exception as e:
            self.log.error("reload ({reason}) failed: {error}", reason=reason, error=e)
            return False
        config = running.config
        if snapshot.config_bytes is not None:
            digest = hashlib.sha256(snapshot.config_bytes).hexdigest()
            if digest != self._config_digest:
                try:
                    config, warnings = parse_config_bytes(snapshot.config_bytes, self._config_path or "")
                except ConfigError as e:
                    self.reloads["rejected"] += 1
                    self.last_error = str(e)
                    self.log.error("config rejected, the running config stays: {error}", error=e)
                    config = running.config
                else:
                    for warning in warnings:
                        self.log.warn("config: {warning}", warning=warning)
                    self._config_digest = digest
                    self.last_error = ""
                    self._warn_restart_only(running.config, config)
        scan = snapshot.scan
        if config.auth_dir != running.config.auth_dir:
            scan = await self._run(scan_auth_dir, config.auth_dir) if config.auth_dir else AuthDirScan()
        if config is running.config and scan.accounts == running.accounts and \
                scan.problems.keys() == running.problems.keys():
            return False
        try:
            gen = self._build(config, scan)
        except Exception as e:
            self.reloads["rejected"] += 1
            self.last_error = str(e)
            self.log.failure("reload ({reason}) failed; nothing changed", reason=reason)
            return False
        self._report_problems(running.problems, gen.problems)
        self._install(gen)
        self.reloads["applied"] += 1
        before, after = {c.id for c in running.creds}, {c.id for c in gen.creds}
        self.log.info(
            "reloaded ({reason}): {count} credentials ({added} added, {removed} removed), {models} models",
            reason=reason, count=len(gen.creds), added=len(after - before), removed=len(before - after),
            models=len(gen.conductor.models()),
        )
        return True

    def _read(self, running: Generation) -> _Snapshot:
        """Blocking: runs in a thread."""
        config_bytes = None
        if self._config_path:
            try:
                with open(self._config_path, "rb") as f:
                    config_bytes = f.read()
            except OSError as e:
                self.log.error("cannot read {path}: {error}; the running config stays",
                               path=self._config_path, error=e.strerror)
        auth_dir = running.config.auth_dir
        scan = scan_auth_dir(auth_dir, running.accounts) if auth_dir else AuthDirScan()
        # A file that was good and is now broken (say, half written by an
        # editor) keeps its last good account until it is good again.
        for name in scan.problems.keys() & running.accounts.keys():
            if os.path.exists(running.accounts[name].path):
                scan.accounts[name] = running.accounts[name]
        return _Snapshot(config_bytes, scan)

    def _warn_restart_only(self, old: Config, new: Config) -> None:
        for attr, label in RESTART_ONLY:
            if getattr(old, attr) != getattr(new, attr):
                self.log.warn("{label} changed in the config: it takes effect at the next restart", label=label)

    def _report_problems(self, old: dict[str, str], new: dict[str, str]) -> None:
        for name, why in sorted(new.items()):
            if old.get(name) != why:
                self.log.warn("auth file {name} skipped: {why}", name=name, why=why)

    # -- building -----------------------------------------------------------------

    def _build(self, config: Config, scan: AuthDirScan) -> Generation:
        oauth, unusable = oauth_credentials(scan.accounts, config)
        creds = credentials_from_config(config) + oauth
        executor = Executors(self._client, self._reactor, config.timeouts)
        executor.prepare(creds)
        conductor = Conductor(
            creds,
            executor,
            self._state,
            self._reactor,
            strategy=config.routing.strategy,
            max_retry_credentials=config.max_retry_credentials,
            request_retry=config.request_retry,
            max_retry_interval=config.max_retry_interval,
            disable_cooling=config.disable_cooling,
            debug=config.debug,
            quota_groups=compile_groups(
                DEFAULT_GROUPS if config.oauth_quota_groups is None else config.oauth_quota_groups
            ),
        )
        if self.conductor_hook is not None:
            self.conductor_hook(conductor)
        problems = {**scan.problems, **unusable}
        accounts = {name: a for name, a in scan.accounts.items() if name not in unusable}
        return Generation(config, accounts, creds, conductor, problems)

    def _install(self, gen: Generation) -> None:
        self.current = gen
        for listener in self._listeners:
            listener(gen)
