"""
Instructions per request, counted by valgrind's callgrind: repeatable on a
busy machine where wall-clock figures are not.

The daemon (this checkout, one process, twistd) runs under callgrind with
instrumentation off; a client in this process (one keep-alive connection)
sends the warm-up requests, instrumentation is turned on, REQUESTS more are
sent (with GET /metrics every SCRAPE_EVERY of them, if asked), and the count
is dumped. The upstream is the shared harness's nginx (``upstream.sh start``;
``UPSTREAM_PORT`` as there).

    python -m bench.callgrind [--metrics on|off] [--stream] [--client openai|claude] [--keys N]
                              [--requests 1000] [--scrape-every 0] [--concurrency 1] [--floor] [--body-kb N]
                              [--cache-sim]

--floor counts Twisted's floor instead (the shared harness's ``floor_relay.py``,
``FLOOR_RELAY=PATH`` if not at ``../shared/bench/``): the same requests, relayed
with no routing, so a ratio to it is taken in one run (it buffers a stream).

CALLGRIND_ARGS adds valgrind options, e.g. ``--LL=2097152,16,64`` to
simulate a 2 MB last level (a core's L2 here) instead of the machine's L3.

CLIPROXYD_ROOT=DIR measures the daemon of another tree (``git archive COMMIT | tar -x -C DIR``).

Prints one line: the settings and instructions per request (Ir/request), and with
--cache-sim the simulated first- and last-level cache misses per request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the checkout whose daemon is measured (another commit's tree, e.g. from git archive, for a before/after)
ROOT = os.environ.get("CLIPROXYD_ROOT") or HERE
MGMT_HASH = "$2b$04$pkbB8Fqg3NUc.UqLMJD5c.3me50YcS3GiA4EhWIqDwFq5wEBZ2UDq"  # bcrypt of bench-mgmt


def config(port: int, upstream: int, metrics: bool, keys: int) -> str:
    entries = "\n".join(f'      - api-key: "sk-upstream-key-{i + 1}"' for i in range(keys))
    return f"""host: "127.0.0.1"
port: {port}
api-keys: ["sk-bench-client"]
remote-management:
  secret-key: "{MGMT_HASH}"
metrics:
  enabled: {str(metrics).lower()}
openai-compatibility:
  - name: "bench"
    base-url: "http://127.0.0.1:{upstream}/auto/v1"
    api-key-entries:
{entries}
    models:
      - name: "gpt-4o-mini"
"""


def wait_up(port: int, timeout: float = 600, any_status: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200 or any_status:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the daemon did not start")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--metrics", choices=("on", "off"), default="on")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--keys", type=int, default=2)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--scrape-every", type=int, default=0)
    p.add_argument("--port", type=int, default=18419)
    p.add_argument("--client", choices=("openai", "claude"), default="openai",
                   help="claude: the request and answer are translated (the upstream speaks OpenAI)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="keep-alive connections sending at once, each one request at a time")
    p.add_argument("--floor", action="store_true", help="count the floor relay, not cliproxyd")
    p.add_argument("--cache-sim", action="store_true",
                   help="simulate the caches too: first- and last-level misses per request")
    p.add_argument("--body-kb", type=int, default=0,
                   help="send bench/formats.py's conversation padded to about this many KB")
    args = p.parse_args()
    upstream = int(os.environ.get("UPSTREAM_PORT", "18080"))
    work = tempfile.mkdtemp(prefix="cliproxyd-callgrind-")
    path = os.path.join(work, "config.yaml")
    with open(path, "w") as f:
        f.write(config(args.port, upstream, args.metrics == "on", args.keys))
    out = os.path.join(work, "callgrind.out")
    python = os.environ.get("PYTHON", os.path.join(HERE, ".venv", "bin", "python"))
    if args.floor:
        relay = os.environ.get("FLOOR_RELAY") or os.path.join(os.path.dirname(HERE), "shared", "bench", "floor_relay.py")
        command = [python, relay, str(args.port), f"http://127.0.0.1:{upstream}/auto/v1/chat/completions"]
    else:
        command = [python, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "cliproxyd",
                   "--config", path]
    daemon = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         *(["--cache-sim=yes"] if args.cache_sim else []), *os.environ.get("CALLGRIND_ARGS", "").split(), *command],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "stderr"), "w"))
    try:
        wait_up(args.port, any_status=args.floor)
        message = {"role": "user", "content": "Say hello in one short sentence."}
        if args.client == "claude":
            path = "/v1/messages"
            body = json.dumps({"model": "gpt-4o-mini", "stream": args.stream, "max_tokens": 64,
                               "messages": [message]})
        else:
            path = "/v1/chat/completions"
            body = json.dumps({"model": "gpt-4o-mini", "stream": args.stream, "messages": [message]})
        if args.body_kb:  # bench/formats.py's conversation, padded to about that size, in the client's format
            sys.path.insert(0, HERE)
            from bench.formats import bodies

            padded = json.loads(bodies(args.body_kb << 10)["translated" if args.client == "claude" else "passthrough"])
            body = json.dumps({**padded, "stream": args.stream})
        headers = {"Authorization": "Bearer sk-bench-client", "Content-Type": "application/json"}
        conns = [http.client.HTTPConnection("127.0.0.1", args.port, timeout=600) for _ in range(args.concurrency)]

        def one(conn: http.client.HTTPConnection) -> None:
            conn.request("POST", path, body, headers)
            r = conn.getresponse()
            data = r.read()
            assert r.status == 200, (r.status, data[:200])

        def scrape(conn: http.client.HTTPConnection) -> None:
            conn.request("GET", "/metrics", headers={"Authorization": "Bearer bench-mgmt"})
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status

        def run(total: int, scrape_every: int = 0) -> None:
            """total requests over every connection at once, each connection one request at a time"""
            numbers = iter(range(total))
            lock = threading.Lock()
            failures: list[BaseException] = []

            def client(conn: http.client.HTTPConnection) -> None:
                try:
                    while True:
                        with lock:
                            i = next(numbers, None)
                        if i is None:
                            return
                        one(conn)
                        if scrape_every and (i + 1) % scrape_every == 0:
                            scrape(conn)
                except BaseException as e:  # reported below, in the main thread
                    failures.append(e)

            threads = [threading.Thread(target=client, args=(c,)) for c in conns]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if failures:
                raise failures[0]

        run(max(args.warmup, args.concurrency))
        if args.scrape_every:
            scrape(conns[0])  # the key's bcrypt check happens once, here
        subprocess.run(["callgrind_control", "-i", "on", str(daemon.pid)], check=True, capture_output=True)
        run(args.requests, args.scrape_every)
        subprocess.run(["callgrind_control", "-d", str(daemon.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-i", "off", str(daemon.pid)], check=True, capture_output=True)
    finally:
        daemon.terminate()
        daemon.wait(timeout=120)
    # The dump holds what was counted from "on" to it; the file written at exit, what came after (nothing).
    totals: dict[str, int] = {}
    for name in os.listdir(work):
        if name.startswith("callgrind.out"):
            with open(os.path.join(work, name)) as f:
                text = f.read()
            events, counts = re.search(r"^events: (.*)$", text, re.M), re.search(r"^totals: (.*)$", text, re.M)
            if events and counts:
                for event, n in zip(events.group(1).split(), counts.group(1).split()):
                    totals[event] = totals.get(event, 0) + int(n)
    what = "floor relay" if args.floor else f"client={args.client} metrics={args.metrics}"
    # with --cache-sim: D1mr/D1mw first-level data misses, DLmr/DLmw last-level (the ones that go to memory)
    counted = " ".join(f"{event}/request={n / args.requests:,.0f}" for event, n in totals.items())
    print(f"{what} stream={args.stream} body_kb={args.body_kb} keys={args.keys} c={args.concurrency} "
          f"scrape_every={args.scrape_every} requests={args.requests} {counted}  ({work})")


if __name__ == "__main__":
    sys.exit(main())
