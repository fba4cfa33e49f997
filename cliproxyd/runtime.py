"""
The running generation, the one source every consumer reads it from, and
how it changes without a restart.

L{Runtime.current} is the L{Generation} in service: the frontend, the
management API, the refresher and the warmups all read it there, per
request or per tick, and nothing is pushed to them. A reload builds a whole
new generation with the L{Assembly} beside the running one and only then
swaps it in, so:

- a config that fails validation (or anything else that goes wrong while
  building) leaves the running generation as it was, with the reason logged;
- requests already in flight finish on the generation they started on (they
  hold its conductor); new requests get the new one;
- cooldowns, cursors and quota-group state live in the shared StateStore and
  so carry over to credentials whose id is unchanged.

The first generation is built when the service starts (reading the config
file and the auth directory then, not while the service tree is built).
Reloads are asked for by a SIGHUP, by the management API after it writes,
and by the C{reload-poll} job (every C{poll} seconds), which notices the
config file or a C{*.json} file of the auth directory changed. File reads
happen off the reactor thread, and touch no account object: an auth file
whose bytes did not change keeps its account, tokens and all, and accounts
are only ever changed on the reactor thread (by the refresher).
"""

from __future__ import annotations

import hashlib
import os
import signal
from typing import Any, Callable

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from cliproxyd.assembly import Assembly, Generation, GenerationSource
from cliproxyd.config import ConfigError
from cliproxyd.config.load import parse_config_bytes
from cliproxyd.config.model import Config
from cliproxyd.credentials.authfiles import (
    AuthDirScan,
    auth_file_names,
    daemon_files,
    is_auth_file_name,
    merge_scan,
    read_auth_dir,
)
from cliproxyd.fileio import remove_stale_temps
from cliproxyd.service import Periodic, ServiceTree

#: How often the config file and the auth directory are looked at.
POLL_SECONDS = 2.0
#: An auth file's temporary file younger than this may be a login's write
#: under way in another process: start-up leaves it.
LIVE_WRITE_SECONDS = 60.0

#: Settings a running daemon cannot change; a reload that changes them says
#: so in one log line, and management C{/status} lists them under
#: C{restart_needed} until the config says again what the daemon started with.
RESTART_ONLY = (
    (("host",), "host"),
    (("port",), "port"),
    (("tls",), "tls"),
    (("state_path",), "state-file"),
    (("state_store",), "state-store"),
    (("workers",), "workers"),
    (("auth_auto_refresh_workers",), "auth-auto-refresh-workers"),
    (("timeouts", "connect"), "timeouts.connect-seconds"),
    (("timeouts", "shutdown"), "timeouts.shutdown-seconds"),
    (("timeouts", "client_idle"), "timeouts.client-idle-seconds"),
)
#: The settings of RESTART_ONLY that say where to listen: moot when the
#: command line says it (C{--listen}).
LISTEN_SETTINGS = frozenset({"host", "port", "tls"})


def _value(config: Config, path: tuple[str, ...]) -> Any:
    node: Any = config
    for attr in path:
        node = getattr(node, attr)
    return node


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


def _dir_signature(directory: str, skip: frozenset[str]) -> tuple[Any, ...]:
    try:
        names = auth_file_names(directory, skip)
    except OSError:
        return ()
    return tuple((n, _stat_signature(os.path.join(directory, n))) for n in names)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class Runtime(ServiceTree):
    """
    The source of the running generation.

    @param config_path: the config file, read at start and watched; or
    @param config: with no file (C{--demo}, tests), the config to run: a
        L{Config}, or a callable giving it at start (the demo knows its
        upstream's port only once it listens).
    @param listen_fixed: the command line says where to listen (C{--listen}),
        so a change of C{host}, C{port} or C{tls} needs nothing at all.
    @param require_client_keys: the daemon listens beyond loopback, so a
        config without C{api-keys} is refused (at start, and by every
        reload: removing the last key must not open the pool to anyone).
    """

    name = "runtime"
    log = Logger()

    def __init__(
        self,
        assembly: Assembly,
        source: GenerationSource | None = None,
        *,
        config_path: str | None = None,
        config: Config | Callable[[], Config] | None = None,
        poll: float = POLL_SECONDS,
        run_in_thread: Callable[..., Deferred[Any]] = deferToThread,
        require_client_keys: bool = False,
        listen_fixed: bool = False,
    ) -> None:
        super().__init__()
        self._require_client_keys = require_client_keys
        self._restart_only = tuple((path, label) for path, label in RESTART_ONLY
                                   if not (listen_fixed and label in LISTEN_SETTINGS))
        if (config_path is None) == (config is None):
            raise ValueError("give the runtime a config_path or a config")
        self.assembly = assembly
        self._reactor = assembly.clock
        self._config_path = config_path
        self._initial = config
        self._run = run_in_thread
        self._signature: tuple[Any, ...] | None = None
        self._config_digest = ""
        self._reloading: Deferred[bool] | None = None
        #: callers of reload() while one ran: fired by the reload after it
        self._waiting: list[Deferred[bool]] = []
        self.reloads = {"applied": 0, "rejected": 0}
        #: the config the daemon started with (what its listener and state file follow)
        self._started: Config | None = None
        self.last_error = ""
        #: where consumers read the generation in service; this runtime writes it
        self.source = source if source is not None else GenerationSource()
        if poll > 0:
            Periodic("reload-poll", poll, self._check, self._reactor).setServiceParent(self)

    @property
    def current(self) -> Generation | None:
        """The generation in service (None until the service starts)."""
        return self.source.current

    # -- start-up -----------------------------------------------------------------

    def start(self) -> Generation:
        """
        Build the first generation, reading the config file and the auth
        directory here (start-up, before the reactor serves anything), after
        removing the temporary files that killed writes of either left (an
        auth file's only once it is L{LIVE_WRITE_SECONDS} old).
        Called by L{startService}; calling it again does nothing.

        @raise ConfigError: the config file no longer loads.
        """
        if self.current is not None:
            return self.current
        if self._config_path is not None:
            config_path = os.path.abspath(self._config_path)
            remove_stale_temps(os.path.dirname(config_path), os.path.basename(config_path).__eq__)
            raw = _read_bytes(self._config_path)
            config, warnings = self._parse(raw)
            for warning in warnings:
                self.log.warn("config: {warning}", warning=warning)
            self._config_digest = hashlib.sha256(raw).hexdigest()
        else:
            initial = self._initial
            config = initial() if callable(initial) else initial
            assert isinstance(config, Config)
        if config.auth_dir:
            remove_stale_temps(config.auth_dir, is_auth_file_name, min_age=LIVE_WRITE_SECONDS)
        scan = merge_scan(read_auth_dir(config.auth_dir, skip=daemon_files(config)), {}) if config.auth_dir \
            else AuthDirScan()
        gen = self.assembly.build(config, scan)
        self._report_problems({}, gen.problems)
        self.source.current = gen
        self._started = config
        self._signature = self._read_signature()
        self.log.info(
            "serving {creds} credentials, {models} models, routing {strategy}",
            creds=len(gen.creds), models=len(gen.conductor.models()), strategy=config.routing.strategy,
        )
        return gen

    def startService(self) -> None:
        self.start()
        super().startService()
        if self._config_path and hasattr(self._reactor, "callFromThread"):
            try:
                signal.signal(signal.SIGHUP, self._sighup)
            except ValueError:
                pass  # not the main thread (tests)

    def _sighup(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.reload, "SIGHUP")

    # -- watching -----------------------------------------------------------------

    def _read_signature(self) -> tuple[Any, ...]:
        assert self.current is not None
        config = self.current.config
        return (
            _stat_signature(self._config_path) if self._config_path else None,
            _dir_signature(config.auth_dir, daemon_files(config)) if config.auth_dir else (),
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

        Reloads do not overlap. Those asked for while one runs share one
        more reload after it, and fire when that one is over: the running
        one may have read the files before the caller changed them, so only
        then is the caller's change (a management write) sure to be in
        effect.
        """
        if self._reloading is not None:
            waiting: Deferred[bool] = Deferred()
            self._waiting.append(waiting)
            return waiting
        d = self._reloading = Deferred.fromCoroutine(self._reload(reason))

        def done(result: Any) -> Any:
            self._reloading = None
            waiters, self._waiting = self._waiting, []
            if waiters:
                def fire(installed: Any) -> Any:
                    for waiter in waiters:
                        waiter.callback(installed is True)
                    return installed

                self.reload("changes made during the last reload").addBoth(fire)
            return result

        d.addBoth(done)
        return d

    async def _reload(self, reason: str) -> bool:
        assert self.current is not None
        running = self.current
        # The thread gets plain values (file names and digests), never the accounts.
        known = {name: account.digest for name, account in running.accounts.items()}
        try:
            # The signature first: a change made while the files are read
            # then differs from it, and the next poll reloads again.
            self._signature = await self._run(self._read_signature)
            snapshot = await self._run(self._read, running.config.auth_dir, known, daemon_files(running.config))
        except Exception as e:
            self.log.error("reload ({reason}) failed: {error}", reason=reason, error=e)
            return False
        config = running.config
        if snapshot.config_bytes is not None:
            digest = hashlib.sha256(snapshot.config_bytes).hexdigest()
            if digest != self._config_digest:
                try:
                    config, warnings = self._parse(snapshot.config_bytes)
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
        scan = merge_scan(snapshot.scan, running.accounts)
        if config.auth_dir != running.config.auth_dir:
            scan = merge_scan(await self._run(read_auth_dir, config.auth_dir, None, daemon_files(config)), {}) \
                if config.auth_dir else AuthDirScan()
        if config is running.config and scan.accounts == running.accounts and \
                scan.problems.keys() == running.problems.keys():
            return False
        try:
            gen = self.assembly.build(config, scan)
        except Exception as e:
            self.reloads["rejected"] += 1
            self.last_error = str(e)
            self.log.failure("reload ({reason}) failed; nothing changed", reason=reason)
            return False
        self._report_problems(running.problems, gen.problems)
        self.source.current = gen
        self.reloads["applied"] += 1
        before, after = {c.id for c in running.creds}, {c.id for c in gen.creds}
        self.log.info(
            "reloaded ({reason}): {count} credentials ({added} added, {removed} removed), {models} models",
            reason=reason, count=len(gen.creds), added=len(after - before), removed=len(before - after),
            models=len(gen.conductor.models()),
        )
        return True

    def _parse(self, raw: bytes) -> tuple[Config, list[str]]:
        """The config file's text as a config this daemon can run; ConfigError otherwise."""
        path = self._config_path or ""
        config, warnings = parse_config_bytes(raw, path)
        if self._require_client_keys and not config.api_keys and not config.client_keys:
            raise ConfigError(path, "api-keys", "is empty, but the daemon listens beyond loopback: anyone who "
                                                "can reach it could use your credentials; keep a key")
        return config, warnings

    def _read(self, auth_dir: str, known: dict[str, str], skip: frozenset[str]) -> _Snapshot:
        """Blocking: runs in a thread."""
        config_bytes = None
        if self._config_path:
            try:
                config_bytes = _read_bytes(self._config_path)
            except OSError as e:
                self.log.error("cannot read {path}: {error}; the running config stays",
                               path=self._config_path, error=e.strerror)
        scan = read_auth_dir(auth_dir, known, skip) if auth_dir else AuthDirScan()
        return _Snapshot(config_bytes, scan)

    @property
    def restart_needed(self) -> list[str]:
        """The restart-only settings whose running value differs from the one the daemon started with."""
        if self._started is None or self.current is None:
            return []
        now = self.current.config
        return [label for path, label in self._restart_only if _value(self._started, path) != _value(now, path)]

    def _warn_restart_only(self, old: Config, new: Config) -> None:
        for path, label in self._restart_only:
            if _value(old, path) != _value(new, path):
                self.log.warn("{label} changed in the config: it takes effect at the next restart", label=label)

    def _report_problems(self, old: dict[str, str], new: dict[str, str]) -> None:
        for name, why in sorted(new.items()):
            if old.get(name) != why:
                self.log.warn("auth file {name} skipped: {why}", name=name, why=why)

