"""
Frozen attrs models of config.yaml.

Key names follow CLIProxyAPI's config.yaml so an existing file can be reused;
the YAML spelling of each field is given in its comment. Values are validated
in L{cliproxyd.config.load}, which is the only place that builds them from
YAML; everything else treats a L{Config} as an immutable value and derives
changes with C{attrs.evolve}.
"""

from __future__ import annotations

from attrs import field, frozen

#: Accepted spellings of routing.strategy, mapped to the canonical name.
STRATEGIES = {
    "round-robin": "round-robin",
    "roundrobin": "round-robin",
    "rr": "round-robin",
    "fill-first": "fill-first",
    "fillfirst": "fill-first",
    "ff": "fill-first",
    "weighted-round-robin": "weighted-round-robin",
    "weightedroundrobin": "weighted-round-robin",
    "wrr": "weighted-round-robin",
}

#: The weight a credential has when its entry or file names none (weighted-round-robin).
DEFAULT_WEIGHT = 1
#: The largest weight accepted, as in CLIProxyAPI.
MAX_WEIGHT = 1_000_000
#: The actions of a request-scoped-errors rule.
SCOPED_ERROR_ACTIONS = ("stop", "stop-and-cooldown", "continue", "continue-and-cooldown")

DEFAULT_PORT = 8317


@frozen
class ModelEntry:
    """One C{models[]} item: the upstream C{name} and the client-facing C{alias}."""

    name: str
    alias: str = ""

    @property
    def route_name(self) -> str:
        """The name clients ask for."""
        return self.alias or self.name


@frozen
class ScopedErrorRule:
    """
    One C{request-scoped-errors[]} (or C{oauth-request-scoped-errors.<channel>[]})
    rule: an upstream error with this C{status} whose body contains one of
    C{match} or matches one of the regular expressions C{match_regex} takes
    C{action} (see L{cliproxyd.conductor.scoped}).
    """

    status: int
    action: str
    match: tuple[str, ...] = ()
    match_regex: tuple[str, ...] = ()  # match-regexr


@frozen
class APIKeyEntry:
    """One C{api-key-entries[]} item."""

    api_key: str = field(repr=False)  # api-key
    proxy_url: str = ""  # proxy-url
    weight: int = DEFAULT_WEIGHT  # weight (weighted-round-robin; 0 = excluded)


@frozen
class ModelAlias:
    """One C{oauth-model-alias} entry: serve upstream C{name} as C{alias} (also as itself with C{fork})."""

    name: str
    alias: str
    fork: bool = False


@frozen
class OpenAICompatProvider:
    """One C{openai-compatibility[]} item."""

    name: str
    base_url: str  # base-url
    api_key_entries: tuple[APIKeyEntry, ...] = ()  # api-key-entries
    models: tuple[ModelEntry, ...] = ()
    prefix: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    priority: int = 0
    excluded_models: tuple[str, ...] = ()  # excluded-models (a cliproxyd extension here)
    disabled: bool = False  # disabled: neither served nor listed
    disable_cooling: bool | None = None  # disable-cooling (None: the global value)
    request_retry: int | None = None  # request-retry (None: the global value)
    request_scoped_errors: tuple[ScopedErrorRule, ...] = ()  # request-scoped-errors


@frozen
class ProviderKey:
    """One C{claude-api-key[]}, C{gemini-api-key[]} or C{codex-api-key[]} item."""

    api_key: str = field(repr=False)  # api-key
    base_url: str = ""  # base-url ("" = the provider's public API)
    prefix: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    #: models: when given, they replace the built-in catalogue for this key
    models: tuple[ModelEntry, ...] = ()
    excluded_models: tuple[str, ...] = ()  # excluded-models
    priority: int = 0
    weight: int = DEFAULT_WEIGHT  # weight (weighted-round-robin; 0 = excluded)
    disable_cooling: bool | None = None  # disable-cooling (None: the global value)
    request_retry: int | None = None  # request-retry (None: the global value)
    request_scoped_errors: tuple[ScopedErrorRule, ...] = ()  # request-scoped-errors


@frozen
class QuotaGroupConfig:
    """One C{oauth-quota-groups} entry: models of these providers that share one quota."""

    id: str
    providers: tuple[str, ...]
    models: tuple[str, ...]


@frozen
class WarmupConfig:
    """C{routing.warmup}: warm secondary providers under fill-first (see L{cliproxyd.conductor.warmup})."""

    enabled: bool = False
    providers: tuple[str, ...] = ()
    ttl: float = 60.0  # ttl-seconds
    timeout: float = 10.0  # timeout-seconds


@frozen
class RoutingConfig:
    strategy: str = "round-robin"
    warmup: WarmupConfig = field(factory=WarmupConfig)
    #: session-affinity: a request of a session (L{cliproxyd.conductor.session})
    #: prefers the credential its session is bound to, while that one is available
    session_affinity: bool = False
    session_affinity_ttl: float = 3600.0  # session-affinity-ttl, in seconds


@frozen
class QuotaExceededConfig:
    """C{quota-exceeded}: CLIProxyAPI's switches, kept for compatibility (see README.rst, Routing)."""

    switch_project: bool = False  # switch-project
    switch_preview_model: bool = False  # switch-preview-model


@frozen
class RemoteManagement:
    """C{remote-management}: the management API is off unless C{secret-key} is set."""

    secret_key: str = ""  # secret-key
    allow_remote: bool = False  # allow-remote


@frozen
class Timeouts:
    """
    C{timeouts}: cliproxyd's own section (CLIProxyAPI has no upstream timeouts).

    A request whose upstream times out before its first byte reached the
    client moves on to the next credential.
    """

    connect: float = 10.0  # connect-seconds: TCP/TLS connect to an upstream
    #: response-seconds: request sent -> response headers (for an answer that does not
    #: stream, the whole answer); 0 = no limit. The default, 9 min, is a minute under
    #: the 10 min the official OpenAI and Anthropic SDKs wait by default: a hung
    #: upstream is given up (and its key cooled) before such a client gives up, while
    #: a slow but healthy non-streamed reasoning answer keeps nearly all the time its
    #: client waits anyway. Streams send their headers at once; then only stream-idle counts.
    response: float = 540.0
    stream_idle: float = 120.0  # stream-idle-seconds: longest gap between body chunks
    shutdown: float = 15.0  # shutdown-seconds: how long SIGTERM waits for in-flight requests
    #: client-idle-seconds: the longest a client connection may send nothing while a
    #: request's line, headers or body are due, or between two requests; 0 = no limit.
    #: It never runs while an answer is being sent (a long stream is not idle).
    client_idle: float = 60.0


@frozen
class Config:
    host: str = ""
    port: int = DEFAULT_PORT
    api_keys: tuple[str, ...] = ()  # api-keys
    auth_dir: str = ""  # auth-dir
    debug: bool = False
    request_retry: int = 0  # request-retry
    max_retry_interval: int = 0  # max-retry-interval
    max_retry_credentials: int = 0  # max-retry-credentials (0 = no cap)
    force_model_prefix: bool = False  # force-model-prefix
    disable_cooling: bool = False  # disable-cooling
    #: transient-error-cooldown-seconds: 0 = the 60 s default, negative = no transient cooldown
    transient_error_cooldown_seconds: int = 0
    quota_exceeded: QuotaExceededConfig = field(factory=QuotaExceededConfig)  # quota-exceeded
    #: oauth-request-scoped-errors: channel -> the rules of its OAuth accounts
    oauth_request_scoped_errors: tuple[tuple[str, tuple[ScopedErrorRule, ...]], ...] = ()
    #: state-file: where cooldowns survive restarts ("" = <auth-dir>/cliproxyd-state.json, or none)
    state_file: str = ""
    oauth_model_alias: tuple[tuple[str, tuple[ModelAlias, ...]], ...] = ()  # oauth-model-alias
    #: oauth-excluded-models: provider -> model patterns its OAuth credentials never serve
    oauth_excluded_models: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: oauth-quota-groups; None when the key is absent (the defaults apply)
    oauth_quota_groups: tuple[QuotaGroupConfig, ...] | None = None
    routing: RoutingConfig = field(factory=RoutingConfig)
    openai_compatibility: tuple[OpenAICompatProvider, ...] = ()  # openai-compatibility
    claude_api_key: tuple[ProviderKey, ...] = ()  # claude-api-key
    gemini_api_key: tuple[ProviderKey, ...] = ()  # gemini-api-key
    codex_api_key: tuple[ProviderKey, ...] = ()  # codex-api-key
    #: max-body-mb: the largest client request body accepted, in MiB
    max_body_mb: float = 8.0
    remote_management: RemoteManagement = field(factory=RemoteManagement)  # remote-management
    timeouts: Timeouts = field(factory=Timeouts)

    @property
    def state_path(self) -> str:
        """Where the state snapshot lives, or "" for nowhere."""
        if self.state_file:
            return self.state_file
        if self.auth_dir:
            return f"{self.auth_dir.rstrip('/')}/cliproxyd-state.json"
        return ""

    @property
    def listen(self) -> str:
        """The endpoint string that C{host} and C{port} describe."""
        # An empty host means every interface, as in CLIProxyAPI.
        host = self.host or "0.0.0.0"
        if ":" in host:
            host = host.replace(":", r"\:")
        return f"tcp:{self.port}:interface={host}"
