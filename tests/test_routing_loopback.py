"""
Routing keys on loopback: quota-exceeded.switch-project over a real Gemini
CLI account file, and disabled / weight / request-scoped-errors changed in
config.yaml and auth files under a running daemon (reloads, no restart).
"""

from __future__ import annotations

import json

import pytest_twisted
from cliproxyd.config import parse_config
from tests.test_oauth_accounts import OAuthStack
from tests.test_reload import live  # noqa: F401 (the fixture)

GEMINI = {"gemini-c.json": {"type": "gemini", "project_id": "proj-c,proj-d",
                            "token": {"access_token": "ya29-gemini", "refresh_token": "r"},
                            "expired": "2099-01-01T00:00:00Z"}}


async def projects_tried(tmp_path, switch: bool):
    from twisted.internet import reactor

    config, _ = parse_config({"quota-exceeded": {"switch-project": switch}})
    stack = OAuthStack(reactor, tmp_path, GEMINI, config)
    try:
        stack.upstream.script("ya29-gemini", "status:429:30", "ok")
        code, _ = await stack.chat("gemini-2.5-pro")
        first = [s.envelope["project"] for s in stack.upstream.seen]
        await stack.chat("gemini-2.5-pro")
        return code, first, stack.upstream.seen[-1].envelope["project"]
    finally:
        await stack.close()


@pytest_twisted.ensureDeferred
async def test_switch_project_moves_a_quota_429_to_the_accounts_next_project(tmp_path):
    code, first, then = await projects_tried(tmp_path, switch=True)
    assert code == 200 and first == ["proj-c", "proj-d"]
    assert then == "proj-d"  # proj-c cools for the upstream's 30 s


@pytest_twisted.ensureDeferred
async def test_without_switch_project_only_the_first_project_is_used(tmp_path):
    code, first, _ = await projects_tried(tmp_path, switch=False)
    assert code == 429 and first == ["proj-c"]


def provider(live, **over):
    entry = {"name": "sim", "base-url": live.base + "/v1",
             "api-key-entries": [{"api-key": "k1"}, {"api-key": "k2"}], "models": [{"name": "m"}]}
    entry.update(over)
    return entry


@pytest_twisted.ensureDeferred
async def test_disabling_a_provider_in_config_yaml_stops_serving_and_listing_it_at_the_next_reload(live):
    live.write_config({"openai-compatibility": [provider(live)]})
    await live.runtime.reload()
    assert "m" in await live.models()
    assert (await live.chat("m"))[0] == 200
    live.write_config({"openai-compatibility": [provider(live, disabled=True)]})
    await live.runtime.reload()
    assert await live.models() == set()
    assert (await live.chat("m"))[0] == 404
    assert len(live.upstream.seen) == 1


@pytest_twisted.ensureDeferred
async def test_weights_and_rules_change_at_the_next_reload(live):
    live.write_config({"routing": {"strategy": "weighted-round-robin"}, "openai-compatibility": [
        provider(live, **{"api-key-entries": [{"api-key": "k1", "weight": 0}, {"api-key": "k2"}]})]})
    await live.runtime.reload()
    for _ in range(3):
        await live.chat("m")
    assert [s.key for s in live.upstream.seen] == ["k2"] * 3
    live.upstream.script("k2", "status:400", "ok")
    live.write_config({"routing": {"strategy": "weighted-round-robin"}, "openai-compatibility": [
        provider(live, **{"request-scoped-errors": [{"status": 400, "match": ["simulated"], "action": "stop"}]})]})
    await live.runtime.reload()
    live.upstream.seen.clear()
    codes = [(await live.chat("m"))[0] for _ in range(3)]
    assert [s.key for s in live.upstream.seen] == ["k1", "k2", "k1"]
    assert codes == [200, 400, 200]


@pytest_twisted.ensureDeferred
async def test_an_auth_files_weight_and_disabled_apply_when_the_file_changes(live):
    live.write_config({"routing": {"strategy": "weighted-round-robin"}})
    live.account("claude-a.json", weight=3)
    live.account("claude-b.json")
    await live.runtime.reload()
    for _ in range(8):
        await live.chat("claude-sonnet-4-5")
    tokens = [s.headers["authorization"] for s in live.upstream.seen]
    assert tokens.count("Bearer tok-claude-a.json") == 6
    live.account("claude-a.json", disabled=True)
    await live.runtime.reload()
    live.upstream.seen.clear()
    for _ in range(3):
        await live.chat("claude-sonnet-4-5")
    assert {s.headers["authorization"] for s in live.upstream.seen} == {"Bearer tok-claude-b.json"}
    body = json.loads((await live.chat("claude-sonnet-4-5"))[1])
    assert body["choices"]
