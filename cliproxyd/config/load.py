"""
Load config.yaml into L{cliproxyd.config.model.Config}.

C{yaml.safe_load} produces plain data; L{parse_config} walks it once, keeping
the YAML path of every value, so that each error names the exact place that
is wrong (C{openai-compatibility[1].base-url: required}). Unknown keys are
returned as warnings, never fatal: a newer or older config file still loads.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from typing import Any, Callable, Iterable, TypeVar

from attrs import field, frozen
from urllib.parse import unquote, urlsplit

import yaml
from attrs import evolve

from cliproxyd.proxies import ProxySetting, ProxyURLError, parse_proxy_setting
from cliproxyd.config import payload as P
from cliproxyd.config.model import (
    DEFAULT_PANEL_REPOSITORY,
    MAX_WEIGHT,
    SCOPED_ERROR_ACTIONS,
    STRATEGIES,
    CLOAK_MODES,
    APIKeyEntry,
    ClaudeHeaderDefaults,
    ClientKey,
    CloakConfig,
    CodexHeaderDefaults,
    Config,
    LocalLimits,
    LoggingConfig,
    MetricsConfig,
    ModelAlias,
    ModelEntry,
    ModelInfo,
    OpenAICompatProvider,
    ProviderKey,
    QuotaExceededConfig,
    QuotaGroupConfig,
    RemoteManagement,
    ResetProbeConfig,
    RoutingConfig,
    ScopedErrorRule,
    Thinking,
    Streaming,
    Timeouts,
    TLSConfig,
    WarmupConfig,
)

T = TypeVar("T")

#: CLIProxyAPI keys this version understands but does not act on yet. They
#: are reported apart from unknown keys, so an operator knows the difference
#: between a typo and a feature that is still to come.
NOT_YET_SUPPORTED: frozenset[str] = frozenset()


#: CLIProxyAPI keys that cannot apply to cliproxyd, each with what cliproxyd
#: does instead: start-up says so in one line when a config sets one, and
#: nothing under it is read. A path's list items are written C{[]}
#: (C{claude-api-key[].cloak}); the one table of them.
NOT_APPLICABLE: dict[str, str] = {
    "pprof": "cliproxyd has no pprof server; profile the running process from outside with py-spy",
    "commercial-mode": "cliproxyd has no per-request middleware to switch off; request logging is already "
                       "off unless request-log is set",
    "plugins": "cliproxyd loads no Go plugins; providers are its own executors, or openai-compatibility entries",
    "credential-concurrency": "a CLIProxyAPI Home (cluster) contract; cliproxyd runs alone and routes with "
                              "its own cooldowns",
    "credential-in-flight": "a CLIProxyAPI Home (cluster) contract; cliproxyd counts in-flight requests itself "
                            "(management /status in_flight)",
    "ampcode": "cliproxyd serves no Amp routes; point Amp at an OpenAI- or Claude-compatible route instead",
    "ws-auth": "cliproxyd serves no AI Studio relay (/v1/ws); its routes, the Responses websocket included, "
               "check api-keys whenever any are set",
    "save-cooldown-status": "cliproxyd always keeps cooldowns in its state file (state-file, by default "
                            "<auth-dir>/cliproxyd-state.json), never in .cds files",
    "video-result-auth-cache-ttl": "cliproxyd serves no video routes",
    "codex.identity-confuse": "cliproxyd sends Codex requests with the client's own identifiers",
    "codex.stream-bootstrap-buffering": "cliproxyd always holds a stream until its first content, so an "
                                        "overloaded upstream fails over without this switch",
    "codex.optimize-multi-agent-v2": "cliproxyd passes Codex multi-agent items as the client sent them",
    "codex.live-media-relay": "cliproxyd relays no WebRTC media; Codex Live connects to OpenAI directly",
    "antigravity": "cliproxyd does not rewrite Antigravity system instructions",
    "xai": "cliproxyd never adds xAI's x_search tool; a client's own tools pass as sent",
    "xai-api-key[].websockets": "cliproxyd has no upstream WebSocket transport; xAI keys are used over HTTP",
    "quota-exceeded.antigravity-credits": "cliproxyd spends no Antigravity credits; an exhausted account cools "
                                          "and the next credential or priority tier serves",
    "claude-header-defaults.timezone": "cliproxyd does not cloak Claude requests; no timezone is made up for "
                                       "them",
    "claude-header-defaults.stabilize-device-profile": "cliproxyd does not cloak Claude requests; each one "
                                                       "carries the configured identity headers as they are",
    "codex-header-defaults.beta-features": "cliproxyd reaches Codex over HTTP only (its Responses websocket is "
                                           "for clients), and beta features go only on an upstream websocket",
    "antigravity-signature-cache-enabled": "cliproxyd keeps no signature cache; thinking signatures pass as the "
                                           "client sent them",
    "antigravity-signature-bypass-strict": "cliproxyd keeps no signature cache; thinking signatures pass as the "
                                           "client sent them",
    "openai-compatibility[].support-prompt-cache-key": "cliproxyd derives no prompt_cache_key; a client's own "
                                                       "passes as sent",
    "codex-api-key[].alpha-search": "cliproxyd serves no /v1/alpha/search route",
    "claude-api-key[].fingerprint-profile": "cliproxyd sends the client's own request fingerprint and headers",
    "claude-api-key[].experimental-cch-signing": "cliproxyd signs no Claude billing blocks",
    "claude-api-key[].rebuild-mid-system-message": "cliproxyd passes a Claude client's messages as sent, and "
                                                   "always gathers system messages into Claude's top-level "
                                                   "system when it translates",
    "claude-api-key[].websockets": "cliproxyd has no upstream WebSocket transport",
    **{f"{kind}[].models[].is-compat": "cliproxyd checks no thinking signatures; thinking blocks pass as sent"
       for kind in ("openai-compatibility", "gemini-api-key", "claude-api-key", "codex-api-key", "xai-api-key",
                    "interactions-api-key")},
    # OAuth channels cliproxyd has no accounts of (an auth file of that type is
    # skipped): their entries are kept, so the management API shows them, but
    # apply to nothing.
    **{f"{section}.{channel}": f"cliproxyd reads no {channel} OAuth accounts, so these apply to nothing "
                               f"(its channels: claude, codex, gemini-cli, antigravity, xai, kimi, vertex, "
                               f"qwen, iflow)"
       for section in ("oauth-model-alias", "oauth-excluded-models")
       for channel in ("aistudio",)},
}

_INDEX = re.compile(r"\[\d+\]")


def not_applicable(path: str) -> str | None:
    """What cliproxyd does instead of the CLIProxyAPI key at C{path}, if it cannot apply."""
    return NOT_APPLICABLE.get(_INDEX.sub("[]", path))


#: The prefixes that mark C{remote-management.secret-key} as a bcrypt hash
#: rather than plaintext. CLIProxyAPI writes C{$2a$}, the C{bcrypt} library
#: C{$2b$}, PHP C{$2y$}; all three are the same algorithm.
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


def is_bcrypt_hash(secret: str) -> bool:
    """Whether C{secret} is a well-formed bcrypt hash (cost 4 to 31)."""
    return _BCRYPT_HASH.fullmatch(secret) is not None


class ConfigError(Exception):
    """A config file that cannot be used. C{str()} is one line naming the YAML path."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        super().__init__(source, path, problem)
        self.source = source
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        at = f"{self.path}: " if self.path else ""
        return f"{where}{at}{self.problem}"


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    float: "a number",
    list: "a list",
    dict: "a mapping",
}


class _Reader:
    """Typed access to one mapping of the YAML tree, remembering its path."""

    def __init__(self, data: Any, path: str, source: str, warnings: list[str]) -> None:
        self.path = path
        self.source = source
        self.warnings = warnings
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error("", f"must be a mapping, not {_kind(data)}")
        self.data = data

    def at(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        if key == "":
            return self.path
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str | int, problem: str) -> ConfigError:
        return ConfigError(self.source, self.at(key), problem)

    def check_keys(self, known: Iterable[str], not_yet: frozenset[str] = frozenset()) -> None:
        known = set(known)
        for key in self.data:
            if key in known:
                continue
            if not_applicable(self.at(str(key))) is not None:
                _say_if_not_applicable(self, str(key))
            elif key in not_yet:
                self.warnings.append(
                    f"{self.at(str(key))}: not supported by this version of cliproxyd; ignored"
                )
            else:
                self.warnings.append(f"{self.at(str(key))}: unknown key; ignored")

    def get(self, key: str, kind: type, default: Any = None, required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(key, "required")
            return default
        value = self.data[key]
        ok = isinstance(value, kind)
        if kind is int and isinstance(value, bool):
            ok = False
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise self.error(key, f"must be {_TYPE_NAMES[kind]}, not {_kind(value)}")
        return float(value) if kind is float else value

    def string(self, key: str, default: str = "", required: bool = False) -> str:
        value = self.get(key, str, default, required).strip()
        if required and not value:
            raise self.error(key, "must not be empty")
        return value

    def nonneg_int(self, key: str, default: int = 0) -> int:
        value = self.get(key, int, default)
        if value < 0:
            raise self.error(key, f"must be 0 or more, not {value}")
        return value

    def nonneg_float(self, key: str, default: float) -> float:
        value = self.get(key, float, default)
        if value < 0:
            raise self.error(key, f"must be 0 or more, not {value:g}")
        return value

    def positive(self, key: str, default: float) -> float:
        value = self.get(key, float, default)
        if value <= 0:
            raise self.error(key, f"must be more than 0, not {value:g}")
        return value

    def child(self, key: str) -> "_Reader":
        return _Reader(self.data.get(key), self.at(key), self.source, self.warnings)

    def items(self, key: str, parse: Callable[["_Reader"], T]) -> list[T]:
        seq = self.get(key, list, [])
        return [
            parse(_Reader(item, self.at(key) + f"[{i}]", self.source, self.warnings))
            for i, item in enumerate(seq)
        ]

    def strings(self, key: str) -> list[str]:
        out = []
        for i, item in enumerate(self.get(key, list, [])):
            if not isinstance(item, str):
                raise ConfigError(
                    self.source, self.at(key) + f"[{i}]", f"must be a string, not {_kind(item)}"
                )
            out.append(item)
        return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number")):
        if isinstance(value, kind):
            return f"{name} ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) < 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _no_newlines(r: _Reader, key: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise r.error(key, "must not contain a line break")
    return value


def _http_url(r: _Reader, key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise r.error(key, f"must be an http:// or https:// URL, not {value!r}")
    return value.rstrip("/")


def _parse_key_entry(r: _Reader) -> APIKeyEntry:
    r.check_keys({"api-key", "proxy-url", "weight", "rpm", "tpm", "rpd"})
    key = _no_newlines(r, "api-key", r.string("api-key", required=True))
    return APIKeyEntry(api_key=key, proxy_url=_proxy(r), weight=_weight(r), limits=_limits(r))


# -- routing keys of an entry (weight, disable-cooling, request-retry, request-scoped-errors) --

ROUTING_ENTRY_KEYS = {"weight", "disable-cooling", "request-retry", "request-scoped-errors", "rpm", "tpm", "rpd"}


def _limits(r: _Reader) -> LocalLimits:
    """C{rpm}, C{tpm}, C{rpd}: each a positive whole number, or absent (no limit)."""
    values = {}
    for key in ("rpm", "tpm", "rpd"):
        value = r.get(key, int, None)
        if value is not None and value <= 0:
            raise r.error(key, f"must be more than 0 (leave it out for no limit), not {value}")
        values[key] = value
    return LocalLimits(**values)


def _weight(r: _Reader) -> int:
    """C{weight}: 1 when absent, 0 (excluded under weighted-round-robin) when 0 or less, at most 1,000,000."""
    weight = r.get("weight", int, 1)
    if weight > MAX_WEIGHT:
        raise r.error("weight", f"must be at most {MAX_WEIGHT:,}, not {weight}")
    return max(weight, 0)


def _retry_override(r: _Reader) -> int | None:
    """C{request-retry} of an entry: absent or negative inherits the global value."""
    value = r.get("request-retry", int, None)
    return None if value is None or value < 0 else value


def _parse_scoped_rule(r: _Reader) -> ScopedErrorRule:
    r.check_keys({"status", "match", "match-regexr", "action"})
    status = r.get("status", int, required=True)
    if not 100 <= status <= 599:
        raise r.error("status", f"must be an HTTP status (100 to 599), not {status}")
    match = tuple(m for m in r.strings("match") if m)
    regexes = []
    for i, pattern in enumerate(r.strings("match-regexr")):
        if not pattern:
            continue
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(r.source, r.at("match-regexr") + f"[{i}]", f"not a valid regular expression: {e}") from None
        regexes.append(pattern)
    if not match and not regexes:
        raise r.error("match", "a rule needs at least one match or match-regexr pattern")
    action = r.string("action", required=True).lower()
    if action not in SCOPED_ERROR_ACTIONS:
        raise r.error("action", f"must be one of {', '.join(SCOPED_ERROR_ACTIONS)}, not {action!r}")
    return ScopedErrorRule(status=status, action=action, match=match, match_regex=tuple(regexes))


def _scoped_rules(r: _Reader, key: str = "request-scoped-errors") -> tuple[ScopedErrorRule, ...]:
    return tuple(r.items(key, _parse_scoped_rule))


def _parse_oauth_scoped_errors(r: _Reader) -> tuple[tuple[str, tuple[ScopedErrorRule, ...]], ...]:
    out = []
    for channel in r.data:
        if not isinstance(channel, str):
            raise r.error(str(channel), "channel names must be strings")
        out.append((channel.strip().lower(), _scoped_rules(r, channel)))
    return tuple(out)


_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(r: _Reader, key: str, default: float) -> float:
    """A positive duration: a Go duration string (C{"30m"}, C{"1h"}, C{"2h30m"}) or a number of seconds."""
    value = r.data.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.fullmatch(value.strip()):
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value.strip()))
    else:
        raise r.error(key, f"must be a duration such as \"30m\", \"1h\" or \"2h30m\", not {_kind(value)}")
    if seconds <= 0:
        raise r.error(key, f"must be more than 0, not {value!r}")
    return seconds


def _proxy(r: _Reader) -> ProxySetting:
    """
    C{proxy-url}: empty inherits, C{direct}/C{none}, or a proxy URL. A bad
    one stops the load (CLIProxyAPI would log it and go direct: an operator
    who set a proxy must never have requests leave without it).
    """
    try:
        return parse_proxy_setting(r.string("proxy-url"))
    except ProxyURLError as e:
        raise r.error("proxy-url", str(e)) from None


_MODEL_INFO_KEYS = {"display-name", "max-context-length", "max-output-tokens", "thinking", "input-modalities",
                    "output-modalities", "force-mapping"}


def _parse_model(r: _Reader, image: bool = False) -> ModelEntry:
    """One C{models[]} item; C{image}: its list may mark image models (openai-compatibility's)."""
    r.check_keys({"name", "alias", *_MODEL_INFO_KEYS, *(("image",) if image else ())})
    name = r.string("name", required=True)
    alias = r.string("alias")
    info = _model_info(r)
    if image and r.get("image", bool, False):
        info = evolve(info, image=True)
    return ModelEntry(name=name, alias=alias, info=info)


def _parse_image_model(r: _Reader) -> ModelEntry:
    return _parse_model(r, image=True)


def _model_info(r: _Reader) -> ModelInfo:
    """The list fields of one C{models[]} item (see L{ModelInfo})."""
    thinking = None
    if r.data.get("thinking") is not None:
        t = r.child("thinking")
        t.check_keys({"levels", "min", "max", "zero-allowed", "dynamic-allowed"})
        low, high = t.nonneg_int("min"), t.nonneg_int("max")
        if high and low > high:
            raise t.error("min", f"must not be more than max ({high}), not {low}")
        thinking = Thinking(
            levels=tuple(_words(t, "levels")), min=low, max=high,
            zero_allowed=t.get("zero-allowed", bool, False), dynamic_allowed=t.get("dynamic-allowed", bool, False),
        )
    return ModelInfo(
        display_name=_no_newlines(r, "display-name", r.string("display-name")),
        context_length=r.nonneg_int("max-context-length"),
        output_tokens=r.nonneg_int("max-output-tokens"),
        thinking=thinking,
        input_modalities=tuple(_words(r, "input-modalities")),
        output_modalities=tuple(_words(r, "output-modalities")),
        force_mapping=r.get("force-mapping", bool, False),
    )


def _words(r: _Reader, key: str) -> list[str]:
    """A list of short names (thinking levels, modalities): lower case, no blanks, each once."""
    out = []
    for i, word in enumerate(r.strings(key)):
        word = word.strip().lower()
        if not word or any(c.isspace() for c in word):
            raise ConfigError(r.source, r.at(key) + f"[{i}]", f"must be one word, not {word!r}")
        if word not in out:
            out.append(word)
    return out


def _parse_tls(r: _Reader) -> TLSConfig:
    """C{tls}: with C{enable}, C{cert} and C{key} name the PEM files (checked when the listener is made)."""
    r.check_keys({"enable", "cert", "key"})
    enable = r.get("enable", bool, False)
    cert = os.path.expanduser(r.string("cert"))
    key = os.path.expanduser(r.string("key"))
    if enable:
        for name, value in (("cert", cert), ("key", key)):
            if not value:
                raise r.error(name, "required when tls.enable is true")
    return TLSConfig(enable=enable, cert=cert, key=key)


def _headers(r: _Reader) -> tuple[tuple[str, str], ...]:
    headers = []
    hr = r.child("headers")
    for hname, hvalue in hr.data.items():
        if not isinstance(hname, str) or not hname.strip():
            raise hr.error(str(hname), "header names must be non-empty strings")
        if not isinstance(hvalue, (str, int)) or isinstance(hvalue, bool):
            raise hr.error(hname, f"must be a string, not {_kind(hvalue)}")
        headers.append((_no_newlines(hr, hname, hname.strip()), _no_newlines(hr, hname, str(hvalue))))
    return tuple(headers)


def _prefix(r: _Reader) -> str:
    prefix = r.string("prefix").strip("/")
    if "/" in prefix:
        raise r.error("prefix", f"must be a single path segment, not {prefix!r}")
    return prefix


def _exclusions(r: _Reader) -> tuple[str, ...]:
    return tuple(p.strip() for p in r.strings("excluded-models") if p.strip())


def _parse_compat(r: _Reader) -> OpenAICompatProvider:
    r.check_keys(
        {"name", "base-url", "prefix", "headers", "api-key-entries", "api-keys", "models", "priority",
         "excluded-models", "disabled", "disable-cooling", "request-retry", "request-scoped-errors",
         "proxy-url", "responses-compact"},
    )
    name = r.string("name", required=True).lower()
    if "/" in name:
        raise r.error("name", "must not contain '/'")
    base_url = _http_url(r, "base-url", r.string("base-url", required=True))
    entries = r.items("api-key-entries", _parse_key_entry)
    # The older CLIProxyAPI form: a plain list of keys under api-keys.
    for i, key in enumerate(r.strings("api-keys")):
        if key.strip():
            entries.append(APIKeyEntry(api_key=_no_newlines(r, f"api-keys[{i}]", key.strip())))
    if not entries:
        r.warnings.append(f"{r.at('api-key-entries')}: provider {name!r} has no API keys; it serves nothing")
    models = r.items("models", _parse_image_model)
    if not models:
        r.warnings.append(f"{r.at('models')}: provider {name!r} lists no models; it serves nothing")
    return OpenAICompatProvider(
        name=name,
        base_url=base_url,
        api_key_entries=tuple(_dedupe(entries, key=lambda e: e.api_key)),
        models=tuple(models),
        prefix=_prefix(r),
        headers=_headers(r),
        priority=r.get("priority", int, 0),
        excluded_models=_exclusions(r),
        disabled=r.get("disabled", bool, False),
        disable_cooling=r.get("disable-cooling", bool, None),
        request_retry=_retry_override(r),
        request_scoped_errors=_scoped_rules(r),
        proxy_url=_proxy(r),
        responses_compact=r.get("responses-compact", bool, False),
    )


def _parse_cloak(r: _Reader) -> CloakConfig:
    """A C{cloak} block (C{claude-api-key[].cloak})."""
    r.check_keys({"mode", "strict-mode", "sensitive-words", "cache-user-id"})
    mode = r.string("mode").lower()
    if mode and mode not in CLOAK_MODES:
        raise r.error("mode", f"must be one of {', '.join(CLOAK_MODES)}, not {mode!r}")
    return CloakConfig(
        mode=mode,
        strict_mode=r.get("strict-mode", bool, False),
        sensitive_words=tuple(w.strip() for w in r.strings("sensitive-words") if w.strip()),
        cache_user_id=r.get("cache-user-id", bool, None),
    )


def _parse_claude_key(r: _Reader) -> ProviderKey:
    key = _parse_provider_key(r, ("cloak",))
    return evolve(key, cloak=_parse_cloak(r.child("cloak"))) if r.data.get("cloak") is not None else key


def _parse_provider_key(r: _Reader, extra: tuple[str, ...] = ()) -> ProviderKey:
    r.check_keys({"api-key", "base-url", "prefix", "headers", "proxy-url", "models", "excluded-models",
                  "priority", *ROUTING_ENTRY_KEYS, *extra}, frozenset({"cloak", "websockets"}))
    base_url = r.string("base-url")
    return ProviderKey(
        api_key=_no_newlines(r, "api-key", r.string("api-key", required=True).strip()),
        base_url=_http_url(r, "base-url", base_url) if base_url else "",
        prefix=_prefix(r),
        headers=_headers(r),
        models=tuple(r.items("models", _parse_model)),
        excluded_models=_exclusions(r),
        priority=r.get("priority", int, 0),
        weight=_weight(r),
        disable_cooling=r.get("disable-cooling", bool, None),
        request_retry=_retry_override(r),
        request_scoped_errors=_scoped_rules(r),
        proxy_url=_proxy(r),
        limits=_limits(r),
    )


def _parse_provider_keys(r: _Reader, key: str) -> tuple[ProviderKey, ...]:
    entries = r.items(key, _parse_claude_key if key == "claude-api-key" else _parse_provider_key)
    seen: dict[tuple[str, str], int] = {}
    for i, e in enumerate(entries):
        if e.api_key == "":
            raise ConfigError(r.source, f"{key}[{i}].api-key", "must not be empty")
        if (e.api_key, e.base_url) in seen:
            raise ConfigError(r.source, f"{key}[{i}].api-key",
                              f"the same key and base-url are already at {key}[{seen[e.api_key, e.base_url]}]")
        seen[e.api_key, e.base_url] = i
    return tuple(entries)


def _parse_alias(r: _Reader) -> ModelAlias:
    r.check_keys({"name", "alias", "fork", "display-name", "force-mapping"})
    return ModelAlias(
        name=r.string("name", required=True),
        alias=r.string("alias", required=True),
        fork=r.get("fork", bool, False),
        display_name=_no_newlines(r, "display-name", r.string("display-name")),
        force_mapping=r.get("force-mapping", bool, False),
    )


def _parse_quota_group(r: _Reader) -> QuotaGroupConfig:
    r.check_keys({"id", "providers", "models"})
    providers = tuple(p.strip().lower() for p in r.strings("providers") if p.strip())
    models = tuple(m.strip() for m in r.strings("models") if m.strip())
    if not providers:
        raise r.error("providers", "must list at least one provider")
    if not models:
        raise r.error("models", "must list at least one model pattern")
    return QuotaGroupConfig(id=r.string("id", required=True), providers=providers, models=models)


def _parse_quota_groups(r: _Reader) -> tuple[QuotaGroupConfig, ...] | None:
    if "oauth-quota-groups" not in r.data:
        return None
    groups = r.items("oauth-quota-groups", _parse_quota_group)
    seen: dict[str, int] = {}
    for i, g in enumerate(groups):
        if g.id in seen:
            raise ConfigError(r.source, f"oauth-quota-groups[{i}].id",
                              f"{g.id!r} is already used by oauth-quota-groups[{seen[g.id]}]")
        seen[g.id] = i
    return tuple(groups)


def _parse_oauth_aliases(r: _Reader) -> tuple[tuple[str, tuple[ModelAlias, ...]], ...]:
    channels = []
    for channel in r.data:
        if not isinstance(channel, str):
            raise r.error(str(channel), "channel names must be strings")
        _say_if_not_applicable(r, channel)
        channels.append((channel.lower(), tuple(r.items(channel, _parse_alias))))
    return tuple(channels)


def _parse_oauth_exclusions(r: _Reader) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for provider in r.data:
        if not isinstance(provider, str):
            raise r.error(str(provider), "provider names must be strings")
        _say_if_not_applicable(r, provider)
        patterns = tuple(m.strip() for m in r.strings(provider) if m.strip())
        out.append((provider.strip().lower(), patterns))
    return tuple(out)


def _say_if_not_applicable(r: _Reader, key: str) -> None:
    """A warning for a key of a free-form mapping (a channel name) that cannot apply, saying why."""
    instead = not_applicable(r.at(key))
    if instead is not None:
        r.warnings.append(f"{r.at(key)}: not used by cliproxyd: {instead}")


def _secret_key(r: _Reader) -> str:
    secret = r.string("secret-key")
    if secret.startswith(BCRYPT_PREFIXES) and not is_bcrypt_hash(secret):
        # Taken for plaintext it would be hashed over; taken for a hash no
        # key could ever match it. Either way the operator meant something else.
        raise r.error("secret-key", "starts like a bcrypt hash ($2a$, $2b$ or $2y$) but is not a valid one")
    return secret


def _dedupe(items: Iterable[T], key: Callable[[T], Any] = lambda x: x) -> list[T]:
    seen: set[Any] = set()
    out = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


TOP_LEVEL = {
    "host",
    "port",
    "tls",
    "api-keys",
    "client-keys",
    "auth-dir",
    "debug",
    "request-retry",
    "max-retry-interval",
    "max-retry-credentials",
    "force-model-prefix",
    "disable-cooling",
    "transient-error-cooldown-seconds",
    "quota-exceeded",
    "oauth-request-scoped-errors",
    "state-file",
    "state-store",
    "workers",
    "oauth-model-alias",
    "oauth-excluded-models",
    "oauth-quota-groups",
    "routing",
    "openai-compatibility",
    "claude-api-key",
    "gemini-api-key",
    "codex-api-key",
    "xai-api-key",
    "vertex-api-key",
    "interactions-api-key",
    "max-body-mb",
    "remote-management",
    "timeouts",
    "metrics",
    "logging-to-file",
    "logs-max-total-size-mb",
    "request-log",
    "error-logs-max-files",
    "usage-statistics-enabled",
    "redis-usage-queue-retention-seconds",
    "codex",
    "disable-claude-cloak-mode",
    "claude-code",
    "auth-auto-refresh-workers",
    "proxy-url",
    "passthrough-headers",
    "streaming",
    "nonstream-keepalive-interval",
    "claude-header-defaults",
    "codex-header-defaults",
    "payload",
    "disable-image-generation",
    "gpt-image-2-base-model",
}


def parse_config(data: Any, source: str = "") -> tuple[Config, list[str]]:
    """
    Build a L{Config} from the result of C{yaml.safe_load}.

    @return: the config and a list of warnings (unknown or unsupported keys).
    @raise ConfigError: naming the YAML path of the first bad value.
    """
    warnings: list[str] = []
    r = _Reader(data, "", source, warnings)
    r.check_keys(TOP_LEVEL, NOT_YET_SUPPORTED)

    port = r.get("port", int, None)
    if port is None or port == 0:
        port = Config().port
    if not 0 < port < 65536:
        raise r.error("port", f"must be between 1 and 65535, not {port}")

    api_keys = []
    for i, key in enumerate(r.strings("api-keys")):
        key = key.strip()
        if not key:
            raise ConfigError(source, f"api-keys[{i}]", "must not be empty")
        api_keys.append(key)

    routing = r.child("routing")
    routing.check_keys({"strategy", "session-affinity", "session-affinity-ttl", "warmup", "reset-probe", "headroom",
                        "slow-start-seconds"})
    rp = routing.child("reset-probe")
    rp.check_keys({"enabled", "after-seconds", "interval-seconds"})
    wr = routing.child("warmup")
    wr.check_keys({"enabled", "providers", "ttl-seconds", "timeout-seconds"})
    strategy = routing.string("strategy", "round-robin") or "round-robin"
    if strategy.lower() not in STRATEGIES:
        raise routing.error(
            "strategy", f"unknown strategy {strategy!r}; use round-robin, weighted-round-robin or fill-first"
        )

    qe = r.child("quota-exceeded")
    qe.check_keys({"switch-project", "switch-preview-model"})

    rm = r.child("remote-management")
    rm.check_keys(
        {"secret-key", "allow-remote", "disable-control-panel", "disable-auto-update-panel",
         "panel-github-repository"},
    )

    # Of CLIProxyAPI's codex section only disable-codex-cloaking applies
    # (NOT_APPLICABLE says, key by key, what cliproxyd does instead of the rest).
    cx = r.child("codex")
    cx.check_keys({"disable-codex-cloaking"})
    cc = r.child("claude-code")
    cc.check_keys({"disable-cloaking-model-list"})

    t = r.child("timeouts")
    t.check_keys({"connect-seconds", "response-seconds", "stream-idle-seconds", "shutdown-seconds",
                  "client-idle-seconds"})
    d = Timeouts()

    mr = r.child("metrics")
    mr.check_keys({"enabled", "public", "overhead-header"})

    providers = r.items("openai-compatibility", _parse_compat)
    seen: dict[str, int] = {}
    for i, p in enumerate(providers):
        if p.name in seen:
            raise ConfigError(
                source,
                f"openai-compatibility[{i}].name",
                f"{p.name!r} is already used by openai-compatibility[{seen[p.name]}]",
            )
        seen[p.name] = i

    auth_dir = r.string("auth-dir")
    config = Config(
        host=r.string("host"),
        port=port,
        tls=_parse_tls(r.child("tls")),
        api_keys=tuple(_dedupe(api_keys)),
        client_keys=_parse_client_keys(r, api_keys),
        auth_dir=os.path.expanduser(auth_dir) if auth_dir else "",
        debug=r.get("debug", bool, False),
        request_retry=r.nonneg_int("request-retry"),
        max_retry_interval=r.nonneg_int("max-retry-interval"),
        max_retry_credentials=r.nonneg_int("max-retry-credentials"),
        force_model_prefix=r.get("force-model-prefix", bool, False),
        disable_cooling=r.get("disable-cooling", bool, False),
        transient_error_cooldown_seconds=r.get("transient-error-cooldown-seconds", int, 0),
        disable_claude_cloak_mode=r.get("disable-claude-cloak-mode", bool, False),
        disable_image_generation=_image_generation_mode(r),
        gpt_image_2_base_model=_image_base_model(r),
        disable_codex_cloaking=cx.get("disable-codex-cloaking", bool, False),
        disable_cloaking_model_list=cc.get("disable-cloaking-model-list", bool, False),
        quota_exceeded=QuotaExceededConfig(
            switch_project=qe.get("switch-project", bool, False),
            switch_preview_model=qe.get("switch-preview-model", bool, False),
        ),
        oauth_request_scoped_errors=_parse_oauth_scoped_errors(r.child("oauth-request-scoped-errors")),
        state_file=os.path.expanduser(r.string("state-file")),
        workers=_workers(r),
        oauth_model_alias=_parse_oauth_aliases(r.child("oauth-model-alias")),
        oauth_excluded_models=_parse_oauth_exclusions(r.child("oauth-excluded-models")),
        oauth_quota_groups=_parse_quota_groups(r),
        routing=RoutingConfig(
            strategy=STRATEGIES[strategy.lower()],
            session_affinity=routing.get("session-affinity", bool, False),
            session_affinity_ttl=_duration(routing, "session-affinity-ttl", 3600.0),
            reset_probe=ResetProbeConfig(
                enabled=rp.get("enabled", bool, True),
                after_seconds=rp.nonneg_float("after-seconds", 600.0),
                interval_seconds=rp.positive("interval-seconds", 300.0),
            ),
            headroom=routing.get("headroom", bool, True),
            slow_start_seconds=routing.nonneg_float("slow-start-seconds", 30.0),
            warmup=WarmupConfig(
                enabled=wr.get("enabled", bool, False),
                providers=tuple(p.strip().lower() for p in wr.strings("providers") if p.strip()),
                ttl=wr.positive("ttl-seconds", 60.0),
                timeout=wr.positive("timeout-seconds", 10.0),
            ),
        ),
        openai_compatibility=tuple(providers),
        claude_api_key=_parse_provider_keys(r, "claude-api-key"),
        gemini_api_key=_parse_provider_keys(r, "gemini-api-key"),
        codex_api_key=_parse_provider_keys(r, "codex-api-key"),
        xai_api_key=_parse_provider_keys(r, "xai-api-key"),
        vertex_api_key=_parse_provider_keys(r, "vertex-api-key"),
        interactions_api_key=_parse_provider_keys(r, "interactions-api-key"),
        max_body_mb=r.positive("max-body-mb", Config().max_body_mb),
        auth_auto_refresh_workers=r.nonneg_int("auth-auto-refresh-workers"),
        remote_management=RemoteManagement(
            secret_key=_secret_key(rm),
            allow_remote=rm.get("allow-remote", bool, False),
            disable_control_panel=rm.get("disable-control-panel", bool, False),
            disable_auto_update_panel=rm.get("disable-auto-update-panel", bool, False),
            panel_github_repository=rm.string("panel-github-repository") or DEFAULT_PANEL_REPOSITORY,
        ),
        timeouts=Timeouts(
            connect=t.positive("connect-seconds", d.connect),
            response=t.nonneg_float("response-seconds", d.response),
            stream_idle=t.positive("stream-idle-seconds", d.stream_idle),
            shutdown=t.positive("shutdown-seconds", d.shutdown),
            client_idle=t.nonneg_float("client-idle-seconds", d.client_idle),
        ),
        metrics=MetricsConfig(
            enabled=mr.get("enabled", bool, True),
            public=mr.get("public", bool, False),
            overhead_header=mr.get("overhead-header", bool, False),
        ),
        logging=LoggingConfig(
            to_file=r.get("logging-to-file", bool, False),
            max_total_size_mb=r.nonneg_int("logs-max-total-size-mb"),
            request_log=r.get("request-log", bool, False),
            error_logs_max_files=r.nonneg_int("error-logs-max-files", LoggingConfig().error_logs_max_files),
        ),
        usage_statistics_enabled=r.get("usage-statistics-enabled", bool, False),
        usage_queue_retention=_usage_queue_retention(r),
        proxy_url=_proxy(r),
        state_store=_state_store(r),
        **_parse_wire(r),
    )
    return config, warnings


@frozen
class RedisAddress:
    """A C{state-store} URL taken apart (the password is a secret: never logged)."""

    host: str
    port: int
    db: int
    password: str | None = field(default=None, repr=False)
    username: str | None = None
    tls: bool = False

    @property
    def shown(self) -> str:
        """The URL without its password, for logs and the management API."""
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"


def parse_redis_url(text: str) -> RedisAddress:
    """
    C{redis://[[user]:password@]host[:port][/db]} or C{rediss://...} (TLS).

    @raise ValueError: saying what is wrong (never echoing the password).
    """
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError:
        raise ValueError("not a redis:// or rediss:// URL (bad host or port)") from None
    if url.scheme not in ("redis", "rediss"):
        raise ValueError(f"must be a redis:// or rediss:// URL, not {url.scheme or 'no'} scheme")
    if not url.hostname:
        raise ValueError("the URL names no host")
    if url.query or url.fragment:
        raise ValueError("query strings and fragments are not understood")
    path = url.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database must be a number (/0 to /15...), not {path!r}")
    return RedisAddress(
        host=url.hostname,
        port=port or 6379,
        db=int(path or 0),
        password=unquote(url.password) if url.password is not None else None,
        username=unquote(url.username) if url.username else None,
        tls=url.scheme == "rediss",
    )


def _state_store(r: _Reader) -> str | None:
    """
    C{state-store}: where the StateStore lives. Absent or empty: in memory
    (and the state file), the default; C{redis://[:password@]host:port/db}
    or C{rediss://} (TLS): shared through Redis (L{cliproxyd.state.redis}).
    """
    text = (r.string("state-store") or "").strip()
    if not text:
        return None
    try:
        parse_redis_url(text)
    except ValueError as e:
        raise r.error("state-store", str(e)) from None
    return text


#: workers: the most worker processes one parent runs.
MAX_WORKERS = 256


def _workers(r: _Reader) -> int:
    """C{workers}: how many worker processes serve the listener (1: the daemon serves it itself)."""
    value = r.get("workers", int, 1)
    if not 1 <= value <= MAX_WORKERS:
        raise r.error("workers", f"must be between 1 and {MAX_WORKERS}, not {value}")
    return value


# -- streaming, keep-alives, header defaults, payload rules ----------------------------


_SHA256_KEY = re.compile(r"sha256:[0-9a-f]{64}")
#: The fields of a C{client-keys} entry.
CLIENT_KEY_FIELDS = ("key", "name", "models", "excluded-models", "providers", "rpm", "tpm", "daily-tokens",
                     "monthly-tokens", "max-parallel", "expires", "disabled")


def _expires(r: _Reader) -> float | None:
    """C{expires}: an RFC 3339 time, a date (its UTC midnight) or epoch seconds."""
    value = r.data.get("expires")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise r.error("expires", "must be an RFC 3339 time (2027-01-31T00:00:00Z), a date or epoch "
                                     "seconds") from None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc).timestamp()
    return r.nonneg_float("expires", 0.0)


def _parse_client_key(r: _Reader) -> ClientKey:
    r.check_keys(CLIENT_KEY_FIELDS)
    key = r.string("key", required=True)
    if key.startswith(BCRYPT_PREFIXES) and not is_bcrypt_hash(key):
        raise r.error("key", "starts like a bcrypt hash ($2a$, $2b$ or $2y$) but is not a valid one")
    if key.startswith("sha256:") and not _SHA256_KEY.fullmatch(key):
        raise r.error("key", "a sha256 hash is sha256: and 64 lower-case hex digits")
    if "\n" in key or "\r" in key:
        raise r.error("key", "must be one line")
    return ClientKey(
        name=r.string("name", required=True),
        key=key,
        models=tuple(m.strip() for m in r.strings("models") if m.strip()),
        excluded_models=tuple(m.strip() for m in r.strings("excluded-models") if m.strip()),
        providers=tuple(p.strip().lower() for p in r.strings("providers") if p.strip()),
        rpm=r.nonneg_int("rpm"),
        tpm=r.nonneg_int("tpm"),
        daily_tokens=r.nonneg_int("daily-tokens"),
        monthly_tokens=r.nonneg_int("monthly-tokens"),
        max_parallel=r.nonneg_int("max-parallel"),
        expires=_expires(r),
        disabled=r.get("disabled", bool, False),
    )


def _key_identity(key: str) -> str:
    """A plain or C{sha256:} key as the SHA-256 it is looked up by (a bcrypt hash as it is)."""
    if key.startswith("sha256:"):
        return key
    if key.startswith(BCRYPT_PREFIXES):
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def _parse_client_keys(r: _Reader, api_keys: list[str]) -> tuple[ClientKey, ...]:
    """
    C{client-keys}: names and keys are unique (a plain key and its
    C{sha256:} are the same key), and no key is also one of C{api-keys}.
    """
    keys = r.items("client-keys", _parse_client_key)
    names: dict[str, int] = {}
    secrets: dict[str, str] = {_key_identity(k): "api-keys" for k in api_keys}
    for i, k in enumerate(keys):
        if k.name in names:
            raise ConfigError(r.source, f"client-keys[{i}].name",
                              f"{k.name!r} is already used by client-keys[{names[k.name]}]")
        names[k.name] = i
        identity = _key_identity(k.key)
        if identity in secrets:
            raise ConfigError(r.source, f"client-keys[{i}].key", f"is the same key as {secrets[identity]}")
        secrets[identity] = f"client-keys[{i}]"
    return tuple(keys)


#: redis-usage-queue-retention-seconds: CLIProxyAPI's default and its ceiling.
USAGE_QUEUE_RETENTION = 60
USAGE_QUEUE_RETENTION_MAX = 3600


def _usage_queue_retention(r: _Reader) -> int:
    """How long /usage-queue keeps a record: 0 or less is the default, more than an hour is an hour (with a warning)."""
    key = "redis-usage-queue-retention-seconds"
    value = r.get(key, int, 0)
    if value <= 0:
        return USAGE_QUEUE_RETENTION
    if value > USAGE_QUEUE_RETENTION_MAX:
        r.warnings.append(f"{r.at(key)}: {value} is more than {USAGE_QUEUE_RETENTION_MAX}; "
                          f"{USAGE_QUEUE_RETENTION_MAX} is used")
        return USAGE_QUEUE_RETENTION_MAX
    return value


def _seconds_or_off(r: _Reader, key: str) -> float:
    """A number of seconds where 0 or less turns the feature off, as in CLIProxyAPI."""
    return max(r.get(key, float, 0.0), 0.0)


def _parse_wire(r: _Reader) -> dict[str, Any]:
    """The keys that shape what goes over the wire: keyword arguments of L{Config}."""
    st = r.child("streaming")
    st.check_keys({"keepalive-seconds", "bootstrap-retries"})
    ch = r.child("claude-header-defaults")
    ch.check_keys({"user-agent", "package-version", "runtime-version", "os", "arch", "timeout"})
    cx = r.child("codex-header-defaults")
    cx.check_keys({"user-agent"})

    def header(hr: _Reader, key: str) -> str:
        return _no_newlines(hr, key, hr.string(key))

    return {
        "passthrough_headers": r.get("passthrough-headers", bool, False),
        "streaming": Streaming(
            keepalive_seconds=_seconds_or_off(st, "keepalive-seconds"),
            bootstrap_retries=max(st.get("bootstrap-retries", int, 0), 0),
        ),
        "nonstream_keepalive_interval": _seconds_or_off(r, "nonstream-keepalive-interval"),
        "claude_header_defaults": ClaudeHeaderDefaults(
            **{k.replace("-", "_"): header(ch, k)
               for k in ("user-agent", "package-version", "runtime-version", "os", "arch", "timeout")}),
        "codex_header_defaults": CodexHeaderDefaults(user_agent=header(cx, "user-agent")),
        "payload": _parse_payload(r.child("payload")),
    }


def _path(r: _Reader, key: str | int, text: Any) -> P.PayloadPath:
    if not isinstance(text, str):
        raise r.error(key, f"a JSON path must be a string, not {_kind(text)}")
    try:
        return P.parse_path(text)
    except P.PathError as e:
        raise r.error(key, str(e)) from None


def _json_text(r: _Reader, key: str, value: Any, raw: bool) -> str:
    try:
        return P.raw_value(value) if raw else P.plain_value(value)
    except (TypeError, ValueError) as e:
        problem = str(e) if isinstance(e, ValueError) else f"must be JSON data, not {_kind(value)}"
        raise r.error(key, problem) from None


def _conditions(r: _Reader, key: str) -> tuple[tuple[P.PayloadPath, str], ...]:
    out = []
    for i, item in enumerate(r.get(key, list, [])):
        cr = _Reader(item, r.at(key) + f"[{i}]", r.source, r.warnings)
        out.extend((_path(cr, str(p), p), _json_text(cr, str(p), v, False)) for p, v in cr.data.items())
    return tuple(out)


def _parse_model_match(r: _Reader) -> P.ModelMatch:
    r.check_keys({"name", "protocol", "from-protocol", "headers", "match", "not-match", "exist", "not-exist"})
    protocol = r.string("protocol").lower()
    if protocol and protocol not in P.PROTOCOLS:
        raise r.error("protocol", f"unknown protocol {protocol!r}; one of {', '.join(sorted(P.PROTOCOLS))}")
    source = r.string("from-protocol").lower()
    if source and source not in P.FROM_PROTOCOLS:
        raise r.error("from-protocol", f"unknown protocol {source!r}; one of openai, responses, claude, gemini")
    hr = r.child("headers")
    headers = []
    for name, pattern in hr.data.items():
        if not isinstance(name, str) or not name.strip() or not isinstance(pattern, str):
            raise hr.error(str(name), "each header is a name and a string pattern")
        headers.append((name.strip().lower(), P.glob(pattern.strip())))
    paths = (
        tuple(_path(r, f"{key}[{i}]", p) for i, p in enumerate(r.get(key, list, [])))
        for key in ("exist", "not-exist")
    )
    return P.ModelMatch(
        name=P.glob(r.string("name", required=True)),
        protocol=protocol,
        from_protocol=P.FROM_PROTOCOLS.get(source, ""),
        headers=tuple(headers),
        match=_conditions(r, "match"),
        not_match=_conditions(r, "not-match"),
        exist=next(paths),
        not_exist=next(paths),
    )


def _rule_models(r: _Reader) -> tuple[P.ModelMatch, ...]:
    models = tuple(r.items("models", _parse_model_match))
    if not models:
        raise r.error("models", "must list at least one model (a rule without one never applies)")
    return models


def _parse_set_rule(raw: bool) -> Callable[[_Reader], P.PayloadRule]:
    def parse(r: _Reader) -> P.PayloadRule:
        r.check_keys({"models", "params"})
        pr = r.child("params")
        params = tuple((_path(pr, str(k), k), _json_text(pr, str(k), v, raw)) for k, v in pr.data.items())
        return P.PayloadRule(_rule_models(r), params)

    return parse


def _parse_filter_rule(r: _Reader) -> P.PayloadRule:
    r.check_keys({"models", "params"})
    params = tuple((_path(r, f"params[{i}]", p), "") for i, p in enumerate(r.get("params", list, [])))
    return P.PayloadRule(_rule_models(r), params)


def _parse_payload(r: _Reader) -> P.PayloadConfig:
    r.check_keys({"default", "default-raw", "override", "override-raw", "filter"})
    return P.PayloadConfig(
        default=tuple(r.items("default", _parse_set_rule(False))),
        default_raw=tuple(r.items("default-raw", _parse_set_rule(True))),
        override=tuple(r.items("override", _parse_set_rule(False))),
        override_raw=tuple(r.items("override-raw", _parse_set_rule(True))),
        filter=tuple(r.items("filter", _parse_filter_rule)),
    )


def load_yaml(text: bytes | str, source: str = "") -> Any:
    """
    C{yaml.safe_load} of C{text}, with a syntax error turned into a
    L{ConfigError} naming the line and column.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise yaml_syntax_error(e, source) from None


def yaml_syntax_error(error: Exception, source: str) -> ConfigError:
    """
    A L{ConfigError} for a YAML parser's error: C{line L column C: problem}
    when the error carries a position (PyYAML's and ruamel.yaml's marked
    errors both do), the parser's own message otherwise.
    """
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
    return ConfigError(source, "", f"YAML syntax error: {where}{problem}")


def load_config(path: str) -> tuple[Config, list[str]]:
    """Read and parse the YAML file at C{path}."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, "", f"cannot read the file: {e.strerror}") from None
    return parse_config_bytes(text, path)


def parse_config_bytes(text: bytes, source: str = "") -> tuple[Config, list[str]]:
    """Parse the YAML text of a config file; a syntax error is a L{ConfigError} with its line."""
    return parse_config(load_yaml(text, source), source)


#: disable-image-generation's values (CLIProxyAPI's four); only "true" turns the /v1/images routes off.
IMAGE_GENERATION_MODES = {"false": "false", "off": "false", "no": "false", "0": "false", "": "false",
                          "true": "true", "on": "true", "yes": "true", "1": "true",
                          "chat": "chat", "passthrough": "passthrough"}


def _image_generation_mode(r: _Reader) -> str:
    """C{disable-image-generation}: true or false, or the words C{chat} or C{passthrough}."""
    value = r.data.get("disable-image-generation")
    if value is None:
        return "false"
    if isinstance(value, bool):
        return "true" if value else "false"
    mode = IMAGE_GENERATION_MODES.get(value.strip().lower()) if isinstance(value, str) else None
    if mode is None:
        raise r.error("disable-image-generation", f"must be true, false, chat or passthrough, not {value!r}")
    return mode


def _image_base_model(r: _Reader) -> str:
    """C{gpt-image-2-base-model}: the Codex model that runs the image tool; a gpt- model, or empty."""
    model = r.string("gpt-image-2-base-model")
    if model and not model.lower().startswith("gpt-"):
        raise r.error("gpt-image-2-base-model", f"must name a gpt- model (such as gpt-5.4-mini), not {model!r}")
    return model
