"""
Interleaved A/B on the shared harness: several variants started once and
kept running side by side, then short wrk runs against each in turn, the
order reversed every other round, so a slow minute on a shared machine
falls on every variant alike. Each variant's figure in a round is divided
by the first variant's in the same round; the medians of those ratios, and
their spread, are what to quote.

    python3 bench/ab.py [--rounds 10] [--duration 5] [--connections 32] [--stream] VARIANT...

VARIANT is ``direct`` (wrk straight to the nginx upstream: the latency
every proxy adds to), ``floor`` (the harness's floor relay,
``floor_relay.py``), ``peer=NAME`` (a peer of the harness, started from its
``peers/NAME.env``, as ``run_all.sh`` does: ``peer=portkey``,
``peer=litellm-1w`` after ``setup-peers.sh``) or ``cpd`` with options
after commas: ``keys=N`` (2), ``metrics=on|off`` (on), ``scrape=S`` (GET
/metrics every S seconds while it is measured; off). Any variant takes
``c=N``, its own number of connections (``--connections`` otherwise), e.g.

    python3 bench/ab.py cpd,metrics=off cpd,scrape=1          # what metrics cost
    python3 bench/ab.py floor cpd cpd,keys=10000              # ratios to the floor
    python3 bench/ab.py --connections 1 floor cpd direct      # added p50 at c=1
    python3 bench/ab.py cpd cpd,c=128 floor floor,c=128       # c=128 against c=32

Every cliproxyd is this checkout's (``CLIPROXYD_ROOT`` for another tree),
one process, on the harness's nginx upstream (``UPSTREAM_PORT``, 18080).
CPU is the daemon's own (utime + stime from /proc), a peer's with every
process under it, per answered request.
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


def _cpu_ticks(pid: int) -> int:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _tree(root: int) -> dict[int, int]:
    """CPU ticks of C{root} and every process under it."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            tree[pid] = _cpu_ticks(pid)
        except OSError:
            continue
        todo.extend(child for child, parent in parents.items() if parent == pid and child not in tree)
    return tree


class Variant:
    def __init__(self, spec: str, port: int, upstream: int, work: str) -> None:
        self.spec = spec
        self.port = port
        kind, *options = spec.split(",")
        opts = dict(o.split("=", 1) for o in options)
        self.rps: list[float] = []
        self.cpu: list[float] = []
        self.p50: list[float] = []
        #: its own number of connections (else --connections)
        self.connections = int(opts.pop("c")) if "c" in opts else None
        self.scrape = float(opts.pop("scrape", 0))
        self.floor = kind == "floor"
        self.direct = kind == "direct"
        self.peer = kind.startswith("peer=")
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.headers = ""
        #: the process measured (None: direct); a peer's is the root of its tree
        self.pid: int | None = None
        self.process: subprocess.Popen | None = None
        if kind not in ("direct", "floor", "cpd") and not self.peer or (kind != "cpd" and (opts or self.scrape)) \
                or set(opts) - {"keys", "metrics"}:
            raise SystemExit(f"{spec!r}: a variant is direct, floor, peer=NAME or "
                             "cpd[,keys=N][,metrics=on|off][,scrape=S], each with [,c=N]")
        if self.direct:
            self.url = f"http://127.0.0.1:{upstream}/auto/v1/chat/completions"
        elif self.peer:  # a peer of the harness, as run_all.sh starts it: peers/NAME.env's URL, HEADERS, START
            out = subprocess.run(["bash", "-c", f'set -a; . "peers/{kind[5:]}.env"; printf "%s\\n%s\\n" "$URL" '
                                  '"$HEADERS"; eval "$START"'], cwd=HARNESS, capture_output=True, text=True,
                                 check=True, env={**os.environ, "CLIPROXYD_VENV": os.path.join(ROOT, ".venv")})
            lines = out.stdout.split("\n")
            self.url, self.headers, self.pid = lines[0], lines[1], int(out.stdout.split()[-1])
        else:
            python = os.environ.get("PYTHON", os.path.join(ROOT, ".venv", "bin", "python"))
            if self.floor:
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
            self.pid = self.process.pid

    def cpu_seconds(self) -> float:
        """The daemon's own CPU; a peer's, with every process under it (workers)."""
        if self.pid is None:
            return 0.0
        tree = _tree(self.pid) if self.peer else {self.pid: _cpu_ticks(self.pid)}
        return sum(tree.values()) / TICK

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(30)
        elif self.pid is not None:
            try:
                group = os.getpgid(self.pid)
                if group != os.getpgid(0):  # never this benchmark's own group
                    os.killpg(group, signal.SIGTERM)
                else:
                    os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def scraper(port: int, every: float, stop: threading.Event) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Authorization": "Bearer bench-mgmt"})
    while not stop.wait(every):
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()


def wrk(url: str, connections: int, seconds: float, stream: bool, headers: str = "") -> tuple[int, int, float, float]:
    """(answers checked good, answers in all, seconds measured, p50 ms) of one run of the harness's wrk script"""
    env = {**os.environ, "BENCH_STREAM": "1" if stream else "0", "BENCH_CHECK": "1", "BENCH_HEADERS": headers}
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
                          "-s", os.path.join(HARNESS, "wrk", "chat.lua"), url],
                         capture_output=True, text=True, env=env, check=True).stdout
    line = re.search(r"BENCH_JSON (\{.*\})", out)
    if line is None:
        raise SystemExit(f"wrk printed no BENCH_JSON line:\n{out}")
    result = json.loads(line.group(1))
    return (result["requests"] - result.get("non2xx", 0), result["requests"], result["duration_s"],
            result["lat_p50_ms"])


def measure(v: Variant, connections: int, seconds: float, stream: bool) -> tuple[float, float, float]:
    stop = threading.Event()
    scraping = None
    if v.scrape:
        scraping = threading.Thread(target=scraper, args=(v.port, v.scrape, stop), daemon=True)
        scraping.start()
    before = v.cpu_seconds()
    good, total, elapsed, p50 = wrk(v.url, connections, seconds, stream, v.headers)
    used = v.cpu_seconds() - before
    stop.set()
    if scraping is not None:
        scraping.join()
    if good != total or not total:
        raise SystemExit(f"{v.spec}: {total - good} of {total} answers failed the check")
    return good / elapsed, used * 1000 / good, p50


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
            if v.process is not None:
                wait_up(v.port, any_status=v.floor)
            wrk(v.url, v.connections or args.connections, args.warmup, args.stream, v.headers)
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for v in order:
                rps, cpu, p50 = measure(v, v.connections or args.connections, args.duration, args.stream)
                v.rps.append(rps)
                v.cpu.append(cpu)
                v.p50.append(p50)
            print(f"round {r + 1}: " + "  ".join(f"{v.spec} {v.rps[-1]:.0f} req/s {v.cpu[-1]:.3f} ms "
                                                 f"p50 {v.p50[-1]:.3f} ms" for v in variants), flush=True)
    finally:
        for v in variants:
            v.stop()
    base = variants[0]
    direct = next((v for v in variants if v.direct), None)
    mode = "stream" if args.stream else "JSON"

    def spread(xs: list[float]) -> str:
        return f"{statistics.median(xs):>8.3f} [{min(xs):.3f}, {max(xs):.3f}]"

    print(f"\n{mode}, c={args.connections}, {args.rounds} rounds of {args.duration:g} s; "
          f"ratios to {base.spec} in the same round: median [min, max]"
          + ("; added p50: p50 minus direct's in the same round" if direct else ""))
    print(f"{'variant':<28} {'req/s':>8} {'CPU ms/req':>11} {'p50 ms':>7} {'req/s ratio':>22} {'CPU ratio':>22}"
          + (f" {'added p50 ratio':>22}" if direct else ""))
    for v in variants:
        line = (f"{v.spec:<28} {statistics.median(v.rps):>8.0f} {statistics.median(v.cpu):>11.3f} "
                f"{statistics.median(v.p50):>7.3f} {spread([a / b for a, b in zip(v.rps, base.rps)])} "
                + (spread([a / b for a, b in zip(v.cpu, base.cpu)]) if base.cpu[0] and v.cpu[0] else f"{'':>22}"))
        if direct and not v.direct and not base.direct:
            added = [(a - d) / (b - d) for a, b, d in zip(v.p50, base.p50, direct.p50)]
            line += " " + spread(added)
        print(line)
    if args.csv:
        with open(args.csv, "a") as f:
            for v in variants:
                for r, (rps, cpu, p50) in enumerate(zip(v.rps, v.cpu, v.p50)):
                    f.write(f"{mode},{args.connections},{v.spec.replace(',', ';')},{r + 1},{rps:.1f},{cpu:.4f},"
                            f"{p50:.3f}\n")


if __name__ == "__main__":
    main()
