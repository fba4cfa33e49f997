"""The collector tuning: start-up's objects frozen and a wider young generation once the reactor runs, undone on stop."""

import gc
import weakref

from twisted.internet.testing import MemoryReactorClock

from cliproxyd.collector import YOUNG_THRESHOLD, CollectorTuning


class Node:
    def __init__(self):
        self.other = self  # a cycle: only the collector frees it


def test_tuning_waits_for_the_reactor_then_freezes_start_up_and_is_undone_on_stop():
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    reactor = MemoryReactorClock()
    tuning = CollectorTuning(reactor)
    start_up = Node()  # made at start-up, before the reactor runs
    start_up_ref = weakref.ref(start_up)
    tuning.startService()
    assert gc.get_threshold() == before  # nothing yet: the reactor is not running
    reactor.run()
    try:
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
        # What start-up made is frozen: a cycle among it is not walked, so not freed.
        del start_up
        gc.collect()
        assert start_up_ref() is not None
        # A cycle made while serving is still collected.
        served = Node()
        served_ref = weakref.ref(served)
        del served
        gc.collect()
        assert served_ref() is None
    finally:
        tuning.stopService()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert start_up_ref() is None  # unfrozen, the collector sees it again


def test_a_service_stopped_before_the_reactor_runs_tunes_nothing():
    before = gc.get_threshold()
    reactor = MemoryReactorClock()
    tuning = CollectorTuning(reactor)
    tuning.startService()
    tuning.stopService()
    reactor.run()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
