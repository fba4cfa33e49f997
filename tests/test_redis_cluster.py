"""
Issue 17: several instances on one Redis behave as one. Each instance is a
whole daemon (L{build_daemon}, as production wires it) whose StateStore is
shared through a real redis-server: for the same script of upstream
failures they make the cooldown and quota-group decisions one instance
makes; a token refresh due on all of them happens once, against the
simulated token server; Redis killed and restarted mid-load loses no
request.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest_twisted
from twisted.internet.defer import Deferred, succeed

from cliproxyd.config import parse_config
from cliproxyd.credentials import tokens
from cliproxyd.credentials.authfiles import parse_account
from cliproxyd.credentials.refresh import Refresher
from cliproxyd.daemon import build_daemon
from cliproxyd.state.redisstore import RedisStateStore
from tests.conftest import Harness, _now, config_data
from tests.redis_support import connector, until

MODELS = [{"name": "claude-sonnet-4-5"}, {"name": "claude-opus-4-1"}, {"name": "gemini-2.5-pro"}]


def antigravity_config(**top) -> dict:
    """Two keys of a provider named antigravity: the default quota groups apply (Claude, Gemini)."""
    data = config_data(keys=("ag-1", "ag-2"), models=MODELS, routing={"strategy": "fill-first"}, **top)
    data["openai-compatibility"][0]["name"] = "antigravity"
    return data


class Instance(Harness):
    """L{Harness} (in-memory HTTP, a Clock for the conductor) with its StateStore in Redis."""

    def __init__(self, reactor, url: str | None, upstream=None) -> None:
        from treq.testing import StubTreq
        from twisted.internet.task import Clock

        from cliproxyd.testing.upstream import SimulatedUpstream

        self.config, self.warnings = parse_config(antigravity_config(**({"state-store": url} if url else {})))
        self.clock = Clock()
        self.upstream = upstream if upstream is not None else SimulatedUpstream(self.clock)
        self.up = StubTreq(self.upstream.resource())
        self.daemon = build_daemon(self.clock, self.up, config=self.config, poll=0, run_in_thread=_now,
                                   state_store=self.config.state_store, state_reactor=reactor)
        self.state, self.runtime = self.daemon.state, self.daemon.runtime
        self.management = self.daemon.management
        self.runtime.start()
        self.front = StubTreq(self.daemon.resource())
        if isinstance(self.state, RedisStateStore):
            self.state.service.startService()

    def seen(self) -> list[tuple[str, str]]:
        out = [(s.key, s.model) for s in self.upstream.seen]
        self.upstream.seen.clear()
        return out


def view(state) -> tuple:
    return state._models, state._groups


async def in_step(reactor, instances) -> None:
    """Every change sent and applied everywhere: all instances hold the same cooldowns and suspensions."""
    stores = [i.state for i in instances]
    await until(reactor, lambda: all(s.pending_writes == 0 and not s._flushing for s in stores)
                and all(view(s) == view(stores[0]) for s in stores))


SCRIPT = [  # (model, advance the clocks by this many seconds first)
    ("claude-sonnet-4-5", 0),   # ag-1 answers 429 for 600 s: the Claude group is suspended on it
    ("claude-opus-4-1", 1),     # another Claude model: straight to ag-2
    ("gemini-2.5-pro", 1),      # Gemini is another group: ag-1 still serves it
    ("claude-sonnet-4-5", 10),  # ag-2 now answers 429 too (its own cooldown)
    ("gemini-2.5-pro", 1),
    ("claude-opus-4-1", 700),   # ag-1's suspension is over
]


def script_upstream(instance) -> None:
    instance.upstream.script("ag-1", "status:429:600", "ok")
    instance.upstream.script("ag-2", "ok", "ok", "status:429:30", "ok")


@pytest_twisted.ensureDeferred
async def test_three_instances_on_one_redis_decide_as_one_instance(reactor, redis_server):
    # One instance, the embedded store: the reference decisions.
    one = Instance(reactor, None)
    script_upstream(one)
    expected = []
    for model, advance in SCRIPT:
        one.clock.advance(advance)
        code, _, _ = one.chat(model=model)
        expected.append((code, one.seen()))

    # Three instances sharing Redis, the requests spread over them in turn.
    first = Instance(reactor, redis_server.url)
    # one upstream behind all three, scripted as the one instance's was
    three = [first] + [Instance(reactor, redis_server.url, upstream=first.upstream) for _ in range(2)]
    try:
        await until(reactor, lambda: all(i.state.connected for i in three))
        script_upstream(first)
        got = []
        for n, (model, advance) in enumerate(SCRIPT):
            for i in three:
                i.clock.advance(advance)
            serving = three[n % 3]
            code, _, _ = serving.chat(model=model)
            got.append((code, serving.seen()))
            await in_step(reactor, three)
        assert got == expected
        # and the same cooldown table as the one instance at the end
        assert {k: {m: s.next_retry_at for m, s in v.items()} for k, v in three[2].state._models.items()} == \
            {k: {m: s.next_retry_at for m, s in v.items()} for k, v in one.state._models.items()}
    finally:
        for i in three:
            await i.state.service.stopService()


@pytest_twisted.ensureDeferred
async def test_redis_killed_and_restarted_mid_load_loses_no_request(reactor, redis_server):
    three = [Instance(reactor, redis_server.url) for _ in range(3)]
    try:
        await until(reactor, lambda: all(i.state.connected for i in three))
        served = 0
        for n in range(60):
            if n == 20:
                redis_server.stop()
            if n == 40:
                redis_server.start()
            code, _, body = three[n % 3].chat(model="gemini-2.5-pro")
            assert code == 200, body
            served += 1
            if n == 30:
                await until(reactor, lambda: not any(i.state.connected for i in three))
        assert served == 60
        await until(reactor, lambda: all(i.state.connected for i in three), timeout=20)
        await until(reactor, lambda: all(i.state.pending_writes == 0 for i in three))
        # every request counted once, everywhere and in Redis (the restart left it empty;
        # the first instance back seeded it with its view, the buffered deltas followed)
        await until(reactor, lambda: all(i.state.usage()["gemini-2.5-pro"].requests == 60 for i in three))
        assert redis_server.command("HGET", "{cliproxyd}:usage", "gemini-2.5-pro\x1frequests") == "60"
        status = three[0].management  # the status route shows the store
        assert three[0].state.describe()["connected"] is True and status is not None
    finally:
        for i in three:
            await i.state.service.stopService()


@pytest_twisted.ensureDeferred
async def test_status_shows_the_state_store(reactor, redis_server):
    data = antigravity_config(**{"state-store": redis_server.url, "remote-management": {"secret-key": "m"}})
    config, _ = parse_config(data)
    from treq.testing import StubTreq
    from twisted.internet.task import Clock

    h = SimpleNamespace(clock=Clock())
    daemon = build_daemon(h.clock, None, config=config, poll=0, run_in_thread=_now,
                          state_store=config.state_store, state_reactor=reactor)
    daemon.runtime.start()
    front = StubTreq(daemon.resource())
    daemon.state.service.startService()
    try:
        await until(reactor, lambda: daemon.state.connected)
        d = front.get("http://proxy.test/v0/management/status", headers={"Authorization": "Bearer m"})
        front.flush()
        resp = await d
        cd = resp.content()
        front.flush()
        body = json.loads(await cd)
        store = body["state_store"]
        assert store["kind"] == "redis" and store["connected"] is True
        assert store["url"] == redis_server.url and store["pending_writes"] == 0 and store["last_error"] == ""
    finally:
        await daemon.state.service.stopService()


# -- one refresher per account, cluster-wide --------------------------------------------


def claude_account(directory, refresh_token: str, now: float):
    data = {"type": "claude", "email": "user@example.com", "access_token": "old-access",
            "refresh_token": refresh_token, "expired": now + 60}
    path = directory / "claude-user.json"
    path.write_text(json.dumps(data))
    return parse_account(str(path), path.read_bytes())


@pytest_twisted.ensureDeferred
async def test_a_token_refresh_across_three_instances_happens_once(reactor, redis_server, auth_server, tmp_path):
    server = auth_server("claude")
    live = server.sim.issue_refresh_token()
    stores = [RedisStateStore(reactor, connector(reactor, redis_server)) for _ in range(3)]
    for s in stores:
        s.service.startService()
    refreshers, accounts, saved = [], [], []
    try:
        await until(reactor, lambda: all(s.connected for s in stores))
        now = reactor.seconds()
        for n, store in enumerate(stores):
            # each instance has its own copy of the account's file (separate machines)
            directory = tmp_path / f"instance-{n}"
            directory.mkdir()
            account = claude_account(directory, live, now)
            accounts.append(account)

            def refresh(acct, client=server.client):
                return Deferred.fromCoroutine(tokens.refresh(client, server.provider, acct.refresh_token,
                                                             clock=reactor))

            def save(acct, n=n):
                saved.append(n)
                return succeed(None)

            source = SimpleNamespace(current=SimpleNamespace(accounts={account.name: account}))
            refreshers.append(Refresher(reactor, refresh, save, source, cluster=store))
        # all three find it due at the same moment
        assert [r.check() for r in refreshers] == [1, 1, 1]
        await until(reactor, lambda: all(r.running_refreshes == 0 for r in refreshers))
        assert server.sim.calls["refresh_token"] == 1  # one refresh, not three
        assert len(saved) == 1  # the one that refreshed wrote its file
        new = {a.access_token for a in accounts}
        assert len(new) == 1 and "old-access" not in new  # all three use the new token at once
        assert {a.refresh_token for a in accounts} == set(server.sim.refresh_tokens)  # the rotated one
        assert live not in server.sim.refresh_tokens
        assert all(r.status(a).last_error == "" for r, a in zip(refreshers, accounts))
        assert sum(r.adopted for r in refreshers) == 2
        # nothing is due any more anywhere: no second refresh for this expiry
        assert [r.check() for r in refreshers] == [0, 0, 0]
        assert server.sim.calls["refresh_token"] == 1
    finally:
        for s in stores:
            await s.service.stopService()


@pytest_twisted.ensureDeferred
async def test_an_instance_due_after_the_refresh_takes_the_published_tokens(reactor, redis_server, auth_server,
                                                                            tmp_path):
    """One that was down when the tokens were published finds them in Redis instead of refreshing again."""
    server = auth_server("claude")
    live = server.sim.issue_refresh_token()
    a, b = (RedisStateStore(reactor, connector(reactor, redis_server)) for _ in range(2))
    a.service.startService()
    try:
        await until(reactor, lambda: a.connected)
        now = reactor.seconds()
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        acct_a, acct_b = claude_account(tmp_path / "a", live, now), claude_account(tmp_path / "b", live, now)

        def refresh(acct):
            return Deferred.fromCoroutine(tokens.refresh(server.client, server.provider, acct.refresh_token,
                                                         clock=reactor))

        def make(store, acct):
            source = SimpleNamespace(current=SimpleNamespace(accounts={acct.name: acct}))
            return Refresher(reactor, refresh, lambda _: succeed(None), source, cluster=store)

        ra = make(a, acct_a)
        assert ra.check() == 1
        await until(reactor, lambda: ra.running_refreshes == 0)
        b.service.startService()  # b comes up later, its file still holding the old tokens
        await until(reactor, lambda: b.connected)
        rb = make(b, acct_b)
        assert rb.check() == 1
        await until(reactor, lambda: rb.running_refreshes == 0)
        assert server.sim.calls["refresh_token"] == 1
        assert acct_b.access_token == acct_a.access_token and acct_b.refresh_token == acct_a.refresh_token
    finally:
        await a.service.stopService()
        await b.service.stopService()



@pytest_twisted.ensureDeferred
async def test_when_the_one_refresh_fails_the_others_stop_waiting_and_do_not_refresh(reactor, redis_server,
                                                                                    auth_server, tmp_path):
    server = auth_server("claude")
    live = server.sim.issue_refresh_token()
    server.sim.fail_next(1, status=503)
    stores = [RedisStateStore(reactor, connector(reactor, redis_server)) for _ in range(2)]
    for s in stores:
        s.service.startService()
    try:
        await until(reactor, lambda: all(s.connected for s in stores))
        now = reactor.seconds()
        refreshers = []
        for n, store in enumerate(stores):
            (tmp_path / str(n)).mkdir()
            account = claude_account(tmp_path / str(n), live, now)

            def refresh(acct):
                return Deferred.fromCoroutine(tokens.refresh(server.client, server.provider, acct.refresh_token,
                                                             clock=reactor))

            source = SimpleNamespace(current=SimpleNamespace(accounts={account.name: account}))
            refreshers.append(Refresher(reactor, refresh, lambda _: succeed(None), source, cluster=store))
        assert [r.check() for r in refreshers] == [1, 1]
        # both are over long before the lock's 90 s: the loser heard that the refresh failed
        await until(reactor, lambda: all(r.running_refreshes == 0 for r in refreshers), timeout=10)
        assert server.sim.calls["refresh_token"] == 1
        errors = sorted(r.status(next(iter(r._accounts().values()))).last_error for r in refreshers)
        assert errors[0] == "the refresh by another instance failed" and errors[1]
        assert live in server.sim.refresh_tokens  # never spent: the next try can still use it
    finally:
        for s in stores:
            await s.service.stopService()
