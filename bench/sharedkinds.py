"""
What the Redis store's shared windows add to a request, in instructions
(callgrind; repeatable on a busy machine): a client key with every limit
admitted and settled, and a credential's local-limit window counted, per
"request", on the embedded store or on the Redis store (not connected: the
request path alone, its deltas made and nothing sent). Run it under
callgrind with 0 and N loops and divide the difference by N::

    valgrind --tool=callgrind python bench/sharedkinds.py redis 2000
    valgrind --tool=callgrind python bench/sharedkinds.py redis 0
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.task import Clock  # noqa: E402

from cliproxyd.conductor.keylimits import KeyMeter  # noqa: E402
from cliproxyd.conductor.pacing import count_request  # noqa: E402
from cliproxyd.config.model import ClientKey  # noqa: E402
from cliproxyd.state.redisstore import RedisStateStore  # noqa: E402
from cliproxyd.state.store import MemoryStateStore  # noqa: E402


def main(kind: str, loops: int) -> None:
    clock = Clock()
    clock.advance(1.7e9)
    store = MemoryStateStore() if kind == "memory" else RedisStateStore(clock, lambda *a: None)
    key = ClientKey(name="k", key="sk", rpm=100000, tpm=10**9, daily_tokens=10**12, monthly_tokens=10**13)
    meter = KeyMeter(clock, store)
    for _ in range(loops):
        meter.settle(meter.admit(key, 100), 120)
        store.set_limit_window("c", count_request(store.limit_window("c"), clock.seconds()))
        clock.advance(0.05)  # 20 requests a second: 1,200 starts in the key's rpm window


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
