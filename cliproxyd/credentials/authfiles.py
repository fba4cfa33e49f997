"""
OAuth credentials: one JSON file per account in C{auth-dir}, with
CLIProxyAPI's field names, so an existing CLIProxyAPI auth directory works
unchanged and both can read each other's files.

An L{OAuthAccount} is the mutable part of such a credential (its tokens,
which the refresher replaces) plus the file's whole JSON, so that writing a
refreshed token back keeps every field we do not know. Everything routing
needs is computed once per file load into an immutable L{Credential}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from datetime import datetime, timezone
from typing import AbstractSet, Any, Iterable, Mapping

from attrs import define, evolve, field

from cliproxyd import jsontext
from cliproxyd.config.model import (CLOAK_MODES, MAX_WEIGHT, SCOPED_ERROR_ACTIONS, CloakConfig, Config, LocalLimits,
                                    ScopedErrorRule)
from cliproxyd.credentials.model import XAI_IMAGE_MODELS, Credential, ScopedErrors, build_routes, oauth_alias_models
from cliproxyd.proxies import ProxySetting, ProxyURLError, parse_proxy_setting

#: The credential kind (and provider) of each file C{type}; C{gemini} files are Gemini CLI accounts.
OAUTH_TYPES = {
    "claude": "claude",
    "codex": "codex",
    "gemini": "gemini-cli",
    "gemini-cli": "gemini-cli",
    "antigravity": "antigravity",
    "xai": "xai",
    "kimi": "kimi",
    "vertex": "vertex",
    # Accounts of providers CLIProxyAPI has since dropped; their files still work here.
    "qwen": "qwen",
    "iflow": "iflow",
}

#: The image models a Codex account serves (CLIProxyAPI's built-in two; not a free one's), made on
#: /v1/images/* through the backend's image_generation tool.
CODEX_IMAGE_MODELS = ("gpt-image-1.5", "gpt-image-2")

#: The models an OAuth account serves (before C{oauth-model-alias} and exclusions).
OAUTH_MODELS: dict[str, tuple[str, ...]] = {
    "claude": ("claude-opus-4-1", "claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5"),
    "codex": ("gpt-5", "gpt-5-codex", "gpt-5-codex-mini", "gpt-5.1", "gpt-5.1-codex", "gpt-5.1-codex-max",
              *CODEX_IMAGE_MODELS),
    "gemini-cli": ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview"),
    "antigravity": ("gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview", "gemini-3-flash-preview",
                    "claude-sonnet-4-5", "claude-sonnet-4-5-thinking", "claude-opus-4-5-thinking"),
    "xai": ("grok-4.6", "grok-build-0.1", "grok-4.5", "grok-4.3", "grok-4.20-0309-reasoning",
            "grok-4.20-0309-non-reasoning", "grok-3-mini", "grok-3-mini-fast", *XAI_IMAGE_MODELS),
    # Kimi's upstream names drop the "kimi-" (executors.accounts.kimi_upstream_model).
    "kimi": ("kimi-k2", "kimi-k2-thinking", "kimi-k2.5", "kimi-k2.6", "kimi-k2.7-code", "kimi-k2.7-code-highspeed"),
    "vertex": ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview",
               "gemini-3-flash-preview"),
    "qwen": ("coder-model", "qwen3-coder-plus", "qwen3-coder-flash"),
    "iflow": ("qwen3-coder-plus", "qwen3-max", "qwen3-vl-plus", "qwen3-max-preview", "glm-4.6", "kimi-k2",
              "deepseek-v3.2", "deepseek-v3.1", "deepseek-r1", "deepseek-v3", "qwen3-32b",
              "qwen3-235b-a22b-thinking-2507", "qwen3-235b-a22b-instruct", "qwen3-235b"),
}

XAI_API_BASE_URL = "https://api.x.ai/v1"
XAI_CLI_BASE_URL = "https://cli-chat-proxy.grok.com/v1"
#: the Vertex location of a service-account file that names none
DEFAULT_VERTEX_LOCATION = "us-central1"

#: The models a Codex account serves by its ChatGPT plan (its id_token's
#: C{chatgpt_plan_type}), as CLIProxyAPI lists them; an account whose plan is
#: not known serves C{OAUTH_MODELS["codex"]}.
CODEX_PLAN_MODELS: dict[str, tuple[str, ...]] = {
    # Free accounts make no images (CLIProxyAPI skips them for image requests).
    "free": ("gpt-5.4-mini", "gpt-5.5", "gpt-5.6-terra", "gpt-5.6-luna", "codex-auto-review"),
    "team": ("gpt-5.4", "gpt-5.4-mini", "gpt-5.5", "gpt-5.6-sol", "gpt-5.6-terra", "gpt-5.6-luna",
             "codex-auto-review", *CODEX_IMAGE_MODELS),
    "plus": ("gpt-5.3-codex-spark", "gpt-5.4", "gpt-5.4-mini", "gpt-5.5", "gpt-5.6-sol", "gpt-5.6-terra",
             "gpt-5.6-luna", "codex-auto-review", *CODEX_IMAGE_MODELS),
}
CODEX_PLAN_MODELS["pro"] = CODEX_PLAN_MODELS["plus"]
# Business and Go accounts get the Team list.
CODEX_PLAN_MODELS["business"] = CODEX_PLAN_MODELS["go"] = CODEX_PLAN_MODELS["team"]

#: Where each OAuth upstream is, unless a file's C{base_url} says otherwise.
OAUTH_BASE_URLS: dict[str, tuple[str, ...]] = {
    "claude": ("https://api.anthropic.com",),
    "codex": ("https://chatgpt.com/backend-api/codex",),
    "gemini-cli": ("https://cloudcode-pa.googleapis.com",),
    # Antigravity's daily endpoint first, then its sandbox twin when that fails.
    "antigravity": ("https://daily-cloudcode-pa.googleapis.com", "https://daily-cloudcode-pa.sandbox.googleapis.com"),
    # Grok CLI's chat proxy, unless the file says using_api: then the public API.
    "xai": (XAI_CLI_BASE_URL, XAI_API_BASE_URL),
    "kimi": ("https://api.kimi.com/coding",),
    # {location}-aiplatform.googleapis.com, from the file's location (vertex_base_url).
    "vertex": ("https://us-central1-aiplatform.googleapis.com",),
    # Or the file's resource_url (qwen_base_url).
    "qwen": ("https://portal.qwen.ai/v1",),
    "iflow": ("https://apis.iflow.cn/v1",),
}

_EXPIRY_KEYS = ("expired", "expire", "expires_at", "expiresAt", "expiry", "expires")
_LAST_REFRESH_KEYS = ("last_refresh", "lastRefresh", "last_refreshed_at")


class AuthFileError(Exception):
    """A credential file that cannot be used; C{str()} says why."""


def parse_time(value: Any) -> float | None:
    """An instant in any form CLIProxyAPI writes: RFC 3339, C{YYYY-MM-DD HH:MM:SS} (UTC), unix s or ms."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value / 1000.0 if value > 1e11 else float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return parse_time(int(text))
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def format_time(seconds: float) -> str:
    """RFC 3339 in UTC, as CLIProxyAPI writes C{expired} and C{last_refresh}."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (it came straight from the token endpoint over TLS); {} if unreadable."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def codex_plan(data: dict[str, Any]) -> str:
    """A Codex file's ChatGPT plan (lower case), from its C{id_token}'s claims; "" when it has none."""
    token = data.get("id_token")
    auth = jwt_claims(token).get("https://api.openai.com/auth") if isinstance(token, str) else None
    plan = auth.get("chatgpt_plan_type") if isinstance(auth, dict) else None
    return plan.strip().lower() if isinstance(plan, str) else ""


def account_models(account: OAuthAccount) -> tuple[str, ...]:
    """The models an account serves before aliases and exclusions: a Codex account's by its plan."""
    if account.type == "codex":
        plan_models = CODEX_PLAN_MODELS.get(codex_plan(account.data))
        if plan_models is not None:
            return plan_models
    return OAUTH_MODELS[account.type]


def _first(data: dict[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        if key in data:
            return data[key]
    return None


@define(eq=False)
class OAuthAccount:
    """
    One account's tokens and its file. Mutable: the refresher replaces the
    tokens; executors read C{access_token} on every request.
    """

    path: str
    type: str  # claude | codex | gemini-cli | antigravity
    data: dict[str, Any] = field(repr=False)
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float | None = None
    last_refresh: float | None = None
    #: the SHA-256 of the file as last read or written, to tell our own writes from an operator's edits
    digest: str = ""
    #: a Vertex service account's private key (loaded once, when the file is read), which signs
    #: the assertions its access tokens are bought with
    signing_key: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def email(self) -> str:
        return str(self.data.get("email") or "")

    @property
    def project_id(self) -> str:
        return str(self.data.get("project_id") or "")

    @property
    def account_id(self) -> str:
        return str(self.data.get("account_id") or "")

    @property
    def bearer(self) -> str:
        """
        What the account's upstream requests authenticate with: the access
        token, but for an iFlow account its C{api_key}, which the iFlow
        login (and each refresh) fetches with the access token.
        """
        if self.type == "iflow":
            return str(self.data.get("api_key") or "")
        return self.access_token

    @property
    def can_refresh(self) -> bool:
        """Whether new access tokens can be had: a refresh token, or a service account's key."""
        return bool(self.refresh_token) or self.signing_key is not None

    @property
    def writes_tokens(self) -> bool:
        """
        Whether refreshed tokens are written back to the file. A Vertex
        service-account file is the operator's key as Google issued it:
        its short-lived tokens stay in memory, and a restart buys a new one.
        """
        return self.type != "vertex"

    @property
    def service_account(self) -> dict[str, Any]:
        sa = self.data.get("service_account")
        return sa if isinstance(sa, dict) else {}

    @property
    def vertex_project(self) -> str:
        return str(self.data.get("project_id") or self.data.get("project")
                   or self.service_account.get("project_id") or "").strip()

    @property
    def vertex_location(self) -> str:
        return str(self.data.get("location") or "").strip() or DEFAULT_VERTEX_LOCATION

    @property
    def _token_holder(self) -> dict[str, Any]:
        """Where the file keeps its tokens: a nested C{token} object (Gemini CLI files) or the top level."""
        nested = self.data.get("token")
        if isinstance(nested, dict) and "access_token" not in self.data:
            return nested
        return self.data

    def apply_grant(self, access_token: str, refresh_token: str, expires_in: float | None,
                    now: float, id_token: str = "", fields: Mapping[str, Any] | None = None) -> None:
        """
        Take a refreshed token, in memory and in the JSON that will be
        written back; C{fields} are other top-level fields the refresh
        brought (Qwen's C{resource_url}, iFlow's C{api_key}).
        """
        if fields:
            self.data.update(fields)
        self.access_token = access_token
        self.refresh_token = refresh_token or self.refresh_token
        self.expires_at = now + expires_in if expires_in else None
        self.last_refresh = now
        holder = self._token_holder
        holder["access_token"] = self.access_token
        holder["refresh_token"] = self.refresh_token
        if id_token:
            self.data["id_token"] = id_token
        if self.expires_at is not None:
            expiry = format_time(self.expires_at)
            if holder is self.data:
                self.data["expired"] = expiry
            else:
                holder["expiry"] = expiry
        if "expires_in" in self.data and expires_in:
            self.data["expires_in"] = int(expires_in)
        if "timestamp" in self.data:
            self.data["timestamp"] = int(now * 1000)
        self.data["last_refresh"] = format_time(now)

    def to_bytes(self) -> bytes:
        return (json.dumps(self.data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bool(data: dict[str, Any], *keys: str) -> bool | None:
    value = _first(data, keys)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise AuthFileError(f"{keys[0]} must be true or false, not {value!r}")


def _int(data: dict[str, Any], *keys: str) -> int | None:
    value = _first(data, keys)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise AuthFileError(f"{keys[0]} must be a number, not {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AuthFileError(f"{keys[0]} must be a number, not {value!r}") from None


def parse_account(path: str, raw: bytes) -> OAuthAccount | None:
    """
    The account in one credential file, or None for a file that is not an
    OAuth credential we serve (no C{type}, or another provider's).

    @raise AuthFileError: the file is meant for us but cannot be used.
    """
    try:
        data = jsontext.loads(raw)  # strict and never recursive, however deep the file nests
    except (ValueError, UnicodeDecodeError) as e:
        raise AuthFileError(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise AuthFileError("not a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str) or not kind.strip():
        return None
    provider = OAUTH_TYPES.get(kind.strip().lower())
    if provider is None:
        return None
    nested = data.get("token") if isinstance(data.get("token"), dict) else {}
    access = data.get("access_token") or nested.get("access_token") or ""
    refresh = data.get("refresh_token") or nested.get("refresh_token") or ""
    if not isinstance(access, str) or not isinstance(refresh, str):
        raise AuthFileError("access_token and refresh_token must be strings")
    signing_key = None
    if provider == "vertex":
        signing_key = _vertex_key(data)
    elif provider == "iflow" and not refresh:
        if not isinstance(data.get("api_key"), str) or not data["api_key"]:
            raise AuthFileError("has neither api_key nor refresh_token")
    elif not access and not refresh:
        raise AuthFileError("has neither access_token nor refresh_token")
    expires = parse_time(_first(data, _EXPIRY_KEYS))
    if expires is None:
        expires = parse_time(_first(nested, _EXPIRY_KEYS))
    if expires is None and "timestamp" in data and "expires_in" in data:
        started, lifetime = parse_time(data["timestamp"]), _int(data, "expires_in")
        if started is not None and lifetime:
            expires = started + lifetime
    return OAuthAccount(
        path=path,
        type=provider,
        data=data,
        access_token=access,
        refresh_token=refresh,
        expires_at=expires,
        last_refresh=parse_time(_first(data, _LAST_REFRESH_KEYS)),
        digest=digest(raw),
        signing_key=signing_key,
    )


def _vertex_key(data: dict[str, Any]) -> Any:
    """
    The private key of a Vertex file's C{service_account} (a Google
    service-account key, as C{vertex/import} stores it), loaded.

    @raise AuthFileError: no usable service account, or no project.
    """
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    sa = data.get("service_account")
    if not isinstance(sa, dict):
        raise AuthFileError("service_account must be the service account's key object")
    for name in ("client_email", "private_key"):
        if not isinstance(sa.get(name), str) or not sa[name].strip():
            raise AuthFileError(f"service_account.{name} must be a non-empty string")
    token_uri = sa.get("token_uri")
    if token_uri is not None and (not isinstance(token_uri, str) or not token_uri.startswith(("http://", "https://"))):
        raise AuthFileError("service_account.token_uri must be an http(s) URL")
    if not str(data.get("project_id") or data.get("project") or sa.get("project_id") or "").strip():
        raise AuthFileError("has no project_id (nor service_account.project_id)")
    try:
        # Files written by hand sometimes carry the PEM's line breaks as the two characters \n.
        key = load_pem_private_key(sa["private_key"].replace("\\n", "\n").encode(), password=None)
    except (ValueError, TypeError) as e:
        raise AuthFileError(f"service_account.private_key is not a PEM private key: {e}") from None
    if not isinstance(key, RSAPrivateKey):
        raise AuthFileError("service_account.private_key must be an RSA key (Google signs with RS256)")
    return key


def _strings(data: dict[str, Any], *keys: str) -> tuple[str, ...]:
    value = _first(data, keys)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthFileError(f"{keys[0]} must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def _weight(data: dict[str, Any]) -> int:
    """C{weight}: 1 when absent or empty, 0 when 0 or less, an integer up to 1,000,000 (a number or its digits)."""
    value = data.get("weight")
    if value is None or (isinstance(value, str) and not value.strip()):
        return 1
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise AuthFileError(f"weight must be an integer, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise AuthFileError(f"weight must be an integer, not {value!r}")
    if value > MAX_WEIGHT:
        raise AuthFileError(f"weight must be at most {MAX_WEIGHT:,}, not {value}")
    return max(value, 0)


def _scoped_rules(data: dict[str, Any]) -> tuple[ScopedErrorRule, ...] | None:
    """A file's own C{request_scoped_errors} (or C{request-scoped-errors}), or None when it has none."""
    raw = _first(data, ("request_scoped_errors", "request-scoped-errors"))
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise AuthFileError("request_scoped_errors must be a list of rules")
    rules = []
    for i, item in enumerate(raw):
        where = f"request_scoped_errors[{i}]"
        if not isinstance(item, dict):
            raise AuthFileError(f"{where} must be an object")
        status = item.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise AuthFileError(f"{where}.status must be an HTTP status (100 to 599)")
        match, regexes = item.get("match") or [], item.get("match-regexr") or item.get("match_regexr") or []
        if not isinstance(match, list) or not all(isinstance(m, str) for m in match):
            raise AuthFileError(f"{where}.match must be a list of strings")
        if not isinstance(regexes, list) or not all(isinstance(m, str) for m in regexes):
            raise AuthFileError(f"{where}.match-regexr must be a list of strings")
        for pattern in regexes:
            try:
                re.compile(pattern)
            except re.error as e:
                raise AuthFileError(f"{where}.match-regexr: {pattern!r} is not a valid regular expression: {e}") from None
        action = str(item.get("action") or "").strip().lower()
        if action not in SCOPED_ERROR_ACTIONS:
            raise AuthFileError(f"{where}.action must be one of {', '.join(SCOPED_ERROR_ACTIONS)}")
        if not any(match) and not any(regexes):
            raise AuthFileError(f"{where} needs at least one match or match-regexr pattern")
        rules.append(ScopedErrorRule(status, action, tuple(m for m in match if m), tuple(p for p in regexes if p)))
    return tuple(rules)


def credential_for(account: OAuthAccount, config: Config) -> Credential:
    """The immutable routing view of an account, under the running config."""
    data = account.data
    prefix = str(data.get("prefix") or "").strip().strip("/")
    if "/" in prefix:
        raise AuthFileError(f"prefix must be one path segment, not {prefix!r}")
    base_url = data.get("base_url")
    if base_url is not None and (not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))):
        raise AuthFileError(f"base_url must be an http(s) URL, not {base_url!r}")
    proxy = account_proxy(account, config)
    channel = account.type
    aliases = dict(config.oauth_model_alias).get(channel, ())
    excluded = dict(config.oauth_excluded_models).get(channel, ()) + _strings(data, "excluded_models", "excluded-models")
    models = oauth_alias_models(account_models(account), aliases)
    # The file's own rules, else its channel's oauth-request-scoped-errors (as CLIProxyAPI looks them up).
    scoped = _scoped_rules(data)
    if not scoped:
        scoped = dict(config.oauth_request_scoped_errors).get(channel, ())
    retry = _int(data, "request_retry", "request-retry")
    return Credential(
        id=f"{channel}:{account.name}",
        provider=channel,
        kind=channel,
        api_key="",
        base_url=account_base_url(account, base_url.rstrip("/") if base_url else ""),
        prefix=prefix,
        priority=_int(data, "priority") or 0,
        routes=build_routes(models, prefix, config.force_model_prefix, excluded),
        disabled=bool(_bool(data, "disabled")),
        request_retry=None if retry is None or retry < 0 else retry,
        disable_cooling=_bool(data, "disable_cooling", "disable-cooling"),
        weight=_weight(data),
        scoped_errors=ScopedErrors(scoped),
        headers=_file_headers(data),
        account=account,
        proxy=proxy,
        project=account.vertex_project if channel == "vertex" else "",
        cloak=_file_cloak(data) if channel == "claude" else None,
        limits=_limits(data),
    )


def account_base_url(account: OAuthAccount, base_url: str) -> str:
    """
    Where an account's requests go: its file's C{base_url} (without a
    trailing slash), else its provider's, with these files' own rules:

    - xai: Grok CLI's chat proxy, unless C{using_api} is true (then the file's
      C{base_url}, else the public API). The public API's address, which
      CLIProxyAPI's login writes as C{base_url}, does not count as a choice.
    - qwen: the file's C{resource_url} (a host, given C{https://} and C{/v1}).
    - vertex: C{https://LOCATION-aiplatform.googleapis.com} (C{global}: no
      location in the host).
    """
    data, kind = account.data, account.type
    if kind == "xai":
        using_api = data.get("using_api")
        if isinstance(using_api, str):
            using_api = using_api.strip().lower() == "true"
        if using_api:
            return base_url or XAI_API_BASE_URL
        return base_url if base_url and base_url != XAI_API_BASE_URL else XAI_CLI_BASE_URL
    if base_url:
        return base_url
    if kind == "qwen" and isinstance(data.get("resource_url"), str) and data["resource_url"].strip():
        resource = data["resource_url"].strip().rstrip("/")
        if not resource.lower().startswith(("http://", "https://")):
            resource = "https://" + resource
        return resource if resource.lower().endswith("/v1") else resource + "/v1"
    if kind == "vertex":
        location = account.vertex_location
        if location == "global":
            return "https://aiplatform.googleapis.com"
        return f"https://{location}-aiplatform.googleapis.com"
    return OAUTH_BASE_URLS[kind][0]



def _file_cloak(data: dict[str, Any]) -> CloakConfig | None:
    """
    A Claude file's own cloak settings, as CLIProxyAPI reads them from its
    metadata: C{cloak_mode}, C{cloak_strict_mode}, C{cloak_sensitive_words}
    (a comma list), C{cloak_cache_user_id}; None when the file sets none.
    """
    mode = str(data.get("cloak_mode") or "").strip().lower()
    if mode and mode not in CLOAK_MODES:
        raise AuthFileError(f"cloak_mode must be one of {', '.join(CLOAK_MODES)}, not {mode!r}")
    strict = _bool(data, "cloak_strict_mode")
    words = data.get("cloak_sensitive_words")
    if words is not None and not isinstance(words, str):
        raise AuthFileError(f"cloak_sensitive_words must be a comma list, not {words!r}")
    cache = _bool(data, "cloak_cache_user_id")
    if not mode and strict is None and not words and cache is None:
        return None
    return CloakConfig(mode=mode, strict_mode=bool(strict),
                       sensitive_words=tuple(w.strip() for w in (words or "").split(",") if w.strip()),
                       cache_user_id=cache)



def _limits(data: dict[str, Any]) -> LocalLimits:
    """The file's C{rpm}, C{tpm} and C{rpd}: positive numbers, or absent."""
    values = {}
    for key in ("rpm", "tpm", "rpd"):
        value = _int(data, key)
        if value is not None and value <= 0:
            raise AuthFileError(f"{key} must be more than 0 (leave it out for no limit), not {value}")
        values[key] = value
    return LocalLimits(**values)


def account_proxy(account: OAuthAccount, config: Config) -> ProxySetting:
    """
    How an account's calls leave (upstream requests, token refreshes): its
    file's C{proxy_url}, else the config's C{proxy-url}, else the environment.

    @raise AuthFileError: a C{proxy_url} that is not a usable proxy (the
        message shows no password).
    """
    value = account.data.get("proxy_url")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise AuthFileError("proxy_url must be a string")
    try:
        return parse_proxy_setting(value).over(config.proxy_url)
    except ProxyURLError as e:
        raise AuthFileError(f"proxy_url: {e}") from None


def _file_headers(data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """An auth file's C{headers}: extra request headers of its account, as entries' C{headers} are."""
    raw = data.get("headers")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise AuthFileError("headers must be an object of header names and string values")
    out = []
    for name, value in raw.items():
        if not isinstance(value, str) or not name.strip():
            raise AuthFileError("headers must be an object of header names and string values")
        if any(c in name + value for c in "\r\n"):
            raise AuthFileError(f"headers.{name.strip()} must not contain a line break")
        if value.strip():
            out.append((name.strip(), value.strip()))
    return tuple(out)


@define
class AuthDirScan:
    """What one read of the auth directory found."""

    accounts: dict[str, OAuthAccount] = field(factory=dict)  # by file name
    #: file name -> why it was skipped
    problems: dict[str, str] = field(factory=dict)
    #: files whose bytes match an account already loaded (L{read_auth_dir})
    unchanged: set[str] = field(factory=set)


def is_auth_file_name(name: str) -> bool:
    """Whether a file of an auth directory called C{name} is taken for a credential file: C{*.json}, not hidden."""
    return name.endswith(".json") and not name.startswith(".")


def daemon_files(config: Config) -> frozenset[str]:
    """
    The names in C{config}'s auth-dir that are the daemon's own files and
    never credentials: its state file and usage file, when they are there
    (as they are by default). Scans, the reload poll and the management API leave them out.
    """
    if not config.auth_dir or not config.state_path:
        return frozenset()
    auth_dir = os.path.abspath(config.auth_dir)
    # The usage counters' file (usage-statistics-enabled) is kept beside the state file.
    own = (os.path.abspath(p) for p in (config.state_path, config.usage_path))
    return frozenset(os.path.basename(p) for p in own if os.path.dirname(p) == auth_dir)


def auth_file_names(directory: str, skip: AbstractSet[str] = frozenset()) -> list[str]:
    """
    The credential files of C{directory}: C{*.json} at its top, not hidden,
    not in C{skip} (L{daemon_files}), sorted (OSError if unlistable).
    """
    return sorted(n for n in os.listdir(directory) if is_auth_file_name(n) and n not in skip)


def read_auth_dir(directory: str, known: Mapping[str, str] | None = None,
                  skip: AbstractSet[str] = frozenset()) -> AuthDirScan:
    """
    Read every credential file of C{directory} (L{auth_file_names}; blocking: run it
    off the reactor thread). C{known} maps file names to the digests of the
    accounts already loaded: a file whose bytes still have that digest is
    listed in C{unchanged} and not parsed again. This touches no account
    object, so it is safe in a thread while the refresher updates tokens.
    """
    scan = AuthDirScan()
    known = known or {}
    try:
        names = auth_file_names(directory, skip)
    except FileNotFoundError:
        return scan
    except OSError as e:
        scan.problems[directory] = f"cannot list the directory: {e.strerror}"
        return scan
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except IsADirectoryError:
            continue
        except OSError as e:
            scan.problems[name] = f"cannot read: {e.strerror}"
            continue
        if name in known and known[name] == digest(raw):
            scan.unchanged.add(name)
            continue
        try:
            account = parse_account(path, raw)
        except AuthFileError as e:
            scan.problems[name] = str(e)
            continue
        if account is not None:
            scan.accounts[name] = account
    return scan


def merge_scan(scan: AuthDirScan, previous: Mapping[str, OAuthAccount]) -> AuthDirScan:
    """
    C{scan} with its unchanged files given back their C{previous} accounts
    (tokens and all), and a file that was good and is now broken (say, half
    written by an editor) keeping its last good account until it is good
    again. Runs on the reactor thread, where accounts are owned.
    """
    accounts = dict(scan.accounts)
    for name in scan.unchanged | (scan.problems.keys() & previous.keys()):
        if name in previous:
            accounts[name] = previous[name]
    return AuthDirScan(dict(sorted(accounts.items())), dict(scan.problems))


def scan_auth_dir(directory: str, previous: Mapping[str, OAuthAccount] | None = None) -> AuthDirScan:
    """L{read_auth_dir} and L{merge_scan} in one, where no refresh can run meanwhile (start-up, tests)."""
    previous = previous or {}
    return merge_scan(read_auth_dir(directory, {n: a.digest for n, a in previous.items()}), previous)


def oauth_credentials(accounts: dict[str, OAuthAccount], config: Config) -> tuple[tuple[Credential, ...], dict[str, str]]:
    """Credentials for the accounts (in file-name order) and the files whose settings are unusable."""
    creds, problems = [], {}
    for name in sorted(accounts):
        try:
            cred = credential_for(accounts[name], config)
        except AuthFileError as e:
            problems[name] = str(e)
            continue
        creds.extend(project_credentials(cred) if config.quota_exceeded.switch_project else (cred,))
    return tuple(creds), problems


def project_credentials(cred: Credential) -> tuple[Credential, ...]:
    """
    C{quota-exceeded.switch-project} for a Gemini CLI account whose
    C{project_id} lists several projects (C{"p1,p2"}): one credential per
    project, so a quota 429 on one project cools only that one and the
    request moves on to the next project (and the other accounts). The
    first keeps the account's id; the others are C{ID#PROJECT}. They share
    the account and its tokens. Any other credential is returned as it is.
    """
    account = cred.account
    if account is None or cred.kind != "gemini-cli":
        return (cred,)
    projects = list(dict.fromkeys(p.strip() for p in account.project_id.split(",") if p.strip()))
    if len(projects) < 2:
        return (cred,)
    return tuple(evolve(cred, id=cred.id if i == 0 else f"{cred.id}#{p}", project=p) for i, p in enumerate(projects))
