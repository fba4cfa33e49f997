"""
Token refresh on a Clock: lead times per provider, at most 16 at once, the
1-minute pending and 5-minute failure back-offs, atomic write-back keeping
the file's mode, and the conductor's one refresh-and-retry after a 401.
"""

from __future__ import annotations

import json
import os
import stat

from types import SimpleNamespace

import pytest
from attrs import define
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from cliproxyd.assembly import Assembly, GenerationSource
from cliproxyd.conductor.conductor import AllAttemptsFailed
from cliproxyd.config import parse_config
from cliproxyd.credentials.authfiles import parse_account, scan_auth_dir
from cliproxyd.credentials.refresh import Refresher, file_saver, is_due, refresh_job
from cliproxyd.replies import Reply, UpstreamError
from cliproxyd.runtime import Runtime
from cliproxyd.state import MemoryStateStore
from tests.conftest import decode_request

HOUR = 3600.0
NOW = 1_800_000_000.0


@define
class Grant:
    access_token: str
    refresh_token: str = ""
    expires_in: float | None = 3600.0
    id_token: str = ""


class TokenEndpoint:
    """A refresh function whose answers the test gives, one Deferred per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Deferred]] = []

    def __call__(self, account) -> Deferred:
        d: Deferred = Deferred()
        self.calls.append((account.name, d))
        return d

    def answer(self, i: int, token: str = "new-token") -> None:
        self.calls[i][1].callback(Grant(token, "new-refresh"))

    def fail(self, i: int) -> None:
        self.calls[i][1].errback(RuntimeError("invalid_grant"))


def account(tmp_path, name: str, type_: str = "claude", expires_in: float | None = None, **extra):
    data = {"type": type_, "access_token": "old-token", "refresh_token": "old-refresh", **extra}
    if expires_in is not None:
        data["expired"] = NOW + expires_in
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return parse_account(str(path), path.read_bytes())


class Accounts:
    """A generation source holding just accounts, as the refresher reads them."""

    def __init__(self, accounts) -> None:
        self.set(accounts)

    def set(self, accounts) -> None:
        """What a reload does: a new generation with these accounts."""
        self.current = SimpleNamespace(accounts={a.name: a for a in accounts})


def make(tmp_path, accounts, saved=None, **kw):
    clock = Clock()
    clock.advance(NOW)
    endpoint = TokenEndpoint()
    saves = saved if saved is not None else []

    def save(a):
        saves.append(a.name)
        return succeed(None)

    source = Accounts(accounts)
    refresher = Refresher(clock, endpoint, save, source, **kw)
    refresher.source = source
    refresher.job = refresh_job(refresher, clock)
    return clock, endpoint, refresher, saves


@pytest.mark.parametrize("type_, lead", [("claude", 4 * HOUR), ("codex", 5 * 24 * HOUR),
                                         ("antigravity", 300.0), ("gemini", 300.0)])
def test_an_account_is_refreshed_its_providers_lead_time_before_expiry(tmp_path, type_, lead):
    a = account(tmp_path, "a.json", type_, expires_in=lead + 120)
    clock, endpoint, refresher, _ = make(tmp_path, [a])
    refresher.job.startService()
    assert endpoint.calls == []
    clock.advance(60)
    assert endpoint.calls == []  # still 60 s more than the lead
    clock.advance(60)
    assert [name for name, _ in endpoint.calls] == ["a.json"]
    refresher.job.stopService()


def test_without_an_expiry_the_last_refresh_decides():
    a = parse_account("a.json", json.dumps({"type": "claude", "access_token": "t", "refresh_token": "r",
                                            "last_refresh": NOW - 3 * HOUR}).encode())
    assert not is_due(a, NOW)
    assert is_due(a, NOW + HOUR)
    never = parse_account("b.json", b'{"type": "claude", "access_token": "t", "refresh_token": "r"}')
    assert is_due(never, NOW)


def test_a_refresh_puts_the_new_token_in_use_and_saves_the_file(tmp_path):
    a = account(tmp_path, "a.json", expires_in=60)
    clock, endpoint, refresher, saves = make(tmp_path, [a])
    assert refresher.check() == 1
    endpoint.answer(0, "fresh")
    assert a.access_token == "fresh" and a.refresh_token == "new-refresh"
    assert a.expires_at == NOW + 3600
    assert saves == ["a.json"]
    assert refresher.status(a).last_refresh == NOW and refresher.status(a).last_error == ""
    assert refresher.check() == 0  # not due any more: a 1-hour token is refreshed at half its life,
    clock.advance(1799)             # not every tick although Claude's lead is 4 hours
    assert refresher.check() == 0
    clock.advance(1)
    assert refresher.check() == 1


def test_at_most_16_refreshes_run_at_once(tmp_path):
    accounts = [account(tmp_path, f"a{i:02}.json", expires_in=0) for i in range(40)]
    clock, endpoint, refresher, _ = make(tmp_path, accounts)
    assert refresher.check() == 40  # all marked pending...
    assert len(endpoint.calls) == 16  # ...but only 16 talk to the endpoint
    assert refresher.running_refreshes == 40
    endpoint.answer(0)
    assert len(endpoint.calls) == 17
    for i in range(1, 17):
        endpoint.answer(i)
    assert len(endpoint.calls) == 33


def test_a_pending_refresh_is_left_alone_and_a_failure_waits_five_minutes(tmp_path):
    a = account(tmp_path, "a.json", expires_in=0)
    clock, endpoint, refresher, saves = make(tmp_path, [a], timeout=1000)
    refresher.job.startService()
    assert len(endpoint.calls) == 1
    clock.advance(60)
    clock.advance(60)
    assert len(endpoint.calls) == 1  # still pending: never a second one
    endpoint.fail(0)
    assert "invalid_grant" in refresher.status(a).last_error
    assert a.access_token == "old-token" and saves == []
    for _ in range(4):
        clock.advance(60)
    assert len(endpoint.calls) == 1  # 4 minutes after the failure
    clock.advance(60)
    assert len(endpoint.calls) == 2
    refresher.job.stopService()


def test_a_token_endpoint_that_never_answers_is_a_failure_after_the_timeout(tmp_path):
    a = account(tmp_path, "a.json", expires_in=0)
    clock, endpoint, refresher, _ = make(tmp_path, [a], timeout=30)
    refresher.check()
    clock.advance(30)
    assert "did not answer within 30s" in refresher.status(a).last_error
    assert refresher.running_refreshes == 0


def test_a_file_edited_during_the_refresh_wins(tmp_path):
    a = account(tmp_path, "a.json", expires_in=0)
    clock, endpoint, refresher, saves = make(tmp_path, [a])
    refresher.check()
    edited = account(tmp_path, "a.json", expires_in=9 * HOUR)
    refresher.source.set([edited])
    endpoint.answer(0)
    assert saves == [] and edited.access_token == "old-token"


def test_refreshed_tokens_are_written_atomically_keeping_the_files_mode(tmp_path):
    a = account(tmp_path, "a.json", expires_in=0, email="x@y.z", custom={"keep": True})
    os.chmod(a.path, 0o640)
    clock = Clock()
    clock.advance(NOW)
    endpoint = TokenEndpoint()
    refresher = Refresher(clock, endpoint, file_saver(lambda f, *args: succeed(f(*args))), Accounts([a]))
    refresher.check()
    endpoint.answer(0, "fresh")
    data = json.loads(open(a.path).read())
    assert data["access_token"] == "fresh" and data["custom"] == {"keep": True} and data["email"] == "x@y.z"
    assert stat.S_IMODE(os.stat(a.path).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["a.json"]  # no temp file left
    # the watcher sees our own write as unchanged
    again = scan_auth_dir(str(tmp_path), {"a.json": a})
    assert again.accounts["a.json"] is a


# -- 401: one refresh, one more try ------------------------------------------------


class Upstream:
    """An executor that accepts only the current token of each account."""

    def __init__(self, valid: dict[str, str]) -> None:
        self.valid = valid
        self.seen: list[tuple[str, str]] = []

    def execute(self, cred, req, upstream):
        token = cred.account.access_token
        self.seen.append((cred.account.name, token))
        if self.valid.get(cred.account.name) != token:
            raise UpstreamError("http", "invalid token", status=401)
        return succeed(Reply(200, b"application/json", b'{"ok": true}'))

    count_tokens = execute


def conductor_for(tmp_path, names, valid, **kw):
    for name in names:
        (tmp_path / name).write_text(json.dumps({"type": "claude", "access_token": "old-token",
                                                 "refresh_token": "r", "expired": NOW + 9 * HOUR}))
    config, _ = parse_config({"auth-dir": str(tmp_path), "routing": {"strategy": "fill-first"}})
    clock = Clock()
    clock.advance(NOW)
    endpoint = TokenEndpoint()
    # Wired as the composition root wires it: the source first, the
    # refresher reading it, the factory handing the refresher to conductors.
    source = GenerationSource()
    refresher = Refresher(clock, endpoint, lambda a: succeed(None), source, **kw)
    upstream = Upstream(valid)
    assembly = Assembly(None, clock, MemoryStateStore(), on_unauthorized=refresher.refresh_now,
                        wrap_executor=lambda real: upstream)
    runtime = Runtime(assembly, source, config=config, poll=0)
    runtime.start()
    return runtime.current.conductor, upstream, endpoint, refresher, clock


def request(model="claude-sonnet-4-5"):
    return decode_request(json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode())


def test_a_401_refreshes_the_token_and_retries_once_on_the_same_account(tmp_path):
    conductor, upstream, endpoint, refresher, _ = conductor_for(tmp_path, ["a.json"], {"a.json": "fresh"})
    d = Deferred.fromCoroutine(conductor.execute(request()))
    assert len(endpoint.calls) == 1  # the refresh is under way
    endpoint.answer(0, "fresh")
    reply = d.result
    assert reply.status == 200
    assert upstream.seen == [("a.json", "old-token"), ("a.json", "fresh")]
    state = conductor._state.model_state("claude:a.json", "claude-sonnet-4-5")
    assert not state.blocked(conductor._clock.seconds())


def test_when_the_refresh_fails_the_401_cools_the_account_and_the_next_one_answers(tmp_path):
    conductor, upstream, endpoint, refresher, clock = conductor_for(
        tmp_path, ["a.json", "b.json"], {"b.json": "old-token"})
    d = Deferred.fromCoroutine(conductor.execute(request()))
    endpoint.fail(0)
    assert d.result.status == 200
    assert upstream.seen == [("a.json", "old-token"), ("b.json", "old-token")]
    assert conductor._state.model_state("claude:a.json", "claude-sonnet-4-5").blocked(clock.seconds())
    # A second 401 within the back-off does not ask the token endpoint again.
    conductor._state.set_model_state("claude:a.json", "claude-sonnet-4-5",
                                     conductor._state.model_state("claude:x", "none"))
    conductor._refresh_slot("claude:a.json", "claude-sonnet-4-5", clock.seconds())
    Deferred.fromCoroutine(conductor.execute(request()))
    assert len(endpoint.calls) == 1


def test_a_retry_that_is_refused_again_is_not_refreshed_again(tmp_path):
    conductor, upstream, endpoint, refresher, _ = conductor_for(tmp_path, ["a.json"], {"a.json": "never"})
    d = Deferred.fromCoroutine(conductor.execute(request()))
    endpoint.answer(0, "still-wrong")
    failure = d.result
    d.addErrback(lambda f: None)
    assert isinstance(failure.value, AllAttemptsFailed) and failure.value.last.status == 401
    assert len(endpoint.calls) == 1 and len(upstream.seen) == 2


def test_requests_meeting_the_same_expired_token_share_one_refresh(tmp_path):
    conductor, upstream, endpoint, refresher, _ = conductor_for(tmp_path, ["a.json"], {"a.json": "fresh"})
    ds = [Deferred.fromCoroutine(conductor.execute(request())) for _ in range(5)]
    assert len(endpoint.calls) == 1
    endpoint.answer(0, "fresh")
    assert [d.result.status for d in ds] == [200] * 5


def test_auth_auto_refresh_workers_caps_the_refreshes_running_at_once(tmp_path):
    from twisted.internet.defer import Deferred, maybeDeferred

    from cliproxyd.config import parse_config
    from cliproxyd.daemon import build_daemon

    auth = tmp_path / "auth"
    auth.mkdir()
    for name in ("a", "b", "c"):
        (auth / f"{name}.json").write_text(json.dumps({"type": "claude", "access_token": "t", "refresh_token": "r",
                                                       "expired": NOW + 60}))
    for workers, expected in ((2, 2), (0, 3)):  # 0: the default, 16
        config, warnings = parse_config({"auth-dir": str(auth), "auth-auto-refresh-workers": workers})
        assert warnings == []
        clock = Clock()
        clock.advance(NOW)
        calls = []

        def refresh(account, calls=calls):
            calls.append(account.name)
            return Deferred()  # still running

        daemon = build_daemon(clock, None, config=config, poll=0, run_in_thread=maybeDeferred, refresh=refresh,
                              refresh_workers=config.auth_auto_refresh_workers)
        daemon.runtime.start()
        assert daemon.refresher.check() == 3  # all three are due...
        assert len(calls) == expected  # ...but only this many talk to the endpoint at once


def test_auth_auto_refresh_workers_must_be_a_count():
    from cliproxyd.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as info:
        parse_config({"auth-auto-refresh-workers": -1})
    assert info.value.path == "auth-auto-refresh-workers"
