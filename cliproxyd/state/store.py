"""
The StateStore: the one owner of mutable runtime state.

It holds what the conductor learns while it runs: per (credential, model)
cooldown state, per-credential counters, per-model usage, routing cursors,
alias-pool offsets and affinity. Everything is bounded: maps are keyed by
configured things (credentials, models) or capped.

C{snapshot(now)} and C{restore(data, now)} turn the state worth keeping
across a restart (unexpired cooldowns, backoff levels, affinity) into plain
JSON data and back; L{cliproxyd.state.persist} writes it to disk.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Any, Callable, Protocol, TypeVar

from attrs import asdict, define
from twisted.internet.defer import Deferred, succeed

from cliproxyd.state.records import GroupState, Headroom, KeyUsage, LimitWindow, ModelState, Pace, ProbeState

T = TypeVar("T")

#: Version of the snapshot format written by L{MemoryStateStore.snapshot}.
SNAPSHOT_VERSION = 1
#: Cursors and pool offsets are kept per route; past this many the map starts over.
MAX_CURSORS = 4096
#: Session bindings (route and session id) -> credential, least recently used dropped first.
MAX_AFFINITY = 100_000


@define
class CredentialStats:
    requests: int = 0
    successes: int = 0
    failures: int = 0
    last_status: int | None = None
    last_error: str = ""
    last_used_at: float | None = None
    last_failed_at: float | None = None

    def as_json(self) -> dict:
        return asdict(self)


@define
class ModelUsage:
    requests: int = 0
    successes: int = 0
    failures: int = 0

    def as_json(self) -> dict:
        return asdict(self)


_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "unavailable": (bool,),
    "next_retry_at": (int, float, type(None)),
    "backoff_level": (int,),
    "quota_exceeded": (bool,),
    "reason": (str,),
    "last_status": (int, type(None)),
    "last_error": (str,),
    "updated_at": (int, float, type(None)),
}


_GROUP_TYPES: dict[str, tuple[type, ...]] = {
    "auto_until": (int, float, type(None)),
    "auto_reason": (str,),
    "manual": (bool,),
    "manual_reason": (str,),
    "updated_by": (str,),
    "updated_at": (int, float, type(None)),
}


#: The issue 16 kinds: snapshot key -> (record type, its fields' types). Each is kept
#: per credential (probes: per credential and target) behind one get/set pair.
_NUM = (int, float)
_OPT = (int, float, type(None))
_PACING_TYPES: dict[str, tuple[type, dict[str, tuple[type, ...]]]] = {
    "limit_windows": (LimitWindow, {"minute_start": _OPT, "minute_requests": (int,), "minute_tokens": (int,),
                                    "day_start": _OPT, "day_requests": (int,)}),
    "headroom": (Headroom, {"fraction": _NUM, "reset_at": _OPT, "read_at": _OPT, "source": (str,)}),
    "pace": (Pace, {"since": _OPT, "penalty": _NUM, "penalty_at": _OPT, "credit": _NUM}),
    "probes": (ProbeState, {"last_at": _OPT, "last_ok": (bool, type(None)), "last_status": (int, type(None)),
                            "sent": (int,), "succeeded": (int,)}),
}


def _checked(cls: type, types: dict[str, tuple[type, ...]], raw: Any) -> Any:
    """An attrs value from snapshot data, every field type-checked."""
    if not isinstance(raw, dict):
        raise TypeError("not a mapping")
    values = {}
    for name, kinds in types.items():
        if name not in raw:
            continue
        value = raw[name]
        bad_bool = isinstance(value, bool) and bool not in kinds
        if not isinstance(value, kinds) or bad_bool:
            raise TypeError(f"{name} has the wrong type ({type(value).__name__})")
        values[name] = value
    return cls(**values)


def _state_from_json(raw: Any) -> ModelState:
    return _checked(ModelState, _STATE_TYPES, raw)


def _restore_nested(
    raw: Any, name: str, build: Callable[[Any], T], keep: Callable[[T], Any], problems: list[str]
) -> dict[str, dict[str, T]]:
    """C{{outer: {inner: value}}} from snapshot data; bad entries become problems, not errors."""
    if not isinstance(raw, dict):
        raise ValueError(f"{name} is not a mapping")
    out: dict[str, dict[str, T]] = {}
    for outer, items in raw.items():
        if not isinstance(items, dict):
            problems.append(f"{name}.{outer}: not a mapping")
            continue
        for inner, item in items.items():
            try:
                value = build(item)
            except (TypeError, ValueError) as e:
                problems.append(f"{name}.{outer}.{inner}: {e}")
                continue
            if keep(value):
                out.setdefault(outer, {})[inner] = value
    return out


_EMPTY_WINDOW = LimitWindow()
_NO_PROBE = ProbeState()


def _flatten(nested: dict[str, dict[str, T]]) -> list[tuple[str, str, T]]:
    return [(outer, inner, v) for outer, items in nested.items() for inner, v in items.items()]


class StateStore(Protocol):
    dirty: bool

    def next_cursor(self, key: str) -> int: ...
    def next_pool_offset(self, key: str) -> int: ...
    def model_state(self, cred_id: str, model: str) -> ModelState: ...
    def set_model_state(self, cred_id: str, model: str, state: ModelState) -> None: ...
    def model_states(self, cred_id: str) -> dict[str, ModelState]: ...
    def every_model_state(self) -> list[tuple[str, str, ModelState]]: ...
    def group_state(self, cred_id: str, group_id: str) -> GroupState: ...
    def set_group_state(self, cred_id: str, group_id: str, state: GroupState) -> None: ...
    def group_states(self) -> list[tuple[str, str, GroupState]]: ...
    def record(self, cred_id: str, model: str, now: float, status: int | None, error: str = "") -> None: ...
    def stats(self, cred_id: str) -> CredentialStats: ...
    def usage(self) -> dict[str, ModelUsage]: ...
    def session(self, key: str, now: float) -> str | None: ...
    def bind_session(self, keys: tuple[str, ...], cred_id: str, until: float) -> None: ...
    def unbind_session(self, keys: tuple[str, ...], cred_id: str) -> None: ...
    def key_usage(self, name: str) -> KeyUsage | None: ...
    def set_key_usage(self, name: str, usage: KeyUsage) -> None: ...
    def drop_key_usage(self, name: str) -> None: ...
    def key_usages(self) -> dict[str, KeyUsage]: ...
    def limit_window(self, cred_id: str) -> LimitWindow: ...
    def set_limit_window(self, cred_id: str, window: LimitWindow) -> None: ...
    def headroom(self, cred_id: str) -> Headroom | None: ...
    def set_headroom(self, cred_id: str, reading: Headroom | None) -> None: ...
    def pace(self, cred_id: str) -> Pace | None: ...
    def set_pace(self, cred_id: str, pace: Pace | None) -> None: ...
    def probe_state(self, cred_id: str, target: str) -> ProbeState: ...
    def set_probe_state(self, cred_id: str, target: str, state: ProbeState) -> None: ...
    def pacing_counters(self) -> dict[str, int]: ...
    def count_pacing(self, name: str, n: int = 1) -> None: ...
    def reserve(self, name: str, ttl: float, now: float) -> "Deferred[str | None]": ...
    def unreserve(self, name: str, token: str) -> "Deferred[Any]": ...
    def snapshot(self, now: float) -> dict[str, Any]: ...
    def restore(self, data: Any, now: float) -> list[str]: ...
    def describe(self) -> dict[str, Any]: ...


class MemoryStateStore:
    def __init__(self) -> None:
        self._cursors: dict[str, int] = {}
        self._pool_offsets: dict[str, int] = {}
        self._models: dict[str, dict[str, ModelState]] = {}
        self._stats: dict[str, CredentialStats] = {}
        self._usage: dict[str, ModelUsage] = {}
        #: session key -> [credential id, expiry]; the list is updated in place when a use extends it
        self._affinity: OrderedDict[str, list[Any]] = OrderedDict()
        self._groups: dict[str, dict[str, GroupState]] = {}
        #: client key name -> what it used (L{KeyUsage}: JSON-able both ways, one record a key)
        self._keys: dict[str, KeyUsage] = {}
        # issue 16: local limit windows, headroom readings, slow start and penalties
        # (per credential), reset probes (per credential and target), and their counters
        self._limit_windows: dict[str, LimitWindow] = {}
        self._headroom: dict[str, Headroom] = {}
        self._pace: dict[str, Pace] = {}
        self._probes: dict[str, dict[str, ProbeState]] = {}
        self._pacing_counters: dict[str, int] = {}
        #: reservation name -> (token, expiry): probes and warmups (L{reserve})
        self._reserved: dict[str, tuple[str, float]] = {}
        #: set by every change worth persisting; the persistence service clears it
        self.dirty = False

    # -- cursors ----------------------------------------------------------------

    @staticmethod
    def _advance(table: dict[str, int], key: str) -> int:
        value = table.get(key)
        if value is None:
            if len(table) >= MAX_CURSORS:
                table.clear()
            value = 0
        table[key] = value + 1
        return value

    def next_cursor(self, key: str) -> int:
        """Return the routing cursor for C{key} and advance it."""
        return self._advance(self._cursors, key)

    def next_pool_offset(self, key: str) -> int:
        """Return the alias-pool offset for C{key} (credential and alias) and advance it."""
        return self._advance(self._pool_offsets, key)

    # -- model state ------------------------------------------------------------

    def model_state(self, cred_id: str, model: str) -> ModelState:
        states = self._models.get(cred_id)
        if states is None:
            return ModelState()
        return states.get(model) or ModelState()

    def set_model_state(self, cred_id: str, model: str, state: ModelState) -> None:
        states = self._models.get(cred_id)
        if not state.unavailable and not state.backoff_level:
            # Healthy: keep nothing (the common case after a success).
            if states is not None and states.pop(model, None) is not None:
                self.dirty = True
            return
        if states is None:
            states = self._models[cred_id] = {}
        states[model] = state
        self.dirty = True

    def model_states(self, cred_id: str) -> dict[str, ModelState]:
        return dict(self._models.get(cred_id, {}))

    def every_model_state(self) -> list[tuple[str, str, ModelState]]:
        """Every (credential, model) with a state: the few that are not healthy, not one per credential."""
        return [(c, m, st) for c, states in self._models.items() for m, st in states.items()]

    # -- quota groups ---------------------------------------------------------------

    def group_state(self, cred_id: str, group_id: str) -> GroupState:
        return self._groups.get(cred_id, {}).get(group_id) or GroupState()

    def set_group_state(self, cred_id: str, group_id: str, state: GroupState) -> None:
        groups = self._groups.get(cred_id)
        if state.empty:
            if groups is not None and groups.pop(group_id, None) is not None:
                self.dirty = True
            return
        if groups is None:
            groups = self._groups[cred_id] = {}
        groups[group_id] = state
        self.dirty = True

    def group_states(self) -> list[tuple[str, str, GroupState]]:
        """Every (credential, group) with a state."""
        return [(c, g, st) for c, groups in self._groups.items() for g, st in groups.items()]

    # -- pacing (issue 16) ---------------------------------------------------------

    def limit_window(self, cred_id: str) -> LimitWindow:
        return self._limit_windows.get(cred_id) or _EMPTY_WINDOW

    def set_limit_window(self, cred_id: str, window: LimitWindow) -> None:
        self._limit_windows[cred_id] = window
        self.dirty = True

    def headroom(self, cred_id: str) -> Headroom | None:
        return self._headroom.get(cred_id)

    def set_headroom(self, cred_id: str, reading: Headroom | None) -> None:
        self._put(self._headroom, cred_id, reading)

    def pace(self, cred_id: str) -> Pace | None:
        return self._pace.get(cred_id)

    def set_pace(self, cred_id: str, pace: Pace | None) -> None:
        self._put(self._pace, cred_id, pace)

    def _put(self, table: dict[str, Any], key: str, value: Any) -> None:
        """Keep C{value} under C{key}, or forget the key for None."""
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
        self.dirty = True

    def probe_state(self, cred_id: str, target: str) -> ProbeState:
        return self._probes.get(cred_id, {}).get(target) or _NO_PROBE

    def set_probe_state(self, cred_id: str, target: str, state: ProbeState) -> None:
        self._probes.setdefault(cred_id, {})[target] = state
        self.dirty = True

    def pacing_counters(self) -> dict[str, int]:
        """Probes sent and their outcomes, picks skipped or passed over, and why."""
        return dict(self._pacing_counters)

    def count_pacing(self, name: str, n: int = 1) -> None:
        self._pacing_counters[name] = self._pacing_counters.get(name, 0) + n

    # -- reservations (probes, warmups) --------------------------------------------

    def reserve(self, name: str, ttl: float, now: float) -> "Deferred[str | None]":
        """
        Take the reservation C{name} (e.g. C{probe:<credential>}) for C{ttl}
        seconds from C{now}: fires with a token for L{unreserve}, or None when
        it is held (here: by this process; the Redis store holds it
        cluster-wide). Fires at once here.
        """
        return succeed(self._reserve_locally(name, ttl, now))

    def _reserve_locally(self, name: str, ttl: float, now: float) -> str | None:
        held = self._reserved.get(name)
        if held is not None and held[1] > now:
            return None
        if len(self._reserved) >= MAX_CURSORS:
            for key in [k for k, (_, until) in self._reserved.items() if until <= now]:
                del self._reserved[key]
        token = uuid.uuid4().hex
        self._reserved[name] = (token, now + ttl)
        return token

    def unreserve(self, name: str, token: str) -> "Deferred[Any]":
        """Give the reservation back, if C{token} still holds it."""
        held = self._reserved.get(name)
        if held is not None and held[0] == token:
            del self._reserved[name]
        return succeed(None)

    # -- counters -----------------------------------------------------------------

    def record(self, cred_id: str, model: str, now: float, status: int | None, error: str = "") -> None:
        """Count one attempt: C{error} empty means success."""
        s = self._stats.get(cred_id)
        if s is None:
            s = self._stats[cred_id] = CredentialStats()
        u = self._usage.get(model)
        if u is None:
            u = self._usage[model] = ModelUsage()
        s.requests += 1
        u.requests += 1
        s.last_used_at = now
        s.last_status = status
        if error:
            s.failures += 1
            u.failures += 1
            s.last_error = error[:500]
            s.last_failed_at = now
        else:
            s.successes += 1
            u.successes += 1

    def stats(self, cred_id: str) -> CredentialStats:
        return self._stats.get(cred_id) or CredentialStats()

    def usage(self) -> dict[str, ModelUsage]:
        return dict(self._usage)

    # -- session affinity -------------------------------------------------------

    def session(self, key: str, now: float) -> str | None:
        """The credential session C{key} is bound to, or C{None} (an expired binding is dropped)."""
        entry = self._affinity.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._affinity[key]
            return None
        return entry[0]

    def bind_session(self, keys: tuple[str, ...], cred_id: str, until: float) -> None:
        """Bind each of C{keys} (a session's ids) to C{cred_id} until C{until}."""
        table = self._affinity
        for key in keys:
            entry = table.get(key)
            if entry is not None and entry[0] == cred_id:
                entry[1] = until
                table.move_to_end(key)
                continue
            table[key] = [cred_id, until]
            table.move_to_end(key)
            self.dirty = True
        while len(table) > MAX_AFFINITY:
            table.popitem(last=False)

    def unbind_session(self, keys: tuple[str, ...], cred_id: str) -> None:
        """Forget the bindings of C{keys} that name C{cred_id} (it failed their session)."""
        for key in keys:
            entry = self._affinity.get(key)
            if entry is not None and entry[0] == cred_id:
                del self._affinity[key]
                self.dirty = True

    def describe(self) -> dict[str, Any]:
        """What C{/status} says of the store (L{cliproxyd.state.redisstore} adds its connection)."""
        return {"kind": "memory", "connected": None, "last_error": "", "pending_writes": 0}

    # -- client keys --------------------------------------------------------------

    def key_usage(self, name: str) -> KeyUsage | None:
        """The record of client key C{name}; the caller changes it and hands it back with L{set_key_usage}."""
        return self._keys.get(name)

    def set_key_usage(self, name: str, usage: KeyUsage) -> None:
        self._keys[name] = usage
        self.dirty = True

    def drop_key_usage(self, name: str) -> None:
        if self._keys.pop(name, None) is not None:
            self.dirty = True

    def key_usages(self) -> dict[str, KeyUsage]:
        return dict(self._keys)

    # -- snapshot -----------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """The state worth keeping across a restart, as JSON-able data."""
        models: dict[str, dict[str, Any]] = {}
        for cred_id, states in self._models.items():
            kept = {
                model: asdict(state)
                for model, state in states.items()
                if state.blocked(now) or state.backoff_level
            }
            if kept:
                models[cred_id] = kept
        groups: dict[str, dict[str, Any]] = {}
        for cred_id, group_id, state in self.group_states():
            if state.manual or state.manual_reason or state.auto_active(now):
                groups.setdefault(cred_id, {})[group_id] = asdict(state)
        return {
            "version": SNAPSHOT_VERSION,
            "saved_at": now,
            "model_states": models,
            "group_states": groups,
            "affinity": {k: list(v) for k, v in self._affinity.items() if v[1] > now},
            "key_usage": {name: usage.as_json() for name, usage in self._keys.items()},
            **self._pacing_snapshot(now),
        }

    def _pacing_snapshot(self, now: float) -> dict[str, Any]:
        """The issue 16 kinds worth keeping: windows still counting, readings not yet reset, ramps, probes."""
        return {
            "limit_windows": {c: asdict(w) for c, w in self._limit_windows.items() if w.live(now)},
            "headroom": {c: asdict(h) for c, h in self._headroom.items() if h.reset_at is None or h.reset_at > now},
            "pace": {c: asdict(p) for c, p in self._pace.items()
                     if (p.since is not None and p.since > now - 3600) or p.penalty},
            "probes": {c: {t: {k: v for k, v in asdict(st).items() if k != "running_since"}
                           for t, st in targets.items()} for c, targets in self._probes.items()},
        }

    def _restore_pacing(self, data: dict[str, Any], problems: list[str]) -> None:
        for name, (cls, types) in _PACING_TYPES.items():
            raw = data.get(name) or {}
            if not isinstance(raw, dict):
                problems.append(f"{name}: not a mapping")
                continue
            if name == "probes":
                for cred_id, target, st in _flatten(
                        _restore_nested(raw, name, lambda r, cls=cls, types=types: _checked(cls, types, r), bool, problems)):
                    self._probes.setdefault(cred_id, {})[target] = st
                continue
            table = {"limit_windows": self._limit_windows, "headroom": self._headroom, "pace": self._pace}[name]
            for cred_id, item in raw.items():
                try:
                    table[cred_id] = _checked(cls, types, item)
                except (TypeError, ValueError) as e:
                    problems.append(f"{name}.{cred_id}: {e}")

    def restore(self, data: Any, now: float) -> list[str]:
        """
        Load a snapshot, dropping cooldowns that ended while we were down.

        @return: problems found (entries skipped); an unusable snapshot as a
            whole raises C{ValueError}.
        """
        if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"not a version {SNAPSHOT_VERSION} state snapshot")
        problems: list[str] = []
        models = _restore_nested(
            data.get("model_states") or {}, "model_states", _state_from_json,
            lambda st: st.blocked(now) or st.backoff_level, problems,
        )
        groups = _restore_nested(
            data.get("group_states") or {}, "group_states",
            lambda raw: _checked(GroupState, _GROUP_TYPES, raw),
            lambda st: st.manual or st.manual_reason or st.auto_active(now), problems,
        )
        affinity = data.get("affinity") or {}
        if not isinstance(affinity, dict):
            raise ValueError("affinity is not a mapping")
        raw_keys = data.get("key_usage") or {}
        if not isinstance(raw_keys, dict):
            raise ValueError("key_usage is not a mapping")
        keys = {}
        for name, raw in raw_keys.items():
            try:
                keys[str(name)] = KeyUsage.from_json(raw)
            except TypeError as e:
                problems.append(f"key_usage.{name}: {e}")
        # Nothing is applied until the whole snapshot has been read.
        self._keys.update(keys)
        self._restore_pacing(data, problems)
        self._models.update(models)
        self._groups.update(groups)
        for key, entry in list(affinity.items())[-MAX_AFFINITY:]:
            # [credential, expiry]; anything else (an older file's shape) is dropped
            if (isinstance(key, str) and isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                    and isinstance(entry[1], (int, float)) and not isinstance(entry[1], bool) and entry[1] > now):
                self._affinity[key] = [entry[0], float(entry[1])]
        return problems
