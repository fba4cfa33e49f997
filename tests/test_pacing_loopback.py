"""
Issue 16 on loopback: real HTTP between the client, cliproxyd (or two of
them) and the simulated upstream, which sends the rate-limit headers in
each provider's real shape (Claude subscriptions' unified utilisation,
Codex's used percentages), over real auth files.
"""

from __future__ import annotations

import pytest_twisted
import treq
from attrs import evolve

from cliproxyd.assembly import Assembly
from cliproxyd.conductor.probes import ResetProber
from cliproxyd.config import parse_config
from cliproxyd.frontend import Frontend, InFlight, QuietSite, TrackingSite
from cliproxyd.outbound import make_http_client
from cliproxyd.runtime import Runtime
from cliproxyd.state import MemoryStateStore
from cliproxyd.state.records import ModelState
from cliproxyd.testing.upstream import SimulatedUpstream
from tests.test_oauth_accounts import write

BUDGET = "x-cliproxyd-retry-budget"


class Stack:
    """cliproxyd on a loopback port, in front of C{upstream_base} (a simulated upstream of its own by default)."""

    def __init__(self, reactor, config: dict, auth_dir=None, accounts: dict | None = None) -> None:
        self.reactor = reactor
        self.upstream = SimulatedUpstream(reactor)
        self.upstream_port = reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")
        self.upstream_base = f"http://127.0.0.1:{self.upstream_port.getHost().port}"
        for name, data in (accounts or {}).items():
            suffix = "/backend-api/codex" if data["type"] == "codex" else ""
            write(auth_dir, name, {"base_url": self.upstream_base + suffix, **data})
        if callable(config):
            config = config(self.upstream_base)
        parsed, _ = parse_config(config)
        if auth_dir is not None:
            parsed = evolve(parsed, auth_dir=str(auth_dir))
        self.state = MemoryStateStore()
        self.pool, client = make_http_client(reactor, 5)
        self.runtime = Runtime(Assembly(client, reactor, self.state), config=parsed, poll=0)
        self.runtime.start()
        assert self.runtime.current.problems == {}
        frontend = Frontend(self.runtime.source, reactor)
        site = TrackingSite(frontend.resource(), InFlight(reactor, 5), self.runtime.source)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    @property
    def conductor(self):
        return self.runtime.current.conductor

    async def chat(self, model: str, headers: dict | None = None):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        response = await treq.post(self.url + "/v1/chat/completions", json=body, headers=headers)
        return response.code, response.headers, await response.content()

    def keys_seen(self) -> list[str]:
        return [s.key for s in self.upstream.seen]

    async def close(self) -> None:
        await self.port.stopListening()
        await self.upstream_port.stopListening()
        await self.pool.closeCachedConnections()


NO_RAMP = {"routing": {"slow-start-seconds": 0}}


def _claude(n: int, **extra) -> dict:
    return {f"claude-{n}.json": {"type": "claude", "access_token": f"sk-ant-oat-{n}", "refresh_token": "r",
                                 "email": f"u{n}@example.com", **extra}}


@pytest_twisted.ensureDeferred
async def test_a_claude_subscription_near_its_five_hour_limit_is_passed_over(tmp_path):
    from twisted.internet import reactor

    stack = Stack(reactor, NO_RAMP, tmp_path, {**_claude(1), **_claude(2)})
    try:
        # Account 1's answers say its 5-hour window is 98 % used.
        stack.upstream.limit("sk-ant-oat-1", "unified", 0.02, reset_seconds=3600)
        for _ in range(6):
            code, _, _ = await stack.chat("claude-haiku-4-5")
            assert code == 200
        assert stack.keys_seen().count("sk-ant-oat-1") == 1  # the answer that said so, then never again
        reading = stack.state.headroom("claude:claude-1.json")
        assert reading.source == "unified-5h" and reading.fraction < 0.05
    finally:
        await stack.close()


@pytest_twisted.ensureDeferred
async def test_a_codex_account_at_its_usage_limit_is_passed_over(tmp_path):
    from twisted.internet import reactor

    accounts = {f"codex-{n}.json": {"type": "codex", "access_token": f"at-codex-{n}", "refresh_token": "r",
                                    "account_id": f"acct-{n}"} for n in (1, 2)}
    stack = Stack(reactor, NO_RAMP, tmp_path, accounts)
    try:
        stack.upstream.limit("at-codex-2", "codex", 0.0, reset_seconds=600)  # 100 % used
        for _ in range(6):
            assert (await stack.chat("gpt-5-codex"))[0] == 200
        assert stack.keys_seen().count("at-codex-2") <= 1
    finally:
        await stack.close()


@pytest_twisted.ensureDeferred
async def test_an_auth_files_rpm_holds_and_the_answer_says_when_it_frees(tmp_path):
    from twisted.internet import reactor

    stack = Stack(reactor, NO_RAMP, tmp_path, {**_claude(1, rpm=1), **_claude(2, rpm=1)})
    try:
        assert (await stack.chat("claude-haiku-4-5"))[0] == 200
        assert (await stack.chat("claude-haiku-4-5"))[0] == 200
        assert sorted(stack.keys_seen()) == ["sk-ant-oat-1", "sk-ant-oat-2"]
        code, headers, body = await stack.chat("claude-haiku-4-5")
        assert code == 429 and b"model_cooldown" in body
        assert 55 <= int(headers.getRawHeaders(b"retry-after")[0]) <= 60
        assert len(stack.upstream.seen) == 2
    finally:
        await stack.close()


@pytest_twisted.ensureDeferred
async def test_a_reset_probe_returns_a_long_cooled_subscription_account_early(tmp_path):
    from twisted.internet import reactor

    data = {"routing": {"slow-start-seconds": 0}, "claude-api-key": []}
    stack = Stack(reactor, data, tmp_path, {**_claude(1, priority=10), **_claude(2)})
    prober = ResetProber(lambda: stack.conductor, stack.state, reactor)
    try:
        # Account 1 (the higher tier) was cooled 400 s ago until a reset two hours off.
        now = reactor.seconds()
        stack.state.set_model_state("claude:claude-1.json", "claude-haiku-4-5", ModelState(
            unavailable=True, next_retry_at=now + 7200, quota_exceeded=True, reason="quota", last_status=429,
            updated_at=now - 400))
        stack.conductor._sync_scheduler()
        await stack.chat("claude-haiku-4-5")
        assert stack.keys_seen() == ["sk-ant-oat-2"]  # the lower tier serves meanwhile
        prober.tick()  # the prober's job, once
        assert list(prober._in_flight)  # a probe is out
        await next(iter(prober._in_flight.values()))
        # The probe read the account's usage endpoint: no request, no tokens spent.
        assert [(path, token) for path, token, _ in stack.upstream.usage_seen] == [("/api/oauth/usage", "sk-ant-oat-1")]
        assert stack.keys_seen() == ["sk-ant-oat-2"]
        await stack.chat("claude-haiku-4-5")
        assert stack.keys_seen()[-1] == "sk-ant-oat-1"  # back on the higher tier, two hours early
        assert stack.state.pacing_counters()["probes_succeeded"] == 1
    finally:
        await stack.close()


@pytest_twisted.ensureDeferred
async def test_the_retry_budget_stops_retries_multiplying_through_two_proxies(tmp_path):
    """A client -> cliproxyd A (two keys) -> cliproxyd B (three keys) -> an upstream failing every call."""
    from twisted.internet import reactor

    def inner(base):
        # B does not cool its keys, so each call A makes through it meets all three.
        return {"routing": {"slow-start-seconds": 0}, "disable-cooling": True, "openai-compatibility": [{
            "name": "sim", "base-url": base + "/v1", "models": [{"name": "m"}],
            "api-key-entries": [{"api-key": k} for k in ("b1", "b2", "b3")]}]}

    async def run(budget: str | None):
        b = Stack(reactor, inner)
        for key in ("b1", "b2", "b3"):
            b.upstream.script(key, "status:503")
        a = Stack(reactor, {"routing": {"slow-start-seconds": 0}, "openai-compatibility": [{
            "name": "inner", "base-url": b.url + "/v1", "models": [{"name": "m"}],
            "api-key-entries": [{"api-key": "a1"}, {"api-key": "a2"}]}]})
        try:
            code, headers, _ = await a.chat("m", headers={BUDGET: budget} if budget else None)
            return code, headers, len(b.upstream.seen), [s.headers.get(BUDGET) for s in b.upstream.seen]
        finally:
            await a.close()
            await b.close()

    code, _, calls, _ = await run(None)
    assert code == 503 and calls == 6  # 2 x 3: retries multiply
    code, headers, calls, sent = await run("attempts=4")
    assert code == 503 and calls == 4  # never more than the budget
    assert headers.getRawHeaders(b"x-cliproxyd-attempts") == [b"4"]
    # B got 4 from A, and passed on what was left with each call (its upstream is openai-compatibility too);
    # A's second call gave B the one attempt A had left.
    assert sent == ["attempts=4", "attempts=3", "attempts=2", "attempts=1"]
