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

from cliproxyd.config.payload import PayloadConfig

#: Accepted spellings of routing.strategy, mapped to the canonical name.
STRATEGIES = {
    "round-robin": "round-robin",
    "roundrobin": "round-robin",
    "rr": "round-robin",
    "fill-first": "fill-first",
    "fillfirst": "fill-first",
    "ff": "fill-first",
}

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
class APIKeyEntry:
    """One C{api-key-entries[]} item."""

    api_key: str = field(repr=False)  # api-key
    proxy_url: str = ""  # proxy-url


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
    #: session-affinity: a client key's next request prefers the credential
    #: that last answered it (per provider), while that credential is available
    session_affinity: bool = False


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
class Streaming:
    """C{streaming}: SSE keep-alives and bootstrap retries (CLIProxyAPI's names and defaults)."""

    #: keepalive-seconds: an SSE comment to the client after this long with nothing sent; 0 = none
    keepalive_seconds: float = 0
    #: bootstrap-retries: how often a stream whose every attempt failed before its first byte
    #: reached the client is run again from the start; 0 = never
    bootstrap_retries: int = 0


@frozen
class ClaudeHeaderDefaults:
    """C{claude-header-defaults}: the Claude Code identity Claude OAuth requests carry ("" = the built-in one)."""

    user_agent: str = ""  # user-agent
    package_version: str = ""  # package-version: X-Stainless-Package-Version
    runtime_version: str = ""  # runtime-version: X-Stainless-Runtime-Version
    os: str = ""  # os: X-Stainless-OS
    arch: str = ""  # arch: X-Stainless-Arch
    timeout: str = ""  # timeout: X-Stainless-Timeout


@frozen
class CodexHeaderDefaults:
    """C{codex-header-defaults}: what Codex OAuth requests send ("" = the built-in value)."""

    user_agent: str = ""  # user-agent


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
    #: passthrough-headers: the upstream's response headers (filtered) go on to the client
    passthrough_headers: bool = False
    streaming: Streaming = field(factory=Streaming)
    #: nonstream-keepalive-interval: a blank line to a client waiting this long for a JSON answer; 0 = none
    nonstream_keepalive_interval: float = 0
    claude_header_defaults: ClaudeHeaderDefaults = field(factory=ClaudeHeaderDefaults)
    codex_header_defaults: CodexHeaderDefaults = field(factory=CodexHeaderDefaults)
    payload: PayloadConfig = field(factory=PayloadConfig)

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
