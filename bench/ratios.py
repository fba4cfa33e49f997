"""Issue 18's figures as ratios to the floor relay, per round of one harness session.

    python3 bench/ratios.py --csv /tmp/cliproxyd-bench/results.csv [--since SESSION] [--floor floor]

Reads the shared harness's results.csv (rows from run_all.sh sessions at or after SESSION, by
default the newest) and prints, for each peer and round: CPU ms per request at c=32 (JSON and
stream) over the floor's of the same round, the added p50 at c=1 (p50 minus nginx direct's) over
the floor's, and c=128 req/s over c=32 req/s; then the median of each over the rounds.
"""
from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict


def load(path: str, since: str | None) -> dict[str, dict[str, dict[tuple[str, int], dict]]]:
    rows = list(csv.DictReader(open(path)))
    if since is None and rows:
        since = rows[-1]["run_id"].rsplit("_r", 1)[0]
    rounds: dict[str, dict[str, dict[tuple[str, int], dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["run_id"] >= (since or ""):
            # run_all.sh names each round's session by its own start; index rounds by run_id
            rounds[r["run_id"]][r["name"]][(r["mode"], int(r["concurrency"]))] = r
    return rounds


def num(row: dict | None, field: str) -> float | None:
    try:
        return float(row[field]) if row else None
    except (KeyError, TypeError, ValueError):
        return None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def figures(peer: dict, floor: dict, direct: dict) -> dict[str, float | None]:
    d1 = num(direct.get(("json", 1)), "lat_p50_ms")
    added = lambda p: (num(p.get(("json", 1)), "lat_p50_ms") or 0) - d1 if d1 is not None and p.get(("json", 1)) else None
    return {
        "cpu c=32 json": ratio(num(peer.get(("json", 32)), "proxy_cpu_ms_per_req"),
                               num(floor.get(("json", 32)), "proxy_cpu_ms_per_req")),
        "cpu c=32 stream": ratio(num(peer.get(("stream", 32)), "proxy_cpu_ms_per_req"),
                                 num(floor.get(("stream", 32)), "proxy_cpu_ms_per_req")),
        "added p50 c=1": ratio(added(peer), added(floor)),
        "c=128/c=32 req/s": ratio(num(peer.get(("json", 128)), "rps"), num(peer.get(("json", 32)), "rps")),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--since")
    ap.add_argument("--floor", default="floor")
    ap.add_argument("--direct", default="direct")
    a = ap.parse_args()
    rounds = load(a.csv, a.since)
    cols = ["cpu c=32 json", "cpu c=32 stream", "added p50 c=1", "c=128/c=32 req/s"]
    per_peer: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    print("| round | peer | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for run_id in sorted(rounds):
        peers = rounds[run_id]
        floor, direct = peers.get(a.floor), peers.get(a.direct, {})
        if not floor:
            continue
        for name, peer in peers.items():
            if name in (a.direct,):
                continue
            fig = figures(peer, floor, direct)
            for k, v in fig.items():
                if v is not None:
                    per_peer[name][k].append(v)
            cells = " | ".join("–" if fig[c] is None else f"{fig[c]:.2f}" for c in cols)
            print(f"| {run_id} | {name} | {cells} |")
    print()
    print("| peer (median of rounds) | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, fig in per_peer.items():
        cells = " | ".join(f"{statistics.median(fig[c]):.2f}" if fig[c] else "–" for c in cols)
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
