"""
Micro-benchmark of issue 16's cost on the request path: what the paced pick
(local limits, slow start, headroom shares) and the headroom read of every
answer add to one request through the conductor.

    python bench/pacing.py [--loops 20000] [--repeat 7] [--creds 10]

A conductor over C{--creds} openai-compatibility credentials and an
executor that answers at once with a whole reply carrying OpenAI's
C{x-ratelimit-*} headers (plenty left), on a Clock: no reactor, no network,
no JSON. It times, per request, the median of C{--repeat} runs of
C{--loops} requests for each setting:

  - off: C{routing.headroom: false}, C{slow-start-seconds: 0}, no limits
    (the scheduler's pick alone, as before issue 16);
  - default: headroom on, slow start 30 s, no limits;
  - default + rpm: the same with an C{rpm} on every credential (never reached).

Prints a Markdown table in microseconds of CPU time per request (the cases
interleaved, run after run).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from attrs import evolve  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.web.http_headers import Headers  # noqa: E402

from cliproxyd.conductor.conductor import Conductor, ConductorSettings  # noqa: E402
from cliproxyd.config.model import LocalLimits  # noqa: E402
from cliproxyd.credentials.model import Credential, Route  # noqa: E402
from cliproxyd.formats import canonical as C  # noqa: E402
from cliproxyd.formats.request import ClientRequest  # noqa: E402
from cliproxyd.replies import Reply  # noqa: E402
from cliproxyd.state import MemoryStateStore  # noqa: E402

HEADERS = Headers({b"x-ratelimit-limit-requests": [b"1000"], b"x-ratelimit-remaining-requests": [b"900"],
                   b"x-ratelimit-reset-requests": [b"6m0s"], b"x-ratelimit-limit-tokens": [b"200000"],
                   b"x-ratelimit-remaining-tokens": [b"199000"], b"x-ratelimit-reset-tokens": [b"20ms"]})


class Instant:
    """Answers every request at once, as a whole reply with rate-limit headers."""

    reply = Reply(200, b"application/json", b"{}", data={}, headers=HEADERS)

    async def execute(self, cred, req, upstream):
        return self.reply

    async def count_tokens(self, cred, req, upstream):
        return self.reply


def conductor(n: int, settings: ConductorSettings, rpm: int | None) -> Conductor:
    route = Route("m", "m", ("m",))
    limits = LocalLimits(rpm=rpm) if rpm else LocalLimits()
    creds = tuple(Credential(id=f"c{i}", provider="sim", kind="openai-compatibility", api_key=f"k{i}",
                             base_url="http://x", routes=(route,), limits=limits) for i in range(n))
    return Conductor(creds, Instant(), MemoryStateStore(), Clock(), settings)


def per_request(c: Conductor, loops: int) -> float:
    req = ClientRequest.of(C.Request("m", (C.Message("user", (C.Text("hi"),)),)))
    gc.collect()
    start = time.process_time()  # CPU time: the machine may be shared
    for _ in range(loops):
        Deferred.fromCoroutine(c.execute(req))
    return (time.process_time() - start) / loops * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loops", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--creds", type=int, default=10)
    args = parser.parse_args(argv)
    base = ConductorSettings()
    cases = [
        ("off", evolve(base, headroom=False, slow_start=0.0), None),
        ("default", base, None),
        ("default + rpm", base, 10**9),
    ]
    print(f"| setting ({args.creds} credentials) | µs per request | vs off |")
    print("|---|---|---|")
    built = [conductor(args.creds, settings, rpm) for _, settings, rpm in cases]
    runs: list[list[float]] = [[] for _ in cases]
    for _ in range(args.repeat):  # the cases interleaved, so drift in the machine's load hits all alike
        for i, c in enumerate(built):
            runs[i].append(per_request(c, args.loops))
    off = statistics.median(runs[0])
    for (name, _, _), figures in zip(cases, runs, strict=True):
        figure = statistics.median(figures)
        print(f"| {name} | {figure:.2f} | {figure / off:.2f}x |")


if __name__ == "__main__":
    main()
