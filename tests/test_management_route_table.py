"""
Every management route and method, and paths and methods that are no
route, answered as they always were: with the API off, without a key and
with the key. Recorded from the API before it was split into resources;
a change to this table is a change of behaviour.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import capturedLogs

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
    "/kimi-auth-url", "/xai-auth-url", "/get-auth-status", "/oauth-callback", "/oauth-session",
    "/logging-to-file", "/logs-max-total-size-mb", "/request-log", "/error-logs-max-files",
    "/usage-statistics-enabled", "/logs", "/request-error-logs", "/request-error-logs/<name>",
    "/request-log-by-id/<request_id>",
    # no routes
    "/", "/nope", "/Status", "/status/", "/status/x", "//status", "/routing", "/routing/nope",
    "/quota-groups/", "/quota-groups/nope", "/config.yaml/x", "/credentials/reset/x", "/api-keys/0",
    "/auth-files/", "/auth-files/nope", "/auth-files/download/x",
)

#: method path | API off, with the key | no key | with the key
EXPECTED = """
GET     /status                      | 404 not found | 401 missing management key | 200
HEAD    /status                      | 404 | 401 | 200
POST    /status                      | 405 error | 405 error | 405 error
PUT     /status                      | 404 not found | 401 missing management key | 404 not found
PATCH   /status                      | 404 not found | 401 missing management key | 404 not found
DELETE  /status                      | 404 not found | 401 missing management key | 404 not found
OPTIONS /status                      | 405 error | 405 error | 405 error
GET     /credentials                 | 404 not found | 401 missing management key | 200
HEAD    /credentials                 | 404 | 401 | 200
POST    /credentials                 | 405 error | 405 error | 405 error
PUT     /credentials                 | 404 not found | 401 missing management key | 404 not found
PATCH   /credentials                 | 404 not found | 401 missing management key | 404 not found
DELETE  /credentials                 | 404 not found | 401 missing management key | 404 not found
OPTIONS /credentials                 | 405 error | 405 error | 405 error
GET     /credentials/reset           | 404 not found | 401 missing management key | 404 not found
HEAD    /credentials/reset           | 404 | 401 | 404
POST    /credentials/reset           | 404 not found | 401 missing management key | 400 the body is not valid JSON
PUT     /credentials/reset           | 404 not found | 401 missing management key | 404 not found
PATCH   /credentials/reset           | 404 not found | 401 missing management key | 404 not found
DELETE  /credentials/reset           | 404 not found | 401 missing management key | 404 not found
OPTIONS /credentials/reset           | 405 error | 405 error | 405 error
GET     /usage                       | 404 not found | 401 missing management key | 200
HEAD    /usage                       | 404 | 401 | 200
POST    /usage                       | 405 error | 405 error | 405 error
PUT     /usage                       | 404 not found | 401 missing management key | 404 not found
PATCH   /usage                       | 404 not found | 401 missing management key | 404 not found
DELETE  /usage                       | 404 not found | 401 missing management key | 404 not found
OPTIONS /usage                       | 405 error | 405 error | 405 error
GET     /quota-groups                | 404 not found | 401 missing management key | 200
HEAD    /quota-groups                | 404 | 401 | 200
POST    /quota-groups                | 405 error | 405 error | 405 error
PUT     /quota-groups                | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups                | 404 not found | 401 missing management key | 404 not found
DELETE  /quota-groups                | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups                | 405 error | 405 error | 405 error
GET     /quota-groups/manual         | 404 not found | 401 missing management key | 404 not found
HEAD    /quota-groups/manual         | 404 | 401 | 404
POST    /quota-groups/manual         | 405 error | 405 error | 405 error
PUT     /quota-groups/manual         | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups/manual         | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /quota-groups/manual         | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups/manual         | 405 error | 405 error | 405 error
GET     /quota-groups/auto-clear     | 404 not found | 401 missing management key | 404 not found
HEAD    /quota-groups/auto-clear     | 404 | 401 | 404
POST    /quota-groups/auto-clear     | 405 error | 405 error | 405 error
PUT     /quota-groups/auto-clear     | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups/auto-clear     | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /quota-groups/auto-clear     | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups/auto-clear     | 405 error | 405 error | 405 error
GET     /quota-groups/auto-clear-all | 404 not found | 401 missing management key | 404 not found
HEAD    /quota-groups/auto-clear-all | 404 | 401 | 404
POST    /quota-groups/auto-clear-all | 404 not found | 401 missing management key | 400 the body is not valid JSON
PUT     /quota-groups/auto-clear-all | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups/auto-clear-all | 404 not found | 401 missing management key | 404 not found
DELETE  /quota-groups/auto-clear-all | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups/auto-clear-all | 405 error | 405 error | 405 error
GET     /config                      | 404 not found | 401 missing management key | 200
HEAD    /config                      | 404 | 401 | 200
POST    /config                      | 405 error | 405 error | 405 error
PUT     /config                      | 404 not found | 401 missing management key | 404 not found
PATCH   /config                      | 404 not found | 401 missing management key | 404 not found
DELETE  /config                      | 404 not found | 401 missing management key | 404 not found
OPTIONS /config                      | 405 error | 405 error | 405 error
GET     /config.yaml                 | 404 not found | 401 missing management key | 200 (application/yaml; charset=utf-8)
HEAD    /config.yaml                 | 404 | 401 | 200 (application/yaml; charset=utf-8)
POST    /config.yaml                 | 405 error | 405 error | 405 error
PUT     /config.yaml                 | 404 not found | 401 missing management key | 422 invalid_config
PATCH   /config.yaml                 | 404 not found | 401 missing management key | 404 not found
DELETE  /config.yaml                 | 404 not found | 401 missing management key | 404 not found
OPTIONS /config.yaml                 | 405 error | 405 error | 405 error
GET     /debug                       | 404 not found | 401 missing management key | 200
HEAD    /debug                       | 404 | 401 | 400
POST    /debug                       | 405 error | 405 error | 405 error
PUT     /debug                       | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /debug                       | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /debug                       | 404 not found | 401 missing management key | 200
OPTIONS /debug                       | 405 error | 405 error | 405 error
GET     /request-retry               | 404 not found | 401 missing management key | 200
HEAD    /request-retry               | 404 | 401 | 400
POST    /request-retry               | 405 error | 405 error | 405 error
PUT     /request-retry               | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /request-retry               | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /request-retry               | 404 not found | 401 missing management key | 200
OPTIONS /request-retry               | 405 error | 405 error | 405 error
GET     /max-retry-interval          | 404 not found | 401 missing management key | 200
HEAD    /max-retry-interval          | 404 | 401 | 400
POST    /max-retry-interval          | 405 error | 405 error | 405 error
PUT     /max-retry-interval          | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /max-retry-interval          | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /max-retry-interval          | 404 not found | 401 missing management key | 200
OPTIONS /max-retry-interval          | 405 error | 405 error | 405 error
GET     /max-retry-credentials       | 404 not found | 401 missing management key | 200
HEAD    /max-retry-credentials       | 404 | 401 | 400
POST    /max-retry-credentials       | 405 error | 405 error | 405 error
PUT     /max-retry-credentials       | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /max-retry-credentials       | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /max-retry-credentials       | 404 not found | 401 missing management key | 200
OPTIONS /max-retry-credentials       | 405 error | 405 error | 405 error
GET     /force-model-prefix          | 404 not found | 401 missing management key | 200
HEAD    /force-model-prefix          | 404 | 401 | 400
POST    /force-model-prefix          | 405 error | 405 error | 405 error
PUT     /force-model-prefix          | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /force-model-prefix          | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /force-model-prefix          | 404 not found | 401 missing management key | 200
OPTIONS /force-model-prefix          | 405 error | 405 error | 405 error
GET     /disable-cooling             | 404 not found | 401 missing management key | 200
HEAD    /disable-cooling             | 404 | 401 | 400
POST    /disable-cooling             | 405 error | 405 error | 405 error
PUT     /disable-cooling             | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /disable-cooling             | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /disable-cooling             | 404 not found | 401 missing management key | 200
OPTIONS /disable-cooling             | 405 error | 405 error | 405 error
GET     /max-body-mb                 | 404 not found | 401 missing management key | 200
HEAD    /max-body-mb                 | 404 | 401 | 400
POST    /max-body-mb                 | 405 error | 405 error | 405 error
PUT     /max-body-mb                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /max-body-mb                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /max-body-mb                 | 404 not found | 401 missing management key | 200
OPTIONS /max-body-mb                 | 405 error | 405 error | 405 error
GET     /routing/strategy            | 404 not found | 401 missing management key | 200
HEAD    /routing/strategy            | 404 | 401 | 400
POST    /routing/strategy            | 405 error | 405 error | 405 error
PUT     /routing/strategy            | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /routing/strategy            | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /routing/strategy            | 404 not found | 401 missing management key | 200
OPTIONS /routing/strategy            | 405 error | 405 error | 405 error
GET     /routing/session-affinity    | 404 not found | 401 missing management key | 200
HEAD    /routing/session-affinity    | 404 | 401 | 400
POST    /routing/session-affinity    | 405 error | 405 error | 405 error
PUT     /routing/session-affinity    | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /routing/session-affinity    | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /routing/session-affinity    | 404 not found | 401 missing management key | 200
OPTIONS /routing/session-affinity    | 405 error | 405 error | 405 error
GET     /proxy-url                   | 404 not found | 401 missing management key | 200
HEAD    /proxy-url                   | 404 | 401 | 400
POST    /proxy-url                   | 405 error | 405 error | 405 error
PUT     /proxy-url                   | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /proxy-url                   | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /proxy-url                   | 404 not found | 401 missing management key | 200
OPTIONS /proxy-url                   | 405 error | 405 error | 405 error
GET     /api-keys                    | 404 not found | 401 missing management key | 200
HEAD    /api-keys                    | 404 | 401 | 400
POST    /api-keys                    | 405 error | 405 error | 405 error
PUT     /api-keys                    | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /api-keys                    | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /api-keys                    | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
OPTIONS /api-keys                    | 405 error | 405 error | 405 error
GET     /openai-compatibility        | 404 not found | 401 missing management key | 200
HEAD    /openai-compatibility        | 404 | 401 | 400
POST    /openai-compatibility        | 405 error | 405 error | 405 error
PUT     /openai-compatibility        | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /openai-compatibility        | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /openai-compatibility        | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
OPTIONS /openai-compatibility        | 405 error | 405 error | 405 error
GET     /claude-api-key              | 404 not found | 401 missing management key | 200
HEAD    /claude-api-key              | 404 | 401 | 400
POST    /claude-api-key              | 405 error | 405 error | 405 error
PUT     /claude-api-key              | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /claude-api-key              | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /claude-api-key              | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
OPTIONS /claude-api-key              | 405 error | 405 error | 405 error
GET     /gemini-api-key              | 404 not found | 401 missing management key | 200
HEAD    /gemini-api-key              | 404 | 401 | 400
POST    /gemini-api-key              | 405 error | 405 error | 405 error
PUT     /gemini-api-key              | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /gemini-api-key              | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /gemini-api-key              | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
OPTIONS /gemini-api-key              | 405 error | 405 error | 405 error
GET     /codex-api-key               | 404 not found | 401 missing management key | 200
HEAD    /codex-api-key               | 404 | 401 | 400
POST    /codex-api-key               | 405 error | 405 error | 405 error
PUT     /codex-api-key               | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /codex-api-key               | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /codex-api-key               | 404 not found | 401 missing management key | 400 say which entry: ?index=, ?api-key=, ?name= or ?value=
OPTIONS /codex-api-key               | 405 error | 405 error | 405 error
GET     /auth-files                  | 404 not found | 401 missing management key | 200
HEAD    /auth-files                  | 404 | 401 | 200
POST    /auth-files                  | 404 not found | 401 missing management key | 400 name is required: a file name ending in .json
PUT     /auth-files                  | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files                  | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files                  | 404 not found | 401 missing management key | 400 the body is not valid JSON
OPTIONS /auth-files                  | 405 error | 405 error | 405 error
GET     /auth-files/download         | 404 not found | 401 missing management key | 400 name is required: a file name ending in .json
HEAD    /auth-files/download         | 404 | 401 | 400
POST    /auth-files/download         | 405 error | 405 error | 405 error
PUT     /auth-files/download         | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/download         | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files/download         | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/download         | 405 error | 405 error | 405 error
GET     /auth-files/status           | 404 not found | 401 missing management key | 404 not found
HEAD    /auth-files/status           | 404 | 401 | 404
POST    /auth-files/status           | 405 error | 405 error | 405 error
PUT     /auth-files/status           | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/status           | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /auth-files/status           | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/status           | 405 error | 405 error | 405 error
GET     /auth-files/fields           | 404 not found | 401 missing management key | 404 not found
HEAD    /auth-files/fields           | 404 | 401 | 404
POST    /auth-files/fields           | 405 error | 405 error | 405 error
PUT     /auth-files/fields           | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/fields           | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /auth-files/fields           | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/fields           | 405 error | 405 error | 405 error
GET     /auth-files/models           | 404 not found | 401 missing management key | 400 name is required (?name=x.json)
HEAD    /auth-files/models           | 404 | 401 | 400
POST    /auth-files/models           | 405 error | 405 error | 405 error
PUT     /auth-files/models           | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/models           | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files/models           | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/models           | 405 error | 405 error | 405 error
GET     /model-definitions/<channel> | 404 not found | 401 missing management key | 400 unknown channel: one of claude, codex, gemini-cli, antigravity, gemini
HEAD    /model-definitions/<channel> | 404 | 401 | 400
POST    /model-definitions/<channel> | 405 error | 405 error | 405 error
PUT     /model-definitions/<channel> | 404 not found | 401 missing management key | 404 not found
PATCH   /model-definitions/<channel> | 404 not found | 401 missing management key | 404 not found
DELETE  /model-definitions/<channel> | 404 not found | 401 missing management key | 404 not found
OPTIONS /model-definitions/<channel> | 405 error | 405 error | 405 error
GET     /vertex/import               | 404 not found | 401 missing management key | 404 not found
HEAD    /vertex/import               | 404 | 401 | 404
POST    /vertex/import               | 404 not found | 401 missing management key | 400 cliproxyd serves no Vertex service-account credentials: use a gemini-api-key entry, or log a Gemini CLI or Antigravity account in
PUT     /vertex/import               | 404 not found | 401 missing management key | 404 not found
PATCH   /vertex/import               | 404 not found | 401 missing management key | 404 not found
DELETE  /vertex/import               | 404 not found | 401 missing management key | 404 not found
OPTIONS /vertex/import               | 405 error | 405 error | 405 error
GET     /api-call                    | 404 not found | 401 missing management key | 404 not found
HEAD    /api-call                    | 404 | 401 | 404
POST    /api-call                    | 404 not found | 401 missing management key | 400 the body is not valid JSON
PUT     /api-call                    | 404 not found | 401 missing management key | 404 not found
PATCH   /api-call                    | 404 not found | 401 missing management key | 404 not found
DELETE  /api-call                    | 404 not found | 401 missing management key | 404 not found
OPTIONS /api-call                    | 405 error | 405 error | 405 error
GET     /anthropic-auth-url          | 404 not found | 401 missing management key | 200
HEAD    /anthropic-auth-url          | 404 | 401 | 200
POST    /anthropic-auth-url          | 405 error | 405 error | 405 error
PUT     /anthropic-auth-url          | 404 not found | 401 missing management key | 404 not found
PATCH   /anthropic-auth-url          | 404 not found | 401 missing management key | 404 not found
DELETE  /anthropic-auth-url          | 404 not found | 401 missing management key | 404 not found
OPTIONS /anthropic-auth-url          | 405 error | 405 error | 405 error
GET     /codex-auth-url              | 404 not found | 401 missing management key | 200
HEAD    /codex-auth-url              | 404 | 401 | 200
POST    /codex-auth-url              | 405 error | 405 error | 405 error
PUT     /codex-auth-url              | 404 not found | 401 missing management key | 404 not found
PATCH   /codex-auth-url              | 404 not found | 401 missing management key | 404 not found
DELETE  /codex-auth-url              | 404 not found | 401 missing management key | 404 not found
OPTIONS /codex-auth-url              | 405 error | 405 error | 405 error
GET     /gemini-cli-auth-url         | 404 not found | 401 missing management key | 200
HEAD    /gemini-cli-auth-url         | 404 | 401 | 200
POST    /gemini-cli-auth-url         | 405 error | 405 error | 405 error
PUT     /gemini-cli-auth-url         | 404 not found | 401 missing management key | 404 not found
PATCH   /gemini-cli-auth-url         | 404 not found | 401 missing management key | 404 not found
DELETE  /gemini-cli-auth-url         | 404 not found | 401 missing management key | 404 not found
OPTIONS /gemini-cli-auth-url         | 405 error | 405 error | 405 error
GET     /antigravity-auth-url        | 404 not found | 401 missing management key | 200
HEAD    /antigravity-auth-url        | 404 | 401 | 200
POST    /antigravity-auth-url        | 405 error | 405 error | 405 error
PUT     /antigravity-auth-url        | 404 not found | 401 missing management key | 404 not found
PATCH   /antigravity-auth-url        | 404 not found | 401 missing management key | 404 not found
DELETE  /antigravity-auth-url        | 404 not found | 401 missing management key | 404 not found
OPTIONS /antigravity-auth-url        | 405 error | 405 error | 405 error
GET     /kimi-auth-url               | 404 not found | 401 missing management key | 400 cliproxyd has no kimi login: it logs in claude (anthropic), codex, gemini-cli and antigravity accounts
HEAD    /kimi-auth-url               | 404 | 401 | 400
POST    /kimi-auth-url               | 405 error | 405 error | 405 error
PUT     /kimi-auth-url               | 404 not found | 401 missing management key | 404 not found
PATCH   /kimi-auth-url               | 404 not found | 401 missing management key | 404 not found
DELETE  /kimi-auth-url               | 404 not found | 401 missing management key | 404 not found
OPTIONS /kimi-auth-url               | 405 error | 405 error | 405 error
GET     /xai-auth-url                | 404 not found | 401 missing management key | 400 cliproxyd has no xai login: it logs in claude (anthropic), codex, gemini-cli and antigravity accounts
HEAD    /xai-auth-url                | 404 | 401 | 400
POST    /xai-auth-url                | 405 error | 405 error | 405 error
PUT     /xai-auth-url                | 404 not found | 401 missing management key | 404 not found
PATCH   /xai-auth-url                | 404 not found | 401 missing management key | 404 not found
DELETE  /xai-auth-url                | 404 not found | 401 missing management key | 404 not found
OPTIONS /xai-auth-url                | 405 error | 405 error | 405 error
GET     /get-auth-status             | 404 not found | 401 missing management key | 200
HEAD    /get-auth-status             | 404 | 401 | 200
POST    /get-auth-status             | 405 error | 405 error | 405 error
PUT     /get-auth-status             | 404 not found | 401 missing management key | 404 not found
PATCH   /get-auth-status             | 404 not found | 401 missing management key | 404 not found
DELETE  /get-auth-status             | 404 not found | 401 missing management key | 404 not found
OPTIONS /get-auth-status             | 405 error | 405 error | 405 error
GET     /oauth-callback              | 404 not found | 401 missing management key | 400 state is required
HEAD    /oauth-callback              | 404 | 401 | 400
POST    /oauth-callback              | 404 not found | 401 missing management key | 400 the body is not valid JSON
PUT     /oauth-callback              | 404 not found | 401 missing management key | 404 not found
PATCH   /oauth-callback              | 404 not found | 401 missing management key | 404 not found
DELETE  /oauth-callback              | 404 not found | 401 missing management key | 404 not found
OPTIONS /oauth-callback              | 405 error | 405 error | 405 error
GET     /oauth-session               | 404 not found | 401 missing management key | 404 not found
HEAD    /oauth-session               | 404 | 401 | 404
POST    /oauth-session               | 405 error | 405 error | 405 error
PUT     /oauth-session               | 404 not found | 401 missing management key | 404 not found
PATCH   /oauth-session               | 404 not found | 401 missing management key | 404 not found
DELETE  /oauth-session               | 404 not found | 401 missing management key | 404 no pending login with that state
OPTIONS /oauth-session               | 405 error | 405 error | 405 error
GET     /logging-to-file             | 404 not found | 401 missing management key | 200
HEAD    /logging-to-file             | 404 | 401 | 400
POST    /logging-to-file             | 405 error | 405 error | 405 error
PUT     /logging-to-file             | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /logging-to-file             | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /logging-to-file             | 404 not found | 401 missing management key | 200
OPTIONS /logging-to-file             | 405 error | 405 error | 405 error
GET     /logs-max-total-size-mb      | 404 not found | 401 missing management key | 200
HEAD    /logs-max-total-size-mb      | 404 | 401 | 400
POST    /logs-max-total-size-mb      | 405 error | 405 error | 405 error
PUT     /logs-max-total-size-mb      | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /logs-max-total-size-mb      | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /logs-max-total-size-mb      | 404 not found | 401 missing management key | 200
OPTIONS /logs-max-total-size-mb      | 405 error | 405 error | 405 error
GET     /request-log                 | 404 not found | 401 missing management key | 200
HEAD    /request-log                 | 404 | 401 | 400
POST    /request-log                 | 405 error | 405 error | 405 error
PUT     /request-log                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /request-log                 | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /request-log                 | 404 not found | 401 missing management key | 200
OPTIONS /request-log                 | 405 error | 405 error | 405 error
GET     /error-logs-max-files        | 404 not found | 401 missing management key | 200
HEAD    /error-logs-max-files        | 404 | 401 | 400
POST    /error-logs-max-files        | 405 error | 405 error | 405 error
PUT     /error-logs-max-files        | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /error-logs-max-files        | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /error-logs-max-files        | 404 not found | 401 missing management key | 200
OPTIONS /error-logs-max-files        | 405 error | 405 error | 405 error
GET     /usage-statistics-enabled    | 404 not found | 401 missing management key | 200
HEAD    /usage-statistics-enabled    | 404 | 401 | 400
POST    /usage-statistics-enabled    | 405 error | 405 error | 405 error
PUT     /usage-statistics-enabled    | 404 not found | 401 missing management key | 400 the body is not valid JSON
PATCH   /usage-statistics-enabled    | 404 not found | 401 missing management key | 400 the body is not valid JSON
DELETE  /usage-statistics-enabled    | 404 not found | 401 missing management key | 200
OPTIONS /usage-statistics-enabled    | 405 error | 405 error | 405 error
GET     /logs                        | 404 not found | 401 missing management key | 400 logging to file disabled
HEAD    /logs                        | 404 | 401 | 400
POST    /logs                        | 405 error | 405 error | 405 error
PUT     /logs                        | 404 not found | 401 missing management key | 404 not found
PATCH   /logs                        | 404 not found | 401 missing management key | 404 not found
DELETE  /logs                        | 404 not found | 401 missing management key | 400 logging to file disabled
OPTIONS /logs                        | 405 error | 405 error | 405 error
GET     /request-error-logs          | 404 not found | 401 missing management key | 200
HEAD    /request-error-logs          | 404 | 401 | 200
POST    /request-error-logs          | 405 error | 405 error | 405 error
PUT     /request-error-logs          | 404 not found | 401 missing management key | 404 not found
PATCH   /request-error-logs          | 404 not found | 401 missing management key | 404 not found
DELETE  /request-error-logs          | 404 not found | 401 missing management key | 404 not found
OPTIONS /request-error-logs          | 405 error | 405 error | 405 error
GET     /request-error-logs/<name>   | 404 not found | 401 missing management key | 404 log file not found
HEAD    /request-error-logs/<name>   | 404 | 401 | 404
POST    /request-error-logs/<name>   | 405 error | 405 error | 405 error
PUT     /request-error-logs/<name>   | 404 not found | 401 missing management key | 404 not found
PATCH   /request-error-logs/<name>   | 404 not found | 401 missing management key | 404 not found
DELETE  /request-error-logs/<name>   | 404 not found | 401 missing management key | 404 not found
OPTIONS /request-error-logs/<name>   | 405 error | 405 error | 405 error
GET     /request-log-by-id/<request_id> | 404 not found | 401 missing management key | 404 log file not found for the given request ID
HEAD    /request-log-by-id/<request_id> | 404 | 401 | 404
POST    /request-log-by-id/<request_id> | 405 error | 405 error | 405 error
PUT     /request-log-by-id/<request_id> | 404 not found | 401 missing management key | 404 not found
PATCH   /request-log-by-id/<request_id> | 404 not found | 401 missing management key | 404 not found
DELETE  /request-log-by-id/<request_id> | 404 not found | 401 missing management key | 404 not found
OPTIONS /request-log-by-id/<request_id> | 405 error | 405 error | 405 error
GET     /                            | 404 not found | 404 not found | 404 not found
HEAD    /                            | 404 | 404 | 404
POST    /                            | 404 not found | 404 not found | 404 not found
PUT     /                            | 404 not found | 404 not found | 404 not found
PATCH   /                            | 404 not found | 404 not found | 404 not found
DELETE  /                            | 404 not found | 404 not found | 404 not found
OPTIONS /                            | 404 not found | 404 not found | 404 not found
GET     /nope                        | 404 not found | 401 missing management key | 404 not found
HEAD    /nope                        | 404 | 401 | 404
POST    /nope                        | 405 error | 405 error | 405 error
PUT     /nope                        | 404 not found | 401 missing management key | 404 not found
PATCH   /nope                        | 404 not found | 401 missing management key | 404 not found
DELETE  /nope                        | 404 not found | 401 missing management key | 404 not found
OPTIONS /nope                        | 405 error | 405 error | 405 error
GET     /Status                      | 404 not found | 401 missing management key | 404 not found
HEAD    /Status                      | 404 | 401 | 404
POST    /Status                      | 405 error | 405 error | 405 error
PUT     /Status                      | 404 not found | 401 missing management key | 404 not found
PATCH   /Status                      | 404 not found | 401 missing management key | 404 not found
DELETE  /Status                      | 404 not found | 401 missing management key | 404 not found
OPTIONS /Status                      | 405 error | 405 error | 405 error
GET     /status/                     | 404 not found | 401 missing management key | 404 not found
HEAD    /status/                     | 404 | 401 | 404
POST    /status/                     | 405 error | 405 error | 405 error
PUT     /status/                     | 404 not found | 401 missing management key | 404 not found
PATCH   /status/                     | 404 not found | 401 missing management key | 404 not found
DELETE  /status/                     | 404 not found | 401 missing management key | 404 not found
OPTIONS /status/                     | 405 error | 405 error | 405 error
GET     /status/x                    | 404 not found | 401 missing management key | 404 not found
HEAD    /status/x                    | 404 | 401 | 404
POST    /status/x                    | 405 error | 405 error | 405 error
PUT     /status/x                    | 404 not found | 401 missing management key | 404 not found
PATCH   /status/x                    | 404 not found | 401 missing management key | 404 not found
DELETE  /status/x                    | 404 not found | 401 missing management key | 404 not found
OPTIONS /status/x                    | 405 error | 405 error | 405 error
GET     //status                     | 404 not found | 401 missing management key | 200
HEAD    //status                     | 404 | 401 | 200
POST    //status                     | 405 error | 405 error | 405 error
PUT     //status                     | 404 not found | 401 missing management key | 404 not found
PATCH   //status                     | 404 not found | 401 missing management key | 404 not found
DELETE  //status                     | 404 not found | 401 missing management key | 404 not found
OPTIONS //status                     | 405 error | 405 error | 405 error
GET     /routing                     | 404 not found | 401 missing management key | 404 not found
HEAD    /routing                     | 404 | 401 | 404
POST    /routing                     | 405 error | 405 error | 405 error
PUT     /routing                     | 404 not found | 401 missing management key | 404 not found
PATCH   /routing                     | 404 not found | 401 missing management key | 404 not found
DELETE  /routing                     | 404 not found | 401 missing management key | 404 not found
OPTIONS /routing                     | 405 error | 405 error | 405 error
GET     /routing/nope                | 404 not found | 401 missing management key | 404 not found
HEAD    /routing/nope                | 404 | 401 | 404
POST    /routing/nope                | 405 error | 405 error | 405 error
PUT     /routing/nope                | 404 not found | 401 missing management key | 404 not found
PATCH   /routing/nope                | 404 not found | 401 missing management key | 404 not found
DELETE  /routing/nope                | 404 not found | 401 missing management key | 404 not found
OPTIONS /routing/nope                | 405 error | 405 error | 405 error
GET     /quota-groups/               | 404 not found | 401 missing management key | 404 not found
HEAD    /quota-groups/               | 404 | 401 | 404
POST    /quota-groups/               | 405 error | 405 error | 405 error
PUT     /quota-groups/               | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups/               | 404 not found | 401 missing management key | 404 not found
DELETE  /quota-groups/               | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups/               | 405 error | 405 error | 405 error
GET     /quota-groups/nope           | 404 not found | 401 missing management key | 404 not found
HEAD    /quota-groups/nope           | 404 | 401 | 404
POST    /quota-groups/nope           | 405 error | 405 error | 405 error
PUT     /quota-groups/nope           | 404 not found | 401 missing management key | 404 not found
PATCH   /quota-groups/nope           | 404 not found | 401 missing management key | 404 not found
DELETE  /quota-groups/nope           | 404 not found | 401 missing management key | 404 not found
OPTIONS /quota-groups/nope           | 405 error | 405 error | 405 error
GET     /config.yaml/x               | 404 not found | 401 missing management key | 404 not found
HEAD    /config.yaml/x               | 404 | 401 | 404
POST    /config.yaml/x               | 405 error | 405 error | 405 error
PUT     /config.yaml/x               | 404 not found | 401 missing management key | 404 not found
PATCH   /config.yaml/x               | 404 not found | 401 missing management key | 404 not found
DELETE  /config.yaml/x               | 404 not found | 401 missing management key | 404 not found
OPTIONS /config.yaml/x               | 405 error | 405 error | 405 error
GET     /credentials/reset/x         | 404 not found | 401 missing management key | 404 not found
HEAD    /credentials/reset/x         | 404 | 401 | 404
POST    /credentials/reset/x         | 405 error | 405 error | 405 error
PUT     /credentials/reset/x         | 404 not found | 401 missing management key | 404 not found
PATCH   /credentials/reset/x         | 404 not found | 401 missing management key | 404 not found
DELETE  /credentials/reset/x         | 404 not found | 401 missing management key | 404 not found
OPTIONS /credentials/reset/x         | 405 error | 405 error | 405 error
GET     /api-keys/0                  | 404 not found | 401 missing management key | 404 not found
HEAD    /api-keys/0                  | 404 | 401 | 404
POST    /api-keys/0                  | 405 error | 405 error | 405 error
PUT     /api-keys/0                  | 404 not found | 401 missing management key | 404 not found
PATCH   /api-keys/0                  | 404 not found | 401 missing management key | 404 not found
DELETE  /api-keys/0                  | 404 not found | 401 missing management key | 404 not found
OPTIONS /api-keys/0                  | 405 error | 405 error | 405 error
GET     /auth-files/                 | 404 not found | 401 missing management key | 404 not found
HEAD    /auth-files/                 | 404 | 401 | 404
POST    /auth-files/                 | 405 error | 405 error | 405 error
PUT     /auth-files/                 | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/                 | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files/                 | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/                 | 405 error | 405 error | 405 error
GET     /auth-files/nope             | 404 not found | 401 missing management key | 404 not found
HEAD    /auth-files/nope             | 404 | 401 | 404
POST    /auth-files/nope             | 405 error | 405 error | 405 error
PUT     /auth-files/nope             | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/nope             | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files/nope             | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/nope             | 405 error | 405 error | 405 error
GET     /auth-files/download/x       | 404 not found | 401 missing management key | 404 not found
HEAD    /auth-files/download/x       | 404 | 401 | 404
POST    /auth-files/download/x       | 405 error | 405 error | 405 error
PUT     /auth-files/download/x       | 404 not found | 401 missing management key | 404 not found
PATCH   /auth-files/download/x       | 404 not found | 401 missing management key | 404 not found
DELETE  /auth-files/download/x       | 404 not found | 401 missing management key | 404 not found
OPTIONS /auth-files/download/x       | 405 error | 405 error | 405 error
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
    assert declared <= set(PATHS)
    assert len(declared) == PATHS.index("/")  # the routes come first, then what is no route
