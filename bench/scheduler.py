"""
Micro-benchmark of the credential scheduler: does a pick cost the same among
10,000 credentials as among 10?

    python bench/scheduler.py [--loops 5000] [--repeat 7] [--strategy weighted-round-robin]

For 10, 100, 1,000 and 10,000 credentials (one route, one provider, one
priority) it times, per operation, the median of C{--repeat} runs of
C{--loops} operations each:

  - pick, all ready: a round-robin pick with an empty tried set;
  - pick, 90% blocked: the same with 90% of the credentials cooling until
    far in the future (spread through config order);
  - block+pick+unblock: C{set_blocked(id, until)} on one credential, a pick,
    C{set_blocked(id, None)} (the cooldown churn of a failing key);
  - block+expire+pick: block one credential until C{now + 1}, advance
    C{now} by 1 and pick, so the pick's C{promote} moves it back to ready.

Prints a Markdown table; each figure is in microseconds, with its ratio to
the 10-credential figure beside it. No reactor, no network. With
C{--strategy weighted-round-robin} the credentials get weights 1 to 5.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from cliproxyd.conductor.scheduler import Scheduler  # noqa: E402
from cliproxyd.credentials.model import Credential, Route  # noqa: E402

SIZES = (10, 100, 1_000, 10_000)
ROUTE = Route("m", "m", ("m",))
FAR = 1e12  # a cooldown that does not end during the benchmark


def credentials(n: int) -> list[Credential]:
    return [
        Credential(
            id=f"c{i}",
            provider="p",
            kind="openai-compatibility",
            api_key=f"k{i}",
            base_url="http://u.test/v1",
            priority=0,
            routes=(ROUTE,),
            weight=1 + i % 5,
        )
        for i in range(n)
    ]


STRATEGY = {"name": "round-robin"}


def scheduler(creds: list[Credential]) -> Scheduler:
    cursors: dict[str, int] = {}

    def next_cursor(key: str) -> int:
        v = cursors.get(key, 0)
        cursors[key] = v + 1
        return v

    return Scheduler(creds, STRATEGY["name"], next_cursor)


def measure(run, loops: int, repeat: int) -> float:
    """Median microseconds per operation of C{run(loops)} over C{repeat} runs (GC off, like timeit)."""
    run(min(loops, 100))  # warm up
    times = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            run(loops)
            times.append(time.perf_counter() - t0)
    finally:
        if enabled:
            gc.enable()
    return statistics.median(times) / loops * 1e6


def bench_pick_ready(n: int, loops: int, repeat: int) -> float:
    s = scheduler(credentials(n))
    pick, tried = s.pick, set()
    assert pick("m", tried, 0.0) is not None

    def run(k: int) -> None:
        for _ in range(k):
            pick("m", tried, 0.0)

    return measure(run, loops, repeat)


def bench_pick_mostly_blocked(n: int, loops: int, repeat: int) -> float:
    creds = credentials(n)
    s = scheduler(creds)
    for i, c in enumerate(creds):
        if i % 10:  # 90% blocked, each until a different future time
            s.set_blocked(c.id, "m", FAR + i)
    pick, tried = s.pick, set()
    got = pick("m", tried, 0.0)
    assert got is not None and int(got.cred.id[1:]) % 10 == 0
    assert s.blocked_until("m") == FAR + 1

    def run(k: int) -> None:
        for _ in range(k):
            pick("m", tried, 0.0)

    return measure(run, loops, repeat)


def bench_block_pick_unblock(n: int, loops: int, repeat: int) -> float:
    creds = credentials(n)
    ids = [c.id for c in creds]
    s = scheduler(creds)
    pick, set_blocked, tried = s.pick, s.set_blocked, set()
    state = {"i": 0}

    def run(k: int) -> None:
        i = state["i"]
        for _ in range(k):
            cid = ids[i % n]
            set_blocked(cid, "m", FAR)
            pick("m", tried, 0.0)
            set_blocked(cid, "m", None)
            i += 1
        state["i"] = i

    result = measure(run, loops, repeat)
    assert s.blocked_until("m") is None  # every block was lifted (stale heap entries skipped)
    return result


def bench_block_expire_pick(n: int, loops: int, repeat: int) -> float:
    creds = credentials(n)
    ids = [c.id for c in creds]
    s = scheduler(creds)
    pick, set_blocked, tried = s.pick, s.set_blocked, set()
    state = {"i": 0, "now": 0.0}

    def run(k: int) -> None:
        i, now = state["i"], state["now"]
        for _ in range(k):
            set_blocked(ids[i % n], "m", now + 1.0)
            now += 1.0
            pick("m", tried, now)  # promotes the one that just recovered
            i += 1
        state["i"], state["now"] = i, now

    result = measure(run, loops, repeat)
    assert s.blocked_until("m") is None  # everything recovered through promote
    return result


COLUMNS = (
    ("pick, all ready", bench_pick_ready),
    ("pick, 90% blocked", bench_pick_mostly_blocked),
    ("block+pick+unblock", bench_block_pick_unblock),
    ("block+expire+pick", bench_block_expire_pick),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--loops", type=int, default=5000, help="operations per run (default 5000)")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure; the median is kept (default 7)")
    parser.add_argument("--strategy", default="round-robin",
                        choices=("round-robin", "weighted-round-robin", "fill-first"))
    args = parser.parse_args(argv)
    STRATEGY["name"] = args.strategy

    started = time.perf_counter()
    results: dict[str, dict[int, float]] = {}
    for title, fn in COLUMNS:
        results[title] = {n: fn(n, args.loops, args.repeat) for n in SIZES}

    print(
        f"Scheduler ({args.strategy}) cost per operation, µs (median of {args.repeat} runs x {args.loops:,} ops; "
        f"ratio to 10 credentials). Python {platform.python_version()}, {platform.machine()}."
    )
    print()
    header = ["credentials"]
    for title, _ in COLUMNS:
        header += [f"{title} (µs)", "x10"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" for _ in header) + "|")
    for n in SIZES:
        row = [f"{n:,}"]
        for title, _ in COLUMNS:
            us = results[title][n]
            row += [f"{us:.2f}", f"{us / results[title][SIZES[0]]:.2f}"]
        print("| " + " | ".join(row) + " |")
    print()
    print(f"({time.perf_counter() - started:.1f} s in all)")


if __name__ == "__main__":
    main()
