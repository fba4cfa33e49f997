"""
Issue 16: the retry budget that travels (x-cliproxyd-retry-budget). Parsing
as pure functions, then the whole path on a Clock: never more upstream calls
than the budget, what is left sent to an upstream that may be a proxy, what
that proxy spent taken from its answer, and no retry round past the
deadline.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cliproxyd.conductor.budget import MAX_ATTEMPTS, RetryBudget, parse_budget
from tests.conftest import Harness, config_data

BUDGET = "x-cliproxyd-retry-budget"


def test_the_header_parses_and_what_does_not_is_ignored():
    assert parse_budget(b"attempts=3; deadline=1767225600.5") == RetryBudget(3, 1767225600.5)
    assert parse_budget("attempts=2, deadline=10") == RetryBudget(2, 10.0)
    assert parse_budget(b"attempts=4") == RetryBudget(4, None)
    assert parse_budget(b"attempts=100000") == RetryBudget(MAX_ATTEMPTS, None)
    for bad in (b"", b"3", b"attempts=x", b"deadline=5", b"attempts=-1", b"attempts=2; deadline=inf", b"junk; attempts=2"):
        assert parse_budget(bad) is None, bad


@given(attempts=st.integers(0, MAX_ATTEMPTS), deadline=st.one_of(st.none(), st.floats(0, 4e9)))
def test_what_is_sent_on_parses_back_to_what_is_left(attempts, deadline):
    sent = RetryBudget(attempts, deadline).header()
    back = parse_budget(sent)
    assert back.attempts == attempts
    assert (back.deadline is None) == (deadline is None)
    if deadline is not None:
        assert abs(back.deadline - deadline) <= 0.0005


@given(n=st.lists(st.integers(-3, 10), max_size=20), attempts=st.integers(0, 20))
def test_spending_never_goes_past_the_budget(n, attempts):
    b = RetryBudget(attempts)
    for cost in n:
        if not b.allows(0.0):
            break
        b.spend(cost)
    assert b.attempts >= 0
    assert b.spent <= attempts + max([c for c in n] + [1])  # one answer may report more than was left


# -- the whole path ------------------------------------------------------------------


def three_failing():
    h = Harness(config_data(keys=("sk-up-1", "sk-up-2", "sk-up-3")))
    for key in ("sk-up-1", "sk-up-2", "sk-up-3"):
        h.upstream.script(key, "status:503")
    return h


def test_a_budget_caps_the_upstream_calls_and_the_answer_says_what_it_spent():
    h = three_failing()
    status, headers, _ = h.chat(headers={BUDGET: "attempts=2"})
    assert status == 503
    assert len(h.upstream.seen) == 2
    assert headers.getRawHeaders(b"x-cliproxyd-attempts") == [b"2"]
    # without one, every key is tried
    h2 = three_failing()
    status, headers, _ = h2.chat()
    assert len(h2.upstream.seen) == 3 and headers.getRawHeaders(b"x-cliproxyd-attempts") is None


def test_an_upstream_proxy_gets_what_is_left_and_its_spend_is_taken_from_the_budget():
    h = three_failing()
    h.upstream.ratelimits["sk-up-1"] = {b"x-cliproxyd-attempts": b"3"}  # it retried three times behind itself
    status, headers, _ = h.chat(headers={BUDGET: "attempts=5; deadline=1000"})
    sent = [s.headers.get(BUDGET) for s in h.upstream.seen]
    assert sent == ["attempts=5; deadline=1000.000", "attempts=2; deadline=1000.000", "attempts=1; deadline=1000.000"]
    assert headers.getRawHeaders(b"x-cliproxyd-attempts") == [b"5"]


def test_no_retry_round_waits_past_the_deadline():
    def run(budget):
        h = Harness(config_data(keys=("only",), **{"request-retry": 2, "max-retry-interval": 30}))
        h.upstream.script("only", "status:429:5", "ok")
        headers = {BUDGET: budget} if budget else None
        return h, h.chat(headers=headers, advance=1)
    h, (status, _, _) = run(None)
    assert status == 200 and len(h.upstream.seen) == 2  # the round after the 5 s hint answered
    h, (status, _, _) = run("attempts=5; deadline=3")
    assert status == 429 and len(h.upstream.seen) == 1  # it would have started after the deadline
    assert h.state.pacing_counters()["budget_stops"] == 1


def test_a_spent_budget_sends_nothing_and_answers_504():
    h = Harness()
    h.clock.advance(100)
    status, headers, body = h.chat(headers={BUDGET: "attempts=3; deadline=50"})
    assert status == 504 and h.upstream.seen == type(h.upstream.seen)()
    assert b"retry budget" in body
    assert headers.getRawHeaders(b"x-cliproxyd-attempts") == [b"0"]
    status, _, _ = h.chat(headers={BUDGET: "attempts=0"})
    assert status == 504 and not h.upstream.seen
