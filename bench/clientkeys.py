"""
Micro-benchmark of what client keys add to a request.

    python bench/clientkeys.py [--loops 20000] [--repeat 7]

Times, per operation, the median of C{--repeat} runs of C{--loops} each:

  - check, api-keys: L{ClientAccess.check} of a Bearer key among 3
    C{api-keys} (today's path), with no C{client-keys} and with 50 of them
    (plain and C{sha256:});
  - check, client key (sha256): the same for a C{sha256:} client key;
  - admit+settle: L{KeyMeter.admit} and L{KeyMeter.settle} for a key with
    no limits, with C{rpm} and C{max-parallel}, and with every limit (token
    limits included);
  - scope: L{Scope.allows_model} with two globs and an exclusion;
  - stream usage: L{StreamUsage.feed} of one 300-byte OpenAI chunk (the
    extra per-chunk work for a key with token limits).

Prints a Markdown table in microseconds. No reactor, no network.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from twisted.internet.task import Clock  # noqa: E402
from twisted.web.http_headers import Headers  # noqa: E402

from cliproxyd.conductor.keylimits import KeyMeter, Scope  # noqa: E402
from cliproxyd.config.model import ClientKey  # noqa: E402
from cliproxyd.formats.usage import StreamUsage  # noqa: E402
from cliproxyd.frontend.access import ClientAccess  # noqa: E402


class FakeRequest:
    """What L{ClientAccess.check} reads of a request."""

    def __init__(self, key: str) -> None:
        self.requestHeaders = Headers({b"authorization": [f"Bearer {key}".encode()]})
        self.args: dict = {}

    def getHeader(self, name: bytes) -> bytes | None:
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None


def per_op(f, loops: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        for _ in range(loops):
            f()
        runs.append((time.perf_counter() - start) / loops * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loops", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    api = ("sk-a-1", "sk-a-2", "sk-a-3")
    many = tuple(ClientKey(name=f"k{i}", key=f"sk-plain-{i}" if i % 2 else
                           "sha256:" + hashlib.sha256(f"sk-h-{i}".encode()).hexdigest()) for i in range(50))
    rows = []
    for label, access, key in (
        ("check, api-keys (no client-keys)", ClientAccess(api), "sk-a-2"),
        ("check, api-keys (50 client-keys)", ClientAccess(api, many), "sk-a-2"),
        ("check, client key sha256 (50 client-keys)", ClientAccess(api, many), "sk-h-48"),
    ):
        request = FakeRequest(key)
        rows.append((label, per_op(lambda a=access, r=request: a.check(r), args.loops, args.repeat)))
    clock = Clock()
    clock.advance(1_800_000_000)
    meter = KeyMeter(clock)
    for label, k in (
        ("admit+settle, no limits", ClientKey(name="a", key="x")),
        ("admit+settle, rpm + max-parallel", ClientKey(name="b", key="x", rpm=10**9, max_parallel=1000)),
        ("admit+settle, every limit", ClientKey(name="c", key="x", rpm=10**9, tpm=10**12, daily_tokens=10**12,
                                                monthly_tokens=10**12, max_parallel=1000)),
    ):
        def cycle(k=k) -> None:
            clock.advance(0.001)
            meter.settle(meter.admit(k, 100), 120)

        rows.append((label, per_op(cycle, args.loops, args.repeat)))
    scope = Scope(ClientKey(name="s", key="x", models=("gemini-*", "gpt-4o*"), excluded_models=("*-preview",)))
    rows.append(("scope check", per_op(lambda: scope.allows_model("team/gpt-4o-mini"), args.loops, args.repeat)))
    chunk = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
             b'"choices":[{"index":0,"delta":{"content":"Hello there, this is a chunk of text"},'
             b'"finish_reason":null}]}\n\n')
    usage = StreamUsage("openai")
    rows.append((f"stream usage, one {len(chunk)}-byte chunk",
                 per_op(lambda: usage.feed(chunk), args.loops, args.repeat)))
    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"{args.loops} loops, median of {args.repeat}\n")
    print("| operation | µs |\n|---|---:|")
    for label, us in rows:
        print(f"| {label} | {us:.2f} |")


if __name__ == "__main__":
    main()
