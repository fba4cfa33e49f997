"""
The parent of --workers N as pure policy on a Clock: who is started, when a
dead worker comes back (back-off, never a tight loop), which signals go on
to the workers, and when the drain is over.
"""

from __future__ import annotations

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from cliproxyd.workers.supervisor import (
    RESTART_MAX,
    RESTART_MIN,
    STABLE_SECONDS,
    Supervisor,
    after_exit,
    restart_delay,
)


class FakeProcess:
    def __init__(self, pid: int, protocol) -> None:
        self.pid = pid
        self.protocol = protocol
        self.signals: list[str] = []

    def signalProcess(self, sig: str) -> None:
        self.signals.append(sig)

    def exit(self, code: int = 0, sig: int | None = None) -> None:
        reason = ProcessDone(None) if code == 0 and sig is None else ProcessTerminated(code, sig)
        self.protocol.processEnded(Failure(reason))


class Spawner:
    def __init__(self) -> None:
        self.started: list[tuple[int, FakeProcess]] = []
        self.fail = False

    def __call__(self, index, protocol):
        if self.fail:
            raise OSError("no more processes")
        process = FakeProcess(1000 + len(self.started), protocol)
        self.started.append((index, process))
        return process

    def running(self) -> dict[int, FakeProcess]:
        return {i: p for i, p in self.started}  # the last process of each slot


def supervisor(count=2, drain=20.0):
    clock, spawn = Clock(), Spawner()
    events = []
    sup = Supervisor(count, spawn, clock, drain, on_stopped=lambda: events.append("stopped"),
                     on_draining=lambda: events.append("draining"))
    return sup, clock, spawn, events


def test_the_back_off_doubles_after_short_runs_and_starts_over_after_a_stable_one():
    assert [restart_delay(n) for n in range(1, 5)] == [RESTART_MIN * 2, RESTART_MIN * 4, RESTART_MIN * 8,
                                                       RESTART_MIN * 16]
    assert restart_delay(100) == RESTART_MAX
    assert after_exit(3, started_at=0.0, now=1.0) == (4, restart_delay(4))
    assert after_exit(3, started_at=0.0, now=STABLE_SECONDS) == (0, RESTART_MIN)


def test_workers_start_once_the_reactor_runs_one_per_slot():
    sup, clock, spawn, _ = supervisor(3)
    sup.startService()
    assert spawn.started == []  # nothing spawned while the tree starts
    clock.advance(0)
    assert [i for i, _ in spawn.started] == [0, 1, 2]
    assert sup.pids == [1000, 1001, 1002]


def test_a_dead_worker_is_restarted_after_a_delay_that_grows_while_it_keeps_dying():
    sup, clock, spawn, _ = supervisor(2)
    sup.startService()
    clock.advance(0)
    delays = []
    for _ in range(8):
        dying = spawn.running()[1]
        dying.exit(1)
        assert spawn.running()[1] is dying, "not restarted at once"
        waited = 0.0
        while spawn.running()[1] is dying:
            clock.advance(0.25)
            waited += 0.25
            assert waited <= RESTART_MAX
        delays.append(waited)
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert delays[-1] == RESTART_MAX
    assert sup.slots[1].restarts == 8
    assert spawn.running()[0].signals == []  # the other worker is left alone
    assert sup.slots[0].restarts == 0


def test_a_worker_that_ran_long_comes_back_quickly():
    sup, clock, spawn, _ = supervisor(1)
    sup.startService()
    clock.advance(0)
    spawn.running()[0].exit(sig=9)
    clock.advance(restart_delay(1))
    assert len(spawn.started) == 2
    clock.advance(STABLE_SECONDS)
    spawn.running()[0].exit(sig=9)
    clock.advance(RESTART_MIN)
    assert len(spawn.started) == 3


def test_a_spawn_that_fails_is_tried_again_later_not_in_a_loop():
    sup, clock, spawn, _ = supervisor(1)
    spawn.fail = True
    sup.startService()
    clock.advance(0)
    assert spawn.started == []
    clock.advance(restart_delay(1) - 0.01)
    spawn.fail = False
    assert spawn.started == []
    clock.advance(0.01)
    assert len(spawn.started) == 1


def test_sighup_goes_to_every_running_worker():
    sup, clock, spawn, _ = supervisor(2)
    sup.startService()
    clock.advance(0)
    sup.reload()
    assert [p.signals for p in spawn.running().values()] == [["HUP"], ["HUP"]]


def test_stopping_drains_every_worker_and_fires_when_the_last_has_ended():
    sup, clock, spawn, events = supervisor(2)
    sup.startService()
    clock.advance(0)
    done = []
    sup.stopService().addCallback(done.append)
    assert events == ["draining"]
    workers = spawn.running()
    assert [p.signals for p in workers.values()] == [["TERM"], ["TERM"]]
    workers[0].exit(0)
    assert done == []
    clock.advance(10)
    workers[1].exit(0)
    assert done == [None] and events == ["draining", "stopped"]
    assert sup.clean
    clock.advance(3600)
    assert len(spawn.started) == 2  # nothing restarted during or after the drain
    assert clock.getDelayedCalls() == []


def test_a_worker_that_does_not_drain_in_time_is_killed_and_the_stop_is_not_clean():
    sup, clock, spawn, _ = supervisor(2, drain=20.0)
    sup.startService()
    clock.advance(0)
    done = []
    sup.stopService().addCallback(done.append)
    workers = spawn.running()
    workers[0].exit(0)
    clock.advance(19.9)
    assert workers[1].signals == ["TERM"]
    clock.advance(0.1)
    assert workers[1].signals == ["TERM", "KILL"]
    workers[1].exit(sig=9)
    assert done == [None] and not sup.clean
    assert clock.getDelayedCalls() == []


def test_a_restart_that_is_due_is_cancelled_by_the_stop():
    sup, clock, spawn, _ = supervisor(2)
    sup.startService()
    clock.advance(0)
    spawn.running()[0].exit(1)
    done = []
    sup.stopService().addCallback(done.append)
    spawn.running()[1].exit(0)
    assert done == [None]
    clock.advance(RESTART_MAX)
    assert len(spawn.started) == 2
    assert clock.getDelayedCalls() == []


def test_stopping_before_the_first_spawn_starts_nothing():
    sup, clock, spawn, events = supervisor(2)
    sup.startService()
    done = []
    sup.stopService().addCallback(done.append)
    clock.advance(1)
    assert done == [None] and spawn.started == [] and events == ["draining", "stopped"]


def test_each_worker_that_ends_is_reported_by_slot_and_pid_before_its_restart():
    clock, spawn, ended = Clock(), Spawner(), []
    sup = Supervisor(2, spawn, clock, 5.0, on_ended=lambda index, pid: ended.append((index, pid, len(spawn.started))))
    sup.startService()
    clock.advance(0)
    spawn.running()[1].exit(sig=9)
    assert ended == [(1, 1001, 2)]  # reported, not yet replaced
    clock.advance(RESTART_MAX)
    sup.stopService()
    for process in spawn.running().values():
        process.exit(0)
    assert sorted((index, pid) for index, pid, _ in ended) == [(0, 1000), (1, 1001), (1, 1002)]


def test_at_least_one_worker():
    with pytest.raises(ValueError):
        Supervisor(0, Spawner(), Clock(), 1.0)
