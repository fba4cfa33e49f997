"""
Every management route and method, and paths and methods that are no
route, answered as they always were: with the API off, without a key and
with the key. Recorded from the API before it was split into resources;
a change to this table is a change of behaviour.

The second table is CLIProxyAPI's 129 management routes: each one either
answers as a route of cliproxyd does or is a 501 naming why not (the
reason's name in L{cliproxyd.management.catalog}); none is a bare 404 or
405. When a part of cliproxyd starts serving one, its row changes here.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import capturedLogs

from cliproxyd.management import catalog
from cliproxyd.management.api import RESOURCES
from cliproxyd.management.http import routes
from tests.management_support import AUTH, ManagementRig

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

PATHS = (
    # routes
    "/status", "/credentials", "/credentials/reset", "/usage",
    "/quota-groups", "/quota-groups/manual", "/quota-groups/auto-clear", "/quota-groups/auto-clear-all",
    "/config", "/config.yaml",
    "/debug", "/request-retry", "/max-retry-interval", "/max-retry-credentials", "/force-model-prefix",
    "/disable-cooling", "/max-body-mb", "/routing/strategy", "/routing/session-affinity", "/proxy-url",
    "/api-keys", "/openai-compatibility", "/claude-api-key", "/gemini-api-key", "/codex-api-key",
    "/auth-files", "/auth-files/download", "/auth-files/status", "/auth-files/fields",
    "/auth-files/models", "/model-definitions/<channel>", "/vertex/import", "/api-call",
    "/anthropic-auth-url", "/codex-auth-url", "/gemini-cli-auth-url", "/antigravity-auth-url",
    "/kimi-auth-url", "/xai-auth-url", "/qwen-auth-url", "/iflow-auth-url", "/get-auth-status", "/oauth-callback",
    "/oauth-session",
    "/logging-to-file", "/logs-max-total-size-mb", "/request-log", "/error-logs-max-files",
    "/usage-statistics-enabled", "/logs", "/request-error-logs", "/request-error-logs/<name>",
    "/request-log-by-id/<request_id>",
    "/client-keys", "/client-keys/<name>", "/client-keys/<name>/rotate", "/client-keys/<name>/reset",
    # no routes
    "/", "/nope", "/Status", "/status/", "/status/x", "//status", "/routing", "/routing/nope",
    "/quota-groups/", "/quota-groups/nope", "/config.yaml/x", "/credentials/reset/x", "/api-keys/0",
    "/auth-files/", "/auth-files/nope", "/auth-files/download/x",
)

#: method path | API off, with the key | no key | with the key
EXPECTED = """
GET     /status                      | 404 not found | 401 missing management key | 200
HEAD    /status                      | 404 | 401 | 200
POST    /status                      | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /status                      | 404 not found | 401 missing management key | 404 not found
PATCH   /status                      | 404 not found | 401 missing management key | 404 not found
DELETE  /status                      | 404 not found | 401 missing management key | 404 not found
OPTIONS /status                      | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /credentials                 | 404 not found | 401 missing management key | 200
HEAD    /credentials                 | 404 | 401 | 200
POST    /credentials                 | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /credentials                 | 404 not found | 401 missing management key | 404 not found
PATCH   /credentials                 | 404 not found | 401 missing management key | 404 not found
DELETE  /credentials                 | 404 not found | 401 missing management key | 404 not found
OPTIONS /credentials                 | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /credentials/reset           | 404 not found | 401 missing management key | 404 not found
HEAD    /credentials/reset           | 404 | 401 | 404
POST    /credentials/reset           | 404 not found | 401 missing management key | 400 the body is not valid JSON
PUT     /credentials/reset           | 404 not found | 401 missing management key | 404 not found
PATCH   /credentials/reset           | 404 not found | 401 missing management key | 404 not found
DELETE  /credentials/reset           | 404 not found | 401 missing management key | 404 not found
OPTIONS /credentials/reset           | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /usage                       | 404 not found | 401 missing management key | 200
HEAD    /usage                       | 404 | 401 | 200
POST    /usage                       | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /usage                       | 404 not found | 401 missing management key | 404 not found
PATCH   /usage                       | 404 not found | 401 missing management key | 404 not found
DELETE  /usage                       | 404 not found | 401 missing management key | 404 not found
OPTIONS /usage                       | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /quota-groups                | 404 not found | 401 missing management key | 200
HEAD    /quota-groups                | 404 | 401 | 200
POST    /quota-groups                | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /quota-groups                | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups                | 404 not found | 401 missing management key | 404 not found
DELETE  /quota-groups                | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups                | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /quota-groups/manual         | 404 not found | 401 missing management key | 404 not found
HEAD    /quota-groups/manual         | 404 | 401 | 404
POST    /quota-groups/manual         | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /quota-groups/manual         | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups/manual         | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /quota-groups/manual         | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups/manual         | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /quota-groups/auto-clear     | 404 not found | 401 missing management key | 404 not found
HEAD    /quota-groups/auto-clear     | 404 | 401 | 404
POST    /quota-groups/auto-clear     | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /quota-groups/auto-clear     | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups/auto-clear     | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /quota-groups/auto-clear     | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups/auto-clear     | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /quota-groups/auto-clear-all | 404 not found | 401 missing management key | 404 not found
HEAD    /quota-groups/auto-clear-all | 404 | 401 | 404
POST    /quota-groups/auto-clear-all | 404 not found | 401 missing management key | 400 the body is not valid JSON
PUT     /quota-groups/auto-clear-all | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups/auto-clear-all | 404 not found | 401 missing management key | 404 not found
DELETE  /quota-groups/auto-clear-all | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups/auto-clear-all | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /config                      | 404 not found | 401 missing management key | 200
HEAD    /config                      | 404 | 401 | 200
POST    /config                      | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /config                      | 404 not found | 401 missing management key | 404 not found
PATCH   /config                      | 404 not found | 401 missing management key | 404 not found
DELETE  /config                      | 404 not found | 401 missing management key | 404 not found
OPTIONS /config                      | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /config.yaml                 | 404 not found | 401 missing management key | 200 (application/yaml; charset=utf-8)
HEAD    /config.yaml                 | 404 | 401 | 200 (application/yaml; charset=utf-8)
POST    /config.yaml                 | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /config.yaml                 | 404 not found | 401 missing management key | 422 invalid_config
PATCH   /config.yaml                 | 404 not found | 401 missing management key | 404 not found
DELETE  /config.yaml                 | 404 not found | 401 missing management key | 404 not found
OPTIONS /config.yaml                 | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /debug                       | 404 not found | 401 missing management key | 200
HEAD    /debug                       | 404 | 401 | 200
POST    /debug                       | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /debug                       | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /debug                       | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /debug                       | 404 not found | 401 missing management key | 200
OPTIONS /debug                       | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /request-retry               | 404 not found | 401 missing management key | 200
HEAD    /request-retry               | 404 | 401 | 200
POST    /request-retry               | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /request-retry               | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /request-retry               | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /request-retry               | 404 not found | 401 missing management key | 200
OPTIONS /request-retry               | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /max-retry-interval          | 404 not found | 401 missing management key | 200
HEAD    /max-retry-interval          | 404 | 401 | 200
POST    /max-retry-interval          | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /max-retry-interval          | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /max-retry-interval          | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /max-retry-interval          | 404 not found | 401 missing management key | 200
OPTIONS /max-retry-interval          | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /max-retry-credentials       | 404 not found | 401 missing management key | 200
HEAD    /max-retry-credentials       | 404 | 401 | 200
POST    /max-retry-credentials       | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /max-retry-credentials       | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /max-retry-credentials       | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /max-retry-credentials       | 404 not found | 401 missing management key | 200
OPTIONS /max-retry-credentials       | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /force-model-prefix          | 404 not found | 401 missing management key | 200
HEAD    /force-model-prefix          | 404 | 401 | 200
POST    /force-model-prefix          | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /force-model-prefix          | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /force-model-prefix          | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /force-model-prefix          | 404 not found | 401 missing management key | 200
OPTIONS /force-model-prefix          | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /disable-cooling             | 404 not found | 401 missing management key | 200
HEAD    /disable-cooling             | 404 | 401 | 200
POST    /disable-cooling             | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /disable-cooling             | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /disable-cooling             | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /disable-cooling             | 404 not found | 401 missing management key | 200
OPTIONS /disable-cooling             | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /max-body-mb                 | 404 not found | 401 missing management key | 200
HEAD    /max-body-mb                 | 404 | 401 | 200
POST    /max-body-mb                 | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /max-body-mb                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /max-body-mb                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /max-body-mb                 | 404 not found | 401 missing management key | 200
OPTIONS /max-body-mb                 | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /routing/strategy            | 404 not found | 401 missing management key | 200
HEAD    /routing/strategy            | 404 | 401 | 200
POST    /routing/strategy            | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /routing/strategy            | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /routing/strategy            | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /routing/strategy            | 404 not found | 401 missing management key | 200
OPTIONS /routing/strategy            | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /routing/session-affinity    | 404 not found | 401 missing management key | 200
HEAD    /routing/session-affinity    | 404 | 401 | 200
POST    /routing/session-affinity    | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /routing/session-affinity    | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /routing/session-affinity    | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /routing/session-affinity    | 404 not found | 401 missing management key | 200
OPTIONS /routing/session-affinity    | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /proxy-url                   | 404 not found | 401 missing management key | 200
HEAD    /proxy-url                   | 404 | 401 | 200
POST    /proxy-url                   | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /proxy-url                   | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /proxy-url                   | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /proxy-url                   | 404 not found | 401 missing management key | 200
OPTIONS /proxy-url                   | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /api-keys                    | 404 not found | 401 missing management key | 200
HEAD    /api-keys                    | 404 | 401 | 200
POST    /api-keys                    | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /api-keys                    | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /api-keys                    | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /api-keys                    | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
OPTIONS /api-keys                    | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /openai-compatibility        | 404 not found | 401 missing management key | 200
HEAD    /openai-compatibility        | 404 | 401 | 200
POST    /openai-compatibility        | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /openai-compatibility        | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /openai-compatibility        | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /openai-compatibility        | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
OPTIONS /openai-compatibility        | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /claude-api-key              | 404 not found | 401 missing management key | 200
HEAD    /claude-api-key              | 404 | 401 | 200
POST    /claude-api-key              | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /claude-api-key              | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /claude-api-key              | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /claude-api-key              | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
OPTIONS /claude-api-key              | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /gemini-api-key              | 404 not found | 401 missing management key | 200
HEAD    /gemini-api-key              | 404 | 401 | 200
POST    /gemini-api-key              | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /gemini-api-key              | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /gemini-api-key              | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /gemini-api-key              | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
OPTIONS /gemini-api-key              | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /codex-api-key               | 404 not found | 401 missing management key | 200
HEAD    /codex-api-key               | 404 | 401 | 200
POST    /codex-api-key               | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /codex-api-key               | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /codex-api-key               | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /codex-api-key               | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
OPTIONS /codex-api-key               | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /auth-files                  | 404 not found | 401 missing management key | 200
HEAD    /auth-files                  | 404 | 401 | 200
POST    /auth-files                  | 404 not found | 401 missing management key | 400 name is required: a file name ending in .json
PUT     /auth-files                  | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files                  | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files                  | 404 not found | 401 missing management key | 400 the body is not valid JSON
OPTIONS /auth-files                  | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /auth-files/download         | 404 not found | 401 missing management key | 400 name is required: a file name ending in .json
HEAD    /auth-files/download         | 404 | 401 | 400
POST    /auth-files/download         | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /auth-files/download         | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/download         | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files/download         | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/download         | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /auth-files/status           | 404 not found | 401 missing management key | 404 not found
HEAD    /auth-files/status           | 404 | 401 | 404
POST    /auth-files/status           | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /auth-files/status           | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/status           | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /auth-files/status           | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/status           | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /auth-files/fields           | 404 not found | 401 missing management key | 404 not found
HEAD    /auth-files/fields           | 404 | 401 | 404
POST    /auth-files/fields           | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /auth-files/fields           | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/fields           | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /auth-files/fields           | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/fields           | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /auth-files/models           | 404 not found | 401 missing management key | 400 name is required (?name=x.json)
HEAD    /auth-files/models           | 404 | 401 | 400
POST    /auth-files/models           | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /auth-files/models           | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/models           | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files/models           | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/models           | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /model-definitions/<channel> | 404 not found | 401 missing management key | 400 unknown channel: one of claude, codex, gemini-cli, antigravity, xai, kimi, vertex, qwen, iflow, gemini
HEAD    /model-definitions/<channel> | 404 | 401 | 400
POST    /model-definitions/<channel> | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /model-definitions/<channel> | 404 not found | 401 missing management key | 404 not found
PATCH   /model-definitions/<channel> | 404 not found | 401 missing management key | 404 not found
DELETE  /model-definitions/<channel> | 404 not found | 401 missing management key | 404 not found
OPTIONS /model-definitions/<channel> | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /vertex/import               | 404 not found | 401 missing management key | 404 not found
HEAD    /vertex/import               | 404 | 401 | 404
POST    /vertex/import               | 404 not found | 401 missing management key | 400 invalid json: unexpected character, expected a string key: line 1 column 2 (char 1)
PUT     /vertex/import               | 404 not found | 401 missing management key | 404 not found
PATCH   /vertex/import               | 404 not found | 401 missing management key | 404 not found
DELETE  /vertex/import               | 404 not found | 401 missing management key | 404 not found
OPTIONS /vertex/import               | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /api-call                    | 404 not found | 401 missing management key | 404 not found
HEAD    /api-call                    | 404 | 401 | 404
POST    /api-call                    | 404 not found | 401 missing management key | 400 the body is not valid JSON
PUT     /api-call                    | 404 not found | 401 missing management key | 404 not found
PATCH   /api-call                    | 404 not found | 401 missing management key | 404 not found
DELETE  /api-call                    | 404 not found | 401 missing management key | 404 not found
OPTIONS /api-call                    | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /anthropic-auth-url          | 404 not found | 401 missing management key | 200
HEAD    /anthropic-auth-url          | 404 | 401 | 200
POST    /anthropic-auth-url          | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /anthropic-auth-url          | 404 not found | 401 missing management key | 404 not found
PATCH   /anthropic-auth-url          | 404 not found | 401 missing management key | 404 not found
DELETE  /anthropic-auth-url          | 404 not found | 401 missing management key | 404 not found
OPTIONS /anthropic-auth-url          | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /codex-auth-url              | 404 not found | 401 missing management key | 200
HEAD    /codex-auth-url              | 404 | 401 | 200
POST    /codex-auth-url              | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /codex-auth-url              | 404 not found | 401 missing management key | 404 not found
PATCH   /codex-auth-url              | 404 not found | 401 missing management key | 404 not found
DELETE  /codex-auth-url              | 404 not found | 401 missing management key | 404 not found
OPTIONS /codex-auth-url              | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /gemini-cli-auth-url         | 404 not found | 401 missing management key | 200
HEAD    /gemini-cli-auth-url         | 404 | 401 | 200
POST    /gemini-cli-auth-url         | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /gemini-cli-auth-url         | 404 not found | 401 missing management key | 404 not found
PATCH   /gemini-cli-auth-url         | 404 not found | 401 missing management key | 404 not found
DELETE  /gemini-cli-auth-url         | 404 not found | 401 missing management key | 404 not found
OPTIONS /gemini-cli-auth-url         | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /antigravity-auth-url        | 404 not found | 401 missing management key | 200
HEAD    /antigravity-auth-url        | 404 | 401 | 200
POST    /antigravity-auth-url        | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /antigravity-auth-url        | 404 not found | 401 missing management key | 404 not found
PATCH   /antigravity-auth-url        | 404 not found | 401 missing management key | 404 not found
DELETE  /antigravity-auth-url        | 404 not found | 401 missing management key | 404 not found
OPTIONS /antigravity-auth-url        | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /kimi-auth-url               | 404 not found | 401 missing management key | 502 failed to start device authorization flow: the token endpoint answered 404: <!doctype html> <html lang=en> <title>404 Not Found</title> <h1>Not Found</h1> <p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>
HEAD    /kimi-auth-url               | 404 | 401 | 200
POST    /kimi-auth-url               | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /kimi-auth-url               | 404 not found | 401 missing management key | 404 not found
PATCH   /kimi-auth-url               | 404 not found | 401 missing management key | 404 not found
DELETE  /kimi-auth-url               | 404 not found | 401 missing management key | 404 not found
OPTIONS /kimi-auth-url               | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /xai-auth-url                | 404 not found | 401 missing management key | 502 failed to start device authorization flow: the discovery document answered 404: <!doctype html> <html lang=en> <title>404 Not Found</title> <h1>Not Found</h1> <p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>
HEAD    /xai-auth-url                | 404 | 401 | 200
POST    /xai-auth-url                | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /xai-auth-url                | 404 not found | 401 missing management key | 404 not found
PATCH   /xai-auth-url                | 404 not found | 401 missing management key | 404 not found
DELETE  /xai-auth-url                | 404 not found | 401 missing management key | 404 not found
OPTIONS /xai-auth-url                | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /qwen-auth-url               | 404 not found | 401 missing management key | 502 failed to start device authorization flow: the token endpoint answered 404: <!doctype html> <html lang=en> <title>404 Not Found</title> <h1>Not Found</h1> <p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>
HEAD    /qwen-auth-url               | 404 | 401 | 200
POST    /qwen-auth-url               | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /qwen-auth-url               | 404 not found | 401 missing management key | 404 not found
PATCH   /qwen-auth-url               | 404 not found | 401 missing management key | 404 not found
DELETE  /qwen-auth-url               | 404 not found | 401 missing management key | 404 not found
OPTIONS /qwen-auth-url               | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /iflow-auth-url              | 404 not found | 401 missing management key | 200
HEAD    /iflow-auth-url              | 404 | 401 | 200
POST    /iflow-auth-url              | 404 not found | 401 missing management key | 400 the body is not valid JSON
PUT     /iflow-auth-url              | 404 not found | 401 missing management key | 404 not found
PATCH   /iflow-auth-url              | 404 not found | 401 missing management key | 404 not found
DELETE  /iflow-auth-url              | 404 not found | 401 missing management key | 404 not found
OPTIONS /iflow-auth-url              | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /get-auth-status             | 404 not found | 401 missing management key | 200
HEAD    /get-auth-status             | 404 | 401 | 200
POST    /get-auth-status             | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /get-auth-status             | 404 not found | 401 missing management key | 404 not found
PATCH   /get-auth-status             | 404 not found | 401 missing management key | 404 not found
DELETE  /get-auth-status             | 404 not found | 401 missing management key | 404 not found
OPTIONS /get-auth-status             | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /oauth-callback              | 404 not found | 401 missing management key | 400 state is required
HEAD    /oauth-callback              | 404 | 401 | 400
POST    /oauth-callback              | 404 not found | 401 missing management key | 400 the body is not valid JSON
PUT     /oauth-callback              | 404 not found | 401 missing management key | 404 not found
PATCH   /oauth-callback              | 404 not found | 401 missing management key | 404 not found
DELETE  /oauth-callback              | 404 not found | 401 missing management key | 404 not found
OPTIONS /oauth-callback              | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /oauth-session               | 404 not found | 401 missing management key | 404 not found
HEAD    /oauth-session               | 404 | 401 | 404
POST    /oauth-session               | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /oauth-session               | 404 not found | 401 missing management key | 404 not found
PATCH   /oauth-session               | 404 not found | 401 missing management key | 404 not found
DELETE  /oauth-session               | 404 not found | 401 missing management key | 404 no pending login with that state
OPTIONS /oauth-session               | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /logging-to-file             | 404 not found | 401 missing management key | 200
HEAD    /logging-to-file             | 404 | 401 | 200
POST    /logging-to-file             | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /logging-to-file             | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /logging-to-file             | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /logging-to-file             | 404 not found | 401 missing management key | 200
OPTIONS /logging-to-file             | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /logs-max-total-size-mb      | 404 not found | 401 missing management key | 200
HEAD    /logs-max-total-size-mb      | 404 | 401 | 200
POST    /logs-max-total-size-mb      | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /logs-max-total-size-mb      | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /logs-max-total-size-mb      | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /logs-max-total-size-mb      | 404 not found | 401 missing management key | 200
OPTIONS /logs-max-total-size-mb      | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /request-log                 | 404 not found | 401 missing management key | 200
HEAD    /request-log                 | 404 | 401 | 200
POST    /request-log                 | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /request-log                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /request-log                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /request-log                 | 404 not found | 401 missing management key | 200
OPTIONS /request-log                 | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /error-logs-max-files        | 404 not found | 401 missing management key | 200
HEAD    /error-logs-max-files        | 404 | 401 | 200
POST    /error-logs-max-files        | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /error-logs-max-files        | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /error-logs-max-files        | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /error-logs-max-files        | 404 not found | 401 missing management key | 200
OPTIONS /error-logs-max-files        | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /usage-statistics-enabled    | 404 not found | 401 missing management key | 200
HEAD    /usage-statistics-enabled    | 404 | 401 | 200
POST    /usage-statistics-enabled    | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /usage-statistics-enabled    | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /usage-statistics-enabled    | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /usage-statistics-enabled    | 404 not found | 401 missing management key | 200
OPTIONS /usage-statistics-enabled    | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /logs                        | 404 not found | 401 missing management key | 400 logging to file disabled
HEAD    /logs                        | 404 | 401 | 400
POST    /logs                        | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /logs                        | 404 not found | 401 missing management key | 404 not found
PATCH   /logs                        | 404 not found | 401 missing management key | 404 not found
DELETE  /logs                        | 404 not found | 401 missing management key | 400 logging to file disabled
OPTIONS /logs                        | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /request-error-logs          | 404 not found | 401 missing management key | 200
HEAD    /request-error-logs          | 404 | 401 | 200
POST    /request-error-logs          | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /request-error-logs          | 404 not found | 401 missing management key | 404 not found
PATCH   /request-error-logs          | 404 not found | 401 missing management key | 404 not found
DELETE  /request-error-logs          | 404 not found | 401 missing management key | 404 not found
OPTIONS /request-error-logs          | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /request-error-logs/<name>   | 404 not found | 401 missing management key | 404 log file not found
HEAD    /request-error-logs/<name>   | 404 | 401 | 404
POST    /request-error-logs/<name>   | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /request-error-logs/<name>   | 404 not found | 401 missing management key | 404 not found
PATCH   /request-error-logs/<name>   | 404 not found | 401 missing management key | 404 not found
DELETE  /request-error-logs/<name>   | 404 not found | 401 missing management key | 404 not found
OPTIONS /request-error-logs/<name>   | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /request-log-by-id/<request_id> | 404 not found | 401 missing management key | 404 log file not found for the given request ID
HEAD    /request-log-by-id/<request_id> | 404 | 401 | 404
POST    /request-log-by-id/<request_id> | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /request-log-by-id/<request_id> | 404 not found | 401 missing management key | 404 not found
PATCH   /request-log-by-id/<request_id> | 404 not found | 401 missing management key | 404 not found
DELETE  /request-log-by-id/<request_id> | 404 not found | 401 missing management key | 404 not found
OPTIONS /request-log-by-id/<request_id> | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /client-keys                 | 404 not found | 401 missing management key | 200
HEAD    /client-keys                 | 404 | 401 | 200
POST    /client-keys                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
PUT     /client-keys                 | 404 not found | 401 missing management key | 404 not found
PATCH   /client-keys                 | 404 not found | 401 missing management key | 404 not found
DELETE  /client-keys                 | 404 not found | 401 missing management key | 404 not found
OPTIONS /client-keys                 | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /client-keys/<name>          | 404 not found | 401 missing management key | 404 no client key is named '<name>'
HEAD    /client-keys/<name>          | 404 | 401 | 404
POST    /client-keys/<name>          | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /client-keys/<name>          | 404 not found | 401 missing management key | 404 not found
PATCH   /client-keys/<name>          | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /client-keys/<name>          | 404 not found | 401 missing management key | 404 no client key is named '<name>'
OPTIONS /client-keys/<name>          | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /client-keys/<name>/rotate   | 404 not found | 401 missing management key | 404 not found
HEAD    /client-keys/<name>/rotate   | 404 | 401 | 404
POST    /client-keys/<name>/rotate   | 404 not found | 401 missing management key | 404 no client key is named '<name>'
PUT     /client-keys/<name>/rotate   | 404 not found | 401 missing management key | 404 not found
PATCH   /client-keys/<name>/rotate   | 404 not found | 401 missing management key | 404 not found
DELETE  /client-keys/<name>/rotate   | 404 not found | 401 missing management key | 404 not found
OPTIONS /client-keys/<name>/rotate   | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /client-keys/<name>/reset    | 404 not found | 401 missing management key | 404 not found
HEAD    /client-keys/<name>/reset    | 404 | 401 | 404
POST    /client-keys/<name>/reset    | 404 not found | 401 missing management key | 404 no client key is named '<name>'
PUT     /client-keys/<name>/reset    | 404 not found | 401 missing management key | 404 not found
PATCH   /client-keys/<name>/reset    | 404 not found | 401 missing management key | 404 not found
DELETE  /client-keys/<name>/reset    | 404 not found | 401 missing management key | 404 not found
OPTIONS /client-keys/<name>/reset    | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /                            | 404 not found | 404 not found | 404 not found
HEAD    /                            | 404 | 404 | 404
POST    /                            | 404 not found | 404 not found | 404 not found
PUT     /                            | 404 not found | 404 not found | 404 not found
PATCH   /                            | 404 not found | 404 not found | 404 not found
DELETE  /                            | 404 not found | 404 not found | 404 not found
OPTIONS /                            | 404 not found | 404 not found | 404 not found
GET     /nope                        | 404 not found | 401 missing management key | 404 not found
HEAD    /nope                        | 404 | 401 | 404
POST    /nope                        | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /nope                        | 404 not found | 401 missing management key | 404 not found
PATCH   /nope                        | 404 not found | 401 missing management key | 404 not found
DELETE  /nope                        | 404 not found | 401 missing management key | 404 not found
OPTIONS /nope                        | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /Status                      | 404 not found | 401 missing management key | 404 not found
HEAD    /Status                      | 404 | 401 | 404
POST    /Status                      | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /Status                      | 404 not found | 401 missing management key | 404 not found
PATCH   /Status                      | 404 not found | 401 missing management key | 404 not found
DELETE  /Status                      | 404 not found | 401 missing management key | 404 not found
OPTIONS /Status                      | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /status/                     | 404 not found | 401 missing management key | 404 not found
HEAD    /status/                     | 404 | 401 | 404
POST    /status/                     | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /status/                     | 404 not found | 401 missing management key | 404 not found
PATCH   /status/                     | 404 not found | 401 missing management key | 404 not found
DELETE  /status/                     | 404 not found | 401 missing management key | 404 not found
OPTIONS /status/                     | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /status/x                    | 404 not found | 401 missing management key | 404 not found
HEAD    /status/x                    | 404 | 401 | 404
POST    /status/x                    | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /status/x                    | 404 not found | 401 missing management key | 404 not found
PATCH   /status/x                    | 404 not found | 401 missing management key | 404 not found
DELETE  /status/x                    | 404 not found | 401 missing management key | 404 not found
OPTIONS /status/x                    | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     //status                     | 404 not found | 401 missing management key | 200
HEAD    //status                     | 404 | 401 | 200
POST    //status                     | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     //status                     | 404 not found | 401 missing management key | 404 not found
PATCH   //status                     | 404 not found | 401 missing management key | 404 not found
DELETE  //status                     | 404 not found | 401 missing management key | 404 not found
OPTIONS //status                     | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /routing                     | 404 not found | 401 missing management key | 404 not found
HEAD    /routing                     | 404 | 401 | 404
POST    /routing                     | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /routing                     | 404 not found | 401 missing management key | 404 not found
PATCH   /routing                     | 404 not found | 401 missing management key | 404 not found
DELETE  /routing                     | 404 not found | 401 missing management key | 404 not found
OPTIONS /routing                     | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /routing/nope                | 404 not found | 401 missing management key | 404 not found
HEAD    /routing/nope                | 404 | 401 | 404
POST    /routing/nope                | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /routing/nope                | 404 not found | 401 missing management key | 404 not found
PATCH   /routing/nope                | 404 not found | 401 missing management key | 404 not found
DELETE  /routing/nope                | 404 not found | 401 missing management key | 404 not found
OPTIONS /routing/nope                | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /quota-groups/               | 404 not found | 401 missing management key | 404 not found
HEAD    /quota-groups/               | 404 | 401 | 404
POST    /quota-groups/               | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /quota-groups/               | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups/               | 404 not found | 401 missing management key | 404 not found
DELETE  /quota-groups/               | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups/               | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /quota-groups/nope           | 404 not found | 401 missing management key | 404 not found
HEAD    /quota-groups/nope           | 404 | 401 | 404
POST    /quota-groups/nope           | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /quota-groups/nope           | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups/nope           | 404 not found | 401 missing management key | 404 not found
DELETE  /quota-groups/nope           | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups/nope           | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /config.yaml/x               | 404 not found | 401 missing management key | 404 not found
HEAD    /config.yaml/x               | 404 | 401 | 404
POST    /config.yaml/x               | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /config.yaml/x               | 404 not found | 401 missing management key | 404 not found
PATCH   /config.yaml/x               | 404 not found | 401 missing management key | 404 not found
DELETE  /config.yaml/x               | 404 not found | 401 missing management key | 404 not found
OPTIONS /config.yaml/x               | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /credentials/reset/x         | 404 not found | 401 missing management key | 404 not found
HEAD    /credentials/reset/x         | 404 | 401 | 404
POST    /credentials/reset/x         | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /credentials/reset/x         | 404 not found | 401 missing management key | 404 not found
PATCH   /credentials/reset/x         | 404 not found | 401 missing management key | 404 not found
DELETE  /credentials/reset/x         | 404 not found | 401 missing management key | 404 not found
OPTIONS /credentials/reset/x         | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /api-keys/0                  | 404 not found | 401 missing management key | 404 not found
HEAD    /api-keys/0                  | 404 | 401 | 404
POST    /api-keys/0                  | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /api-keys/0                  | 404 not found | 401 missing management key | 404 not found
PATCH   /api-keys/0                  | 404 not found | 401 missing management key | 404 not found
DELETE  /api-keys/0                  | 404 not found | 401 missing management key | 404 not found
OPTIONS /api-keys/0                  | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /auth-files/                 | 404 not found | 401 missing management key | 404 not found
HEAD    /auth-files/                 | 404 | 401 | 404
POST    /auth-files/                 | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /auth-files/                 | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/                 | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files/                 | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/                 | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /auth-files/nope             | 404 not found | 401 missing management key | 404 not found
HEAD    /auth-files/nope             | 404 | 401 | 404
POST    /auth-files/nope             | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /auth-files/nope             | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/nope             | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files/nope             | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/nope             | 405 method not allowed | 405 method not allowed | 405 method not allowed
GET     /auth-files/download/x       | 404 not found | 401 missing management key | 404 not found
HEAD    /auth-files/download/x       | 404 | 401 | 404
POST    /auth-files/download/x       | 405 method not allowed | 405 method not allowed | 405 method not allowed
PUT     /auth-files/download/x       | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/download/x       | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files/download/x       | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/download/x       | 405 method not allowed | 405 method not allowed | 405 method not allowed
"""

#: A body no route accepts, so that no request changes what the next one sees.
BODY = b"{nope"


def answer(rig: ManagementRig, method: str, path: str, headers: dict[str, str]) -> str:
    """The status, the error text of a JSON error, and the content type where it is not JSON."""
    response = rig.response(method, path, headers=headers, data=BODY)
    cell = str(response.code)
    if response.code >= 300 and method != "HEAD":
        cell += " " + json.loads(response.body)["error"]
    kind = (response.headers.getRawHeaders(b"content-type") or [b"none"])[0].decode()
    if kind != "application/json":
        cell += f" ({kind})"
    return cell


def observed(tmp_path: Any) -> list[str]:
    on = ManagementRig(tmp_path / "on")
    off = ManagementRig(tmp_path / "off", secret='""')
    rows = []
    for path in PATHS:
        for method in METHODS:
            cells = (answer(off, method, path, AUTH), answer(on, method, path, {}), answer(on, method, path, AUTH))
            rows.append(f"{method:7} {path:28} | " + " | ".join(cells))
    return rows


def test_every_route_and_method_answers_as_recorded(tmp_path):
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    assert observed(tmp_path) == EXPECTED.strip().splitlines()


#: A sample for each path parameter of CLIProxyAPI's routes.
SAMPLES = {":id": "x", ":name": "x.log", ":channel": "claude"}

#: CLIProxyAPI's reasons, shown in the table by their name in L{catalog}.
REASONS = {getattr(catalog, n): n for n in ("PLUGINS",)}

#: Every CLIProxyAPI route (catalog.CLIPROXYAPI_ROUTES, in its order) as cliproxyd answers it
#: (method path | API off, with the key | no key | with the key): a status of its own
#: (it serves the route; the body is the bad JSON of BODY), or 501 and the reason it does not.
CLIPROXYAPI_EXPECTED = """
POST   /oauth-callback                        | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /oauth-callback                        | 404 not found | 401 missing management key | 400 state is required
GET    /config                                | 404 not found | 401 missing management key | 200
GET    /config.yaml                           | 404 not found | 401 missing management key | 200 (application/yaml; charset=utf-8)
PUT    /config.yaml                           | 404 not found | 401 missing management key | 422 invalid_config
GET    /latest-version                        | 404 not found | 401 missing management key | 200
GET    /plugins                               | 404 not found | 401 missing management key | 200
GET    /plugin-store                          | 404 not found | 401 missing management key | 501 PLUGINS
POST   /plugin-store/x/install                | 405 method not allowed | 401 missing management key | 501 PLUGINS
DELETE /plugins/x                             | 404 not found | 401 missing management key | 501 PLUGINS
PATCH  /plugins/x/enabled                     | 404 not found | 401 missing management key | 501 PLUGINS
GET    /plugins/x/config                      | 404 not found | 401 missing management key | 501 PLUGINS
PUT    /plugins/x/config                      | 404 not found | 401 missing management key | 501 PLUGINS
PATCH  /plugins/x/config                      | 404 not found | 401 missing management key | 501 PLUGINS
GET    /debug                                 | 404 not found | 401 missing management key | 200
PUT    /debug                                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /debug                                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /logging-to-file                       | 404 not found | 401 missing management key | 200
PUT    /logging-to-file                       | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /logging-to-file                       | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /logs-max-total-size-mb                | 404 not found | 401 missing management key | 200
PUT    /logs-max-total-size-mb                | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /logs-max-total-size-mb                | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /error-logs-max-files                  | 404 not found | 401 missing management key | 200
PUT    /error-logs-max-files                  | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /error-logs-max-files                  | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /usage-statistics-enabled              | 404 not found | 401 missing management key | 200
PUT    /usage-statistics-enabled              | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /usage-statistics-enabled              | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /proxy-url                             | 404 not found | 401 missing management key | 200
PUT    /proxy-url                             | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /proxy-url                             | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /proxy-url                             | 404 not found | 401 missing management key | 200
POST   /api-call                              | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /quota-exceeded/switch-project         | 404 not found | 401 missing management key | 200
PUT    /quota-exceeded/switch-project         | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /quota-exceeded/switch-project         | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /quota-exceeded/switch-preview-model   | 404 not found | 401 missing management key | 200
PUT    /quota-exceeded/switch-preview-model   | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /quota-exceeded/switch-preview-model   | 404 not found | 401 missing management key | 400 the body is not valid JSON
POST   /reset-quota                           | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /api-keys                              | 404 not found | 401 missing management key | 200
PUT    /api-keys                              | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /api-keys                              | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /api-keys                              | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
GET    /api-key-usage                         | 404 not found | 401 missing management key | 200
GET    /usage-queue                           | 404 not found | 401 missing management key | 200
GET    /gemini-api-key                        | 404 not found | 401 missing management key | 200
PUT    /gemini-api-key                        | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /gemini-api-key                        | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /gemini-api-key                        | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
GET    /interactions-api-key                  | 404 not found | 401 missing management key | 200
PUT    /interactions-api-key                  | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /interactions-api-key                  | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /interactions-api-key                  | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
GET    /logs                                  | 404 not found | 401 missing management key | 400 logging to file disabled
DELETE /logs                                  | 404 not found | 401 missing management key | 400 logging to file disabled
GET    /request-error-logs                    | 404 not found | 401 missing management key | 200
GET    /request-error-logs/x.log              | 404 not found | 401 missing management key | 404 log file not found
GET    /request-log-by-id/x                   | 404 not found | 401 missing management key | 404 log file not found for the given request ID
GET    /request-log                           | 404 not found | 401 missing management key | 200
PUT    /request-log                           | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /request-log                           | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /ws-auth                               | 404 not found | 401 missing management key | 200
PUT    /ws-auth                               | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /ws-auth                               | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /request-retry                         | 404 not found | 401 missing management key | 200
PUT    /request-retry                         | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /request-retry                         | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /max-retry-credentials                 | 404 not found | 401 missing management key | 200
PUT    /max-retry-credentials                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /max-retry-credentials                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /max-retry-interval                    | 404 not found | 401 missing management key | 200
PUT    /max-retry-interval                    | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /max-retry-interval                    | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /force-model-prefix                    | 404 not found | 401 missing management key | 200
PUT    /force-model-prefix                    | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /force-model-prefix                    | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /routing/strategy                      | 404 not found | 401 missing management key | 200
PUT    /routing/strategy                      | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /routing/strategy                      | 404 not found | 401 missing management key | 400 the body is not valid JSON
GET    /claude-api-key                        | 404 not found | 401 missing management key | 200
PUT    /claude-api-key                        | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /claude-api-key                        | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /claude-api-key                        | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
GET    /codex-api-key                         | 404 not found | 401 missing management key | 200
PUT    /codex-api-key                         | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /codex-api-key                         | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /codex-api-key                         | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
GET    /xai-api-key                           | 404 not found | 401 missing management key | 200
PUT    /xai-api-key                           | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /xai-api-key                           | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /xai-api-key                           | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
GET    /openai-compatibility                  | 404 not found | 401 missing management key | 200
PUT    /openai-compatibility                  | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /openai-compatibility                  | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /openai-compatibility                  | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
GET    /vertex-api-key                        | 404 not found | 401 missing management key | 200
PUT    /vertex-api-key                        | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /vertex-api-key                        | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /vertex-api-key                        | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
GET    /oauth-excluded-models                 | 404 not found | 401 missing management key | 200
PUT    /oauth-excluded-models                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /oauth-excluded-models                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /oauth-excluded-models                 | 404 not found | 401 missing management key | 400 say which channel: ?provider=
GET    /oauth-model-alias                     | 404 not found | 401 missing management key | 200
PUT    /oauth-model-alias                     | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /oauth-model-alias                     | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /oauth-model-alias                     | 404 not found | 401 missing management key | 400 say which channel: ?channel=
GET    /oauth-request-scoped-errors           | 404 not found | 401 missing management key | 200
PUT    /oauth-request-scoped-errors           | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /oauth-request-scoped-errors           | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE /oauth-request-scoped-errors           | 404 not found | 401 missing management key | 400 say which channel: ?channel=
GET    /auth-files                            | 404 not found | 401 missing management key | 200
GET    /auth-files/models                     | 404 not found | 401 missing management key | 400 name is required (?name=x.json)
GET    /model-definitions/claude              | 404 not found | 401 missing management key | 200
GET    /auth-files/download                   | 404 not found | 401 missing management key | 400 name is required: a file name ending in .json
POST   /auth-files                            | 404 not found | 401 missing management key | 400 name is required: a file name ending in .json
DELETE /auth-files                            | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /auth-files/status                     | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH  /auth-files/fields                     | 404 not found | 401 missing management key | 400 the body is not valid JSON
POST   /vertex/import                         | 404 not found | 401 missing management key | 400 invalid json: unexpected character, expected a string key: line 1 column 2 (char 1)
GET    /anthropic-auth-url                    | 404 not found | 401 missing management key | 200
GET    /codex-auth-url                        | 404 not found | 401 missing management key | 200
GET    /antigravity-auth-url                  | 404 not found | 401 missing management key | 200
GET    /kimi-auth-url                         | 404 not found | 401 missing management key | 502 failed to start device authorization flow: the token endpoint answered 404: <!doctype html> <html lang=en> <title>404 Not Found</title> <h1>Not Found</h1> <p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>
GET    /xai-auth-url                          | 404 not found | 401 missing management key | 502 failed to start device authorization flow: the discovery document answered 404: <!doctype html> <html lang=en> <title>404 Not Found</title> <h1>Not Found</h1> <p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>
GET    /get-auth-status                       | 404 not found | 401 missing management key | 200
DELETE /oauth-session                         | 404 not found | 401 missing management key | 404 no pending login with that state
"""


def cliproxyapi_observed(tmp_path: Any) -> list[str]:
    on = ManagementRig(tmp_path / "on")
    off = ManagementRig(tmp_path / "off", secret='""')
    rows = []
    for method, pattern in catalog.CLIPROXYAPI_ROUTES:
        path = "/".join(SAMPLES.get(part, part) for part in pattern.split("/"))
        cells = []
        for rig, headers in ((off, AUTH), (on, {}), (on, AUTH)):
            cell = answer(rig, method, path, headers)
            for text, name in REASONS.items():
                cell = cell.replace(text, name)
            cells.append(cell)
        rows.append(f"{method:6} {path:38} | " + " | ".join(cells))
    return rows


def test_every_cliproxyapi_route_is_served_or_says_why_not(tmp_path):
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    assert cliproxyapi_observed(tmp_path) == CLIPROXYAPI_EXPECTED.strip().splitlines()


def test_the_catalogue_is_cliproxyapis_129_routes_and_every_refusal_has_a_reason():
    assert len(catalog.CLIPROXYAPI_ROUTES) == len(set(catalog.CLIPROXYAPI_ROUTES)) == 129
    refused = [line for line in CLIPROXYAPI_EXPECTED.strip().splitlines() if line.endswith(" | 501")]
    assert not refused  # the with-key column of a 501 always names its reason
    for line in CLIPROXYAPI_EXPECTED.strip().splitlines():
        if "| 501 " in line:
            assert line.rsplit("| 501 ", 1)[1] in REASONS.values(), line


def test_paths_cliproxyapi_does_not_have_stay_plain_404s_and_405s(tmp_path):
    rig = ManagementRig(tmp_path)
    assert rig.call("GET", "/plugins-x") == (404, {"error": "not found"})
    assert rig.call("POST", "/config") == (405, {"error": "method not allowed"})
    assert rig.call("PUT", "/api-key-usage") == (404, {"error": "not found"})


def test_an_unexpected_error_is_a_500_and_logged(tmp_path, monkeypatch):
    rig = ManagementRig(tmp_path)

    def broken() -> None:
        raise RuntimeError("the state store broke")

    monkeypatch.setattr(rig.state, "usage", broken)
    with capturedLogs() as events:
        assert rig.call("GET", "/status") == (500, {"error": "error"})
    [event] = [e for e in events if e.get("log_failure") is not None]
    assert event["log_format"] == "unhandled management error on {path}" and event["path"] == b"/status"
    assert event["log_failure"].check(RuntimeError)


def test_the_table_has_every_route_the_resources_declare():
    declared = {r.path for kind in RESOURCES for _, r in routes(kind)}
    declared |= {f"/{name}" for kind in RESOURCES for name in kind.names}
    cliproxyapi = {path for _, path in catalog.CLIPROXYAPI_ROUTES}
    assert declared <= set(PATHS) | cliproxyapi  # every route is in one table or the other
    assert set(PATHS[:PATHS.index("/")]) <= declared  # the routes come first, then what is no route
