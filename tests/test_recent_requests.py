"""
The recent-request windows of each credential (the Management Center's
auth-file and key-usage cards): a large pool keeps every credential's
windows; past the bound the least recently used goes first.
"""

from __future__ import annotations

import json

from twisted.internet.task import Clock

from cliproxyd.conductor.conductor import Attempt
from cliproxyd.management import recent
from cliproxyd.management.recent import BUCKET_SECONDS, RecentRequests


def attempt(cred_id: str, ok: bool = True) -> Attempt:
    return Attempt(cred_id, "openai-compatibility", "gpt-4o", ok, 200 if ok else 429, "", 0.01)


def counted(r: RecentRequests, cred_id: str) -> tuple[int, int]:
    windows = r.snapshot(cred_id)
    return sum(w["success"] for w in windows), sum(w["failed"] for w in windows)


def test_a_pool_of_ten_thousand_used_in_turn_keeps_every_credentials_windows():
    # round robin over 10,000 keys: each one's next request comes 10,000 requests later
    r = RecentRequests(Clock())
    ids = [f"fp:{i:05d}" for i in range(10_000)]
    for ok in (True, False):
        for cred_id in ids:
            r.record(attempt(cred_id, ok))
    assert all(counted(r, cred_id) == (1, 1) for cred_id in ids)


def test_past_the_bound_the_least_recently_used_is_forgotten(monkeypatch):
    monkeypatch.setattr(recent, "MAX_CREDENTIALS", 3)
    r = RecentRequests(Clock())
    for cred_id in ("a", "b", "c"):
        r.record(attempt(cred_id))
    r.record(attempt("a"))  # used again: b is now the least recent
    r.record(attempt("d"))
    assert [counted(r, x) for x in "abcd"] == [(2, 0), (0, 0), (1, 0), (1, 0)]


def test_windows_are_plain_numbers_that_move_with_the_clock():
    clock = Clock()
    r = RecentRequests(clock)
    r.record(attempt("a"))
    clock.advance(BUCKET_SECONDS)
    r.record(attempt("a", ok=False))
    r.record(attempt("a", ok=False))
    windows = json.loads(json.dumps(r.snapshot("a")))
    assert [(w["success"], w["failed"]) for w in windows[-3:]] == [(0, 0), (1, 0), (0, 2)]
