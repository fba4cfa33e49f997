"""
Micro-benchmark of the StateStore calls one request makes, embedded store
against the Redis one (C{state-store}), with the Redis store connected to a
real redis-server and its background flushes running on the reactor:

    python bench/statestore.py [--requests 20000] [--repeat 5]

One "request" is what the conductor does for a request that succeeds on a
bound session: C{session()}, C{model_state()} (twice: pick and outcome),
C{record()}, C{bind_session()}; every 50th request is a 429 that sets a
cooldown (C{set_model_state()}) and every 51st clears it. The figure is the
median over C{--repeat} interleaved runs of this process's CPU time per
request (process time, so other load on a shared machine counts less), the
Redis store's flushes, its socket writes and the replies included (they run
between batches, as in the daemon: each batch of 200 requests yields to the
reactor once). redis-server's own CPU is not in it. Needs
/usr/bin/redis-server (started on a free port in a temp dir, stopped at the end).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from twisted.internet import defer, reactor, task  # noqa: E402

from cliproxyd.state import MemoryStateStore  # noqa: E402
from cliproxyd.state.records import ModelState  # noqa: E402
from cliproxyd.state.redisstore import RedisStateStore, tcp_connect  # noqa: E402

BATCH = 200


def one_request(store, i: int, now: float) -> None:
    cred = f"c{i % 8}"
    keys = (f"r|s{i % 500}",)
    store.session(keys[0], now)
    store.model_state(cred, "gpt-4o-mini")
    if i % 50 == 0:
        store.set_model_state(cred, "gpt-4o-mini", ModelState(unavailable=True, next_retry_at=now + 60,
                                                              backoff_level=1, updated_at=now))
        store.record(cred, "gpt-4o-mini", now, 429, "quota")
    elif i % 50 == 1:
        store.set_model_state(f"c{(i - 1) % 8}", "gpt-4o-mini", ModelState())
    store.model_state(cred, "gpt-4o-mini")
    store.record(cred, "gpt-4o-mini", now, 200)
    store.bind_session(keys, cred, now + 3600)


async def run(store, requests: int) -> float:
    started = time.process_time()
    now = reactor.seconds()
    for start in range(0, requests, BATCH):
        for i in range(start, min(start + BATCH, requests)):
            one_request(store, i, now)
        await task.deferLater(reactor, 0, lambda: None)  # the reactor turns: flushes run
    if isinstance(store, RedisStateStore):
        while store.pending_writes or store._flushing:
            await task.deferLater(reactor, 0.001, lambda: None)
    return (time.process_time() - started) / requests


async def main(args) -> None:
    directory = tempfile.mkdtemp(prefix="statestore-bench-")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", directory], stdout=subprocess.DEVNULL)
    try:
        shared = RedisStateStore(reactor, tcp_connect(reactor, reactor, "127.0.0.1", port, 0))
        shared.service.startService()
        for _ in range(2000):
            if shared.connected:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        assert shared.connected, "redis-server did not come up"
        figures: dict[str, list[float]] = {"memory": [], "redis": []}
        for _ in range(args.repeat):  # interleaved
            figures["memory"].append(await run(MemoryStateStore(), args.requests))
            figures["redis"].append(await run(shared, args.requests))
        mem, red = statistics.median(figures["memory"]), statistics.median(figures["redis"])
        print(f"| store | µs per request (median of {args.repeat} x {args.requests}) |")
        print("|---|---|")
        print(f"| memory | {mem * 1e6:.2f} |")
        print(f"| redis | {red * 1e6:.2f} (+{(red - mem) * 1e6:.2f} µs, {red / mem:.2f}x) |")
        print(f"redis counted {shared.usage()['gpt-4o-mini'].requests} requests")
        await shared.service.stopService()
    finally:
        redis.kill()
        redis.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    task.react(lambda _: defer.ensureDeferred(main(options)))
