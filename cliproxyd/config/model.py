"""
Frozen attrs models of config.yaml.

Key names follow CLIProxyAPI's config.yaml so an existing file can be reused;
the YAML spelling of each field is given in its comment. Values are validated
in L{cliproxyd.config.load}, which is the only place that builds them from
YAML; everything else treats a L{Config} as an immutable value and derives
changes with C{attrs.evolve}.
"""

from __future__ import annotations

import os

from attrs import field, frozen

from cliproxyd.proxies import INHERIT, ProxySetting
from cliproxyd.config.payload import PayloadConfig

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
class Thinking:
    """
    C{models[].thinking}: what reasoning a model takes, shown in C{/v1/models}
    (CLIProxyAPI's fields: discrete C{levels}, or a budget from C{min} to C{max}).
    """

    levels: tuple[str, ...] = ()
    min: int = 0
    max: int = 0
    zero_allowed: bool = False  # zero-allowed: a budget of 0 turns thinking off
    dynamic_allowed: bool = False  # dynamic-allowed: -1 lets the model choose


@frozen
class ModelInfo:
    """
    What C{/v1/models} says about a model beyond its name: C{models[]}'
    C{display-name}, C{max-context-length}, C{max-output-tokens},
    C{thinking}, C{input-modalities} and C{output-modalities}, and
    C{force-mapping} (answers name the model as the client asked for it).
    """

    display_name: str = ""  # display-name
    context_length: int = 0  # max-context-length (0: not said)
    output_tokens: int = 0  # max-output-tokens (0: not said)
    thinking: Thinking | None = None
    input_modalities: tuple[str, ...] = ()  # input-modalities
    output_modalities: tuple[str, ...] = ()  # output-modalities
    force_mapping: bool = False  # force-mapping
    #: image (openai-compatibility models): served on /v1/images/generations and /v1/images/edits
    image: bool = False


@frozen
class ModelEntry:
    """One C{models[]} item: the upstream C{name}, the client-facing C{alias} and what lists show of it."""

    name: str
    alias: str = ""
    info: ModelInfo = field(factory=ModelInfo)

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
class LocalLimits:
    """C{rpm}, C{tpm} and C{rpd} of a key entry or auth file (None: no limit); see L{cliproxyd.conductor.pacing}."""

    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None

    def __bool__(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.rpd is not None


@frozen
class APIKeyEntry:
    """One C{api-key-entries[]} item."""

    api_key: str = field(repr=False)  # api-key
    proxy_url: ProxySetting = INHERIT  # proxy-url (over the provider's, then the global one)
    weight: int = DEFAULT_WEIGHT  # weight (weighted-round-robin; 0 = excluded)
    limits: LocalLimits = field(factory=LocalLimits)  # rpm, tpm, rpd


@frozen
class ModelAlias:
    """One C{oauth-model-alias} entry: serve upstream C{name} as C{alias} (also as itself with C{fork})."""

    name: str
    alias: str
    fork: bool = False
    display_name: str = ""  # display-name: the alias's name in model lists
    force_mapping: bool = False  # force-mapping: answers name the alias, not the upstream model


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
    #: proxy-url: for the provider's keys that set none (a cliproxyd extension here)
    proxy_url: ProxySetting = INHERIT
    #: responses-compact: the upstream has {base-url}/responses/compact (a cliproxyd extension)
    responses_compact: bool = False


#: C{cloak.mode} values: cloak OAuth accounts and keys with a cloak block (auto), every request, or none.
CLOAK_MODES = ("auto", "always", "never")


@frozen
class CloakConfig:
    """
    C{claude-api-key[].cloak} (or an auth file's C{cloak_*} fields): how
    requests of one Claude credential wear the Claude Code identity (see
    L{cliproxyd.executors.cloak}).
    """

    mode: str = ""  # mode: auto | always | never ("" = the global default)
    strict_mode: bool = False  # strict-mode: drop the client's own system prompt
    sensitive_words: tuple[str, ...] = ()  # sensitive-words: broken up with a zero-width space
    cache_user_id: bool | None = None  # cache-user-id: one metadata.user_id per credential


@frozen
class ProviderKey:
    """
    One C{claude-api-key[]}, C{gemini-api-key[]}, C{codex-api-key[]}, C{xai-api-key[]}, C{vertex-api-key[]}
    or C{interactions-api-key[]} item.
    """

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
    proxy_url: ProxySetting = INHERIT  # proxy-url (over the global one)
    #: cloak (claude-api-key only): None when the entry has no cloak block
    cloak: CloakConfig | None = None
    limits: LocalLimits = field(factory=LocalLimits)  # rpm, tpm, rpd


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
class ResetProbeConfig:
    """C{routing.reset-probe}: re-check long cooldowns cheaply (see L{cliproxyd.conductor.probes})."""

    enabled: bool = True
    after_seconds: float = 600.0  # after-seconds: only cooldowns longer than this are probed
    interval_seconds: float = 300.0  # interval-seconds: between two probes of one credential


@frozen
class RoutingConfig:
    strategy: str = "round-robin"
    reset_probe: ResetProbeConfig = field(factory=ResetProbeConfig)  # reset-probe
    #: headroom: steer away from a credential whose upstream says it is about to run out
    headroom: bool = True
    slow_start_seconds: float = 30.0  # slow-start-seconds: the ramp after a cooldown (0: none)
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


#: CLIProxyAPI's default C{remote-management.panel-github-repository}.
DEFAULT_PANEL_REPOSITORY = "https://github.com/router-for-me/Cli-Proxy-API-Management-Center"


@frozen
class LoggingConfig:
    """The top-level logging keys, as CLIProxyAPI names them."""

    to_file: bool = False  # logging-to-file: main.log in the log directory
    #: logs-max-total-size-mb: the oldest log files go past this total (0 = no limit)
    max_total_size_mb: int = 0
    request_log: bool = False  # request-log: one file per request
    #: error-logs-max-files: error-*.log files kept (0 = all)
    error_logs_max_files: int = 10


@frozen
class RemoteManagement:
    """C{remote-management}: the management API is off unless C{secret-key} is set."""

    secret_key: str = ""  # secret-key
    allow_remote: bool = False  # allow-remote
    #: disable-control-panel: no /management.html and no panel download
    disable_control_panel: bool = False
    #: disable-auto-update-panel: fetch the panel only while it is missing
    disable_auto_update_panel: bool = False
    #: panel-github-repository: where the panel's releases are looked up
    panel_github_repository: str = DEFAULT_PANEL_REPOSITORY


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
class MetricsConfig:
    """C{metrics}: cliproxyd's own section (CLIProxyAPI has no Prometheus endpoint)."""

    #: enabled: requests and attempts are counted and GET /metrics answers (false: neither)
    enabled: bool = True
    #: public: GET /metrics needs no management key (false: the management API's rules apply)
    public: bool = False
    #: overhead-header: answers carry x-cliproxyd-overhead-ms, cliproxyd's own time on them
    overhead_header: bool = False


@frozen
class TLSConfig:
    """C{tls}: serve HTTPS with this certificate and key (PEM files)."""

    enable: bool = False
    cert: str = ""  # cert: the certificate (chain) file
    key: str = ""  # key: the private key file


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
class ClientKey:
    """
    One entry of C{client-keys}: a client key with a name, a scope and limits.

    C{key} is the key itself, or its hash (L{hashed}): a bcrypt hash
    (C{$2a$}, C{$2b$}, C{$2y$}) or C{sha256:<64 hex digits>}. A limit of 0
    is no limit; empty C{models} and C{providers} allow everything.
    """

    name: str  # name
    key: str  # key
    models: tuple[str, ...] = ()  # models: globs of the model names the key may ask for
    excluded_models: tuple[str, ...] = ()  # excluded-models
    providers: tuple[str, ...] = ()  # providers: the providers that may serve it (lower case)
    rpm: int = 0  # rpm: requests in any 60 seconds
    tpm: int = 0  # tpm: tokens in any 60 seconds
    daily_tokens: int = 0  # daily-tokens: tokens per UTC day
    monthly_tokens: int = 0  # monthly-tokens: tokens per UTC month
    max_parallel: int = 0  # max-parallel: requests at once
    expires: float | None = None  # expires: epoch seconds from an RFC 3339 time or a date
    disabled: bool = False  # disabled

    @property
    def hashed(self) -> str:
        """C{"bcrypt"}, C{"sha256"}, or C{""} when C{key} is the key itself."""
        if self.key.startswith(("$2a$", "$2b$", "$2y$")):
            return "bcrypt"
        if self.key.startswith("sha256:"):
            return "sha256"
        return ""

    @property
    def token_limited(self) -> bool:
        return bool(self.tpm or self.daily_tokens or self.monthly_tokens)


@frozen
class Config:
    host: str = ""
    port: int = DEFAULT_PORT
    tls: TLSConfig = field(factory=TLSConfig)
    api_keys: tuple[str, ...] = ()  # api-keys
    client_keys: tuple[ClientKey, ...] = ()  # client-keys
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
    #: workers: worker processes sharing the listener (1 = none: the daemon serves it itself)
    workers: int = 1
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
    xai_api_key: tuple[ProviderKey, ...] = ()  # xai-api-key
    vertex_api_key: tuple[ProviderKey, ...] = ()  # vertex-api-key
    interactions_api_key: tuple[ProviderKey, ...] = ()  # interactions-api-key
    #: max-body-mb: the largest client request body accepted, in MiB
    max_body_mb: float = 8.0
    remote_management: RemoteManagement = field(factory=RemoteManagement)  # remote-management
    #: auth-auto-refresh-workers: OAuth token refreshes run at once (0: the default, 16)
    auth_auto_refresh_workers: int = 0
    timeouts: Timeouts = field(factory=Timeouts)
    metrics: MetricsConfig = field(factory=MetricsConfig)
    #: logging-to-file, logs-max-total-size-mb, request-log, error-logs-max-files
    logging: LoggingConfig = field(factory=LoggingConfig)
    #: usage-statistics-enabled: the usage counters are kept across restarts
    usage_statistics_enabled: bool = False
    #: redis-usage-queue-retention-seconds: how long GET /usage-queue keeps a record (1 to 3600)
    usage_queue_retention: int = 60
    #: proxy-url: every upstream call's proxy, unless a key or auth file says otherwise
    #: (inherit: the environment's HTTPS_PROXY/HTTP_PROXY/NO_PROXY)
    proxy_url: ProxySetting = INHERIT
    #: state-store: "redis://[:password@]host:port/db" (or rediss://) shares the StateStore
    #: through Redis; None: memory and the state file (the default)
    state_store: str | None = None
    #: passthrough-headers: the upstream's response headers (filtered) go on to the client
    passthrough_headers: bool = False
    streaming: Streaming = field(factory=Streaming)
    #: nonstream-keepalive-interval: a blank line to a client waiting this long for a JSON answer; 0 = none
    nonstream_keepalive_interval: float = 0
    claude_header_defaults: ClaudeHeaderDefaults = field(factory=ClaudeHeaderDefaults)
    codex_header_defaults: CodexHeaderDefaults = field(factory=CodexHeaderDefaults)
    #: disable-claude-cloak-mode: Claude credentials cloak only when their own cloak settings say so
    disable_claude_cloak_mode: bool = False
    #: codex.disable-codex-cloaking: a client's own User-Agent and Originator go to Codex as sent
    disable_codex_cloaking: bool = False
    #: claude-code.disable-cloaking-model-list: Claude model lists name every model by its own name
    disable_cloaking_model_list: bool = False
    #: disable-image-generation: "true" answers the /v1/images routes with a 404 ("false", "chat",
    #: "passthrough": served; cliproxyd never adds an image tool to other routes' requests)
    disable_image_generation: str = "false"
    #: gpt-image-2-base-model: the Codex model that runs the image_generation tool ("": the default)
    gpt_image_2_base_model: str = ""
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
    def usage_path(self) -> str:
        """Where the usage counters are kept across restarts (beside the state file), or "" for nowhere."""
        state = self.state_path
        if not state:
            return ""
        root, ext = os.path.splitext(state)
        return f"{root.removesuffix('-state')}-usage{ext or '.json'}"

    @property
    def listen(self) -> str:
        """The endpoint string that C{host} and C{port} describe."""
        # An empty host means every interface, as in CLIProxyAPI.
        host = _escape(self.host or "0.0.0.0")
        if self.tls.enable:
            return f"ssl:{self.port}:interface={host}:certKey={_escape(self.tls.cert)}" \
                   f":privateKey={_escape(self.tls.key)}"
        return f"tcp:{self.port}:interface={host}"

    def model_catalogue(self) -> dict[str, ModelInfo]:
        """
        What the config says about each client-facing model name (with and
        without its entry's prefix), for the model lists; the first entry
        naming a model wins, as the first credential does in the lists.
        """
        out: dict[str, ModelInfo] = {}
        entries = [*self.claude_api_key, *self.gemini_api_key, *self.codex_api_key, *self.xai_api_key,
                   *self.vertex_api_key, *self.interactions_api_key, *self.openai_compatibility]
        for entry in entries:
            for m in entry.models:
                if m.info == ModelInfo():
                    continue
                out.setdefault(m.route_name, m.info)
                if entry.prefix:
                    out.setdefault(f"{entry.prefix}/{m.route_name}", m.info)
        for _channel, aliases in self.oauth_model_alias:
            for a in aliases:
                if a.display_name or a.force_mapping:
                    out.setdefault(a.alias, ModelInfo(display_name=a.display_name, force_mapping=a.force_mapping))
        return out


def _escape(value: str) -> str:
    """A value for an endpoint string, whose separator is the colon (and backslash its escape)."""
    return value.replace("\\", "\\\\").replace(":", r"\:")
