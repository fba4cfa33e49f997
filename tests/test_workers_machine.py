"""
With C{--workers N} the management API answers for the whole machine: two
daemons as two workers of one parent, their StateStore in a real
redis-server (as workers always run). C{/usage} adds up every worker's
attempts and merges their recent ones by time; C{/credentials} and
C{/status} give the shared counters (whole already, through Redis) with the
last status and error of the worker that used a credential last.
"""

from __future__ import annotations

import json
import os

import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.task import Clock

from cliproxyd.config import parse_config
from cliproxyd.daemon import build_daemon
from cliproxyd.testing.upstream import SimulatedUpstream
from cliproxyd.workers.worker import WorkerRole
from tests.conftest import Harness, _now, config_data
from tests.redis_support import until

AUTH = {"authorization": "Bearer pw"}


class Worker(Harness):
    def __init__(self, reactor, url: str, index: int, directory: str, upstream=None) -> None:
        self.config, self.warnings = parse_config(config_data(**{"state-store": url}))
        self.clock = Clock()
        self.clock.advance(1000 + index)  # the later worker's uses are the later ones
        self.upstream = upstream if upstream is not None else SimulatedUpstream(self.clock)
        self.up = StubTreq(self.upstream.resource())
        self.daemon = build_daemon(self.clock, self.up, config=self.config, poll=0, run_in_thread=_now,
                                   state_store=self.config.state_store, state_reactor=reactor,
                                   worker=WorkerRole(index, directory, os.getppid()),
                                   environ={"MANAGEMENT_PASSWORD": "pw"})
        self.state, self.usage, self.runtime = self.daemon.state, self.daemon.usage, self.daemon.runtime
        self.management = self.daemon.management
        self.runtime.start()
        self.front = StubTreq(self.daemon.resource())
        self.state.service.startService()

    def publish(self) -> None:
        self.daemon.services[[s.name for s in self.daemon.services].index("publish-counts")].run_now()

    def get(self, path: str) -> dict:
        code, _, body = self.request("GET", "/v0/management" + path, headers=AUTH)
        assert code == 200, body
        return json.loads(body)


@pytest_twisted.ensureDeferred
async def test_usage_and_the_credentials_answer_for_every_worker(reactor, redis_server, tmp_path):
    first = Worker(reactor, redis_server.url, 0, str(tmp_path))
    second = Worker(reactor, redis_server.url, 1, str(tmp_path), upstream=first.upstream)
    workers = (first, second)
    try:
        await until(reactor, lambda: first.state.connected and second.state.connected)
        assert first.chat()[0] == 200  # sk-up-1 on worker 0
        first.upstream.script("sk-up-2", "status:500")
        assert second.chat()[0] == 200  # worker 1: one answer from each key, sk-up-2 failing over first
        assert second.chat()[0] == 200
        await until(reactor, lambda: all(w.state.pending_writes == 0 and not w.state._flushing for w in workers))
        await until(reactor, lambda: first.state.stats(first.creds[1].id).failures == 1)
        for w in workers:
            w.publish()

        usage = first.get("/usage")["usage"]
        # every worker's attempts: worker 0 made one, worker 1 three (a failure and two answers)
        assert (usage["total_requests"], usage["success_count"], usage["failure_count"]) == (4, 3, 1)
        assert usage["by_status"] == {"200": 3, "500": 1}
        assert [r["at"] for r in usage["recent"]] == [1000.0, 1001.0, 1001.0, 1001.0]  # both, by time
        assert [r["status"] for r in usage["recent"] if not r["ok"]] == [500]
        assert len(first.get("/usage?limit=2")["usage"]["recent"]) == 2

        creds = {c["key"]: c for c in first.get("/credentials")["credentials"]}
        failed = creds[first.creds[1].fingerprint]
        # its counters (shared through Redis) and the error only worker 1 saw
        assert (failed["counters"]["requests"], failed["counters"]["failures"]) == (1, 1)
        assert failed["counters"]["last_status"] == 500 and failed["last_error"]
        assert creds[first.creds[0].fingerprint]["counters"]["requests"] == 3
        status = {c["key"]: c for c in first.get("/status")["credentials"]}
        assert status[first.creds[1].fingerprint]["last_status"] == 500
    finally:
        for w in workers:
            await w.state.service.stopService()
