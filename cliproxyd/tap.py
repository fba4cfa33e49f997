"""
The twistd plugin's Options and makeService: the one composition root.

C{twistd -n cliproxyd --config FILE} or C{twistd -n cliproxyd --demo}.
makeService reads the config, builds every part and wires the service tree;
it touches the reactor only through the C{reactor} it is given.
"""

from __future__ import annotations

import ipaddress
import re
import signal

from twisted.application.internet import StreamServerEndpointService
from attrs import evolve
from twisted.application.service import IService, Service
from twisted.internet.defer import maybeDeferred
from twisted.python.failure import Failure
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from cliproxyd._version import __version__
from cliproxyd.conductor.conductor import Conductor, QuotaGroupReaper
from cliproxyd.conductor.warmup import Warmups, WarmupSettings
from cliproxyd.config import ConfigError, load_config
from cliproxyd.demo import DEMO_LISTEN, demo_config, demo_upstream
from cliproxyd.executors import HTTPPoolService, make_http_client
from cliproxyd.frontend import ClientAccess, Frontend, InFlight, QuietSite, TrackingSite
from cliproxyd.config.edit import ConfigFile
from cliproxyd.config.model import Config
from cliproxyd.management import ManagementAPI
from cliproxyd.management.access import ensure_hashed
from cliproxyd.management.usage import Usage
from cliproxyd.oauth.refresh import Refresher, account_refresher, file_saver
from cliproxyd.runtime import Generation, Runtime
from cliproxyd.service import ServiceTree
from cliproxyd.state import MemoryStateStore
from cliproxyd.state.persist import StatePersistence

log = Logger(namespace="cliproxyd.tap")


class StartupError(Exception):
    """The daemon cannot start as configured; C{str()} says why, in one line."""


class Options(usage.Options):
    synopsis = "[--config FILE | --demo] [--listen ENDPOINT]"
    longdesc = (
        "Pool upstream LLM credentials behind OpenAI-compatible endpoints. "
        "See README.rst and etc/cliproxyd.example.yaml."
    )
    optParameters = [
        ["config", "c", None, "Path to config.yaml."],
        [
            "listen",
            "l",
            None,
            "Endpoint string to listen on, overriding host and port in the config "
            "(e.g. tcp:8317:interface=127.0.0.1, unix:/run/cliproxyd.sock).",
        ],
        [
            "watch-interval",
            None,
            2.0,
            "Seconds between looks at config.yaml and the auth directory for changes "
            "(0: only reload on SIGHUP or a management API write).",
            float,
        ],
    ]
    optFlags = [
        ["demo", None, "Serve simulated upstreams started in this process; needs no config."],
    ]

    def postOptions(self) -> None:
        if self["demo"] and self["config"]:
            raise usage.UsageError("--demo runs without a config; drop --config")
        if not self["demo"] and not self["config"]:
            raise usage.UsageError("give --config FILE (or --demo to try cliproxyd out)")


def _split_endpoint(description: str) -> list[str]:
    return [part.replace("\\:", ":") for part in re.split(r"(?<!\\):", description)]


def endpoint_is_local(description: str) -> bool:
    """
    Whether a server endpoint string can only be reached from this machine:
    a unix socket, or TCP/SSL bound to a loopback interface.
    """
    kind, *args = _split_endpoint(description)
    kind = kind.lower()
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    for arg in args:
        name, sep, value = arg.partition("=")
        if sep and name == "interface":
            if value == "localhost":
                return True
            try:
                return ipaddress.ip_address(value).is_loopback
            except ValueError:
                return False
    return False  # no interface: every interface


class _BoundPort(Service):
    """A port that was bound while the service tree was built; stopping closes it."""

    def __init__(self, name: str, port) -> None:
        self.setName(name)
        self.port = port

    def stopService(self):
        Service.stopService(self)
        return self.port.stopListening()


def _exit_zero_after_sigterm(reactor) -> None:
    """
    twistd re-raises the signal that stopped the reactor once it is done, so
    a SIGTERM would end the process "killed by SIGTERM". A SIGTERM is how
    systemd and operators ask for the graceful stop that has just finished
    (requests drained, connections closed), so report it as exit status 0.
    """
    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _hash_management_key(path: str, config: Config) -> Config:
    """A plaintext management key in the file is replaced by its bcrypt hash (comments kept)."""
    secret = config.remote_management.secret_key
    if not secret:
        return config
    results: list = []
    now = ConfigFile(path, run_in_thread=lambda f, *args: maybeDeferred(f, *args))
    ensure_hashed(now, secret).addBoth(results.append)
    result = results[0]
    if isinstance(result, Failure):
        if result.check(ConfigError):
            raise result.value
        # The daemon still works with the plaintext key; the file just keeps it.
        log.warn("could not store the hash of remote-management.secret-key in {path}: {error}; "
                 "the key stays plaintext in the file", path=path, error=result.getErrorMessage())
        return config
    if result != secret:
        log.info("remote-management.secret-key was plaintext; {path} now holds its bcrypt hash", path=path)
    return evolve(config, remote_management=evolve(config.remote_management, secret_key=result))


def build(options: Options, reactor) -> IService:
    """makeService without the translation of start-up errors into an exit."""
    root = ServiceTree()
    root.setName("cliproxyd")
    if options["demo"]:
        upstream = demo_upstream(reactor)
        port = reactor.listenTCP(0, QuietSite(upstream.resource()), interface="127.0.0.1")
        base_url = f"http://127.0.0.1:{port.getHost().port}/v1"
        config = demo_config(base_url)
        listen = options["listen"] or DEMO_LISTEN
        demo_service: Service | None = _BoundPort("demo-upstream", port)
        config_path, config_bytes = None, None
    else:
        config_path = options["config"]
        config, warnings = load_config(config_path)
        config = _hash_management_key(config_path, config)
        config_bytes = _read_bytes(config_path)
        for warning in warnings:
            log.warn("config: {warning}", warning=warning)
        listen = options["listen"] or config.listen
        demo_service = None

    if not config.api_keys and not endpoint_is_local(listen):
        raise StartupError(
            f"refusing to listen on {listen!r} with no api-keys: anyone who can reach it could "
            "use your credentials. Add api-keys to the config or listen on 127.0.0.1."
        )

    pool, client = make_http_client(reactor, config.timeouts.connect)
    HTTPPoolService(pool).setServiceParent(root)
    state = MemoryStateStore()
    if config.state_path:
        # Loaded now, so restored cooldowns are in place before the first pick;
        # stopped after the requests drain, so their outcomes are saved too.
        persistence = StatePersistence(state, config.state_path, reactor)
        persistence.load()
        persistence.setServiceParent(root)
    else:
        log.info("no auth-dir or state-file: cooldowns are kept in memory only")
    if demo_service is not None:
        demo_service.setServiceParent(root)

    refresher = Refresher(reactor, account_refresher(client, reactor), file_saver())
    refresher.setServiceParent(root)
    warmup = config.routing.warmup
    warmups: Warmups | None = None

    usage = Usage(reactor)

    def hook(conductor: Conductor) -> None:
        conductor.on_unauthorized = refresher.refresh_now
        conductor.observe(usage.record)
        if warmups is not None:
            warmups.rebind(conductor.scheduler, conductor.executor)
            conductor.warmups = warmups

    runtime = Runtime(reactor, client, state, config, config_path, conductor_hook=hook,
                      poll=max(0.0, options["watch-interval"]))
    gen = runtime.start(config_bytes)
    if warmup.enabled:
        if config.routing.strategy != "fill-first":
            log.warn("routing.warmup is enabled but routing.strategy is not fill-first: no warmups will be sent")
        warmups = Warmups(
            WarmupSettings(True, frozenset(warmup.providers), warmup.ttl, warmup.timeout),
            gen.conductor.scheduler,
            state,
            gen.conductor.executor,
            reactor,
        )
        gen.conductor.warmups = warmups
        warmups.setServiceParent(root)
    QuotaGroupReaper(lambda: runtime.current.conductor, reactor).setServiceParent(root)
    in_flight = InFlight(reactor, config.timeouts.shutdown)
    in_flight.setServiceParent(root)

    max_body = int(config.max_body_mb * (1 << 20))
    management = ManagementAPI(
        config.remote_management,
        lambda: runtime.current.conductor,
        state,
        reactor,
        in_flight.__len__,
        config_file=ConfigFile(config_path) if config_path else None,
        runtime=runtime,
        refresher=refresher,
        usage=usage,
    )
    frontend = Frontend(
        gen.conductor,
        ClientAccess(config.api_keys),
        reactor,
        management=management.app.resource(),
        session_affinity=config.routing.session_affinity,
        max_body=max_body,
    )
    site = TrackingSite(frontend.resource(), in_flight, max_body=max_body)
    try:
        endpoint = serverFromString(reactor, listen)
    except (ValueError, TypeError, KeyError) as e:
        raise StartupError(f"{listen!r} is not a valid endpoint string: {e}") from None
    listener = StreamServerEndpointService(endpoint, site)
    listener._raiseSynchronously = True  # a busy port stops start-up instead of a log line
    listener.setName("frontend")
    listener.setServiceParent(root)

    def swap(gen: Generation) -> None:
        c = gen.config
        body_limit = int(c.max_body_mb * (1 << 20))
        frontend.use(gen.conductor, ClientAccess(c.api_keys), c.routing.session_affinity, body_limit)
        site.max_body = body_limit
        management.use(c.remote_management)
        refresher.set_accounts(gen.accounts.values())

    runtime.subscribe(swap)
    # Started last, so a reload never runs before everything it swaps is built.
    runtime.setServiceParent(root)

    reactor.addSystemEventTrigger("after", "shutdown", _exit_zero_after_sigterm, reactor)
    log.info(
        "cliproxyd {version} on {listen}: {creds} credentials, {models} models, "
        "routing {strategy}, client keys {access}, management {management}",
        version=__version__,
        listen=listen,
        creds=len(gen.creds),
        models=len(gen.conductor.models()),
        strategy=config.routing.strategy,
        access="required" if config.api_keys else "not required (loopback only)",
        management="on" if management.enabled else "off",
    )
    return root


def makeService(options: Options, reactor=None) -> IService:
    if reactor is None:
        from twisted.internet import reactor
    try:
        return build(options, reactor)
    except (ConfigError, StartupError) as e:
        # One line on stderr and exit status 1, before twistd daemonizes.
        raise SystemExit(f"cliproxyd: {e}") from None


__all__ = ["Options", "endpoint_is_local", "makeService"]
