"""
The upstream credential model.

A L{Credential} is one key at one provider, with everything routing needs
computed at config load: the routes it serves (with prefixes, aliases,
alias pools and exclusions already applied), its priority and overrides.
Requests only read it.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Iterable

from attrs import field, frozen

from cliproxyd._version import __version__
from cliproxyd.config.model import (DEFAULT_WEIGHT, CloakConfig, Config, LocalLimits, ModelAlias, OpenAICompatProvider,
                                    ProviderKey, ScopedErrorRule)
from cliproxyd.logging import fingerprint
from cliproxyd.modelnames import compile_exclusions, is_excluded
from cliproxyd.proxies import INHERIT, ProxySetting

if TYPE_CHECKING:
    from cliproxyd.credentials.authfiles import OAuthAccount

USER_AGENT = f"cliproxyd/{__version__}"


@frozen
class Route:
    """
    One model name a credential answers to.

    @ivar name: what clients ask for (with the credential's prefix, if any).
    @ivar state_key: the model the credential's cooldown state is kept
        under: the name without the prefix.
    @ivar upstream: the upstream model names, in config order; more than
        one makes an alias pool, whose state is kept per member.
    """

    name: str
    state_key: str
    upstream: tuple[str, ...]

    @property
    def pooled(self) -> bool:
        return len(self.upstream) > 1


class ScopedErrors:
    """
    A credential's C{request-scoped-errors} rules, compiled at load: by
    status, each rule's substrings and compiled regular expressions. The
    first rule (in config order) whose status equals the error's and one of
    whose patterns is found in the error body decides; a body is only looked
    at when some rule has its status.
    """

    __slots__ = ("_by_status",)

    def __init__(self, rules: Iterable[ScopedErrorRule]) -> None:
        by_status: dict[int, list[tuple[tuple[str, ...], tuple[re.Pattern[str], ...], str]]] = {}
        for rule in rules:
            compiled = tuple(re.compile(p) for p in rule.match_regex)
            by_status.setdefault(rule.status, []).append((rule.match, compiled, rule.action))
        self._by_status = by_status

    def __bool__(self) -> bool:
        return bool(self._by_status)

    def has_status(self, status: int) -> bool:
        return status in self._by_status

    def action(self, status: int, body: str) -> str | None:
        """The action of the first rule that matches, or C{None}."""
        for match, regexes, action in self._by_status.get(status, ()):
            if any(m in body for m in match) or any(r.search(body) for r in regexes):
                return action
        return None


NO_SCOPED_ERRORS = ScopedErrors(())


@frozen
class Credential:
    """
    One upstream key, or one OAuth account (C{account}, whose tokens the
    refresher replaces). Secrets are kept out of C{repr} so they never reach a log.
    """

    id: str
    provider: str
    kind: str
    api_key: str = field(repr=False)
    base_url: str
    prefix: str = ""
    priority: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    routes: tuple[Route, ...] = ()
    disabled: bool = False
    #: per-credential overrides of request-retry and disable-cooling (None: the global value)
    request_retry: int | None = None
    disable_cooling: bool | None = None
    #: weight: its share under weighted-round-robin (0: never picked by that strategy)
    weight: int = DEFAULT_WEIGHT
    #: request-scoped-errors: rules that decide stop-or-continue and cooling for some errors
    scoped_errors: ScopedErrors = field(default=NO_SCOPED_ERRORS, repr=False, eq=False)
    #: the Google Cloud project a Gemini CLI account's requests name ("": the file's first)
    project: str = ""
    account: OAuthAccount | None = field(default=None, repr=False, eq=False)
    #: how its upstream calls leave: the key's or file's proxy-url, else the provider's, else the
    #: global one; inherit means the environment's proxies (L{cliproxyd.outbound.OutboundClients})
    proxy: ProxySetting = INHERIT
    #: a Claude credential's own cloak settings (a claude-api-key's cloak block, an auth file's
    #: cloak_* fields); None when it has none
    cloak: CloakConfig | None = None
    #: rpm, tpm, rpd: local limits (L{cliproxyd.conductor.pacing}); empty: none
    limits: LocalLimits = field(factory=LocalLimits)

    @property
    def fingerprint(self) -> str:
        """How logs and the management API name this credential: its file, or a hash of its key."""
        if self.account is not None:
            return self.account.name
        return fingerprint(self.api_key)

    @property
    def secret(self) -> str:
        """What this credential authenticates with right now (the current access token of an account)."""
        return self.account.bearer if self.account is not None else self.api_key

    def request_headers(self) -> dict[bytes, list[bytes]]:
        """The headers every upstream request of this credential carries, but the key (its executor adds that)."""
        return {
            b"user-agent": [USER_AGENT.encode()],
            b"content-type": [b"application/json"],
            **self.custom_headers(),
        }

    def custom_headers(self) -> dict[bytes, list[bytes]]:
        """
        The entry's (or auth file's) own C{headers}, which win over every
        built-in one, as in CLIProxyAPI; C{$NAME} values are left to the
        executor, which copies them from the client's request.
        """
        return {name.lower().encode("latin-1"): [value.encode("latin-1")]
                for name, value in self.headers if not value.startswith("$")}


def _stable_id(kind: str, name: str, *parts: str) -> str:
    digest = hashlib.sha256("\x00".join((kind, *parts)).encode()).hexdigest()[:12]
    return f"{kind}:{name}:{digest}"


def build_routes(
    models: Iterable[tuple[str, str]], prefix: str, force_prefix: bool, excluded: Iterable[str] = ()
) -> tuple[Route, ...]:
    """
    Routes from C{(upstream name, client name)} pairs.

    Pairs sharing a client name form an alias pool, in order. A model is
    left out when C{excluded} matches its upstream or its client name.
    With a prefix every name is also served as C{prefix/name}, and only
    that way when C{force_prefix}.
    """
    exclusions = compile_exclusions(excluded)
    pools: dict[str, list[str]] = {}
    for upstream, alias in models:
        if is_excluded(exclusions, upstream) or is_excluded(exclusions, alias):
            continue
        members = pools.setdefault(alias, [])
        if upstream not in members:
            members.append(upstream)
    routes = []
    for alias, upstream in pools.items():
        names = []
        if prefix:
            names.append(f"{prefix}/{alias}")
        if not prefix or not force_prefix:
            names.append(alias)
        routes.extend(Route(name, alias, tuple(upstream)) for name in names)
    return tuple(routes)


def oauth_alias_models(models: Iterable[str], aliases: Iterable[ModelAlias]) -> list[tuple[str, str]]:
    """
    C{oauth-model-alias} for one channel: each model an entry names is served
    under the entry's alias instead of its own name, or beside it with
    C{fork}. Returns C{(upstream, client name)} pairs for L{build_routes}.
    """
    table: dict[str, list[ModelAlias]] = {}
    for entry in aliases:
        table.setdefault(entry.name.lower(), []).append(entry)
    out = []
    for model in models:
        entries = table.get(model.lower())
        if not entries:
            out.append((model, model))
            continue
        if any(e.fork for e in entries):
            out.append((model, model))
        out.extend((model, e.alias) for e in entries)
    return out


def _compat_credentials(provider: OpenAICompatProvider, force_prefix: bool,
                        proxy: ProxySetting = INHERIT) -> list[Credential]:
    routes = build_routes(
        ((m.name, m.route_name) for m in provider.models),
        provider.prefix,
        force_prefix,
        provider.excluded_models,
    )
    scoped = ScopedErrors(provider.request_scoped_errors)
    return [
        Credential(
            id=_stable_id("openai-compatibility", provider.name, entry.api_key, provider.base_url),
            provider=provider.name,
            kind="openai-compatibility",
            api_key=entry.api_key,
            base_url=provider.base_url,
            prefix=provider.prefix,
            priority=provider.priority,
            headers=provider.headers,
            routes=routes,
            disabled=provider.disabled,
            request_retry=provider.request_retry,
            disable_cooling=provider.disable_cooling,
            weight=entry.weight,
            scoped_errors=scoped,
            proxy=entry.proxy_url.over(provider.proxy_url.over(proxy)),
            limits=entry.limits,
        )
        for entry in provider.api_key_entries
    ]


#: xAI's image models (CLIProxyAPI's built-in three), served by xAI accounts and keys on /v1/images/* only.
XAI_IMAGE_MODELS = ("grok-imagine-image", "grok-imagine-image-quality", "grok-imagine-image-2.0")


@frozen
class APIKeyProvider:
    """What an API-key list of the config stands for: a provider, its public API and its default models."""

    kind: str  # the config key: claude-api-key, ...
    provider: str
    base_url: str
    #: the models a key serves when its entry lists none (an entry's models replace these)
    models: tuple[str, ...]


API_KEY_PROVIDERS = (
    APIKeyProvider("claude-api-key", "claude", "https://api.anthropic.com",
                   ("claude-opus-4-1", "claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5")),
    APIKeyProvider("gemini-api-key", "gemini", "https://generativelanguage.googleapis.com",
                   ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview")),
    APIKeyProvider("codex-api-key", "codex", "https://api.openai.com/v1",
                   ("gpt-5", "gpt-5-codex", "gpt-5-mini", "gpt-5.1", "gpt-5.1-codex")),
    APIKeyProvider("xai-api-key", "xai", "https://api.x.ai/v1",
                   ("grok-4.6", "grok-4.5", "grok-4.3", "grok-4.20-0309-reasoning", "grok-4.20-0309-non-reasoning",
                    "grok-3-mini", "grok-3-mini-fast", *XAI_IMAGE_MODELS)),
    # Vertex AI's express mode (an API key, no project), or a Vertex-compatible gateway's base-url.
    APIKeyProvider("vertex-api-key", "vertex", "https://aiplatform.googleapis.com",
                   ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview",
                    "gemini-3-flash-preview")),
    # Google's Interactions API (POST /v1beta/interactions), CLIProxyAPI's "gemini-interactions" provider.
    APIKeyProvider("interactions-api-key", "gemini-interactions", "https://generativelanguage.googleapis.com",
                   ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview",
                    "gemini-3-flash-preview")),
)


def _api_key_credential(spec: APIKeyProvider, entry: ProviderKey, force_prefix: bool,
                        proxy: ProxySetting = INHERIT) -> Credential:
    models = [(m.name, m.route_name) for m in entry.models] or [(m, m) for m in spec.models]
    base_url = entry.base_url or spec.base_url
    return Credential(
        id=_stable_id(spec.kind, spec.provider, entry.api_key, base_url),
        provider=spec.provider,
        kind=spec.kind,
        api_key=entry.api_key,
        base_url=base_url,
        prefix=entry.prefix,
        priority=entry.priority,
        headers=entry.headers,
        routes=build_routes(models, entry.prefix, force_prefix, entry.excluded_models),
        request_retry=entry.request_retry,
        disable_cooling=entry.disable_cooling,
        weight=entry.weight,
        scoped_errors=ScopedErrors(entry.request_scoped_errors),
        proxy=entry.proxy_url.over(proxy),
        cloak=entry.cloak,
        limits=entry.limits,
    )


def credentials_from_config(config: Config) -> tuple[Credential, ...]:
    """Every credential the config describes, in config order."""
    out: list[Credential] = []
    for spec in API_KEY_PROVIDERS:
        entries = getattr(config, spec.kind.replace("-", "_"))
        out.extend(_api_key_credential(spec, e, config.force_model_prefix, config.proxy_url) for e in entries)
    for provider in config.openai_compatibility:
        out.extend(_compat_credentials(provider, config.force_model_prefix, config.proxy_url))
    return tuple(out)
