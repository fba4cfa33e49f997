"""
CLIProxyAPI's management routes (C{internal/api/server_management.go} at
its HEAD), and what cliproxyd says about the ones it does not serve.

A tool written for CLIProxyAPI (its Management Center first of all) that
calls a route cliproxyd has no use for must learn why, and what to do
instead, rather than meet a bare 404: L{refusal} gives that answer, a 501
whose message says what cliproxyd does in its place. It is asked only once
routing has found nothing for the request (see L{ManagementAPI}), so a
route any resource serves always wins over the text here.
"""

from __future__ import annotations

import re

from cliproxyd.management.access import Refused

#: Every CLIProxyAPI management route, as (method, path below
#: C{/v0/management}), C{:name} standing for one path segment; 129 in all.
CLIPROXYAPI_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/oauth-callback"),
    ("GET", "/oauth-callback"),
    ("GET", "/config"),
    ("GET", "/config.yaml"),
    ("PUT", "/config.yaml"),
    ("GET", "/latest-version"),
    ("GET", "/plugins"),
    ("GET", "/plugin-store"),
    ("POST", "/plugin-store/:id/install"),
    ("DELETE", "/plugins/:id"),
    ("PATCH", "/plugins/:id/enabled"),
    ("GET", "/plugins/:id/config"),
    ("PUT", "/plugins/:id/config"),
    ("PATCH", "/plugins/:id/config"),
    ("GET", "/debug"),
    ("PUT", "/debug"),
    ("PATCH", "/debug"),
    ("GET", "/logging-to-file"),
    ("PUT", "/logging-to-file"),
    ("PATCH", "/logging-to-file"),
    ("GET", "/logs-max-total-size-mb"),
    ("PUT", "/logs-max-total-size-mb"),
    ("PATCH", "/logs-max-total-size-mb"),
    ("GET", "/error-logs-max-files"),
    ("PUT", "/error-logs-max-files"),
    ("PATCH", "/error-logs-max-files"),
    ("GET", "/usage-statistics-enabled"),
    ("PUT", "/usage-statistics-enabled"),
    ("PATCH", "/usage-statistics-enabled"),
    ("GET", "/proxy-url"),
    ("PUT", "/proxy-url"),
    ("PATCH", "/proxy-url"),
    ("DELETE", "/proxy-url"),
    ("POST", "/api-call"),
    ("GET", "/quota-exceeded/switch-project"),
    ("PUT", "/quota-exceeded/switch-project"),
    ("PATCH", "/quota-exceeded/switch-project"),
    ("GET", "/quota-exceeded/switch-preview-model"),
    ("PUT", "/quota-exceeded/switch-preview-model"),
    ("PATCH", "/quota-exceeded/switch-preview-model"),
    ("POST", "/reset-quota"),
    ("GET", "/api-keys"),
    ("PUT", "/api-keys"),
    ("PATCH", "/api-keys"),
    ("DELETE", "/api-keys"),
    ("GET", "/api-key-usage"),
    ("GET", "/usage-queue"),
    ("GET", "/gemini-api-key"),
    ("PUT", "/gemini-api-key"),
    ("PATCH", "/gemini-api-key"),
    ("DELETE", "/gemini-api-key"),
    ("GET", "/interactions-api-key"),
    ("PUT", "/interactions-api-key"),
    ("PATCH", "/interactions-api-key"),
    ("DELETE", "/interactions-api-key"),
    ("GET", "/logs"),
    ("DELETE", "/logs"),
    ("GET", "/request-error-logs"),
    ("GET", "/request-error-logs/:name"),
    ("GET", "/request-log-by-id/:id"),
    ("GET", "/request-log"),
    ("PUT", "/request-log"),
    ("PATCH", "/request-log"),
    ("GET", "/ws-auth"),
    ("PUT", "/ws-auth"),
    ("PATCH", "/ws-auth"),
    ("GET", "/request-retry"),
    ("PUT", "/request-retry"),
    ("PATCH", "/request-retry"),
    ("GET", "/max-retry-credentials"),
    ("PUT", "/max-retry-credentials"),
    ("PATCH", "/max-retry-credentials"),
    ("GET", "/max-retry-interval"),
    ("PUT", "/max-retry-interval"),
    ("PATCH", "/max-retry-interval"),
    ("GET", "/force-model-prefix"),
    ("PUT", "/force-model-prefix"),
    ("PATCH", "/force-model-prefix"),
    ("GET", "/routing/strategy"),
    ("PUT", "/routing/strategy"),
    ("PATCH", "/routing/strategy"),
    ("GET", "/claude-api-key"),
    ("PUT", "/claude-api-key"),
    ("PATCH", "/claude-api-key"),
    ("DELETE", "/claude-api-key"),
    ("GET", "/codex-api-key"),
    ("PUT", "/codex-api-key"),
    ("PATCH", "/codex-api-key"),
    ("DELETE", "/codex-api-key"),
    ("GET", "/xai-api-key"),
    ("PUT", "/xai-api-key"),
    ("PATCH", "/xai-api-key"),
    ("DELETE", "/xai-api-key"),
    ("GET", "/openai-compatibility"),
    ("PUT", "/openai-compatibility"),
    ("PATCH", "/openai-compatibility"),
    ("DELETE", "/openai-compatibility"),
    ("GET", "/vertex-api-key"),
    ("PUT", "/vertex-api-key"),
    ("PATCH", "/vertex-api-key"),
    ("DELETE", "/vertex-api-key"),
    ("GET", "/oauth-excluded-models"),
    ("PUT", "/oauth-excluded-models"),
    ("PATCH", "/oauth-excluded-models"),
    ("DELETE", "/oauth-excluded-models"),
    ("GET", "/oauth-model-alias"),
    ("PUT", "/oauth-model-alias"),
    ("PATCH", "/oauth-model-alias"),
    ("DELETE", "/oauth-model-alias"),
    ("GET", "/oauth-request-scoped-errors"),
    ("PUT", "/oauth-request-scoped-errors"),
    ("PATCH", "/oauth-request-scoped-errors"),
    ("DELETE", "/oauth-request-scoped-errors"),
    ("GET", "/auth-files"),
    ("GET", "/auth-files/models"),
    ("GET", "/model-definitions/:channel"),
    ("GET", "/auth-files/download"),
    ("POST", "/auth-files"),
    ("DELETE", "/auth-files"),
    ("PATCH", "/auth-files/status"),
    ("PATCH", "/auth-files/fields"),
    ("POST", "/vertex/import"),
    ("GET", "/anthropic-auth-url"),
    ("GET", "/codex-auth-url"),
    ("GET", "/antigravity-auth-url"),
    ("GET", "/kimi-auth-url"),
    ("GET", "/xai-auth-url"),
    ("GET", "/get-auth-status"),
    ("DELETE", "/oauth-session"),
)

PLUGINS = (
    "cliproxyd has no plugins: CLIProxyAPI's Go plugins cannot load into it, so there is nothing to list, "
    "install, enable or configure. cliproxyd is configured in config.yaml (GET/PUT /config.yaml) and its "
    "OAuth accounts are files in auth-dir (/auth-files)"
)

#: Why cliproxyd does not serve a route: (path pattern, reason), first match wins.
_REASONS: tuple[tuple[str, str], ...] = (
    (r"/plugins(/.*)?|/plugin-store(/.*)?", PLUGINS),
)
_COMPILED = tuple((re.compile(pattern), reason) for pattern, reason in _REASONS)


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r":[a-z]+", "[^/]+", re.escape(path).replace(r"\:", ":")))


_ROUTES = tuple((method, _pattern(path)) for method, path in CLIPROXYAPI_ROUTES)


def is_cliproxyapi_route(method: str, path: str) -> bool:
    """Whether CLIProxyAPI has C{method} on C{path} (C{HEAD} counts as C{GET})."""
    method = "GET" if method == "HEAD" else method
    return any(m == method and p.fullmatch(path) for m, p in _ROUTES)


def reason(path: str) -> str | None:
    """What cliproxyd does instead of CLIProxyAPI's route at C{path}, if this module says."""
    for pattern, text in _COMPILED:
        if pattern.fullmatch(path):
            return text
    return None


def refusal(method: str, path: str) -> Refused | None:
    """
    The answer to C{method} on C{path} when no route of cliproxyd took it:
    a 501 saying why, for a route CLIProxyAPI has; C{None} (a plain 404 or
    405) for anything else.
    """
    if not is_cliproxyapi_route(method, path):
        return None
    return Refused(501, reason(path) or "cliproxyd does not serve this CLIProxyAPI route")
