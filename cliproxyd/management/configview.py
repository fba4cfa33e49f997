"""
C{GET /config} as CLIProxyAPI answers it: every field its Management
Center reads, under CLIProxyAPI's names, with CLIProxyAPI's default where
config.yaml does not set it, and what config.yaml says everywhere else.

CLIProxyAPI answers its whole config struct, so a field the file leaves
out still arrives with its default (C{"ws-auth": true},
C{"error-logs-max-files": 10}, empty provider lists); a panel that reads
C{routing.strategy} or C{quota-exceeded.switch-project} finds a value
rather than nothing. cliproxyd's own keys (C{max-body-mb}, C{timeouts}, ...)
are shown with their defaults too.
"""

from __future__ import annotations

import copy
from typing import Any

from cliproxyd.config.model import Config, Timeouts

#: CLIProxyAPI's defaults (its config struct after loading an empty file),
#: the fields its Management Center reads first.
CLIPROXYAPI_DEFAULTS: dict[str, Any] = {
    "debug": False,
    "tls": {"enable": False, "cert": "", "key": ""},
    "pprof": {"enable": False, "addr": "127.0.0.1:8316"},
    "commercial-mode": False,
    "logging-to-file": False,
    "logs-max-total-size-mb": 0,
    "error-logs-max-files": 10,
    "usage-statistics-enabled": False,
    "redis-usage-queue-retention-seconds": 60,
    "disable-cooling": False,
    "request-retry": 0,
    "max-retry-credentials": 0,
    "max-retry-interval": 0,
    "quota-exceeded": {"switch-project": False, "switch-preview-model": False, "antigravity-credits": False},
    "routing": {"strategy": "round-robin"},
    "ws-auth": True,
    "proxy-url": "",
    "force-model-prefix": False,
    "request-log": False,
    "passthrough-headers": False,
    "api-keys": [],
    "gemini-api-key": [],
    "interactions-api-key": [],
    "codex-api-key": [],
    "xai-api-key": [],
    "claude-api-key": [],
    "openai-compatibility": [],
    "vertex-api-key": [],
    "oauth-excluded-models": {},
    "oauth-model-alias": {},
    "payload": {},
    "streaming": {},
}

_T = Timeouts()

#: cliproxyd's own keys, with their defaults.
CLIPROXYD_DEFAULTS: dict[str, Any] = {
    "max-body-mb": Config().max_body_mb,
    "timeouts": {
        "connect-seconds": _T.connect,
        "response-seconds": _T.response,
        "stream-idle-seconds": _T.stream_idle,
        "shutdown-seconds": _T.shutdown,
        "client-idle-seconds": _T.client_idle,
    },
}


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """
    C{data} (config.yaml's top level) over the defaults: a key the file
    sets keeps its value, a mapping the file sets in part is completed
    (one level down: C{routing: {session-affinity: true}} still shows
    C{strategy}), a key set to C{null} shows its default.
    """
    out = copy.deepcopy({**CLIPROXYAPI_DEFAULTS, **CLIPROXYD_DEFAULTS})
    for key, value in data.items():
        default = out.get(key)
        if value is None and default is not None:
            continue
        if isinstance(default, dict) and isinstance(value, dict):
            default.update(value)
        else:
            out[key] = value
    return out
