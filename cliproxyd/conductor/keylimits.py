"""
Client keys' scopes and limits (C{client-keys}).

The policy is pure: L{prune}, L{refusal}, L{start} and L{charge} read and
change a L{KeyUsage} record at a time C{now}, with no clock and no I/O.
L{KeyMeter} owns what is live (requests running and the tokens they are
estimated at) and keeps the records in the StateStore, so they survive a
restart (and are shared once the store is).

The windows:

  - C{rpm}: request starts in any 60 seconds (a log of start times);
  - C{tpm}: tokens in any 60 seconds, counted in one-second buckets; the 61
    latest are summed, which covers every 60-second window ending now;
  - C{daily-tokens} and C{monthly-tokens}: tokens per UTC day and month;
  - C{max-parallel}: requests running at once.

Tokens are what the upstream reports (its usage); a request is counted at
its estimate (the request's size / 4, then what a stream has sent / 4)
while it runs and settled at the reported usage when it ends. A request is
admitted only when every window, with the estimates of the requests
running and its own, stays within its limit; refused, it is told when the
window frees enough for it (Retry-After).
"""

from __future__ import annotations

import calendar
import functools
import math
import time
from collections.abc import Iterable
from typing import Any

from attrs import define, frozen
from twisted.internet.interfaces import IReactorTime

from cliproxyd.config.model import ClientKey
from cliproxyd.modelnames import compile_exclusions, is_excluded, parse_model
from cliproxyd.state.records import KeyUsage
from cliproxyd.state.store import MemoryStateStore, StateStore

#: The length of the rpm and tpm windows.
MINUTE = 60.0
#: A request refused by max-parallel is told to try again after this long.
PARALLEL_RETRY = 1.0
#: Bytes per token, for estimates.
BYTES_PER_TOKEN = 4
#: Model names whose scope decision a key remembers (then it starts over).
SCOPE_MEMO = 1024


@frozen
class Refusal:
    """Why a key may not start a request now, and how long until it may."""

    limit: str  # the config name: rpm, tpm, daily-tokens, monthly-tokens, max-parallel
    retry_after: float
    message: str


class KeyLimited(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def estimate_tokens(size: int) -> int:
    """Tokens a body of C{size} bytes is taken for until the upstream says."""
    return (size + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


# -- calendar windows ---------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _names(day: int) -> tuple[str, str]:
    """The UTC day and month names of day number C{day} since the epoch (worked out once a day)."""
    t = time.gmtime(day * 86400)
    return time.strftime("%Y-%m-%d", t), time.strftime("%Y-%m", t)


def day_of(now: float) -> str:
    return _names(int(now // 86400))[0]


def month_of(now: float) -> str:
    return _names(int(now // 86400))[1]


def next_day(now: float) -> float:
    return (math.floor(now / 86400) + 1) * 86400.0


def next_month(now: float) -> float:
    t = time.gmtime(now)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


# -- the pure policy ------------------------------------------------------------


def prune(key: ClientKey, usage: KeyUsage, now: float) -> None:
    """Drop what has left the windows at C{now} (and what a limit no longer set would keep)."""
    if key.rpm:
        starts = usage.starts
        cut = 0
        while cut < len(starts) and starts[cut] <= now - MINUTE:
            cut += 1
        if cut:
            del starts[:cut]
    elif usage.starts:
        usage.starts = []
    if key.tpm:
        seconds = usage.seconds
        cut = 0
        while cut < len(seconds) and seconds[cut][0] <= now - MINUTE - 1:
            cut += 1
        if cut:
            del seconds[:cut]
    elif usage.seconds:
        usage.seconds = []
    day, month = _names(int(now // 86400))
    if usage.day != day:
        usage.day, usage.day_tokens = day, 0
    if usage.month != month:
        usage.month, usage.month_tokens = month, 0


def minute_tokens(usage: KeyUsage) -> int:
    """The tokens of the pruned minute buckets."""
    return sum(tokens for _, tokens in usage.seconds)


def refusal(key: ClientKey, usage: KeyUsage, running: int, reserved: int, estimate: int,
            now: float) -> Refusal | None:
    """
    Whether (and why) C{key} may not start a request estimated at
    C{estimate} tokens now, with C{running} requests under way holding
    C{reserved} tokens; C{usage} is pruned at C{now}.
    """
    if key.max_parallel and running >= key.max_parallel:
        return Refusal("max-parallel", PARALLEL_RETRY,
                       f"client key {key.name!r} has {running} requests running (max-parallel {key.max_parallel})")
    if key.rpm and len(usage.starts) >= key.rpm:
        frees = usage.starts[len(usage.starts) - key.rpm] + MINUTE
        return Refusal("rpm", frees - now,
                       f"client key {key.name!r} made {len(usage.starts)} requests in the last minute "
                       f"(rpm {key.rpm})")
    ahead = reserved + estimate
    if key.tpm:
        used = minute_tokens(usage)
        if used + ahead > key.tpm:
            return Refusal("tpm", _tpm_frees(usage, used + ahead - key.tpm, now),
                           f"client key {key.name!r} used {used} tokens in the last minute, {ahead} more "
                           f"are running or asked for (tpm {key.tpm})")
    if key.daily_tokens and usage.day_tokens + ahead > key.daily_tokens:
        return Refusal("daily-tokens", next_day(now) - now,
                       f"client key {key.name!r} used {usage.day_tokens} tokens today, {ahead} more are running "
                       f"or asked for (daily-tokens {key.daily_tokens})")
    if key.monthly_tokens and usage.month_tokens + ahead > key.monthly_tokens:
        return Refusal("monthly-tokens", next_month(now) - now,
                       f"client key {key.name!r} used {usage.month_tokens} tokens this month, {ahead} more are "
                       f"running or asked for (monthly-tokens {key.monthly_tokens})")
    return None


def _tpm_frees(usage: KeyUsage, over: int, now: float) -> float:
    """How long until the buckets that leave the minute free C{over} tokens (a minute if they never will)."""
    freed = 0
    for second, tokens in usage.seconds:
        freed += tokens
        if freed >= over:
            return second + MINUTE + 1 - now
    return MINUTE


def start(key: ClientKey, usage: KeyUsage, now: float) -> None:
    """Count a request C{key} starts at C{now}."""
    usage.requests += 1
    if key.rpm:
        usage.starts.append(now)


def charge(key: ClientKey, usage: KeyUsage, tokens: int, now: float) -> None:
    """Count C{tokens} a request of C{key} used, settled at C{now} (C{usage} pruned at C{now})."""
    if tokens <= 0:
        return
    usage.tokens += tokens
    usage.day_tokens += tokens
    usage.month_tokens += tokens
    if key.tpm:
        second = int(now)
        seconds = usage.seconds
        if seconds and seconds[-1][0] == second:
            seconds[-1][1] += tokens
        else:
            seconds.append([second, tokens])


def remaining(key: ClientKey, usage: KeyUsage, running: int, reserved: int) -> dict[str, int]:
    """What each limit set still allows (C{usage} pruned), estimates of running requests taken off."""
    out = {}
    if key.rpm:
        out["rpm"] = max(0, key.rpm - len(usage.starts))
    if key.tpm:
        out["tpm"] = max(0, key.tpm - minute_tokens(usage) - reserved)
    if key.daily_tokens:
        out["daily-tokens"] = max(0, key.daily_tokens - usage.day_tokens - reserved)
    if key.monthly_tokens:
        out["monthly-tokens"] = max(0, key.monthly_tokens - usage.month_tokens - reserved)
    if key.max_parallel:
        out["max-parallel"] = max(0, key.max_parallel - running)
    return out


# -- scope ------------------------------------------------------------------------


class Scope:
    """
    Which models and providers a key may use, compiled once per generation.
    C{models} and C{excluded-models} are globs matched, case-insensitively,
    against the name the client asks for (its thinking suffix removed), and
    against it without its C{prefix/} when it has one.
    """

    def __init__(self, key: ClientKey) -> None:
        self.key = key
        self._allow = compile_exclusions(key.models)
        self._deny = compile_exclusions(key.excluded_models)
        self.providers = frozenset(key.providers)
        #: model name as asked -> allowed, for the names asked most (at most L{SCOPE_MEMO})
        self._memo: dict[str, bool] = {}

    def allows_model(self, model: str) -> bool:
        memo = self._memo
        allowed = memo.get(model)
        if allowed is None:
            allowed = self._allows(model)
            if len(memo) >= SCOPE_MEMO:
                memo.clear()
            memo[model] = allowed
        return allowed

    def _allows(self, model: str) -> bool:
        base = parse_model(model).base
        names = (base, base.partition("/")[2]) if "/" in base else (base,)
        if self._deny is not None and any(is_excluded(self._deny, n) for n in names):
            return False
        return self._allow is None or any(is_excluded(self._allow, n) for n in names)

    def allowed_providers(self, providers: Iterable[str]) -> tuple[str, ...]:
        """Those of C{providers} the key may use (all of them when it names none)."""
        if not self.providers:
            return tuple(providers)
        return tuple(p for p in providers if p.lower() in self.providers)


# -- the live meter ------------------------------------------------------------------


@define(eq=False)
class Ticket:
    """One admitted request of a client key, until L{KeyMeter.settle}."""

    key: ClientKey
    #: the tokens it is counted at while it runs (0 for a key without token limits)
    reserved: int
    done: bool = False


@frozen
class KeyCounters:
    """A key's counters, for metrics: cheap to read, by name (never the key)."""

    requests: int
    refused: int
    tokens: int
    running: int


class KeyMeter:
    """
    Admits, counts and settles client keys' requests. The records live in
    C{store} (a L{MemoryStateStore} of its own when none is given); what is
    running is only here.
    """

    def __init__(self, clock: IReactorTime, store: StateStore | None = None) -> None:
        self._clock = clock
        self._store: StateStore = store if store is not None else MemoryStateStore()
        #: name -> [requests running, tokens they are counted at]
        self._live: dict[str, list[int]] = {}

    def _usage(self, key: ClientKey, now: float) -> KeyUsage:
        usage = self._store.key_usage(key.name)
        if usage is None:
            usage = KeyUsage()
        prune(key, usage, now)
        return usage

    def admit(self, key: ClientKey, estimate: int) -> Ticket:
        """
        Start a request of C{key} estimated at C{estimate} tokens.

        @raise KeyLimited: a limit does not allow it now.
        """
        now = self._clock.seconds()
        usage = self._usage(key, now)
        live = self._live.get(key.name)
        if live is None:
            live = self._live[key.name] = [0, 0]
        estimate = estimate if key.token_limited else 0
        refused = refusal(key, usage, live[0], live[1], estimate, now)
        if refused is not None:
            usage.refused += 1
            self._store.set_key_usage(key.name, usage)
            raise KeyLimited(refused)
        start(key, usage, now)
        self._store.set_key_usage(key.name, usage)
        live[0] += 1
        live[1] += estimate
        return Ticket(key, estimate)

    def grow(self, ticket: Ticket, tokens: int) -> None:
        """A running request is now estimated at C{tokens} (it only grows)."""
        if ticket.done or not ticket.key.token_limited or tokens <= ticket.reserved:
            return
        live = self._live[ticket.key.name]
        live[1] += tokens - ticket.reserved
        ticket.reserved = tokens

    def settle(self, ticket: Ticket, tokens: int | None = None) -> None:
        """
        The request ended, having used C{tokens} as its upstream reported
        (C{None}: nothing reported, its estimate stands). Once per ticket.
        """
        if ticket.done:
            return
        ticket.done = True
        key = ticket.key
        live = self._live[key.name]
        live[0] -= 1
        live[1] -= ticket.reserved
        if not key.token_limited:
            return
        now = self._clock.seconds()
        usage = self._usage(key, now)
        charge(key, usage, ticket.reserved if tokens is None else tokens, now)
        self._store.set_key_usage(key.name, usage)

    def reset(self, name: str) -> None:
        """Forget what key C{name} used (requests running go on and are settled as usual)."""
        self._store.drop_key_usage(name)

    def report(self, key: ClientKey) -> dict[str, Any]:
        """What C{key} used and what its limits still allow, for the management API."""
        now = self._clock.seconds()
        usage = self._usage(key, now)
        running, reserved = self._live.get(key.name, (0, 0))
        out: dict[str, Any] = {
            "requests": usage.requests,
            "refused": usage.refused,
            "running": running,
            "last-minute-requests": len(usage.starts) if key.rpm else None,
        }
        if key.token_limited:
            out.update({"tokens": usage.tokens, "last-minute-tokens": minute_tokens(usage) if key.tpm else None,
                        "day-tokens": usage.day_tokens, "month-tokens": usage.month_tokens,
                        "running-estimate": reserved})
        out["remaining"] = remaining(key, usage, running, reserved)
        return out

    def counters(self) -> dict[str, KeyCounters]:
        """Every key's counters by name: the seam metrics read (no pruning, no copies of windows)."""
        out = {}
        for name, usage in self._store.key_usages().items():
            running = self._live.get(name, (0, 0))[0]
            out[name] = KeyCounters(usage.requests, usage.refused, usage.tokens, running)
        return out
