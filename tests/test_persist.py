"""The state file: periodic atomic snapshots, restore at start, bad files set aside."""

from __future__ import annotations

import json
import os
import stat

import pytest
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from cliproxyd.conductor.policy import ModelState
from cliproxyd.state import MemoryStateStore
from cliproxyd.state import persist
from cliproxyd.fileio import atomic_write
from cliproxyd.state.persist import StatePersistence

START = 1_700_000_000.0
INTERVAL = 5.0


def sync(f, *args):
    return maybeDeferred(f, *args)


def make_clock(now: float = START) -> Clock:
    clock = Clock()
    clock.advance(now)
    return clock


def make_service(path, clock, store=None, run_in_thread=sync):
    store = store if store is not None else MemoryStateStore()
    return store, StatePersistence(store, str(path), clock, interval=INTERVAL, run_in_thread=run_in_thread)


def cooldown(now: float, seconds: float = 600) -> ModelState:
    return ModelState(
        unavailable=True,
        next_retry_at=now + seconds,
        reason="quota",
        quota_exceeded=True,
        backoff_level=2,
    )


def result_of(d: Deferred):
    results = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    return results[0]


def leftovers(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


# -- round trip --------------------------------------------------------------------


def test_cooldown_written_on_tick_and_restored_after_restart(tmp_path):
    path = tmp_path / "state" / "state.json"
    clock = make_clock()
    store, service = make_service(path, clock)
    service.startService()
    store.set_model_state("cred-1", "gpt-4o", cooldown(START))
    store.set_model_state("cred-1", "gpt-4o-mini", ModelState(unavailable=True, next_retry_at=START + 60, reason="transient"))
    assert not path.exists()

    clock.advance(INTERVAL)
    assert path.exists()
    assert store.dirty is False
    on_disk = json.loads(path.read_bytes())
    assert on_disk["model_states"]["cred-1"]["gpt-4o"]["next_retry_at"] == START + 600
    result_of(service.stopService())

    # Restart two minutes later: the 10-minute cooldown survives, the 1-minute one is over.
    later = make_clock(START + 120)
    fresh, restarted = make_service(path, later)
    restarted.startService()
    assert fresh.model_state("cred-1", "gpt-4o") == cooldown(START)
    assert fresh.model_state("cred-1", "gpt-4o").blocked(later.seconds())
    assert "gpt-4o-mini" not in fresh.model_states("cred-1")
    result_of(restarted.stopService())


def test_missing_file_starts_fresh(tmp_path):
    path = tmp_path / "state.json"
    with capturedLogs() as events:
        store, service = make_service(path, make_clock())
        service.load()
    assert store.model_states("cred-1") == {}
    assert any(e.get("path") == str(path) and "starting fresh" in e["log_format"] for e in events)
    assert not list(tmp_path.iterdir())


# -- when to write -----------------------------------------------------------------


def test_nothing_written_while_clean(tmp_path):
    path = tmp_path / "state.json"
    clock = make_clock()
    store, service = make_service(path, clock)
    service.startService()
    for _ in range(5):
        clock.advance(INTERVAL)
    assert not path.exists()

    store.set_model_state("cred-1", "gpt-4o", cooldown(START))
    clock.advance(INTERVAL)
    written = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    os.utime(path, ns=(0, 0))  # a rewrite would move the mtime off zero
    for _ in range(5):
        clock.advance(INTERVAL)
    assert path.stat().st_mtime_ns == 0
    assert path.read_bytes() == written
    assert mtime
    result_of(service.stopService())
    assert path.stat().st_mtime_ns == 0


def test_stop_writes_final_state_between_ticks(tmp_path):
    path = tmp_path / "state.json"
    clock = make_clock()
    store, service = make_service(path, clock)
    service.startService()
    clock.advance(INTERVAL / 2)
    store.set_model_state("cred-1", "gpt-4o", cooldown(START))

    assert result_of(service.stopService()) is None
    assert json.loads(path.read_bytes())["model_states"]["cred-1"]["gpt-4o"]["reason"] == "quota"
    assert store.dirty is False


def test_no_delayed_calls_after_stop(tmp_path):
    clock = make_clock()
    store, service = make_service(tmp_path / "state.json", clock)
    service.startService()
    assert clock.getDelayedCalls()
    store.set_model_state("cred-1", "gpt-4o", cooldown(START))
    clock.advance(INTERVAL)
    result_of(service.stopService())
    assert clock.getDelayedCalls() == []


def test_stop_waits_for_in_flight_write(tmp_path):
    path = tmp_path / "state.json"
    clock = make_clock()
    pending: list[tuple[Deferred, tuple]] = []

    def deferred_thread(f, *args):
        d: Deferred = Deferred()
        pending.append((d, args))
        return d

    store, service = make_service(path, clock, run_in_thread=deferred_thread)
    service.startService()
    store.set_model_state("cred-1", "gpt-4o", cooldown(START))
    clock.advance(INTERVAL)
    assert len(pending) == 1  # the tick's write is in flight

    store.set_model_state("cred-2", "gpt-4o", cooldown(START))
    stopped = []
    service.stopService().addBoth(stopped.append)
    assert len(pending) == 1, "the final write must not overlap the one in flight"
    assert stopped == []

    first, args = pending[0]
    atomic_write(*args)
    first.callback(None)
    assert len(pending) == 2  # now the final write starts
    assert stopped == []
    second, args = pending[1]
    atomic_write(*args)
    second.callback(None)
    assert stopped == [None]
    assert set(json.loads(path.read_bytes())["model_states"]) == {"cred-1", "cred-2"}


# -- failures ----------------------------------------------------------------------


def test_write_failure_logged_and_retried(tmp_path):
    path = tmp_path / "state.json"
    clock = make_clock()
    calls = []

    def flaky(f, *args):
        calls.append(args)
        if len(calls) == 1:
            return fail(OSError(28, "No space left on device"))
        return maybeDeferred(f, *args)

    store, service = make_service(path, clock, run_in_thread=flaky)
    service.startService()
    store.set_model_state("cred-1", "gpt-4o", cooldown(START))

    with capturedLogs() as events:
        clock.advance(INTERVAL)
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1
    assert failures[0]["path"] == str(path)
    assert failures[0]["log_failure"].check(OSError)
    assert failures[0]["log_level"] == LogLevel.critical
    assert store.dirty is True
    assert not path.exists()
    assert service.getServiceNamed("state-flush").running  # the loop goes on
    assert clock.getDelayedCalls()

    clock.advance(INTERVAL)
    assert len(calls) == 2
    assert store.dirty is False
    assert "cred-1" in json.loads(path.read_bytes())["model_states"]
    result_of(service.stopService())


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe garbage",
        json.dumps({"version": 999, "model_states": {}}).encode(),
        b"[1, 2, 3]",
        json.dumps({"version": 1, "model_states": ["not", "a", "mapping"]}).encode(),
    ],
    ids=["not-json", "not-utf8", "wrong-version", "not-a-mapping", "bad-model-states"],
)
def test_unusable_file_set_aside(tmp_path, content):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    clock = make_clock()
    store, service = make_service(path, clock)

    with capturedLogs() as events:
        service.startService()

    aside = tmp_path / f"state.json.corrupt-{int(START)}"
    assert not path.exists()
    assert aside.read_bytes() == content
    warnings = [e for e in events if e["log_level"] == LogLevel.warn and e.get("path") == str(path)]
    assert len(warnings) == 1
    assert warnings[0]["aside"] == str(aside)
    assert warnings[0]["reason"]
    assert store.model_states("cred-1") == {}
    assert store.dirty is False
    # The service runs on: a later change is written to the normal path.
    store.set_model_state("cred-1", "gpt-4o", cooldown(START))
    clock.advance(INTERVAL)
    assert "cred-1" in json.loads(path.read_bytes())["model_states"]
    result_of(service.stopService())


def test_set_aside_failure_logged_not_raised(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_bytes(b"{not json")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(persist.os, "replace", refuse)
    store, service = make_service(path, make_clock())
    with capturedLogs() as events:
        service.load()
    warnings = [e for e in events if e["log_level"] == LogLevel.warn and e.get("path") == str(path)]
    assert len(warnings) == 2
    assert "PermissionError" in warnings[1]["reason"]
    assert store.model_states("cred-1") == {}


def test_restore_problems_logged(tmp_path):
    path = tmp_path / "state.json"
    store = MemoryStateStore()
    store.set_model_state("cred-1", "gpt-4o", cooldown(START))
    data = store.snapshot(START)
    data["model_states"]["cred-2"] = "nonsense"
    path.write_text(json.dumps(data))

    fresh, service = make_service(path, make_clock())
    with capturedLogs() as events:
        service.load()
    assert fresh.model_state("cred-1", "gpt-4o") == cooldown(START)
    problems = [e for e in events if e["log_level"] == LogLevel.warn and e.get("path") == str(path)]
    assert [e["problem"] for e in problems] == ["model_states.cred-2: not a mapping"]
    restored = [e for e in events if e.get("count") is not None and e.get("path") == str(path)]
    assert restored[0]["count"] == 1
    assert path.exists()


# -- atomic_write ------------------------------------------------------------------


def test_atomic_write_new_file_mode_0600(tmp_path):
    path = tmp_path / "new" / "state.json"
    atomic_write(str(path), b"hello")
    assert path.read_bytes() == b"hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert leftovers(path.parent) == []


def test_atomic_write_keeps_existing_mode(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    atomic_write(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_atomic_write_failure_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(persist.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write(str(path), b"new")
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_restore_checks_field_types_and_applies_nothing_from_a_bad_snapshot():
    from cliproxyd.state import MemoryStateStore

    store = MemoryStateStore()
    problems = store.restore({
        "version": 1,
        "model_states": {
            "cred-1": {"m": {"unavailable": True, "next_retry_at": "soon"}},
            "cred-2": {"m": {"unavailable": True, "next_retry_at": 2000.0, "backoff_level": "3"}},
            "cred-3": {"m": {"unavailable": True, "next_retry_at": 2000.0, "reason": "quota"}},
        },
    }, now=1000.0)
    assert len(problems) == 2 and all("wrong type" in p for p in problems)
    assert set(store.model_states("cred-3")) == {"m"}
    assert store.model_states("cred-1") == {} and store.model_states("cred-2") == {}
    with pytest.raises(ValueError):
        MemoryStateStore().restore({"version": 1, "model_states": {"c": {"m": {}}}, "affinity": "x"}, 0)
    fresh = MemoryStateStore()
    with pytest.raises(ValueError):
        fresh.restore({"version": 1, "model_states": {"c": {"m": {"unavailable": True, "next_retry_at": 5.0}}},
                       "affinity": 7}, 0)
    assert fresh.model_states("c") == {}
