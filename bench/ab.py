"""
Interleaved A/B on the shared harness: several variants started once and
kept running side by side, then short wrk runs against each in turn, the
order reversed every other round, so a slow minute on a shared machine
falls on every variant alike. Each variant's figure in a round is divided
by the first variant's in the same round; the medians of those ratios, and
their spread, are what to quote.

    python3 bench/ab.py [--rounds 10] [--duration 5] [--connections 32] [--stream] VARIANT...

VARIANT is ``floor`` (the harness's floor relay, ``floor_relay.py``) or
``cpd`` with options after commas: ``keys=N`` (2), ``metrics=on|off`` (on),
``scrape=S`` (GET /metrics every S seconds while it is measured; off), e.g.

    python3 bench/ab.py cpd,metrics=off cpd,scrape=1          # what metrics cost
    python3 bench/ab.py floor cpd cpd,keys=10000              # ratios to the floor

Every cliproxyd is this checkout's (``CLIPROXYD_ROOT`` for another tree),
one process, on the harness's nginx upstream (``UPSTREAM_PORT``, 18080).
CPU is the daemon's own (utime + stime from /proc), per answered request.
Prints one line per round and a summary table; ``--csv FILE`` appends rows.
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
import threading
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.callgrind import ROOT, config, wait_up  # noqa: E402

HARNESS = os.environ.get("HARNESS", "/tmp/cliproxyd-bench")
TICK = os.sysconf("SC_CLK_TCK")


class Variant:
    def __init__(self, spec: str, port: int, upstream: int, work: str) -> None:
        self.spec = spec
        self.port = port
        kind, *options = spec.split(",")
        opts = dict(o.split("=", 1) for o in options)
        unknown = set(opts) - {"keys", "metrics", "scrape"}
        if kind not in ("floor", "cpd") or unknown or (kind == "floor" and opts):
            raise SystemExit(f"{spec!r}: a variant is floor, or cpd[,keys=N][,metrics=on|off][,scrape=S]")
        self.scrape = float(opts.get("scrape", 0))
        python = os.environ.get("PYTHON", os.path.join(ROOT, ".venv", "bin", "python"))
        if kind == "floor":
            command = [python, os.path.join(HARNESS, "floor_relay.py"), str(port),
                       f"http://127.0.0.1:{upstream}/auto/v1/chat/completions"]
        else:
            path = os.path.join(work, f"{port}.yaml")
            with open(path, "w") as f:
                f.write(config(port, upstream, opts.get("metrics", "on") == "on", int(opts.get("keys", 2))))
            command = [python, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
                       "cliproxyd", "--config", path]
        self.process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                                        stdout=subprocess.DEVNULL,
                                        stderr=open(os.path.join(work, f"{port}.log"), "w"),
                                        start_new_session=True)
        self.floor = kind == "floor"
        self.rps: list[float] = []
        self.cpu: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def cpu_seconds(self) -> float:
        fields = open(f"/proc/{self.process.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)


def scraper(port: int, every: float, stop: threading.Event) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Authorization": "Bearer bench-mgmt"})
    while not stop.wait(every):
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()


def wrk(url: str, connections: int, seconds: float, stream: bool) -> tuple[int, int, float]:
    """(answers checked good, answers in all, seconds measured) of one run of the harness's wrk script"""
    env = {**os.environ, "BENCH_STREAM": "1" if stream else "0", "BENCH_CHECK": "1"}
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
                          "-s", os.path.join(HARNESS, "wrk", "chat.lua"), url],
                         capture_output=True, text=True, env=env, check=True).stdout
    line = re.search(r"BENCH_JSON (\{.*\})", out)
    if line is None:
        raise SystemExit(f"wrk printed no BENCH_JSON line:\n{out}")
    result = json.loads(line.group(1))
    return result["requests"] - result.get("non2xx", 0), result["requests"], result["duration_s"]


def measure(v: Variant, connections: int, seconds: float, stream: bool) -> tuple[float, float]:
    stop = threading.Event()
    scraping = None
    if v.scrape:
        scraping = threading.Thread(target=scraper, args=(v.port, v.scrape, stop), daemon=True)
        scraping.start()
    before = v.cpu_seconds()
    good, total, elapsed = wrk(v.url, connections, seconds, stream)
    used = v.cpu_seconds() - before
    stop.set()
    if scraping is not None:
        scraping.join()
    if good != total or not total:
        raise SystemExit(f"{v.spec}: {total - good} of {total} answers failed the check")
    return good / elapsed, used * 1000 / good


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--csv", help="append one row per variant and round to this file")
    args = p.parse_args()
    upstream = int(os.environ.get("UPSTREAM_PORT", "18080"))
    work = tempfile.mkdtemp(prefix="cliproxyd-ab-")
    variants = [Variant(spec, 18430 + i, upstream, work) for i, spec in enumerate(args.variants)]
    try:
        for v in variants:
            wait_up(v.port, any_status=v.floor)
            wrk(v.url, args.connections, args.warmup, args.stream)
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for v in order:
                rps, cpu = measure(v, args.connections, args.duration, args.stream)
                v.rps.append(rps)
                v.cpu.append(cpu)
            print(f"round {r + 1}: " + "  ".join(f"{v.spec} {v.rps[-1]:.0f} req/s {v.cpu[-1]:.3f} ms"
                                                 for v in variants), flush=True)
    finally:
        for v in variants:
            v.stop()
    base = variants[0]
    mode = "stream" if args.stream else "JSON"
    print(f"\n{mode}, c={args.connections}, {args.rounds} rounds of {args.duration:g} s; "
          f"ratios to {base.spec} in the same round: median [min, max]")
    print(f"{'variant':<28} {'req/s':>8} {'CPU ms/req':>11} {'req/s ratio':>22} {'CPU ratio':>22}")
    for v in variants:
        rr = [a / b for a, b in zip(v.rps, base.rps)]
        cr = [a / b for a, b in zip(v.cpu, base.cpu)]
        print(f"{v.spec:<28} {statistics.median(v.rps):>8.0f} {statistics.median(v.cpu):>11.3f} "
              f"{statistics.median(rr):>8.3f} [{min(rr):.3f}, {max(rr):.3f}] "
              f"{statistics.median(cr):>8.3f} [{min(cr):.3f}, {max(cr):.3f}]")
    if args.csv:
        with open(args.csv, "a") as f:
            for v in variants:
                for r, (rps, cpu) in enumerate(zip(v.rps, v.cpu)):
                    f.write(f"{mode},{args.connections},{v.spec.replace(',', ';')},{r + 1},{rps:.1f},{cpu:.4f}\n")


if __name__ == "__main__":
    main()
