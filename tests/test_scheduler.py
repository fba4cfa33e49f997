"""
Property tests for L{cliproxyd.conductor.scheduler.Scheduler}.

No reactor and no wall clock: C{now} is a number the test passes in, and
the scheduler's view of cooldowns is checked against a plain dict oracle
(credential id -> block-until; blocked at C{now} iff block-until > now).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cliproxyd.conductor.scheduler import Scheduler
from cliproxyd.credentials.model import Credential, Route

ROUTE = "m"
OTHER = "other"

# No example database on disk, no deadline (timing is not what is tested).
SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def cred(i: int, priority: int = 0, provider: str = "p", routes=(ROUTE,), disabled: bool = False) -> Credential:
    return Credential(
        id=f"c{i}",
        provider=provider,
        kind="openai-compatibility",
        api_key=f"k{i}",
        base_url="http://u.test/v1",
        priority=priority,
        routes=tuple(Route(r, r, (r,)) for r in routes),
        disabled=disabled,
    )


def counter_cursor():
    d: dict[str, int] = {}

    def next_cursor(key: str) -> int:
        v = d.get(key, 0)
        d[key] = v + 1
        return v

    return next_cursor


def blocked(oracle: dict[str, float], cred_id: str, now: float) -> bool:
    until = oracle.get(cred_id)
    return until is not None and until > now


def pick_id(s: Scheduler, tried, now: float, route: str = ROUTE) -> str | None:
    p = s.pick(route, set(tried), now)
    if p is None:
        return None
    assert p.route.name == route
    return p.cred.id


# -- round-robin fairness ------------------------------------------------------------


@settings(max_examples=60, **SETTINGS)
@given(n=st.integers(1, 30), k=st.integers(1, 5))
def test_round_robin_within_a_tier_is_fair_and_cycles_in_config_order(n, k):
    creds = [cred(i) for i in range(n)]
    s = Scheduler(creds, "round-robin", counter_cursor())
    picks = [pick_id(s, (), 0.0) for _ in range(n * k)]
    assert None not in picks
    assert Counter(picks) == {c.id: k for c in creds}
    order = [c.id for c in creds]
    for a, b in zip(picks, picks[1:]):
        assert order.index(b) == (order.index(a) + 1) % n, (a, b)


@settings(max_examples=60, **SETTINGS)
@given(na=st.integers(1, 10), nb=st.integers(1, 10), picks=st.integers(2, 40), interleave=st.booleans())
def test_round_robin_alternates_between_providers_of_one_priority(na, nb, picks, interleave):
    a = [cred(i, provider="a") for i in range(na)]
    b = [cred(100 + i, provider="b") for i in range(nb)]
    # Config order should not matter to the alternation.
    creds = [c for pair in zip(a, b) for c in pair] + a[nb:] + b[na:] if interleave else a + b
    provider = {c.id: c.provider for c in creds}
    s = Scheduler(creds, "round-robin", counter_cursor())
    seen = [pick_id(s, (), 0.0) for _ in range(picks)]
    assert None not in seen
    providers = [provider[x] for x in seen]
    for x, y in zip(providers, providers[1:]):
        assert x != y, providers
    # ...and inside each provider, the round-robin still cycles in config order.
    for members in (a, b):
        order = [c.id for c in members]
        mine = [x for x in seen if x in order]
        for x, y in zip(mine, mine[1:]):
            assert order.index(y) == (order.index(x) + 1) % len(order)


# -- fill-first ------------------------------------------------------------------------


@st.composite
def fill_first_case(draw):
    n = draw(st.integers(1, 20))
    now = float(draw(st.integers(0, 100)))
    tried = draw(st.sets(st.integers(0, n - 1)))
    blocks = draw(st.dictionaries(st.integers(0, n - 1), st.integers(0, 200), max_size=n))
    return n, now, tried, blocks


@settings(max_examples=150, **SETTINGS)
@given(case=fill_first_case(), repeat=st.integers(1, 4))
def test_fill_first_picks_the_first_untried_unblocked_credential(case, repeat):
    n, now, tried_idx, blocks = case
    creds = [cred(i) for i in range(n)]
    s = Scheduler(creds, "fill-first", counter_cursor())
    oracle = {}
    for i, until in blocks.items():
        s.set_blocked(f"c{i}", ROUTE, float(until))
        oracle[f"c{i}"] = float(until)
    tried = {f"c{i}" for i in tried_idx}
    expected = next(
        (c.id for c in creds if c.id not in tried and not blocked(oracle, c.id, now)),
        None,
    )
    for _ in range(repeat):  # sticky: the same answer every time
        assert pick_id(s, tried, now) == expected


@settings(max_examples=60, **SETTINGS)
@given(n=st.integers(2, 20), first=st.data(), cool=st.integers(1, 100), now=st.integers(0, 1000))
def test_fill_first_moves_on_while_blocked_and_returns_after(n, first, cool, now):
    creds = [cred(i) for i in range(n)]
    s = Scheduler(creds, "fill-first", counter_cursor())
    now = float(now)
    j = first.draw(st.integers(0, n - 2), label="index of the sticky credential")
    tried = {f"c{i}" for i in range(j)}  # everything before it was tried already
    assert pick_id(s, tried, now) == f"c{j}"
    assert pick_id(s, tried, now) == f"c{j}"
    s.set_blocked(f"c{j}", ROUTE, now + cool)
    assert pick_id(s, tried, now) == f"c{j + 1}"
    assert pick_id(s, tried, now + cool - 0.5) == f"c{j + 1}"
    assert pick_id(s, tried, now + cool) == f"c{j}"  # block-until == now: recovered
    assert pick_id(s, tried, now + cool + 1) == f"c{j}"
    # Blocked again, then unblocked explicitly before the time is up.
    s.set_blocked(f"c{j}", ROUTE, now + 10 * cool)
    assert pick_id(s, tried, now + cool + 2) == f"c{j + 1}"
    s.set_blocked(f"c{j}", ROUTE, None)
    assert pick_id(s, tried, now + cool + 2) == f"c{j}"


# -- priority ----------------------------------------------------------------------------


@st.composite
def priority_case(draw):
    n = draw(st.integers(1, 16))
    prios = draw(st.lists(st.integers(-2, 3), min_size=n, max_size=n))
    provs = draw(st.lists(st.sampled_from("abc"), min_size=n, max_size=n))
    strategy = draw(st.sampled_from(["round-robin", "fill-first"]))
    blocks = draw(st.dictionaries(st.integers(0, n - 1), st.integers(1, 50), max_size=n))
    return n, prios, provs, strategy, blocks


@settings(max_examples=120, **SETTINGS)
@given(case=priority_case())
def test_higher_priority_wins_until_exhausted(case):
    n, prios, provs, strategy, blocks = case
    creds = [cred(i, priority=prios[i], provider=provs[i]) for i in range(n)]
    prio = {c.id: c.priority for c in creds}
    s = Scheduler(creds, strategy, counter_cursor())
    oracle = {}
    for i, until in blocks.items():
        s.set_blocked(f"c{i}", ROUTE, float(until))
        oracle[f"c{i}"] = float(until)
    now = 0.0
    tried: set[str] = set()
    # Exhaust the pool one pick at a time, as a request failing over would.
    while True:
        ready = [c.id for c in creds if c.id not in tried and not blocked(oracle, c.id, now)]
        got = pick_id(s, tried, now)
        if not ready:
            assert got is None
            break
        assert got in ready
        assert prio[got] == max(prio[x] for x in ready), (got, ready)
        tried.add(got)
    # Once the cooldowns are over, the blocked ones come back in priority order too.
    later = 100.0
    ready = [c.id for c in creds if c.id not in tried]
    if ready:
        got = pick_id(s, tried, later)
        assert got in ready and prio[got] == max(prio[x] for x in ready)
    else:
        assert pick_id(s, tried, later) is None


# -- the oracle model: random operations --------------------------------------------------

@st.composite
def pool(draw):
    n = draw(st.integers(1, 8))
    creds = [
        cred(
            i,
            priority=draw(st.integers(0, 2)),
            provider=draw(st.sampled_from("ab")),
            routes=draw(st.sampled_from([(ROUTE,), (ROUTE, OTHER), (OTHER,)])),
            disabled=draw(st.integers(0, 5)) == 0,
        )
        for i in range(n)
    ]
    return creds


@st.composite
def scenario(draw):
    creds = draw(pool())
    n = len(creds)
    i = st.integers(0, n - 1)
    subset = st.sets(i)
    op = st.one_of(
        st.tuples(st.just("block"), i, st.integers(-2, 12)),
        st.tuples(st.just("unblock"), i),
        st.tuples(st.just("advance"), st.integers(0, 6)),
        st.tuples(st.just("pick"), subset),
        st.tuples(st.just("exactly"), st.integers(0, n), subset),  # n: an unknown id
        st.tuples(st.just("earliest")),
    )
    return creds, draw(st.lists(op, max_size=40))


@settings(max_examples=200, **SETTINGS)
@given(case=scenario(), strategy=st.sampled_from(["round-robin", "fill-first"]))
def test_never_picks_a_blocked_or_tried_credential(case, strategy):
    creds, ops = case
    s = Scheduler(creds, strategy, counter_cursor())
    serving = [c for c in creds if not c.disabled and any(r.name == ROUTE for r in c.routes)]
    serving_ids = {c.id for c in serving}
    prio = {c.id: c.priority for c in creds}
    oracle: dict[str, float] = {}
    now = 0.0

    def ids(idx) -> set[str]:
        return {f"c{i}" for i in idx}

    def check_earliest() -> None:
        # blocked_until has no clock of its own: it reports what the last pick
        # at this time left behind. A pick with every credential tried visits
        # every tier (promoting what has recovered by now) and finds nothing.
        assert s.pick(ROUTE, {c.id for c in creds}, now) is None
        live = [oracle[c] for c in serving_ids if blocked(oracle, c, now)]
        assert s.blocked_until(ROUTE) == (min(live) if live else None)

    for o in ops:
        kind = o[0]
        if kind == "block":
            _, i, dt = o
            # State keys are per route; OTHER's cooldowns are separate.
            s.set_blocked(f"c{i}", ROUTE, now + dt)
            oracle[f"c{i}"] = now + dt
        elif kind == "unblock":
            _, i = o
            s.set_blocked(f"c{i}", ROUTE, None)
            oracle.pop(f"c{i}", None)
        elif kind == "advance":
            now += o[1]
        elif kind == "pick":
            tried = ids(o[1])
            ready = [c for c in serving_ids if c not in tried and not blocked(oracle, c, now)]
            got = pick_id(s, tried, now)
            if got is None:
                assert not ready, (ready, oracle, now)
                check_earliest()
            else:
                assert got in serving_ids
                assert got not in tried
                assert not blocked(oracle, got, now), (got, oracle, now)
                assert prio[got] == max(prio[c] for c in ready)
            # Failing over until nothing is left reaches exactly the ready set.
            drained = set()
            while got is not None:
                assert got not in drained and got in ready, (got, drained, ready)
                drained.add(got)
                got = pick_id(s, tried | drained, now)
            assert drained == set(ready), (drained, ready, oracle, now)
        elif kind == "exactly":
            _, i, tried_idx = o
            tried = ids(tried_idx)
            cid = f"c{i}"  # i == n: a credential the scheduler never heard of
            want = cid in serving_ids and cid not in tried and not blocked(oracle, cid, now)
            p = s.pick_exactly(ROUTE, cid, tried, now)
            if want:
                assert p is not None and p.cred.id == cid and p.route.name == ROUTE
            else:
                assert p is None, (cid, tried, oracle, now)
        else:
            check_earliest()
    check_earliest()
    # The OTHER route never saw a cooldown: every credential serving it is pickable.
    other = {c.id for c in creds if not c.disabled and any(r.name == OTHER for r in c.routes)}
    for c in other:
        assert s.pick_exactly(OTHER, c, set(), now) is not None
    if not other:
        assert s.pick(OTHER, set(), now) is None
        assert s.blocked_until(OTHER) is None


@settings(max_examples=150, **SETTINGS)
@given(
    n=st.integers(1, 6),
    strategy=st.sampled_from(["round-robin", "fill-first"]),
    data=st.data(),
)
def test_the_last_block_or_unblock_of_a_credential_wins(n, strategy, data):
    creds = [cred(i, priority=i % 2, provider="ab"[i % 2]) for i in range(n)]
    s = Scheduler(creds, strategy, counter_cursor())
    j = data.draw(st.integers(0, n - 1), label="credential")
    others = {c.id for c in creds} - {f"c{j}"}
    final = None
    for until in data.draw(st.lists(st.one_of(st.none(), st.integers(1, 20)), min_size=1), label="blocks"):
        s.set_blocked(f"c{j}", ROUTE, None if until is None else float(until))
        final = until
    # With every other credential tried, the pick is c{j} exactly when its
    # last cooldown (an earlier, shorter or longer one does not matter) is over.
    for now in range(22):
        want = f"c{j}" if final is None or final <= now else None
        assert pick_id(s, others, float(now)) == want, (now, final)


@settings(max_examples=100, **SETTINGS)
@given(
    n=st.integers(1, 12),
    data=st.data(),
)
def test_blocked_until_is_the_earliest_live_cooldown(n, data):
    creds = [cred(i, priority=i % 3, provider="ab"[i % 2]) for i in range(n)]
    s = Scheduler(creds, "round-robin", counter_cursor())
    oracle: dict[str, float] = {}
    assert s.blocked_until(ROUTE) is None
    for _ in range(data.draw(st.integers(1, 15), label="steps")):
        i = data.draw(st.integers(0, n - 1), label="cred")
        until = data.draw(st.one_of(st.none(), st.integers(1, 40).map(float)), label="until")
        s.set_blocked(f"c{i}", ROUTE, until)
        if until is None:
            oracle.pop(f"c{i}", None)
        else:
            oracle[f"c{i}"] = until
        # At time 0 every block is live (they all end at 1 or later),
        # including re-blocks and unblocks of the same credential.
        assert s.blocked_until(ROUTE) == (min(oracle.values()) if oracle else None)
    now = float(data.draw(st.integers(0, 50), label="now"))
    assert s.pick(ROUTE, {c.id for c in creds}, now) is None  # visit every tier at `now`
    live = [u for u in oracle.values() if u > now]
    assert s.blocked_until(ROUTE) == (min(live) if live else None)


@settings(max_examples=100, **SETTINGS)
@given(creds=pool(), data=st.data())
def test_pick_exactly_only_when_serving_untried_and_unblocked(creds, data):
    n = len(creds)
    s = Scheduler(creds, data.draw(st.sampled_from(["round-robin", "fill-first"])), counter_cursor())
    now = float(data.draw(st.integers(0, 20), label="now"))
    oracle = {}
    for i, until in data.draw(st.dictionaries(st.integers(0, n - 1), st.integers(0, 40)), label="blocks").items():
        s.set_blocked(f"c{i}", ROUTE, float(until))
        oracle[f"c{i}"] = float(until)
    tried = {f"c{i}" for i in data.draw(st.sets(st.integers(0, n - 1)), label="tried")}
    for c in creds + [cred(n)]:  # plus one the scheduler never heard of
        serves = c in creds and not c.disabled and any(r.name == ROUTE for r in c.routes)
        want = serves and c.id not in tried and not blocked(oracle, c.id, now)
        p = s.pick_exactly(ROUTE, c.id, tried, now)
        if want:
            assert p is not None and p.cred == c and p.route == Route(ROUTE, ROUTE, (ROUTE,))
        else:
            assert p is None, (c, tried, oracle, now)
        # Cooldowns are per route: OTHER is unaffected by blocks on ROUTE.
        serves_other = c in creds and not c.disabled and any(r.name == OTHER for r in c.routes)
        q = s.pick_exactly(OTHER, c.id, tried, now)
        assert (q is not None) == (serves_other and c.id not in tried)
    assert s.pick_exactly("no-such-route", "c0", set(), now) is None
