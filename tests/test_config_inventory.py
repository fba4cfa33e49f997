"""
Issue 13: every key of CLIProxyAPI's config.example.yaml is acted on, or
refused with a reason.

L{INVENTORY} lists every key path of CLIProxyAPI's config.example.yaml at
a7e3596b7, its commented examples included, with a valid value for each
leaf (our own values: the names are facts of that file). The tests build one
config setting all of them and check that loading it ignores none: no
"unknown key" or "not supported" warning, and every key that cannot apply to
cliproxyd gets its one-line reason from L{NOT_APPLICABLE}.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from cliproxyd.config.load import NOT_APPLICABLE, not_applicable, parse_config_bytes

#: (key path, value). A path's list items are written C{[]}: each list in
#: the built config holds one item carrying every key listed under it. A
#: value of C{...} marks a section, set by the keys listed below it.
INVENTORY: list[tuple[str, Any]] = [
    ('host', '127.0.0.1'),
    ('port', 8317),
    ('tls', ...),
    ('tls.enable', True),
    ('tls.cert', '/etc/cliproxyd/tls/cert.pem'),
    ('tls.key', '/etc/cliproxyd/tls/key.pem'),
    ('remote-management', ...),
    ('remote-management.allow-remote', False),
    ('remote-management.secret-key', ''),
    ('remote-management.disable-control-panel', False),
    ('remote-management.disable-auto-update-panel', False),
    ('remote-management.panel-github-repository', 'https://github.com/example/panel'),
    ('auth-dir', '~/.cliproxyd-inventory-auth'),
    ('api-keys', ['client-key']),
    ('debug', False),
    ('pprof', ...),
    ('pprof.enable', False),
    ('pprof.addr', '127.0.0.1:6060'),
    ('credential-concurrency', ...),
    ('credential-concurrency.lifecycle-config-revision', 1),
    ('credential-concurrency.observation-barrier-revision', 0),
    ('credential-concurrency.cpa-heartbeat-timeout', 'test-value'),
    ('credential-concurrency.cpa-cancel-bound', 'test-value'),
    ('credential-concurrency.reclaim-grace', 'test-value'),
    ('credential-concurrency.cleanup-interval', 'test-value'),
    ('credential-concurrency.release-flush-interval', 'test-value'),
    ('credential-concurrency.release-max-backoff', 'test-value'),
    ('credential-concurrency.busy-retry-min', 'test-value'),
    ('credential-concurrency.busy-retry-max', 'test-value'),
    ('credential-concurrency.max-limit', 1000000),
    ('credential-in-flight', ...),
    ('credential-in-flight.snapshot-interval', 'test-value'),
    ('credential-in-flight.stale-after', 'test-value'),
    ('credential-in-flight.max-part-bytes', 262144),
    ('credential-in-flight.max-part-count', 64),
    ('credential-in-flight.max-revision-bytes', 16777216),
    ('credential-in-flight.max-aggregate-groups', 100000),
    ('credential-in-flight.max-details', 10000),
    ('credential-in-flight.max-string-bytes', 256),
    ('credential-in-flight.staging-retention', 'test-value'),
    ('plugins', ...),
    ('plugins.enabled', False),
    ('plugins.dir', 'plugins'),
    ('plugins.store-sources', ['https://plugins.example/registry.json']),
    ('plugins.store-auth', ...),
    ('plugins.store-auth[].match', 'https://plugins.example/'),
    ('plugins.store-auth[].apply-to', ['registry']),
    ('plugins.store-auth[].type', 'bearer'),
    ('plugins.store-auth[].token-env', 'PLUGIN_TOKEN'),
    ('plugins.configs', {'one': {'enabled': True}}),
    ('commercial-mode', False),
    ('logging-to-file', False),
    ('logs-max-total-size-mb', 0),
    ('error-logs-max-files', 10),
    ('usage-statistics-enabled', False),
    ('redis-usage-queue-retention-seconds', 60),
    ('proxy-url', 'direct'),
    ('force-model-prefix', False),
    ('passthrough-headers', False),
    ('request-retry', 3),
    ('max-retry-credentials', 0),
    ('max-retry-interval', 30),
    ('disable-cooling', False),
    ('save-cooldown-status', False),
    ('transient-error-cooldown-seconds', 0),
    ('disable-claude-cloak-mode', False),
    ('claude-code', ...),
    ('claude-code.disable-cloaking-model-list', False),
    ('disable-image-generation', False),
    ('gpt-image-2-base-model', 'gpt-image-base'),
    ('video-result-auth-cache-ttl', '1h'),
    ('auth-auto-refresh-workers', 16),
    ('quota-exceeded', ...),
    ('quota-exceeded.switch-project', True),
    ('quota-exceeded.switch-preview-model', True),
    ('quota-exceeded.antigravity-credits', True),
    ('routing', ...),
    ('routing.strategy', 'round-robin'),
    ('routing.session-affinity', False),
    ('routing.session-affinity-ttl', '1h'),
    ('codex', ...),
    ('codex.identity-confuse', False),
    ('codex.disable-codex-cloaking', False),
    ('codex.stream-bootstrap-buffering', False),
    ('codex.optimize-multi-agent-v2', False),
    ('codex.live-media-relay', ...),
    ('codex.live-media-relay.enabled', False),
    ('codex.live-media-relay.max-sessions', 32),
    ('codex.live-media-relay.disable-private-remote-ips', False),
    ('codex.live-media-relay.public-ip', '192.0.2.1'),
    ('codex.live-media-relay.udp-port-min', 0),
    ('codex.live-media-relay.udp-port-max', 0),
    ('codex.live-media-relay.ice-servers', ...),
    ('codex.live-media-relay.ice-servers[].urls', ['stun:stun.example:3478']),
    ('codex.live-media-relay.ice-servers[].username', 'u'),
    ('codex.live-media-relay.ice-servers[].credential', 'c'),
    ('antigravity', ...),
    ('antigravity.sensitive-words', ['word']),
    ('xai', ...),
    ('xai.inject-x-search', False),
    ('ws-auth', True),
    ('nonstream-keepalive-interval', 0),
    ('streaming', ...),
    ('streaming.keepalive-seconds', 15),
    ('streaming.bootstrap-retries', 1),
    ('antigravity-signature-cache-enabled', True),
    ('antigravity-signature-bypass-strict', False),
    ('gemini-api-key', ...),
    ('gemini-api-key[].api-key', 'k-gemini-api-key'),
    ('gemini-api-key[].weight', 5),
    ('gemini-api-key[].prefix', 'team'),
    ('gemini-api-key[].disable-cooling', False),
    ('gemini-api-key[].request-retry', 3),
    ('gemini-api-key[].request-scoped-errors', ...),
    ('gemini-api-key[].request-scoped-errors[].status', 400),
    ('gemini-api-key[].request-scoped-errors[].match', ['context_length_exceeded']),
    ('gemini-api-key[].request-scoped-errors[].match-regexr', ['context_length_exceeded']),
    ('gemini-api-key[].request-scoped-errors[].action', 'stop'),
    ('gemini-api-key[].base-url', 'https://gemini-api-key.upstream.test/v1'),
    ('gemini-api-key[].headers', {'X-Test': '1'}),
    ('gemini-api-key[].proxy-url', 'direct'),
    ('gemini-api-key[].models', ...),
    ('gemini-api-key[].models[].name', 'gemini-api-key-model'),
    ('gemini-api-key[].models[].alias', 'gemini-api-key-alias'),
    ('gemini-api-key[].models[].display-name', 'gemini-api-key display name'),
    ('gemini-api-key[].models[].max-context-length', 200000),
    ('gemini-api-key[].models[].is-compat', False),
    ('gemini-api-key[].models[].thinking', ...),
    ('gemini-api-key[].models[].thinking.levels', ['low', 'high']),
    ('gemini-api-key[].excluded-models', ['retired-*']),
    ('interactions-api-key', ...),
    ('interactions-api-key[].api-key', 'k-interactions-api-key'),
    ('interactions-api-key[].weight', 5),
    ('interactions-api-key[].prefix', 'team'),
    ('interactions-api-key[].disable-cooling', False),
    ('interactions-api-key[].request-retry', 3),
    ('interactions-api-key[].request-scoped-errors', ...),
    ('interactions-api-key[].request-scoped-errors[].status', 400),
    ('interactions-api-key[].request-scoped-errors[].match', ['context_length_exceeded']),
    ('interactions-api-key[].request-scoped-errors[].action', 'stop'),
    ('interactions-api-key[].base-url', 'https://interactions-api-key.upstream.test/v1'),
    ('interactions-api-key[].headers', {'X-Test': '1'}),
    ('interactions-api-key[].proxy-url', 'direct'),
    ('interactions-api-key[].models', ...),
    ('interactions-api-key[].models[].name', 'interactions-api-key-model'),
    ('interactions-api-key[].models[].alias', 'interactions-api-key-alias'),
    ('interactions-api-key[].models[].max-context-length', 200000),
    ('interactions-api-key[].models[].is-compat', False),
    ('interactions-api-key[].models[].thinking', ...),
    ('interactions-api-key[].models[].thinking.levels', ['low', 'high']),
    ('interactions-api-key[].excluded-models', ['retired-*']),
    ('codex-api-key', ...),
    ('codex-api-key[].api-key', 'k-codex-api-key'),
    ('codex-api-key[].weight', 5),
    ('codex-api-key[].prefix', 'team'),
    ('codex-api-key[].disable-cooling', False),
    ('codex-api-key[].request-retry', 3),
    ('codex-api-key[].request-scoped-errors', ...),
    ('codex-api-key[].request-scoped-errors[].status', 400),
    ('codex-api-key[].request-scoped-errors[].match', ['context_length_exceeded']),
    ('codex-api-key[].request-scoped-errors[].action', 'stop'),
    ('codex-api-key[].base-url', 'https://codex-api-key.upstream.test/v1'),
    ('codex-api-key[].alpha-search', False),
    ('codex-api-key[].headers', {'X-Test': '1'}),
    ('codex-api-key[].proxy-url', 'direct'),
    ('codex-api-key[].models', ...),
    ('codex-api-key[].models[].name', 'codex-api-key-model'),
    ('codex-api-key[].models[].alias', 'codex-api-key-alias'),
    ('codex-api-key[].models[].display-name', 'codex-api-key display name'),
    ('codex-api-key[].models[].max-context-length', 200000),
    ('codex-api-key[].models[].is-compat', False),
    ('codex-api-key[].models[].thinking', ...),
    ('codex-api-key[].models[].thinking.levels', ['low', 'high']),
    ('codex-api-key[].excluded-models', ['retired-*']),
    ('xai-api-key', ...),
    ('xai-api-key[].api-key', 'k-xai-api-key'),
    ('xai-api-key[].weight', 5),
    ('xai-api-key[].prefix', 'team'),
    ('xai-api-key[].disable-cooling', False),
    ('xai-api-key[].request-retry', 3),
    ('xai-api-key[].request-scoped-errors', ...),
    ('xai-api-key[].request-scoped-errors[].status', 400),
    ('xai-api-key[].request-scoped-errors[].match', ['context_length_exceeded']),
    ('xai-api-key[].request-scoped-errors[].action', 'stop'),
    ('xai-api-key[].base-url', 'https://xai-api-key.upstream.test/v1'),
    ('xai-api-key[].websockets', True),
    ('xai-api-key[].headers', {'X-Test': '1'}),
    ('xai-api-key[].proxy-url', 'direct'),
    ('xai-api-key[].models', ...),
    ('xai-api-key[].models[].name', 'xai-api-key-model'),
    ('xai-api-key[].models[].alias', 'xai-api-key-alias'),
    ('xai-api-key[].models[].display-name', 'xai-api-key display name'),
    ('xai-api-key[].models[].max-context-length', 200000),
    ('xai-api-key[].models[].is-compat', False),
    ('xai-api-key[].models[].thinking', ...),
    ('xai-api-key[].models[].thinking.levels', ['low', 'high']),
    ('xai-api-key[].excluded-models', ['retired-*']),
    ('claude-api-key', ...),
    ('claude-api-key[].api-key', 'k-claude-api-key'),
    ('claude-api-key[].weight', 2),
    ('claude-api-key[].prefix', 'team'),
    ('claude-api-key[].disable-cooling', False),
    ('claude-api-key[].request-retry', 1),
    ('claude-api-key[].request-scoped-errors', ...),
    ('claude-api-key[].request-scoped-errors[].status', 400),
    ('claude-api-key[].request-scoped-errors[].match', ['too long']),
    ('claude-api-key[].request-scoped-errors[].action', 'stop'),
    ('claude-api-key[].base-url', 'https://claude-api-key.upstream.test/v1'),
    ('claude-api-key[].headers', {'X-Test': '1'}),
    ('claude-api-key[].proxy-url', 'direct'),
    ('claude-api-key[].models', ...),
    ('claude-api-key[].models[].name', 'claude-api-key-model'),
    ('claude-api-key[].models[].alias', 'claude-api-key-alias'),
    ('claude-api-key[].models[].display-name', 'claude-api-key display name'),
    ('claude-api-key[].models[].max-context-length', 200000),
    ('claude-api-key[].models[].is-compat', False),
    ('claude-api-key[].models[].thinking', ...),
    ('claude-api-key[].models[].thinking.levels', ['low', 'high']),
    ('claude-api-key[].excluded-models', ['retired-*']),
    ('claude-api-key[].rebuild-mid-system-message', False),
    ('claude-api-key[].cloak', ...),
    ('claude-api-key[].cloak.mode', 'auto'),
    ('claude-api-key[].cloak.strict-mode', False),
    ('claude-api-key[].cloak.sensitive-words', ['word']),
    ('claude-api-key[].cloak.cache-user-id', False),
    ('claude-api-key[].experimental-cch-signing', False),
    ('claude-header-defaults', ...),
    ('claude-header-defaults.user-agent', 'test-value'),
    ('claude-header-defaults.package-version', 'test-value'),
    ('claude-header-defaults.runtime-version', 'test-value'),
    ('claude-header-defaults.os', 'test-value'),
    ('claude-header-defaults.arch', 'test-value'),
    ('claude-header-defaults.timeout', 'test-value'),
    ('claude-header-defaults.timezone', 'test-value'),
    ('claude-header-defaults.stabilize-device-profile', False),
    ('codex-header-defaults', ...),
    ('codex-header-defaults.user-agent', 'test-value'),
    ('codex-header-defaults.beta-features', 'test-value'),
    ('openai-compatibility', ...),
    ('openai-compatibility[].name', 'openai-compatibility-model'),
    ('openai-compatibility[].disabled', False),
    ('openai-compatibility[].prefix', 'team'),
    ('openai-compatibility[].base-url', 'https://openai-compatibility.upstream.test/v1'),
    ('openai-compatibility[].support-prompt-cache-key', False),
    ('openai-compatibility[].disable-cooling', False),
    ('openai-compatibility[].request-retry', 3),
    ('openai-compatibility[].request-scoped-errors', ...),
    ('openai-compatibility[].request-scoped-errors[].status', 400),
    ('openai-compatibility[].request-scoped-errors[].match', ['context_length_exceeded']),
    ('openai-compatibility[].request-scoped-errors[].match-regexr', ['context_length_exceeded']),
    ('openai-compatibility[].request-scoped-errors[].action', 'stop'),
    ('openai-compatibility[].headers', {'X-Test': '1'}),
    ('openai-compatibility[].api-key-entries', ...),
    ('openai-compatibility[].api-key-entries[].api-key', 'k-openai-compatibility'),
    ('openai-compatibility[].api-key-entries[].weight', 5),
    ('openai-compatibility[].api-key-entries[].proxy-url', 'direct'),
    ('openai-compatibility[].models', ...),
    ('openai-compatibility[].models[].name', 'openai-compatibility-model'),
    ('openai-compatibility[].models[].alias', 'openai-compatibility-alias'),
    ('openai-compatibility[].models[].display-name', 'openai-compatibility display name'),
    ('openai-compatibility[].models[].max-context-length', 200000),
    ('openai-compatibility[].models[].image', False),
    ('openai-compatibility[].models[].input-modalities', ['text', 'image']),
    ('openai-compatibility[].models[].output-modalities', ['text']),
    ('openai-compatibility[].models[].is-compat', False),
    ('openai-compatibility[].models[].thinking', ...),
    ('openai-compatibility[].models[].thinking.levels', ['low', 'high']),
    ('vertex-api-key', ...),
    ('vertex-api-key[].api-key', 'k-vertex-api-key'),
    ('vertex-api-key[].weight', 5),
    ('vertex-api-key[].prefix', 'team'),
    ('vertex-api-key[].disable-cooling', False),
    ('vertex-api-key[].request-retry', 3),
    ('vertex-api-key[].base-url', 'https://vertex-api-key.upstream.test/v1'),
    ('vertex-api-key[].proxy-url', 'direct'),
    ('vertex-api-key[].headers', {'X-Test': '1'}),
    ('vertex-api-key[].models', ...),
    ('vertex-api-key[].models[].name', 'vertex-api-key-model'),
    ('vertex-api-key[].models[].alias', 'vertex-api-key-alias'),
    ('vertex-api-key[].models[].display-name', 'vertex-api-key display name'),
    ('vertex-api-key[].models[].thinking', ...),
    ('vertex-api-key[].models[].thinking.levels', ['low', 'high']),
    ('vertex-api-key[].excluded-models', ['retired-*']),
    ('oauth-model-alias', ...),
    ('oauth-model-alias.vertex', ...),
    ('oauth-model-alias.vertex[].name', 'oauth-model-alias-model'),
    ('oauth-model-alias.vertex[].alias', 'oauth-model-alias-alias'),
    ('oauth-model-alias.aistudio', ...),
    ('oauth-model-alias.aistudio[].name', 'oauth-model-alias-model'),
    ('oauth-model-alias.aistudio[].alias', 'oauth-model-alias-alias'),
    ('oauth-model-alias.antigravity', ...),
    ('oauth-model-alias.antigravity[].name', 'oauth-model-alias-model'),
    ('oauth-model-alias.antigravity[].alias', 'oauth-model-alias-alias'),
    ('oauth-model-alias.antigravity[].display-name', 'oauth-model-alias display name'),
    ('oauth-model-alias.antigravity[].fork', True),
    ('oauth-model-alias.antigravity[].force-mapping', True),
    ('oauth-model-alias.claude', ...),
    ('oauth-model-alias.claude[].name', 'oauth-model-alias-model'),
    ('oauth-model-alias.claude[].alias', 'oauth-model-alias-alias'),
    ('oauth-model-alias.codex', ...),
    ('oauth-model-alias.codex[].name', 'oauth-model-alias-model'),
    ('oauth-model-alias.codex[].alias', 'oauth-model-alias-alias'),
    ('oauth-model-alias.kimi', ...),
    ('oauth-model-alias.kimi[].name', 'oauth-model-alias-model'),
    ('oauth-model-alias.kimi[].alias', 'oauth-model-alias-alias'),
    ('oauth-model-alias.xai', ...),
    ('oauth-model-alias.xai[].name', 'oauth-model-alias-model'),
    ('oauth-model-alias.xai[].alias', 'oauth-model-alias-alias'),
    ('oauth-model-alias.sample-provider', ...),
    ('oauth-model-alias.sample-provider[].name', 'oauth-model-alias-model'),
    ('oauth-model-alias.sample-provider[].alias', 'oauth-model-alias-alias'),
    ('oauth-excluded-models', ...),
    ('oauth-excluded-models.vertex', ['retired-*']),
    ('oauth-excluded-models.aistudio', ['retired-*']),
    ('oauth-excluded-models.antigravity', ['retired-*']),
    ('oauth-excluded-models.claude', ['retired-*']),
    ('oauth-excluded-models.codex', ['retired-*']),
    ('oauth-excluded-models.kimi', ['retired-*']),
    ('oauth-excluded-models.xai', ['retired-*']),
    ('oauth-request-scoped-errors', ...),
    ('oauth-request-scoped-errors.vertex', ...),
    ('oauth-request-scoped-errors.vertex[].status', 400),
    ('oauth-request-scoped-errors.vertex[].match', ['context_length_exceeded']),
    ('oauth-request-scoped-errors.vertex[].match-regexr', ['context_length_exceeded']),
    ('oauth-request-scoped-errors.vertex[].action', 'stop'),
    ('oauth-request-scoped-errors.aistudio', ...),
    ('oauth-request-scoped-errors.aistudio[].status', 400),
    ('oauth-request-scoped-errors.aistudio[].match', ['context_length_exceeded']),
    ('oauth-request-scoped-errors.aistudio[].action', 'stop'),
    ('oauth-request-scoped-errors.antigravity', ...),
    ('oauth-request-scoped-errors.antigravity[].status', 400),
    ('oauth-request-scoped-errors.antigravity[].match', ['context_length_exceeded']),
    ('oauth-request-scoped-errors.antigravity[].action', 'stop'),
    ('oauth-request-scoped-errors.claude', ...),
    ('oauth-request-scoped-errors.claude[].status', 400),
    ('oauth-request-scoped-errors.claude[].match', ['context_length_exceeded']),
    ('oauth-request-scoped-errors.claude[].action', 'stop'),
    ('oauth-request-scoped-errors.codex', ...),
    ('oauth-request-scoped-errors.codex[].status', 400),
    ('oauth-request-scoped-errors.codex[].match', ['context_length_exceeded']),
    ('oauth-request-scoped-errors.codex[].action', 'stop'),
    ('oauth-request-scoped-errors.kimi', ...),
    ('oauth-request-scoped-errors.kimi[].status', 400),
    ('oauth-request-scoped-errors.kimi[].match', ['context_length_exceeded']),
    ('oauth-request-scoped-errors.kimi[].action', 'stop'),
    ('oauth-request-scoped-errors.xai', ...),
    ('oauth-request-scoped-errors.xai[].status', 400),
    ('oauth-request-scoped-errors.xai[].match', ['context_length_exceeded']),
    ('oauth-request-scoped-errors.xai[].action', 'stop'),
    ('payload', ...),
    ('payload.default', ...),
    ('payload.default[].models', ...),
    ('payload.default[].models[].name', 'payload-model'),
    ('payload.default[].models[].protocol', 'gemini'),
    ('payload.default[].models[].from-protocol', 'openai'),
    ('payload.default[].models[].headers', {'X-Tier': 'gold'}),
    ('payload.default[].models[].match', [{'metadata.client': 'x'}]),
    ('payload.default[].models[].not-match', [{'metadata.mode': 'x'}]),
    ('payload.default[].models[].exist', ['metadata.user']),
    ('payload.default[].models[].not-exist', ['metadata.skip']),
    ('payload.default[].params', {'temperature': 0.5}),
    ('payload.default-raw', ...),
    ('payload.default-raw[].models', ...),
    ('payload.default-raw[].models[].name', 'payload-model'),
    ('payload.default-raw[].models[].protocol', 'gemini'),
    ('payload.default-raw[].params', {'metadata': '{"a":1}'}),
    ('payload.override', ...),
    ('payload.override[].models', ...),
    ('payload.override[].models[].name', 'payload-model'),
    ('payload.override[].models[].protocol', 'gemini'),
    ('payload.override[].params', {'service_tier': 'priority'}),
    ('payload.override-raw', ...),
    ('payload.override-raw[].models', ...),
    ('payload.override-raw[].models[].name', 'payload-model'),
    ('payload.override-raw[].models[].protocol', 'gemini'),
    ('payload.override-raw[].params', {'metadata': '{"a":1}'}),
    ('payload.filter', ...),
    ('payload.filter[].models', ...),
    ('payload.filter[].models[].name', 'payload-model'),
    ('payload.filter[].models[].protocol', 'gemini'),
    ('payload.filter[].params', ['metadata.skip']),
    ('claude-api-key[].fingerprint-profile', 'claude-code-cli'),
    ('codex-api-key[].models[].force-mapping', True),
    ('xai-api-key[].models[].force-mapping', True),
    ('claude-api-key[].models[].force-mapping', True),
]

_STEP = re.compile(r"\[\]|[^.\[\]]+")


def build_config(rows: list[tuple[str, Any]]) -> dict[str, Any]:
    """The nested mapping that sets every path of C{rows}."""
    root: dict[str, Any] = {}
    for path, value in rows:
        steps = _STEP.findall(path)
        node: Any = root
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            if step == "[]":
                continue
            below = steps[i + 1] if not last else None
            if last:
                if value is not ...:
                    node[step] = value
                else:
                    node.setdefault(step, {})
            elif below == "[]":
                items = node.setdefault(step, [{}])
                if not isinstance(items, list):
                    items = node[step] = [{}]
                node = items[0]
            else:
                child = node.get(step)
                if not isinstance(child, dict):
                    child = node[step] = {}
                node = child
    return root


def _normal(path: str) -> str:
    return re.sub(r"\[\d+\]", "[]", path)


def _warned(warnings: list[str]) -> dict[str, list[str]]:
    """Each warning under the normalised path it names."""
    out: dict[str, list[str]] = {}
    for w in warnings:
        path, _, _ = w.partition(": ")
        out.setdefault(_normal(path), []).append(w)
    return out


@pytest.fixture(scope="module")
def loaded():
    text = yaml.safe_dump(build_config(INVENTORY), sort_keys=False).encode()
    config, warnings = parse_config_bytes(text, "config.yaml")
    return config, warnings


def test_the_inventory_lists_each_path_once_and_the_tables_name_listed_paths():
    paths = [p for p, _ in INVENTORY]
    assert len(paths) == len(set(paths))
    listed = set(paths)
    # Older CLIProxyAPI keys may be in NOT_APPLICABLE beyond today's example file.
    assert len([k for k in NOT_APPLICABLE if k in listed]) > 30


@pytest.mark.parametrize("path", [p for p, _ in INVENTORY])
def test_no_key_of_config_example_yaml_is_ignored(loaded, path):
    _, warnings = loaded
    said = _warned(warnings).get(path, [])
    instead = not_applicable(path)
    if instead is not None:
        assert [_normal(w) for w in said] == [f"{path}: not used by cliproxyd: {instead}"]
    else:
        assert said == [], said


def test_every_warning_is_a_reason(loaded):
    _, warnings = loaded
    for path, said in _warned(warnings).items():
        assert not_applicable(path) is not None, said
    # the unapplicable keys say what cliproxyd does instead, not a generic "ignored"
    for w in warnings:
        if ": not used by cliproxyd: " in w:
            assert "ignored" not in w and "not supported" not in w


def test_a_reason_is_one_line_per_key_and_nothing_under_it_is_read(loaded):
    _, warnings = loaded
    reasons = [w for w in warnings if ": not used by cliproxyd: " in w]
    assert all("\n" not in w for w in reasons)
    # plugins has many keys below it, but start-up says one line for all of them
    assert [w for w in warnings if w.startswith("plugins")] == [f"plugins: not used by cliproxyd: {NOT_APPLICABLE['plugins']}"]


def test_the_keys_cliproxyd_acts_on_reach_the_config(loaded):
    config, _ = loaded
    assert config.tls.enable and config.tls.cert == "/etc/cliproxyd/tls/cert.pem"
    model = config.openai_compatibility[0].models[0]
    assert model.info.display_name == "openai-compatibility display name"
    assert model.info.input_modalities == ("text", "image")
    assert config.codex_api_key[0].models[0].info.force_mapping
    antigravity = dict(config.oauth_model_alias)["antigravity"][0]
    assert antigravity.display_name and antigravity.force_mapping and antigravity.fork
