"""
Reset probes through the providers' own usage endpoints, on loopback: one
scenario per provider kind, over real auth files (or key entries) and the
simulated upstream's usage answers in their real shapes. The higher-tier
credential was cooled hours ago until a reset hours off; the probe reads
its usage endpoint: still exhausted keeps the cooldown with the endpoint's
reset time, quota back returns traffic to it at once.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from cliproxyd.conductor.probes import ResetProber
from cliproxyd.state.records import ModelState
from tests.test_pacing_loopback import Stack

HOURS = 3600.0

#: kind -> (auth files, the higher tier's token, the model, the usage path it must get)
ACCOUNT_CASES = {
    "claude": ({"claude-1.json": {"type": "claude", "access_token": "oat-1", "refresh_token": "r", "priority": 10},
                "claude-2.json": {"type": "claude", "access_token": "oat-2", "refresh_token": "r"}},
               "oat-1", "claude-haiku-4-5", "/api/oauth/usage"),
    "codex": ({"codex-1.json": {"type": "codex", "access_token": "cx-1", "refresh_token": "r", "account_id": "acct-1",
                                "priority": 10},
               "codex-2.json": {"type": "codex", "access_token": "cx-2", "refresh_token": "r", "account_id": "acct-2"}},
              "cx-1", "gpt-5-codex", "/backend-api/wham/usage"),
    "gemini-cli": ({"gemini-1.json": {"type": "gemini", "project_id": "proj-1", "priority": 10,
                                      "token": {"access_token": "ya-1", "refresh_token": "r"}},
                    "gemini-2.json": {"type": "gemini", "project_id": "proj-2",
                                      "token": {"access_token": "ya-2", "refresh_token": "r"}}},
                   "ya-1", "gemini-2.5-pro", "/v1internal:retrieveUserQuota"),
    "antigravity": ({"ag-1.json": {"type": "antigravity", "access_token": "ag-1", "refresh_token": "r",
                                   "project_id": "proj-ag1", "priority": 10},
                     "ag-2.json": {"type": "antigravity", "access_token": "ag-2", "refresh_token": "r",
                                   "project_id": "proj-ag2"}},
                    "ag-1", "gemini-3-flash-preview", "/v1internal:fetchAvailableModels"),
}

CONFIG = {"routing": {"slow-start-seconds": 0, "reset-probe": {"interval-seconds": 0.001}}}


def _cred(stack, kind: str, token: str):
    return next(c for c in stack.conductor.creds if c.kind == kind and c.secret == token)


def _cool(stack, reactor, cred_id: str, model: str) -> None:
    """Cooled three hours ago until a reset two hours off."""
    now = reactor.seconds()
    stack.state.set_model_state(cred_id, model, ModelState(
        unavailable=True, next_retry_at=now + 2 * HOURS, quota_exceeded=True, reason="quota", last_status=429,
        updated_at=now - 3 * HOURS))
    stack.conductor._sync_scheduler()


async def _probe(prober: ResetProber) -> None:
    prober.tick()
    assert list(prober._in_flight)  # a probe is out
    await next(iter(prober._in_flight.values()))


@pytest.mark.parametrize("kind", sorted(ACCOUNT_CASES))
@pytest_twisted.ensureDeferred
async def test_the_usage_endpoint_says_when_quota_is_back(tmp_path, kind):
    from twisted.internet import reactor

    accounts, token, model, path = ACCOUNT_CASES[kind]
    stack = Stack(reactor, CONFIG, tmp_path, accounts)
    prober = ResetProber(lambda: stack.conductor, stack.state, reactor)
    try:
        cred = _cred(stack, kind, token)
        _cool(stack, reactor, cred.id, model)
        assert (await stack.chat(model))[0] == 200
        other = stack.keys_seen()
        assert other and token not in other  # the lower tier serves meanwhile

        # Still exhausted: the cooldown stays, moved to the reset the endpoint gives.
        stack.upstream.set_quota(token, 0.0, reset_seconds=5 * HOURS)
        await _probe(prober)
        (seen_path, seen_token, headers), = stack.upstream.usage_seen
        assert seen_path == path and seen_token == token
        state = stack.state.model_state(cred.id, model)
        assert state.blocked(reactor.seconds())
        assert abs(state.next_retry_at - (reactor.seconds() + 5 * HOURS)) < 5
        assert stack.state.probe_state(cred.id, model).last_ok is False
        assert (await stack.chat(model))[0] == 200 and token not in stack.keys_seen()

        # Quota back (a window ended early): the next probe ends the cooldown, traffic returns at once.
        stack.upstream.set_quota(token, 0.7)
        await _probe(prober)
        assert not stack.state.model_state(cred.id, model).blocked(reactor.seconds())
        assert (await stack.chat(model))[0] == 200
        assert stack.keys_seen()[-1] == token
        # The probes were usage reads, never a generation request on the cooled credential.
        assert stack.keys_seen().count(token) == 1
        counters = stack.conductor.pacing_counters()
        assert counters["probes_sent"] == 2 and counters["probes_succeeded"] == 1 and counters["probes_failed"] == 1
        assert counters["probes_by_usage"] == 2 and counters["probes_by_request"] == 0
        if kind == "claude":
            assert headers["anthropic-beta"] == "oauth-2025-04-20"
        if kind == "codex":
            assert headers["chatgpt-account-id"] == "acct-1"
    finally:
        await stack.close()


@pytest_twisted.ensureDeferred
async def test_a_usage_reading_nearly_spent_steers_traffic_away(tmp_path):
    """A probe's reading feeds headroom: 2 % left on the 5-hour window passes the account over within its tier."""
    from twisted.internet import reactor

    accounts = {"claude-1.json": {"type": "claude", "access_token": "oat-1", "refresh_token": "r"},
                "claude-2.json": {"type": "claude", "access_token": "oat-2", "refresh_token": "r"}}
    stack = Stack(reactor, CONFIG, tmp_path, accounts)
    prober = ResetProber(lambda: stack.conductor, stack.state, reactor)
    try:
        cred = _cred(stack, "claude", "oat-1")
        _cool(stack, reactor, cred.id, "claude-haiku-4-5")
        stack.upstream.set_quota("oat-1", 0.02, reset_seconds=HOURS)
        await _probe(prober)
        assert not stack.state.model_state(cred.id, "claude-haiku-4-5").blocked(reactor.seconds())  # 2 % is quota
        reading = stack.state.headroom(cred.id)
        assert reading.source == "claude-five_hour" and reading.fraction == pytest.approx(0.02)
        assert abs(reading.reset_at - (reactor.seconds() + HOURS)) < 5
        for _ in range(4):
            assert (await stack.chat("claude-haiku-4-5"))[0] == 200
        assert stack.keys_seen() == ["oat-2"] * 4
    finally:
        await stack.close()


@pytest_twisted.ensureDeferred
async def test_a_failing_usage_endpoint_falls_back_to_a_one_token_request(tmp_path):
    """An account the usage endpoint refuses (here: no OAuth beta it knows) is probed by a request instead."""
    from twisted.internet import reactor

    accounts = {"claude-1.json": {"type": "claude", "access_token": "oat-1", "refresh_token": "r", "priority": 10},
                "claude-2.json": {"type": "claude", "access_token": "oat-2", "refresh_token": "r"}}
    stack = Stack(reactor, CONFIG, tmp_path, accounts)
    prober = ResetProber(lambda: stack.conductor, stack.state, reactor)
    try:
        stack.upstream.known_keys = frozenset({"oat-2"})  # oat-1's usage call gets a 401 ...
        cred = _cred(stack, "claude", "oat-1")
        _cool(stack, reactor, cred.id, "claude-haiku-4-5")
        stack.upstream.known_keys = None  # ... after which requests pass again
        read = stack.conductor.executor.read_quota

        async def refused(c, model):
            stack.upstream.known_keys = frozenset({"oat-2"})
            try:
                return await read(c, model)
            finally:
                stack.upstream.known_keys = None

        stack.conductor.executor.read_quota = refused
        await _probe(prober)
        assert [p for p, _, _ in stack.upstream.usage_seen] == ["/api/oauth/usage"]
        probe = stack.upstream.seen[-1]
        assert probe.key == "oat-1" and probe.body["max_tokens"] == 1
        assert not stack.state.model_state(cred.id, "claude-haiku-4-5").blocked(reactor.seconds())
        assert stack.conductor.pacing_counters()["probes_by_request"] == 1
    finally:
        await stack.close()


#: kind -> (key entries, the higher tier's key, model, the count path it must get)
KEY_CASES = {
    "claude-api-key": (lambda base: {"claude-api-key": [
        {"api-key": "sk-ant-1", "base-url": base, "priority": 10, "models": [{"name": "claude-haiku-4-5"}]},
        {"api-key": "sk-ant-2", "base-url": base, "models": [{"name": "claude-haiku-4-5"}]}]},
        "sk-ant-1", "claude-haiku-4-5", "/v1/messages/count_tokens"),
    "gemini-api-key": (lambda base: {"gemini-api-key": [
        {"api-key": "AIza-1", "base-url": base, "priority": 10, "models": [{"name": "gemini-2.5-flash"}]},
        {"api-key": "AIza-2", "base-url": base, "models": [{"name": "gemini-2.5-flash"}]}]},
        "AIza-1", "gemini-2.5-flash", ":countTokens"),
}


@pytest.mark.parametrize("kind", sorted(KEY_CASES))
@pytest_twisted.ensureDeferred
async def test_an_api_key_cooled_for_its_key_is_probed_with_count_tokens(tmp_path, kind):
    from twisted.internet import reactor

    entries, key, model, path = KEY_CASES[kind]
    stack = Stack(reactor, lambda base: {**CONFIG, **entries(base)})
    prober = ResetProber(lambda: stack.conductor, stack.state, reactor)
    try:
        cred = _cred(stack, kind, key)
        now = reactor.seconds()
        # A 401 for hours (the key was revoked, then restored upstream).
        stack.state.set_model_state(cred.id, model, ModelState(
            unavailable=True, next_retry_at=now + 2 * HOURS, reason="unauthorized", last_status=401,
            updated_at=now - 3 * HOURS))
        stack.conductor._sync_scheduler()
        await _probe(prober)
        probe = stack.upstream.seen[-1]
        assert probe.key == key and path in probe.path  # a count, not a generation
        assert not stack.state.model_state(cred.id, model).blocked(reactor.seconds())
        assert (await stack.chat(model))[0] == 200 and stack.keys_seen()[-1] == key
        assert stack.conductor.pacing_counters()["probes_by_count"] == 1

        # A quota cooldown is not ended by a count (counting is metered apart): a one-token request probes it.
        stack.state.set_model_state(cred.id, model, ModelState(
            unavailable=True, next_retry_at=now + 2 * HOURS, quota_exceeded=True, reason="quota", last_status=429,
            updated_at=now - 3 * HOURS))
        stack.conductor._sync_scheduler()
        await _probe(prober)
        probe = stack.upstream.seen[-1]
        assert probe.key == key and path not in probe.path
        assert stack.conductor.pacing_counters()["probes_by_request"] == 1
    finally:
        await stack.close()
