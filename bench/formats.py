"""
CPU per request of passthrough versus translation, for 4 KB and 64 KB bodies.

    cp -r ../shared/bench /tmp/cliproxyd-bench && /tmp/cliproxyd-bench/setup.sh
    python3 bench/formats.py [--python .venv/bin/python] [--baseline DIR] [--rounds 3]

The harness's nginx upstream answers OpenAI chat completions. Against it
the daemon serves, at 8 connections (wrk) for --duration seconds each:

    passthrough  an OpenAI client on /v1/chat/completions: the body goes up untouched
    translated   an Anthropic client on /v1/messages: the request is translated
                 to chat completions, the answer back to a Claude message

with the same conversation in both formats, padded to about 4 KB and 64 KB.
CPU is the daemon's utime+stime from /proc over the measured window,
divided by the requests wrk completed. --baseline DIR runs the same load
against another checkout (an older commit, for "no more than before"),
alternating with this one each round; medians are printed per build.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PORT = 8317
TICK = os.sysconf("SC_CLK_TCK")

LUA = """
local f = io.open(os.getenv("BENCH_BODY"), "rb"); local body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-client"
wrk.headers["anthropic-version"] = "2023-06-01"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body) if status ~= 200 then bad = bad + 1 end end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  io.write(string.format("BENCH %d %d\\n", summary.requests, b))
end
"""


def bodies(size: int) -> dict[str, bytes]:
    """The same conversation as a chat completions and as a Claude Messages body, about C{size} bytes."""
    turn = "Explain, with an example, why an API gateway would spread requests over several keys. " * 8
    turns = max(1, size // (len(turn) + 40))
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{i}: {turn}"}
                for i in range(turns | 1)]  # odd: the last turn is the user's
    chat = {"model": "gpt-4o-mini", "max_tokens": 64, "temperature": 0.2,
            "messages": [{"role": "system", "content": "Answer in one sentence."}, *messages]}
    claude = {"model": "gpt-4o-mini", "max_tokens": 64, "temperature": 0.2,
              "system": "Answer in one sentence.", "messages": messages}
    return {"passthrough": json.dumps(chat).encode(), "translated": json.dumps(claude).encode()}


PATHS = {"passthrough": "/v1/chat/completions", "translated": "/v1/messages"}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_daemon(python: str, root: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen([python, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
                             "cliproxyd", "--config", str(HERE / "cliproxyd-bench.yaml")],
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"the daemon did not start; see {log}")


def wrk(script: Path, body: Path, path: str, seconds: int) -> tuple[int, int]:
    out = subprocess.run(["wrk", "-t1", "-c8", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{PORT}{path}"],
                         env=dict(os.environ, BENCH_BODY=str(body)), capture_output=True, text=True, check=True).stdout
    requests, bad = map(int, re.search(r"BENCH (\d+) (\d+)", out).groups())
    return requests, bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=str(ROOT / ".venv/bin/python"))
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way")
    parser.add_argument("--harness", type=Path, default=Path("/tmp/cliproxyd-bench"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cliproxyd-formats-"))
    script = tmp / "formats.lua"
    script.write_text(LUA)
    cases = []
    for size in (4 << 10, 64 << 10):
        for kind, body in bodies(size).items():
            path = tmp / f"{kind}-{size}.json"
            path.write_bytes(body)
            cases.append((kind, size, path, len(body)))
    builds = {"this": ROOT}
    if args.baseline:
        builds["baseline"] = args.baseline.resolve()

    upstream = args.harness / "upstream/upstream.sh"
    subprocess.run([str(upstream), "start"], check=True, stdout=subprocess.DEVNULL)
    results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    try:
        for _ in range(args.rounds):
            for name, root in builds.items():
                daemon = start_daemon(args.python, root, tmp / f"daemon-{name}.log")
                try:
                    for kind, size, body, _length in cases:
                        wrk(script, body, PATHS[kind], 2)  # warm-up
                        before = cpu_seconds(daemon.pid)
                        requests, bad = wrk(script, body, PATHS[kind], args.duration)
                        used = cpu_seconds(daemon.pid) - before
                        if bad or not requests:
                            sys.exit(f"{name} {kind} {size}: {bad} of {requests} requests failed; see {tmp}")
                        results.setdefault((name, kind, size), []).append(
                            (requests / args.duration, used / requests * 1000))
                finally:
                    daemon.send_signal(signal.SIGTERM)
                    daemon.wait(30)
    finally:
        subprocess.run([str(upstream), "stop"], stdout=subprocess.DEVNULL)

    print(f"{'build':<9} {'path':<12} {'body':>8} {'req/s':>8} {'CPU ms/req':>11}   (medians of {args.rounds})")
    for (name, kind, size), runs in sorted(results.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        length = next(n for k, s, _, n in cases if k == kind and s == size)
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:<9} {kind:<12} {length:>8} {rate:>8.0f} {cpu:>11.3f}")
    # paired within a round (one daemon, one after the other): what translation adds
    print("translation's added CPU ms/req, per round: median [min, max]")
    for name in builds:
        for size in (4 << 10, 64 << 10):
            added = [t - p for (_, p), (_, t) in zip(results[(name, "passthrough", size)],
                                                     results[(name, "translated", size)])]
            print(f"{name:<9} {size >> 10:>3} KB  {statistics.median(added):.3f} [{min(added):.3f}, {max(added):.3f}]")


if __name__ == "__main__":
    main()
