"""
The twistd plugin's Options and makeService: the one composition root.

C{twistd -n cliproxyd --config FILE} or C{twistd -n cliproxyd --demo}.
makeService checks the config, builds the parts that outlive a config
(HTTP pool, StateStore, warmup tracker, refresher, usage), the
L{Assembly} that makes generations from configs, and wires the service
tree; it touches the reactor only through the C{reactor} it is given, and
does no other I/O than reading the config (see L{build}).
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import signal
import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, Service
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.failure import Failure

from cliproxyd._version import __version__
from cliproxyd.collector import CollectorTuning
from cliproxyd.config import ConfigError, load_config
from cliproxyd.config.edit import ConfigFile
from cliproxyd.config.model import Timeouts, TLSConfig
from cliproxyd.daemon import build_daemon
from cliproxyd.demo import DEMO_LISTEN, DemoUpstream
from cliproxyd.frontend import TrackingSite
from cliproxyd.frontend.site import CLOSE_GRACE
from cliproxyd.management.access import check_hashable, ensure_hashed
from cliproxyd.outbound import HTTPPoolService, OutboundClients
from cliproxyd.proxies import EnvironmentProxies, ProxyURLError
from cliproxyd.service import ServiceTree
from cliproxyd.workers.supervisor import (
    DRAIN_MARGIN,
    Supervisor,
    WorkerHome,
    can_share,
    process_spawner,
)
from cliproxyd.workers.worker import AdoptedListener, WorkerRole, parent_watch

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
        [
            "workers",
            "w",
            None,
            "Worker processes sharing the listener (overrides workers in the config; "
            "more than 1 needs state-store).",
            int,
        ],
        ["worker-index", None, None, "Set by the parent of --workers for its workers; not for operators.", int],
        ["worker-dir", None, None, "Set by the parent of --workers for its workers; not for operators."],
        ["worker-parent", None, None, "Set by the parent of --workers for its workers; not for operators.", int],
    ]
    optFlags = [
        ["demo", None, "Serve simulated upstreams started in this process; needs no config."],
    ]

    def postOptions(self) -> None:
        if self["demo"] and self["config"]:
            raise usage.UsageError("--demo runs without a config; drop --config")
        if not self["demo"] and not self["config"]:
            raise usage.UsageError("give --config FILE (or --demo to try cliproxyd out)")
        if self["workers"] is not None and self["workers"] < 1:
            raise usage.UsageError("--workers must be 1 or more")
        if self["demo"] and (self["workers"] or 1) > 1:
            raise usage.UsageError("--workers needs --config (with state-store): the demo is one process")
        inner = [self["worker-index"] is not None, self["worker-dir"] is not None, self["worker-parent"] is not None]
        if any(inner) and not all(inner):
            raise usage.UsageError("--worker-index, --worker-dir and --worker-parent go together (the parent sets them)")


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


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def tls_options(source: str, tls: TLSConfig) -> CertificateOptions:
    """
    The TLS settings C{tls} names: its certificate file's first certificate
    serves, with the ones after it (a full chain, as certbot writes) sent as
    the chain, and the key. A file that cannot be read, holds no PEM, or a
    key that is not the certificate's is a L{ConfigError} naming C{tls.cert}
    or C{tls.key}, at start-up, before twistd daemonizes (Twisted's own
    error would name neither the key nor the file).
    """
    from OpenSSL.crypto import FILETYPE_PEM
    from OpenSSL.crypto import Error as OpenSSLError
    from twisted.internet.ssl import Certificate, KeyPair

    pem: dict[str, bytes] = {}
    for key, path in (("tls.cert", tls.cert), ("tls.key", tls.key)):
        try:
            with open(path, "rb") as f:
                pem[key] = f.read()
        except OSError as e:
            raise ConfigError(source, key, f"cannot read {path}: {e.strerror}") from None
    try:
        certs = [Certificate.loadPEM(block) for block in _PEM_CERTIFICATE.findall(pem["tls.cert"])]
    except (OpenSSLError, ValueError):
        certs = []
    if not certs:
        raise ConfigError(source, "tls.cert", f"{tls.cert} holds no PEM certificate")
    try:
        private = KeyPair.load(pem["tls.key"], FILETYPE_PEM)
    except (OpenSSLError, ValueError):
        raise ConfigError(source, "tls.key", f"{tls.key} holds no PEM private key (or one with a "
                                             "passphrase, which cliproxyd cannot use)") from None
    if not certs[0].getPublicKey().matches(private):
        raise ConfigError(source, "tls.key", f"{tls.key} is not the key of the certificate in tls.cert ({tls.cert})")
    return CertificateOptions(privateKey=private.original, certificate=certs[0].original,
                              extraCertChain=[c.original for c in certs[1:]] or None)


def _exit_zero_after_sigterm(reactor) -> None:
    """
    twistd re-raises the signal that stopped the reactor once it is done, so
    a SIGTERM would end the process "killed by SIGTERM". A SIGTERM is how
    systemd and operators ask for the graceful stop that has just finished
    (requests drained, connections closed), so report it as exit status 0.
    """
    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None


class _HashManagementKey(Service):
    """
    Start-up work: a plaintext C{remote-management.secret-key} in the file
    is replaced by its bcrypt hash (comments kept) before the runtime reads
    the config, so the running config holds the hash.
    """

    name = "management-key"

    def __init__(self, path: str, secret: str) -> None:
        self._path = path
        self._secret = secret

    def startService(self) -> None:
        Service.startService(self)
        results: list = []
        now = ConfigFile(self._path, run_in_thread=lambda f, *args: maybeDeferred(f, *args))
        ensure_hashed(now, self._secret).addBoth(results.append)
        if isinstance(results[0], Failure):
            # The daemon still works with the plaintext key; the file just keeps it.
            log.warn("could not store the hash of remote-management.secret-key in {path}: {error}; "
                     "the key stays plaintext in the file", path=self._path, error=results[0].getErrorMessage())
        elif results[0] != self._secret:
            log.info("remote-management.secret-key was plaintext; {path} now holds its bcrypt hash", path=self._path)


def build(options: Options, reactor) -> IService:
    """
    makeService without the translation of start-up errors into an exit.

    This only builds: the config is read and checked here (so a bad one
    stops twistd before it daemonizes), but every part that does I/O does
    it when its service starts, in tree order: the management key is
    hashed (or the demo upstream bound), the state file loaded, the first
    generation built (config file and auth directory read), then the
    listener serves. The parts themselves come from L{build_daemon}.
    """
    tls: CertificateOptions | None = None
    if options["demo"]:
        config, config_path = None, None
        listen = options["listen"] or DEMO_LISTEN
        api_keys: tuple[str, ...] = ()
        state_path = ""
        secret = ""
    else:
        config_path = options["config"]
        config, _ = load_config(config_path)
        check_hashable(config_path, config.remote_management.secret_key)
        if config.tls.enable and not options["listen"]:
            tls = tls_options(config_path, config.tls)
        elif config.tls.enable:
            log.info("tls in the config is not used: --listen {listen} says how to listen",
                     listen=options["listen"])
        listen = options["listen"] or config.listen
        # client-keys entries guard the listener as api-keys do
        api_keys = config.api_keys + tuple(k.name for k in config.client_keys)
        state_path, secret = config.state_path, config.remote_management.secret_key

    local = endpoint_is_local(listen)
    if not api_keys and not local:
        raise StartupError(
            f"refusing to listen on {listen!r} with no api-keys: anyone who can reach it could "
            "use your credentials. Add api-keys (or client-keys) to the config or listen on 127.0.0.1."
        )
    role = None
    if options["worker-index"] is not None:
        role = WorkerRole(options["worker-index"], options["worker-dir"], options["worker-parent"])
    endpoint = None
    try:
        if tls is not None:
            assert config is not None
            endpoint = SSL4ServerEndpoint(reactor, config.port, tls, interface=config.host or "0.0.0.0")
        elif role is None:  # a worker adopts its parent's socket: what --listen says was the parent's to open
            endpoint = serverFromString(reactor, listen)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        # (IndexError: a systemd: index beyond the sockets systemd passed)
        raise StartupError(f"{listen!r} is not a valid endpoint string: {e}") from None
    count = options["workers"] if options["workers"] is not None else (config.workers if config else 1)
    if role is None and count > 1:
        assert config is not None and config_path is not None
        return build_parent(options, config_path, config, listen, endpoint, count, reactor)

    root = ServiceTree()
    root.setName("cliproxyd")
    timeouts = config.timeouts if config is not None else Timeouts()
    try:
        environment = EnvironmentProxies.from_environ(os.environ)
    except ProxyURLError as e:
        raise StartupError(f"the environment's proxy setting is not usable: {e}") from None
    _log_environment(environment, os.environ)
    # One pool for direct connections and one per distinct proxy, made as configs name them.
    client = OutboundClients(reactor, timeouts.connect, environment)
    HTTPPoolService(client).setServiceParent(root)

    if config is not None and not state_path:
        log.info("no auth-dir or state-file: cooldowns are kept in memory only")
    demo: DemoUpstream | None = None
    if options["demo"]:
        demo = DemoUpstream(reactor)
        demo.setServiceParent(root)
    elif secret:
        _HashManagementKey(config_path, secret).setServiceParent(root)

    if config is not None:
        daemon = build_daemon(reactor, client, config_path=config_path, warmup_ttl=config.routing.warmup.ttl,
                              state_path=state_path, usage_path=config.usage_path,
                              shutdown_timeout=config.timeouts.shutdown,
                              poll=max(0.0, options["watch-interval"]),
                              refresh_workers=config.auth_auto_refresh_workers,
                              require_client_keys=not local, listen_fixed=bool(options["listen"]),
                              listener=reactor, environ=os.environ, state_store=config.state_store,
                              worker=role)
    else:
        assert demo is not None
        daemon = build_daemon(reactor, client, config=demo.config, poll=0)
    for service in daemon.services:
        service.setServiceParent(root)

    # twisted.web's idle timeout: it runs while a request's line, headers and
    # body are due and between requests, never while an answer is sent.
    site = TrackingSite(daemon.resource(), daemon.in_flight, daemon.source,
                        timeout=timeouts.client_idle or None, reactor=reactor)
    if role is None:
        listener = StreamServerEndpointService(endpoint, site)
        listener._raiseSynchronously = True  # a busy port stops start-up instead of a log line
        listener.setName("frontend")
    else:
        # The parent's socket; TLS (the config's tls) is this worker's to speak.
        factory = TLSMemoryBIOFactory(tls, False, site) if tls is not None else site
        listener = AdoptedListener(reactor, factory)
        parent_watch(role, reactor.stop, reactor).setServiceParent(root)
    listener.setServiceParent(root)
    CollectorTuning(reactor).setServiceParent(root)  # once the reactor runs: start-up frozen, a wider young generation

    reactor.addSystemEventTrigger("after", "shutdown", _exit_zero_after_sigterm, reactor)
    if role is not None:
        log.info("worker {index} of parent {parent} serves its listener", index=role.index, parent=role.parent)
        return root
    log.info(
        "cliproxyd {version} on {listen}: client keys {access}, management {management}",
        version=__version__,
        listen=listen,
        access="required" if api_keys else "not required (loopback only)",
        management="on" if (secret or demo is not None or os.environ.get("MANAGEMENT_PASSWORD", "").strip())
        else "off",
    )
    return root


#: twistd's and twist's options a worker gets from its parent's command line (how to log, which reactor).
_FORWARDED = ("--logger", "--reactor", "-r", "--log-format", "--log-level")
_TWISTD = "from twisted.scripts.twistd import run; run()"
_TWIST = "from twisted.application.twist._twist import Twist; Twist.main()"


def worker_command(argv: list[str], python: str, plugin_args: list[str]) -> list[str]:
    """
    A worker's command line: the same python running the parent's runner
    (twistd, in the foreground and with no pid file, or twist), with the
    parent's options that say how to log and which reactor to use
    (L{_FORWARDED}; not its log or pid file, which are the parent's own),
    then C{plugin_args}.
    """
    first = argv[0] if argv else ""
    twist = os.path.basename(first) == "twist" or first.endswith(os.path.join("twisted", "__main__.py"))
    forwarded: list[str] = []
    rest = argv[1:]
    for i, arg in enumerate(rest):
        if arg == "cliproxyd":
            break
        name, eq, _ = arg.partition("=")
        if name in _FORWARDED:
            forwarded.append(arg)
            if not eq and i + 1 < len(rest):
                forwarded.append(rest[i + 1])
    if twist:
        return [python, "-c", _TWIST, *forwarded, *plugin_args]
    return [python, "-c", _TWISTD, "--nodaemon", "--pidfile=", *forwarded, *plugin_args]


def build_parent(options: Options, config_path: str, config, listen: str, endpoint, count: int,
                 reactor) -> IService:
    """
    The parent of C{count} workers: it opens the listener C{endpoint} and
    runs the workers (each a C{cliproxyd --config} of its own, adopting the
    listener), passes SIGHUP and SIGTERM on, and serves nothing itself.
    """
    if config.state_store is None:
        raise StartupError(f"--workers {count} needs state-store in the config (redis://HOST:PORT/DB): "
                           "workers must share cooldowns, quota groups and token refreshes")
    from twisted.internet.endpoints import TCP4ServerEndpoint

    if isinstance(endpoint, SSL4ServerEndpoint) and config.tls.enable and not options["listen"]:
        # The config's tls: the parent opens plain TCP, each worker speaks TLS on it.
        endpoint = TCP4ServerEndpoint(reactor, config.port, interface=config.host or "0.0.0.0")
    if not can_share(endpoint):
        raise StartupError(f"workers cannot share {listen!r}: listen on tcp:, tcp6: or systemd: "
                           "(for TLS, the config's tls section)")
    home = WorkerHome(endpoint, os.environ.get("RUNTIME_DIRECTORY") or None)
    plugin_args = ["cliproxyd", "--config", os.path.abspath(config_path),
                   "--watch-interval", repr(options["watch-interval"])]
    if options["listen"]:
        plugin_args += ["--listen", options["listen"]]
    command = worker_command(sys.argv, sys.executable, plugin_args)
    parent = os.getpid()

    def argv(index: int) -> list[str]:
        return [*command, "--worker-index", str(index), "--worker-dir", home.directory,
                "--worker-parent", str(parent)]

    spawn = process_spawner(reactor, argv, lambda: home.environment(dict(os.environ)), home.fileno)
    drain = config.timeouts.shutdown + CLOSE_GRACE + DRAIN_MARGIN
    supervisor = Supervisor(count, spawn, reactor, drain, on_draining=home.close, on_ended=home.worker_ended)
    root = ServiceTree()
    root.setName("cliproxyd")
    home.setServiceParent(root)
    if config.remote_management.secret_key:
        # Hashed once, by the parent, before any worker reads the file.
        _HashManagementKey(config_path, config.remote_management.secret_key).setServiceParent(root)
    supervisor.setServiceParent(root)
    reactor.addSystemEventTrigger("after", "shutdown", _exit_zero_after_sigterm, reactor)
    reactor.addSystemEventTrigger("after", "shutdown", _exit_one_unless_drained, reactor, supervisor)
    log.info("cliproxyd {version} on {listen}: {count} workers, state in {store}", version=__version__,
             listen=listen, count=count, store=_redacted_url(config.state_store))
    return root


def _exit_status(status: int) -> None:
    """End the process with C{status} (at exit, once everything else has been said)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


def _exit_one_unless_drained(reactor, supervisor: Supervisor, at_exit=atexit.register) -> None:
    """
    The parent's exit status says whether every worker drained: 0 (also
    after the SIGTERM that asked for the stop) when each ended by itself
    with status 0, 1 when one had to be killed or ended otherwise.
    """
    if supervisor.clean:
        return
    log.error("not every worker drained cleanly: exit status 1")
    reactor._exitSignal = None
    at_exit(_exit_status, 1)


def _redacted_url(url: str) -> str:
    """A URL without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}{sep}{user + ':***' if user else '***'}@{host}"


def _log_environment(environment: EnvironmentProxies, environ: dict | os._Environ) -> None:
    """Say which environment proxies apply (where no proxy-url does), and that ALL_PROXY is not one of them."""
    if not environment.empty:
        log.info("environment proxies (where no proxy-url applies): https {https}, http {http}",
                 https=environment.https.redacted() if environment.https else "direct",
                 http=environment.http.redacted() if environment.http else "direct")
    if environ.get("ALL_PROXY") or environ.get("all_proxy"):
        log.warn("ALL_PROXY is set but not used (as in CLIProxyAPI): set HTTPS_PROXY, or proxy-url in the config")


def makeService(options: Options, reactor=None) -> IService:
    if reactor is None:
        from twisted.internet import reactor
    try:
        return build(options, reactor)
    except (ConfigError, StartupError) as e:
        # One line on stderr and exit status 1, before twistd daemonizes.
        raise SystemExit(f"cliproxyd: {e}") from None


__all__ = ["Options", "endpoint_is_local", "makeService", "tls_options"]
