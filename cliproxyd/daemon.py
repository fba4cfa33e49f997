"""
The daemon's parts and how they are wired: one function, L{build_daemon},
used by the twistd plugin (L{cliproxyd.tap}) and by the tests, so what the
tests drive is what runs.

The order of construction is the order of dependency, and everything is
handed over through constructors:

    source      where the running generation is read (written by the runtime)
    state       the StateStore, which outlives generations
    usage, warmups, refresher
                per-process parts every generation's conductor reports to
    assembly    the factory of generations, wired to the parts above
    runtime     builds the first generation at start, swaps in new ones
    management, frontend
                the HTTP surfaces, reading the source per request

tap adds what only a real process has: the HTTP pool, the listener, the
demo upstream, the start-up hashing of the management key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen
from twisted.application.service import IService, Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import LogPublisher, globalLogPublisher
from twisted.web.resource import IResource

from cliproxyd._version import __version__
from cliproxyd.assembly import Assembly, GenerationSource
from cliproxyd.conductor.keylimits import KeyMeter
from cliproxyd.conductor.probes import ResetProber
from cliproxyd.conductor.quota import reaper
from cliproxyd.conductor.warmup import PRUNE_INTERVAL, Warmups
from cliproxyd.config.edit import ConfigFile
from cliproxyd.config.load import parse_redis_url
from cliproxyd.config.model import Config
from cliproxyd.credentials.refresh import CONCURRENCY as REFRESH_CONCURRENCY
from cliproxyd.credentials.authfiles import OAuthAccount, account_proxy
from cliproxyd.credentials.refresh import (
    Refresher,
    RefreshFn,
    account_refresher,
    file_saver,
    refresh_job,
)
from cliproxyd.frontend import Frontend, InFlight
from cliproxyd.logging import ROTATE_BYTES, log_directory
from cliproxyd.management import ManagementAPI
from cliproxyd.management.logs import LogFiles, RequestRecorder
from cliproxyd.management.metrics import MetricsPage, pool_figures, state_figures, work_figures
from cliproxyd.management.panel import DEFAULT_API_BASE, Panel, PanelUpdater, panel_path
from cliproxyd.management.recent import RecentRequests
from cliproxyd.management.root import Root
from cliproxyd.management.status import process_counts
from cliproxyd.management.usage import Usage, UsagePersistence
from cliproxyd.management.usagequeue import UsageRecords
from cliproxyd.metrics import Metrics
from cliproxyd.replies import Executor
from cliproxyd.runtime import POLL_SECONDS, Runtime
from cliproxyd.service import ServiceTree
from cliproxyd.state import MemoryStateStore
from cliproxyd.outbound import ConfiguredClient
from cliproxyd.proxies import ProxySetting
from cliproxyd.state.persist import StatePersistence
from cliproxyd.state.redisstore import SEP, RedisStateStore, tcp_connect
from cliproxyd.workers.peers import PeerCounts
from cliproxyd.workers.worker import WorkerRole


class WebLogins(Service):
    """Ends the management API's web logins when the daemon stops: their callback ports and timers go."""

    name = "web-logins"

    def __init__(self, management: ManagementAPI) -> None:
        self._management = management

    def stopService(self) -> None:
        super().stopService()
        self._management.close()


@frozen
class Daemon:
    """Every long-lived part, and the services to put in the tree, in start order."""

    source: GenerationSource
    state: MemoryStateStore
    usage: Usage
    warmups: Warmups
    refresher: Refresher
    assembly: Assembly
    runtime: Runtime
    in_flight: InFlight
    management: ManagementAPI
    frontend: Frontend
    #: what GET /metrics shows
    metrics: Metrics
    #: C{state} (when there is a state file), C{runtime}, C{panel-update}, C{conductor}, C{in-flight}, C{web-logins}
    services: tuple[IService, ...]
    #: C{/management.html}, and what keeps it current (None when it has nowhere to live)
    panel: Panel
    panel_updater: PanelUpdater | None
    #: main.log and the request logs (their directory "" when there is none)
    log_files: LogFiles

    def resource(self) -> IResource:
        """
        The client routes, with the management API under C{/v0/management}
        and the panel at C{/management.html}, behind CORS (L{Root}).
        """
        recorder = RequestRecorder(self.log_files, self.assembly.clock, __version__)
        return Root(self.frontend.resource(), self.panel.app.resource(), recorder=recorder)


def _proxy_of(source: GenerationSource) -> Callable[[OAuthAccount], ProxySetting]:
    """How an account's token refresh leaves: as its upstream calls do, under the running config."""
    return lambda account: account_proxy(account, source.config())


def _state_store(clock: IReactorTime, url: str | None, reactor: Any) -> MemoryStateStore:
    """The embedded store, or with a C{state-store} URL the one shared through Redis."""
    if not url:
        return MemoryStateStore()
    where = parse_redis_url(url)
    reactor = reactor if reactor is not None else clock
    connect = tcp_connect(reactor, reactor, where.host, where.port, where.db,
                          password=where.password, username=where.username, tls=where.tls)
    return RedisStateStore(clock, connect, shown=where.shown, timers=reactor)


def _follow_shared_state(source: GenerationSource) -> Callable[[str, str], None]:
    """What tells the running conductor's scheduler that another instance changed a cooldown or suspension."""

    def changed(kind: str, name: str) -> None:
        generation = source.current
        if generation is not None:
            cred_id, _, key = name.partition(SEP)
            generation.conductor.state_changed(kind, cred_id, key)

    return changed
def _fingerprints(source: GenerationSource) -> Callable[[str], str]:
    """How the metrics name a credential: its fingerprint in the running generation (never its key)."""

    def fingerprint(cred_id: str) -> str:
        gen = source.current
        cred = gen.conductor.credential(cred_id) if gen is not None else None
        return cred.fingerprint if cred is not None else "unknown"

    return fingerprint


def build_daemon(
    clock: IReactorTime,
    client: Any,
    *,
    config_path: str | None = None,
    config: Config | Callable[[], Config] | None = None,
    warmup_ttl: float = PRUNE_INTERVAL,
    state_path: str = "",
    usage_path: str = "",
    shutdown_timeout: float = 30.0,
    poll: float = POLL_SECONDS,
    run_in_thread: Callable[..., Any] = deferToThread,
    refresh: RefreshFn | None = None,
    wrap_executor: Callable[[Executor], Executor] | None = None,
    require_client_keys: bool = False,
    listener: Any = None,
    oauth_providers: Any = None,
    environ: Mapping[str, str] | None = None,
    panel_api_base: str = DEFAULT_API_BASE,
    log_publisher: LogPublisher = globalLogPublisher,
    log_rotate_bytes: int = ROTATE_BYTES,
    refresh_workers: int = 0,
    listen_fixed: bool = False,
    state_store: str | None = None,
    state_reactor: Any = None,
    worker: WorkerRole | None = None,
) -> Daemon:
    """
    Build the daemon over C{client} (the outbound HTTP client) and C{clock}.

    @param config_path: the config file (read when the runtime starts); or
    @param config: the config with no file (C{--demo}, tests), or a callable giving it at start.
    @param warmup_ttl: how often warmup reservations are pruned (the configured TTL).
    @param state_path: where cooldowns are kept across restarts ("" for memory only).
    @param usage_path: where the usage counters are kept across restarts
        while C{usage-statistics-enabled} ("" for memory only).
    @param refresh: how an account's tokens are refreshed (its provider's
        token endpoint over C{client} by default).
    @param wrap_executor: for tests, see L{Assembly}.
    @param require_client_keys: refuse configs without C{api-keys} (the
        listener is not loopback-only); see L{Runtime}.
    @param listener: listens on the OAuth providers' local callback ports
        for the management API's web logins (the reactor; None: only
        C{/oauth-callback} completes them).
    @param oauth_providers: the OAuth providers of web logins, by type (tests).
    @param environ: the environment variables that matter
        (C{MANAGEMENT_PASSWORD}, C{MANAGEMENT_STATIC_PATH}, C{WRITABLE_PATH});
        none by default (tap passes the process's).
    @param panel_api_base: the releases API the panel is fetched from.
    @param log_publisher: where main.log observes log events (the global publisher).
    @param log_rotate_bytes: main.log's size at which it is rotated.
    @param listen_fixed: C{--listen} says where to listen; see L{Runtime}.
    @param refresh_workers: token refreshes run at once (C{auth-auto-refresh-workers}; 0: the default).
    @param state_store: C{state-store}: a Redis URL shares the StateStore
        (and coordinates token refreshes) through Redis; None keeps it in memory.
    @param state_reactor: what connects to Redis and runs its flushes (C{clock} by default: the reactor).
    @param worker: this daemon is one of C{--workers N}: it publishes its
        counts for the others, answers C{/status} for all of them, asks its
        parent to reload every worker after a management write, and writes
        the state and usage files only if it is the first slot.
    """
    if worker is not None and not worker.persists:
        state_path = usage_path = ""
    environ = {} if environ is None else environ
    source = GenerationSource()
    running = source.config  # the running config (the defaults before the first generation)

    def loaded() -> Config | None:
        """The running config, or None before the first generation (nothing to open or serve yet)."""
        return source.current.config if source.current is not None else None

    log_files = LogFiles(log_directory(config_path, environ), loaded, clock, run_in_thread=run_in_thread,
                         publisher=log_publisher, rotate_bytes=log_rotate_bytes)
    state = _state_store(clock, state_store, state_reactor)
    # client-keys' windows and counters: records in the store (kept across restarts with it)
    keys = KeyMeter(clock, state)
    usage = Usage(clock)
    recent = RecentRequests(clock)
    records = UsageRecords(clock, retention=lambda: running().usage_queue_retention)
    warmups = Warmups(state, clock, prune_interval=warmup_ttl)
    # The daemon's own calls (not a credential's) leave as the config's proxy-url says.
    own_calls = ConfiguredClient(client, lambda: running().proxy_url) if client is not None else None
    save_account = file_saver(run_in_thread)
    refresher = Refresher(clock, refresh or account_refresher(client, clock, _proxy_of(source)),
                          save_account, source, concurrency=refresh_workers or REFRESH_CONCURRENCY,
                          cluster=state if isinstance(state, RedisStateStore) else None)
    metrics = Metrics(fingerprint=_fingerprints(source))
    metrics.add_collector(state_figures(source, state, clock))
    metrics.add_collector(work_figures(refresher, warmups))
    if hasattr(client, "pools"):
        metrics.add_collector(pool_figures(client.pools))
    assembly = Assembly(client, clock, state, warmups=warmups, on_unauthorized=refresher.refresh_now,
                        observers=(usage.record, recent.record, records.record), metric_observers=(metrics.attempt,),
                        wrap_executor=wrap_executor, save_account=save_account)
    runtime = Runtime(assembly, source, config_path=config_path, config=config, poll=poll,
                      run_in_thread=run_in_thread, require_client_keys=require_client_keys,
                      listen_fixed=listen_fixed)
    # At the deadline the frontend ends what it can (made below: looked up when it is needed).
    in_flight = InFlight(clock, shutdown_timeout, end=lambda request: frontend.end(request),
                         drain=lambda request: frontend.drain(request))
    peers = PeerCounts(worker.directory, worker.index, lambda: process_counts(management.context), clock,
                       run_in_thread) if worker is not None else None
    management = ManagementAPI(
        runtime, state, clock, in_flight.__len__,
        config_file=ConfigFile(config_path, run_in_thread=run_in_thread) if config_path else None,
        refresher=refresher, usage=usage, records=records, warmups=warmups, run_in_thread=run_in_thread,
        recent=recent, client=own_calls, reactor=listener, oauth_providers=oauth_providers,
        management_password=environ.get("MANAGEMENT_PASSWORD", "").strip(), log_files=log_files, keys=keys,
        peers=peers, on_change=worker.notify_parent if worker is not None else None,
    )

    def panel_settings() -> Any:
        config = loaded()
        return config.remote_management if config is not None else None

    where = panel_path(config_path, environ)
    updater = PanelUpdater(where, own_calls, clock, panel_settings, run_in_thread=run_in_thread,
                           api_base=panel_api_base) if where else None
    panel = Panel(where, panel_settings, run_in_thread=run_in_thread, updater=updater)
    frontend = Frontend(source, clock, management=management.app.resource(), keys=keys,
                        run_in_thread=run_in_thread, metrics=metrics,
                        metrics_page=MetricsPage(metrics, source, management))

    services: list[IService] = []
    if state_path:
        # Loaded when it starts, before the first generation is built, so
        # restored cooldowns are in place before the first pick; stopped
        # after the requests drain, so their outcomes are saved too.
        services.append(StatePersistence(state, state_path, clock, run_in_thread=run_in_thread))
    if isinstance(state, RedisStateStore):
        # Connecting starts before the first generation (which never waits
        # for it); stopped after the requests drain, so their changes are sent.
        services.append(state.service)
    if isinstance(state, RedisStateStore):
        state.on_change = _follow_shared_state(source)
    services.append(runtime)
    if peers is not None:
        # After the runtime (the counts name its credentials); stopped after the drain.
        services.append(peers.service)
    if log_files.directory:
        # After the runtime: these read the running config.
        services.append(log_files.service)
    if updater is not None:
        services.append(updater.service)
    if usage_path:
        # After the runtime, whose config says whether usage is kept; stopped
        # after the requests drain, so their counts are in the last snapshot.
        services.append(UsagePersistence(
            usage, usage_path, clock, lambda: running().usage_statistics_enabled,
            run_in_thread=run_in_thread))
    conducting = ServiceTree()
    conducting.setName("conductor")
    def conductor() -> Any:
        return source.current.conductor if source.current is not None else None

    prober = ResetProber(conductor, state, clock)
    for job in (reaper(state, clock), warmups, refresh_job(refresher, clock), prober):
        job.setServiceParent(conducting)
    services += [conducting, in_flight, WebLogins(management)]
    return Daemon(source, state, usage, warmups, refresher, assembly, runtime, in_flight, management,
                  frontend, metrics, tuple(services), panel, updater, log_files)
