"""
The scheduler: which credential a request tries next.

Built once per config from the credentials, and kept up to date
incrementally as cooldowns start and end, so a pick costs the same among
10,000 credentials as among 10.

A route (the model name a client asks for) has one shard per provider that
serves it; a shard has one tier per priority. A tier keeps its members in a
fixed order (config order), the ranks of the ready ones in a sorted list,
and the blocked ones in a heap by the time their cooldown ends, so that a
pick promotes what has recovered (O(log n) each) and then takes the member
at the cursor, skipping credentials this request already tried.

Selection follows CLIProxyAPI: the highest priority that has a ready,
untried credential in any provider wins; among providers of that priority,
fill-first takes them in provider order and round-robin rotates a cursor per
route; inside a tier, fill-first takes the first ready member and
round-robin the one at the tier's cursor.

Weighted-round-robin (CLIProxyAPI's smooth weighted round-robin, in
proportion to each credential's C{weight}) puts every provider of a route
into one shard, since CLIProxyAPI weighs the credentials of all providers
of the best priority together; a credential of weight 0 is not in it at
all. Inside a tier each ready member has a virtual time, (2k + 1) / weight
after k picks; a pick takes the smallest (ties by config order) from a
heap, so that over any stretch each member has its weight's share, picks
of one member are spread out rather than bunched, and a pick costs
O(log n). A member back from a cooldown starts just after the tier's
current virtual time, so it takes its share from then on rather than a
burst to catch up.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from typing import Callable, Iterable

from attrs import frozen

from cliproxyd.credentials import Credential, Route


@frozen
class Pick:
    cred: Credential
    route: Route


class _Tier:
    __slots__ = ("members", "routes", "ready", "heap", "until", "cursor")

    #: set by L{_WeightedTier}: picks follow weights rather than the cursor
    weighted = False

    def __init__(self) -> None:
        self.members: list[Credential] = []
        self.routes: list[Route] = []
        self.ready: list[int] = []  # ranks, sorted
        self.heap: list[tuple[float, int]] = []  # (until, rank); stale entries skipped
        self.until: dict[int, float] = {}  # rank -> until, for blocked members
        self.cursor = 0

    def add(self, cred: Credential, route: Route) -> int:
        rank = len(self.members)
        self.members.append(cred)
        self.routes.append(route)
        self.ready.append(rank)
        return rank

    def block(self, rank: int, until: float) -> None:
        if rank not in self.until:
            i = bisect_left(self.ready, rank)
            if i < len(self.ready) and self.ready[i] == rank:
                del self.ready[i]
        self.until[rank] = until
        heapq.heappush(self.heap, (until, rank))

    def unblock(self, rank: int) -> None:
        if self.until.pop(rank, None) is not None:
            insort(self.ready, rank)
            self.rejoined(rank)

    def rejoined(self, rank: int) -> None:
        """A blocked member is ready again."""

    def promote(self, now: float) -> None:
        heap, until = self.heap, self.until
        while heap and heap[0][0] <= now:
            when, rank = heapq.heappop(heap)
            if until.get(rank) == when:
                del until[rank]
                insort(self.ready, rank)
                self.rejoined(rank)

    def earliest(self) -> float | None:
        heap, until = self.heap, self.until
        while heap and until.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # a stale entry: unblocked or blocked again since
        return heap[0][0] if heap else None

    def pick(self, tried: set[str] | frozenset[str], round_robin: bool) -> int | None:
        ready = self.ready
        n = len(ready)
        if not n:
            return None
        start = 0
        if round_robin:
            start = self.cursor % n
            self.cursor += 1
        members = self.members
        for i in range(n):
            rank = ready[(start + i) % n]
            if members[rank].id not in tried:
                return rank
        return None


class _WeightedTier(_Tier):
    """
    A tier picked by weight: a heap of C{(virtual time, rank)} of its ready
    members. Blocked members leave it lazily (dropped when they surface);
    a member that comes back rejoins at the time of the last pick.
    """

    __slots__ = ("weights", "picks", "queue", "queued", "now")
    weighted = True

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[int] = []
        self.picks: list[int] = []  # k of each member: its virtual time is (2k + 1) / weight
        self.queue: list[tuple[float, int]] = []
        self.queued: set[int] = set()
        self.now = 0.0  # the virtual time of the last pick

    def add(self, cred: Credential, route: Route) -> int:
        rank = super().add(cred, route)
        self.weights.append(cred.weight)
        self.picks.append(0)
        heapq.heappush(self.queue, (0.5 / cred.weight, rank))
        self.queued.add(rank)
        return rank

    def _key(self, rank: int) -> float:
        return (2 * self.picks[rank] + 1) / (2 * self.weights[rank])

    def rejoined(self, rank: int) -> None:
        if rank in self.queued:
            return
        weight = self.weights[rank]
        # The fewest picks that put it after the tier's current virtual time.
        self.picks[rank] = max(self.picks[rank], math.floor(self.now * weight - 0.5) + 1)
        heapq.heappush(self.queue, (self._key(rank), rank))
        self.queued.add(rank)

    def pick(self, tried: set[str] | frozenset[str], round_robin: bool) -> int | None:
        queue, until, members, picks = self.queue, self.until, self.members, self.picks
        skipped = []
        found = None
        while queue:
            key, rank = queue[0]
            if rank in until:
                heapq.heappop(queue)
                self.queued.discard(rank)  # blocked: it comes back through rejoined()
                continue
            if tried and members[rank].id in tried:
                skipped.append(heapq.heappop(queue))
                continue
            found = rank
            self.now = key
            k = picks[rank] = picks[rank] + 1
            heapq.heapreplace(queue, ((2 * k + 1) / (2 * self.weights[rank]), rank))
            break
        for entry in skipped:
            heapq.heappush(queue, entry)
        return found


class Scheduler:
    def __init__(
        self,
        creds: Iterable[Credential],
        strategy: str = "round-robin",
        next_cursor: Callable[[str], int] | None = None,
    ) -> None:
        self._round_robin = strategy in ("round-robin", "weighted-round-robin")
        weighted = strategy == "weighted-round-robin"
        tier_class = _WeightedTier if weighted else _Tier
        self._next_cursor = next_cursor or (lambda key: 0)
        # route -> [(provider, {priority: tier})] in provider order
        self._shards: dict[str, list[tuple[str, dict[int, _Tier]]]] = {}
        self._priorities: dict[str, list[int]] = {}
        # (cred id, state key) -> the tiers and ranks where it stands
        self._slots: dict[tuple[str, str], list[tuple[_Tier, int]]] = {}
        # (cred id, route) -> (tier, rank), for pinned and preferred picks
        self._where: dict[tuple[str, str], tuple[_Tier, int]] = {}
        self.routes: dict[str, list[Route]] = {}

        by_route: dict[str, dict[str, list[tuple[Credential, Route]]]] = {}
        for cred in creds:
            if cred.disabled or (weighted and cred.weight <= 0):
                continue
            # Weighted: one shard for every provider, weighed together.
            shard = "*" if weighted else cred.provider
            for route in cred.routes:
                by_route.setdefault(route.name, {}).setdefault(shard, []).append((cred, route))
        for name, providers in by_route.items():
            # Providers with more credentials first, then by name (CLIProxyAPI's order).
            ordered = sorted(providers.items(), key=lambda kv: (-len(kv[1]), kv[0]))
            shards = []
            for provider, members in ordered:
                tiers: dict[int, _Tier] = {}
                for cred, route in members:
                    tier = tiers.get(cred.priority)
                    if tier is None:
                        tier = tiers[cred.priority] = tier_class()
                    rank = tier.add(cred, route)
                    self._where[(cred.id, name)] = (tier, rank)
                    if not route.pooled:
                        self._slots.setdefault((cred.id, route.state_key), []).append((tier, rank))
                shards.append((provider, tiers))
            self._shards[name] = shards
            self._priorities[name] = sorted({p for _, tiers in shards for p in tiers}, reverse=True)
            self.routes[name] = [r for _, ms in ordered for _, r in ms]

    def knows(self, route: str) -> bool:
        return route in self._shards

    def set_blocked(self, cred_id: str, state_key: str, until: float | None) -> None:
        """A (credential, model) cooldown started (C{until}) or ended (C{None})."""
        for tier, rank in self._slots.get((cred_id, state_key), ()):
            if until is None:
                tier.unblock(rank)
            else:
                tier.block(rank, until)

    def pick(self, route: str, tried: set[str], now: float) -> Pick | None:
        """The next credential for C{route}, or C{None} if every one is tried or cooling."""
        shards = self._shards.get(route)
        if not shards:
            return None
        for priority in self._priorities[route]:
            tiers = [t for _, ts in shards if (t := ts.get(priority)) is not None]
            for tier in tiers:
                tier.promote(now)
            start = 0
            if self._round_robin and len(tiers) > 1:
                start = self._next_cursor(f"{route}|providers|{priority}")
            for i in range(len(tiers)):
                tier = tiers[(start + i) % len(tiers)]
                rank = tier.pick(tried, self._round_robin)
                if rank is not None:
                    return Pick(tier.members[rank], tier.routes[rank])
        return None

    def peek(self, route: str, provider: str, now: float) -> Pick | None:
        """
        The credential of C{provider} a fill-first pick would take for
        C{route}: the first ready member of its highest ready tier. Moves no
        cursor.
        """
        for name, tiers in self._shards.get(route, ()):
            if name != provider:
                continue
            for priority in sorted(tiers, reverse=True):
                tier = tiers[priority]
                tier.promote(now)
                if tier.ready:
                    rank = tier.ready[0]
                    return Pick(tier.members[rank], tier.routes[rank])
        return None

    def pick_exactly(self, route: str, cred_id: str, tried: set[str], now: float) -> Pick | None:
        """C{cred_id} if it serves C{route}, is untried and not cooling for it; else C{None}."""
        found = self._where.get((cred_id, route))
        if found is None or cred_id in tried:
            return None
        tier, rank = found
        tier.promote(now)
        if rank in tier.until:
            return None
        return Pick(tier.members[rank], tier.routes[rank])

    def blocked_until(self, route: str) -> float | None:
        """When the first cooling credential of C{route} recovers (ignoring pool members)."""
        times = [
            t
            for _, tiers in self._shards.get(route, ())
            for tier in tiers.values()
            if (t := tier.earliest()) is not None
        ]
        return min(times) if times else None

    def members(self, route: str) -> Iterable[tuple[Credential, Route, float | None]]:
        """Every credential of C{route}, its route entry and its cooldown end (if cooling)."""
        for _, tiers in self._shards.get(route, ()):
            for tier in tiers.values():
                for rank, cred in enumerate(tier.members):
                    yield cred, tier.routes[rank], tier.until.get(rank)
