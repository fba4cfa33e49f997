"""
The issue 16 kinds and the client keys' usage, through the Redis seam
(L{cliproxyd.state.redisstore}): each one's fields and its merge rule.

Windows of counts are shared as B{counter deltas per time bucket}, never as
values, so no instance's count overwrites another's:

  - C{limit_windows} (a credential's local C{rpm}, C{tpm}, C{rpd}): a
    bucket is a window, named by its start (C{cred|m|<start>|r} requests
    and C{|t} tokens of a minute window, C{cred|d|<start>|r} requests of a
    day window). An instance adds what it counted to the window it holds;
    a bucket from another instance that is still open is added to the
    local window (two instances that opened a window at the same moment
    end up with one window, from the earlier start, holding both counts).
    A closed bucket is dropped from Redis.
  - C{key_usage} (client keys' C{rpm}, C{tpm}, daily and monthly tokens
    and their totals): request starts and tokens per second
    (C{name|s|<second>}, C{name|t|<second>}), tokens per UTC day and month
    (C{name|d|<day>}, C{name|M|<month>}) and the totals
    (C{name|n|requests}, C{|tokens}, C{|refused}). What a set adds is how
    far the fields a request can change (the latest second's starts and
    tokens, the day, the month, the totals: a cost that does not grow with
    the windows) moved from what was last sent or received (windows that
    moved on are not un-counted). A start counted elsewhere
    is taken at the end of its second, so a key is never let in early. A
    key's usage reset is sent as the negative of what it held.
  - C{pacing}: the counters of C{/status}'s C{pacing}, plain deltas.

Each delta is sent once (the flush's batch id), so a count is never lost
or doubled; at a reconnect these kinds are rebuilt from Redis's buckets
plus what is not yet sent (and if Redis lost everything, the first
instance back seeds it with its view).

Values, one per field, with their merge rule for two instances that wrote
at once:

  - C{headroom}: the newest reading (C{read_at}) wins.
  - C{pace}: the later ramp start (C{since}) and the stronger penalty
    (decayed to now) win; the admission credit stays local (it changes
    on every pick and is not sent).
  - C{probe_states}: the probe record most recently started or finished
    wins. Which instance I{runs} a probe is not decided here: that is a
    reservation (C{SET NX PX}, L{RedisStateStore.reserve
    <cliproxyd.state.redisstore.RedisStateStore.reserve>}), one per
    credential cluster-wide; warmups reserve per (provider, credential)
    the same way.
"""

from __future__ import annotations

import bisect
import calendar
from collections import Counter
from typing import Any, Iterable

from attrs import asdict, evolve

from cliproxyd.state.records import Headroom, KeyUsage, LimitWindow, Pace, ProbeState
from cliproxyd.state.store import _PACING_TYPES, _checked

SEP = "\x1f"
MINUTE, DAY = 60.0, 86400.0
#: a start counted on another instance is placed this far into its second (its end)
_SECOND_END = 0.999
_EMPTY_WINDOW = LimitWindow()


# -- credentials' local limits: deltas per window ------------------------------------


def _window_fields(cred: str, w: LimitWindow) -> list[tuple[str, int]]:
    out = []
    if w.minute_start is not None:
        out += [(f"{cred}{SEP}m{SEP}{w.minute_start!r}{SEP}r", w.minute_requests),
                (f"{cred}{SEP}m{SEP}{w.minute_start!r}{SEP}t", w.minute_tokens)]
    if w.day_start is not None:
        out.append((f"{cred}{SEP}d{SEP}{w.day_start!r}{SEP}r", w.day_requests))
    return out


def window_diff(store: Any, cred: str, w: LimitWindow) -> Iterable[tuple[str, int]]:
    """What C{set_limit_window(cred, w)} adds to the windows the store holds."""
    # a field names its window's start: a window that started over has nothing held
    return _increases(dict(_window_fields(cred, store._limit_windows.get(cred) or _EMPTY_WINDOW)),
                      _window_fields(cred, w))


def _increases(held: dict[str, int], new: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """The fields of C{new} that grew from C{held}, and by how much (a window that moved on is not un-counted)."""
    get = held.get
    return [(name, value - get(name, 0)) for name, value in new if value > get(name, 0)]


def _window_add(store: Any, name: str, delta: int) -> None:
    cred, which, start_text, what = name.split(SEP)
    start = float(start_text)
    now = store._clock.seconds()
    w = store._limit_windows.get(cred) or _EMPTY_WINDOW
    if which == "m":
        if start + MINUTE <= now:
            return  # that window is over
        if w.minute_start is None or now >= w.minute_start + MINUTE:
            w = evolve(w, minute_start=start, minute_requests=0, minute_tokens=0)
        elif start < w.minute_start:
            w = evolve(w, minute_start=start)
        w = evolve(w, minute_requests=w.minute_requests + delta) if what == "r" else evolve(
            w, minute_tokens=w.minute_tokens + delta)
    else:
        if start + DAY <= now:
            return
        if w.day_start is None or now >= w.day_start + DAY:
            w = evolve(w, day_start=start, day_requests=0)
        elif start < w.day_start:
            w = evolve(w, day_start=start)
        w = evolve(w, day_requests=w.day_requests + delta)
    store._limit_windows[cred] = w


def _window_get(store: Any, name: str) -> int:
    cred = name.split(SEP, 1)[0]
    return dict(_window_fields(cred, store._limit_windows.get(cred) or _EMPTY_WINDOW)).get(name, 0)


def _window_expires(name: str) -> float:
    _, which, start, _ = name.split(SEP)
    return float(start) + (MINUTE if which == "m" else DAY)


# -- client keys' usage: deltas per second, day, month and totals ---------------------

_TOTALS = ("requests", "tokens", "refused")


def _usage_fields(name: str, u: KeyUsage) -> list[tuple[str, int]]:
    out = [(f"{name}{SEP}s{SEP}{sec}", n) for sec, n in Counter(int(t) for t in u.starts).items()]
    out += [(f"{name}{SEP}t{SEP}{sec}", tokens) for sec, tokens in u.seconds if tokens]
    return out + _calendar_and_totals(name, u)


def _calendar_and_totals(name: str, u: KeyUsage) -> list[tuple[str, int]]:
    out = []
    if u.day and u.day_tokens:
        out.append((f"{name}{SEP}d{SEP}{u.day}", u.day_tokens))
    if u.month and u.month_tokens:
        out.append((f"{name}{SEP}M{SEP}{u.month}", u.month_tokens))
    return out + [(f"{name}{SEP}n{SEP}{what}", getattr(u, what)) for what in _TOTALS if getattr(u, what)]


def _tail(name: str, u: KeyUsage) -> list[tuple[str, int]]:
    """
    The fields a request can have changed: the starts of the latest second
    (a start is appended at its time), its tokens' second, the day, the
    month and the totals. Reading them costs the same however full the
    windows are.
    """
    out = []
    starts = u.starts
    if starts:
        sec = int(starts[-1])
        out.append((f"{name}{SEP}s{SEP}{sec}", len(starts) - bisect.bisect_left(starts, sec)))
    if u.seconds and u.seconds[-1][1]:
        out.append((f"{name}{SEP}t{SEP}{u.seconds[-1][0]}", u.seconds[-1][1]))
    return out + _calendar_and_totals(name, u)


def _sent(store: Any) -> dict[str, dict[str, int]]:
    """Each key's L{_tail} fields as last sent (or received): what the next set is compared with."""
    return store.scratch.setdefault("key_usage", {})


def usage_diff(store: Any, name: str, usage: KeyUsage) -> Iterable[tuple[str, int]]:
    """What C{set_key_usage(name, usage)} adds; its fields become the ones sent."""
    sent = _sent(store)
    tail = _tail(name, usage)
    held = sent.get(name) or {}
    sent[name] = dict(tail)
    return _increases(held, tail)


def usage_drop(store: Any, name: str) -> Iterable[tuple[str, int]]:
    """A key's usage reset: the negative of all it holds, so every instance forgets it."""
    _sent(store).pop(name, None)
    usage = store._keys.get(name)
    return [(field, -value) for field, value in _usage_fields(name, usage)] if usage is not None else []


def _apply(u: KeyUsage, which: str, what: str, delta: int) -> None:
    if which == "s":
        sec = int(what)
        if delta > 0:
            for _ in range(delta):
                bisect.insort(u.starts, sec + _SECOND_END)
        else:
            drop = -delta
            kept = []
            for t in reversed(u.starts):
                if drop and int(t) == sec:
                    drop -= 1
                else:
                    kept.append(t)
            u.starts = kept[::-1]
    elif which == "t":
        sec = int(what)
        for entry in u.seconds:
            if entry[0] == sec:
                entry[1] = max(0, entry[1] + delta)
                break
        else:
            if delta > 0:
                u.seconds.append([sec, delta])
                u.seconds.sort()
        u.seconds = [s for s in u.seconds if s[1]]
    elif which in ("d", "M"):
        attr, tokens = ("day", "day_tokens") if which == "d" else ("month", "month_tokens")
        current = getattr(u, attr)
        if what == current:
            setattr(u, tokens, max(0, getattr(u, tokens) + delta))
        elif (not current or what > current) and delta > 0:
            setattr(u, attr, what)
            setattr(u, tokens, delta)
    elif which == "n" and what in _TOTALS:
        setattr(u, what, max(0, getattr(u, what) + delta))


def _empty(u: KeyUsage) -> bool:
    return not (u.starts or u.seconds or u.day_tokens or u.month_tokens or u.requests or u.tokens or u.refused)


def _usage_add(store: Any, field: str, delta: int) -> None:
    name, which, what = field.split(SEP)
    usage = store._keys.get(name)
    if usage is None:
        if delta <= 0:
            return
        usage = store._keys[name] = KeyUsage()
    _apply(usage, which, what, delta)
    # what arrives is not ours to send again
    sent = _sent(store).setdefault(name, {})
    sent[field] = sent.get(field, 0) + delta
    if _empty(usage):
        del store._keys[name]
        _sent(store).pop(name, None)
    store.dirty = True


def _usage_get(store: Any, field: str) -> int:
    name = field.split(SEP, 1)[0]
    usage = store._keys.get(name)
    return dict(_usage_fields(name, usage)).get(field, 0) if usage is not None else 0


def _usage_clear(store: Any) -> None:
    store._keys.clear()
    _sent(store).clear()


def _usage_expires(field: str) -> float | None:
    _, which, what = field.split(SEP)
    if which == "s":
        return int(what) + MINUTE + 2
    if which == "t":
        return int(what) + MINUTE + 3
    if which == "d":
        y, m, d = (int(x) for x in what.split("-"))
        return calendar.timegm((y, m, d, 0, 0, 0)) + 2 * DAY
    if which == "M":
        y, m = (int(x) for x in what.split("-"))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return calendar.timegm((y, m, 1, 0, 0, 0)) + 2 * DAY
    return None


# -- values: headroom, pace, probe records ---------------------------------------------


def _flat_put(attr: str) -> Any:
    def put(store: Any, name: str, value: Any) -> None:
        table = getattr(store, attr)
        if value is None:
            table.pop(name, None)
        else:
            table[name] = value
        store.dirty = True

    return put


def newest_reading(local: Headroom | None, remote: Headroom | None, now: float) -> Headroom | None:
    if local is None or remote is None:
        return local if remote is None else remote
    return local if (local.read_at or 0) >= (remote.read_at or 0) else remote


def stronger_pace(local: Pace | None, remote: Pace | None, now: float) -> Pace | None:
    """The later ramp start and the stronger penalty (decayed to C{now}); the local credit."""
    if local is None or remote is None:
        return local if remote is None else remote
    since = local.since if remote.since is None else remote.since if local.since is None else max(
        local.since, remote.since)
    strong = local if local.penalty_now(now) >= remote.penalty_now(now) else remote
    return Pace(since, strong.penalty, strong.penalty_at, local.credit)


def _pace_json(p: Pace) -> dict[str, Any]:
    return {"since": p.since, "penalty": p.penalty, "penalty_at": p.penalty_at}


def _pace_put(store: Any, name: str, value: Pace | None) -> None:
    old = store._pace.get(name)
    if value is not None and old is not None:
        value = evolve(value, credit=old.credit)  # the credit is this instance's own
    _flat_put("_pace")(store, name, value)


def _probe_when(st: ProbeState) -> float:
    return max(st.last_at or 0.0, st.running_since or 0.0)


def latest_probe(local: ProbeState | None, remote: ProbeState | None, now: float) -> ProbeState | None:
    if local is None or remote is None:
        return local if remote is None else remote
    return local if _probe_when(local) >= _probe_when(remote) else remote


def kinds(Replicated: Any, Counted: Any, nested: Any) -> tuple[list[Any], list[Any]]:
    """The values and the counters above, as L{cliproxyd.state.redisstore} registers them."""
    fields, get, put = nested
    types = {name: t for name, (_, t) in _PACING_TYPES.items()}
    values = [
        Replicated(
            "headroom", fields=lambda s: list(s._headroom), get=lambda s, n: s._headroom.get(n),
            put=_flat_put("_headroom"), to_json=asdict,
            from_json=lambda raw: _checked(Headroom, types["headroom"], raw),
            merge=newest_reading, keep=lambda h, now: h.reset_at is None or h.reset_at > now,
            watch={"set_headroom": lambda cred, *_: (cred,)}),
        Replicated(
            "pace", fields=lambda s: list(s._pace), get=lambda s, n: s._pace.get(n), put=_pace_put,
            to_json=_pace_json, from_json=lambda raw: _checked(Pace, types["pace"], raw),
            merge=stronger_pace,
            keep=lambda p, now: (p.since is not None and p.since > now - 3600) or p.penalty_now(now) > 0.05,
            watch={"set_pace": lambda cred, *_: (cred,)}),
        Replicated(
            "probe_states", fields=lambda s: fields(s._probes), get=get("_probes"), put=put("_probes"),
            to_json=asdict,
            from_json=lambda raw: _checked(ProbeState, {**types["probes"], "running_since": (int, float, type(None))},
                                           raw),
            merge=latest_probe, keep=lambda st, now: bool(st.sent),
            watch={"set_probe_state": lambda cred, target, *_: (f"{cred}{SEP}{target}",)}),
    ]
    counters = [
        Counted("limit_windows", lambda s: [f for c, w in s._limit_windows.items() for f, _ in _window_fields(c, w)],
                _window_get, _window_add, {}, diff={"set_limit_window": window_diff}, expires=_window_expires,
                clear=lambda s: s._limit_windows.clear()),
        Counted("key_usage", lambda s: [f for n, u in s._keys.items() for f, _ in _usage_fields(n, u)],
                _usage_get, _usage_add, {}, diff={"set_key_usage": usage_diff, "drop_key_usage": usage_drop},
                expires=_usage_expires, clear=_usage_clear),
        Counted("pacing", lambda s: list(s._pacing_counters), lambda s, n: s._pacing_counters.get(n, 0),
                _pacing_add,
                {"count_pacing": lambda name, n=1: ((name, n),)}),
    ]
    return values, counters


def _pacing_add(store: Any, name: str, delta: int) -> None:
    store._pacing_counters[name] = store._pacing_counters.get(name, 0) + delta
