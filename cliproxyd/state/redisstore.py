"""
The StateStore shared through Redis (C{state-store: redis://...}).

L{RedisStateStore} is a L{MemoryStateStore}: the request path reads and
writes memory only, exactly as with the embedded store. What changes is
replicated in the background:

  - every change a request makes marks its entry pending (a set insert)
    and schedules one flush C{flush_delay} seconds later; the flush reads
    the entries' current values and sends them with one Lua script call
    that writes them to Redis hashes and publishes them on one channel,
    atomically. No request ever waits on it. Each value is written only if
    Redis still holds what this instance last saw of it; otherwise another
    instance wrote first, and the script hands its value back: the two are
    merged by the kind's rule and the result is sent again (so two
    instances cooling one key at once keep the longer cooldown).
  - every instance is subscribed to that channel and applies what the
    others publish as soon as it arrives (well within a second).
  - at connect (start, and after every reconnect) the whole of each hash
    is loaded: entries this instance did not change while it was away are
    taken from Redis, the ones it changed are merged by their kind's rule
    and written back. If Redis lost its data meanwhile (its C{epoch} key
    is new), everything local is merged and written back.
  - counters are sent as deltas (C{HINCRBY}); each flush carries a batch id
    that the script records (C{SET NX}), so a flush resent after a lost
    reply is never counted twice, and deltas made while Redis was down are
    buffered and sent once it is back.
  - Redis down: the store keeps serving on its local view, logs once, and
    reconnects with exponential back-off (1 s doubling to 30 s) driven by
    the C{state-store-redis} L{Periodic} on the injected clock.

What is shared, and each kind's merge rule (L{VALUES}, L{COUNTERS}):

  - C{model_states}: cooldowns per (credential, model). Two live cooldowns:
    the later end wins; otherwise the newer C{updated_at} (a success that
    clears one is a newer write).
  - C{group_states}: quota-group suspensions per (credential, group).
    Two live automatic suspensions: the later end wins; otherwise newer.
  - C{affinity}: session bindings; the later expiry wins. A binding that
    is only extended is sent again once it has moved 30 s, not per request.
  - C{stats}, C{usage}: the per-credential and per-model request, success
    and failure counts, as deltas. C{last_status}, C{last_error} and the
    timestamps of L{CredentialStats} stay local.
  - C{limit_windows}, C{key_usage}, C{pacing} (counters per time bucket)
    and C{headroom}, C{pace}, C{probe_states} (values): the issue 16 kinds
    and client keys' usage, with their rules in
    L{cliproxyd.state.sharedkinds}.
  - reservations (L{RedisStateStore.reserve}): C{SET NX PX}, one holder
    cluster-wide (reset probes per credential, warmups per provider and
    credential); taken locally while Redis is unavailable.
  - not shared: routing cursors and alias-pool offsets (each instance
    round-robins on its own; sharing them would cost a round trip per pick
    and buys nothing, the spread evens out).

Adding a kind: give its store methods, then register it once, by appending a
L{Replicated} (a value per field, with C{to_json}, C{from_json}, C{merge},
C{keep}) to L{VALUES} or a L{Counted} (integer deltas) to L{COUNTERS}. A
L{Counted} whose deltas are a difference of records (C{diff}, run before
the method) may name time buckets in its fields (C{expires}: a bucket that
is over is dropped from Redis at a flush) and be rebuilt at a reconnect
from Redis's fields through C{add} alone (C{clear}).
C{watch} names the store methods that change it and how their arguments
name the changed fields; the store wraps those methods, so nothing else
changes::

    VALUES.append(Replicated(
        "probes", fields=..., get=..., put=..., to_json=..., from_json=...,
        merge=newer_wins, keep=..., watch={"reserve_probe": lambda cred, model, *_: [key(cred, model)]}))

It also coordinates OAuth token refreshes across instances: a lock per
account (C{SET NX PX} with a random token, released by compare-and-delete)
and the new tokens, stored and published (L{cliproxyd.credentials.refresh}
uses these through its C{ClusterTokens} protocol).

Redis keys (all under one hash tag, so Redis Cluster keeps them in one
slot): C{{prefix}:<kind>} hashes, C{{prefix}:epoch},
C{{prefix}:batch:<id>} (one day), C{{prefix}:lock:<account>},
C{{prefix}:tokens:<account>}, C{{prefix}:reserve:<name>}; channels C{{prefix}:changes} and
C{{prefix}:tokens}.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Iterable, Mapping

from attrs import asdict, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cliproxyd.service import Periodic
from cliproxyd.state.records import GroupState
from cliproxyd.state.store import _GROUP_TYPES, MAX_AFFINITY, MemoryStateStore, _checked, _state_from_json

#: Separates the parts of a field name (credential, model).
SEP = "\x1f"
#: Changes are gathered this long before one flush sends them.
FLUSH_DELAY = 0.05
#: Reconnection back-off: first delay and ceiling, seconds.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
#: A command Redis has not answered by then has failed (the connection is dropped).
REPLY_TIMEOUT = 5.0
#: An extended affinity binding is sent again once its expiry moved this far.
AFFINITY_RESEND = 30.0
#: Batch ids are remembered this long (seconds) for resends.
BATCH_TTL = 86400
#: Published tokens are kept this long for instances that start later.
TOKENS_TTL = 7 * 86400

# One flush, atomically: skip a batch already applied; write each value only
# if Redis still holds what we last saw of it (else return it as a conflict,
# to be merged and written again); add the deltas; publish what was applied.
FLUSH_SCRIPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[3])) == false then return 'dup' end
local b = cjson.decode(ARGV[1])
local conflicts, changes = {}, {}
for _, op in ipairs(b.ops) do
  local cur = redis.call('HGET', op[2], op[3])
  if cur == false then cur = '' end
  if cur ~= op[5] then
    table.insert(conflicts, {op[1], op[3], cur})
  else
    if op[4] == '' then redis.call('HDEL', op[2], op[3]) else redis.call('HSET', op[2], op[3], op[4]) end
    table.insert(changes, {op[1], op[3], op[4]})
  end
end
for _, i in ipairs(b.incr) do redis.call('HINCRBY', i[1], i[2], i[3]) end
for _, i in ipairs(b.hdel or {}) do redis.call('HDEL', i[1], i[2]) end
if #changes > 0 or #b.incr > 0 then
  redis.call('PUBLISH', KEYS[2], cjson.encode({src = ARGV[2], set = changes, incr = b.msg_incr}))
end
return cjson.encode(conflicts)
"""
# Release a lock only if it is still ours.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# -- the kinds -------------------------------------------------------------------------


@frozen
class Replicated:
    """One kind of shared value: a Redis hash of JSON values, one per field."""

    name: str
    #: every field the store holds now
    fields: Callable[[Any], Iterable[str]]
    #: the value of a field, None when absent
    get: Callable[[Any, str], Any]
    #: set (or with None, remove) a field's value, without marking it changed
    put: Callable[[Any, str, Any], None]
    to_json: Callable[[Any], Any]
    #: raises TypeError or ValueError on bad data
    from_json: Callable[[Any], Any]
    #: (local, remote, now) -> the value to keep (either may be None)
    merge: Callable[[Any, Any, float], Any]
    #: whether a value is still worth keeping at C{now} (else it is removed from Redis)
    keep: Callable[[Any, float], bool]
    #: store method -> function of its arguments giving the fields it changes
    watch: Mapping[str, Callable[..., Iterable[str]]]
    #: (sent JSON, new JSON) -> True when the new value need not be sent
    quiet: Callable[[Any, Any], bool] | None = None


@frozen
class Counted:
    """One kind of shared counters: a Redis hash of integers, changed by deltas."""

    name: str
    fields: Callable[[Any], Iterable[str]]
    get: Callable[[Any, str], int]
    #: add a delta to a field, without marking it changed
    add: Callable[[Any, str, int], None]
    #: store method -> function of its arguments giving (field, delta) pairs
    watch: Mapping[str, Callable[..., Iterable[tuple[str, int]]]]
    #: store method -> function of (store, its arguments) giving (field, delta)
    #: pairs, called I{before} the method runs (for kinds whose deltas are the
    #: difference between the record held and the one handed in)
    diff: Mapping[str, Callable[..., Iterable[tuple[str, int]]]] = {}
    #: a field of a time bucket -> when its bucket is over (it is then dropped
    #: from Redis); None for a field that lasts
    expires: Callable[[str], float | None] | None = None
    #: forget every count of the kind here: with it, a (re)load rebuilds the
    #: kind from Redis's fields (plus what is not yet sent) through C{add}
    #: alone, rather than setting each field to Redis's value
    clear: Callable[[Any], None] | None = None


def longer_or_newer(until: str) -> Callable[[Any, Any, float], Any]:
    """
    The merge rule of cooldown-like values: when both are live at C{now}
    (their C{until} attribute in the future), the later end wins; otherwise
    the newer C{updated_at} does (None, an absent value, is oldest).
    """

    def merge(local: Any, remote: Any, now: float) -> Any:
        if local is None or remote is None:
            return local if remote is None else remote
        lu, ru = getattr(local, until), getattr(remote, until)
        if lu is not None and ru is not None and lu > now and ru > now:
            return local if lu >= ru else remote
        return local if (local.updated_at or 0) >= (remote.updated_at or 0) else remote

    return merge


def _pair(field_name: str) -> tuple[str, str]:
    outer, _, inner = field_name.partition(SEP)
    return outer, inner


def _nested_fields(table: dict[str, dict[str, Any]]) -> Iterable[str]:
    return [f"{o}{SEP}{i}" for o, inner in table.items() for i in inner]


def _nested_get(attr: str) -> Callable[[Any, str], Any]:
    def get(store: Any, name: str) -> Any:
        outer, inner = _pair(name)
        return getattr(store, attr).get(outer, {}).get(inner)

    return get


def _nested_put(attr: str) -> Callable[[Any, str, Any], None]:
    def put(store: Any, name: str, value: Any) -> None:
        outer, inner = _pair(name)
        table = getattr(store, attr)
        if value is None:
            inner_table = table.get(outer)
            if inner_table is not None and inner_table.pop(inner, None) is not None:
                store.dirty = True
                if not inner_table:
                    del table[outer]
            return
        table.setdefault(outer, {})[inner] = value
        store.dirty = True

    return put


def _affinity_get(store: Any, key: str) -> Any:
    entry = store._affinity.get(key)
    return (entry[0], entry[1]) if entry is not None else None


def _affinity_put(store: Any, key: str, value: Any) -> None:
    table = store._affinity
    if value is None:
        if table.pop(key, None) is not None:
            store.dirty = True
        return
    table[key] = [value[0], value[1]]
    table.move_to_end(key)
    store.dirty = True
    while len(table) > MAX_AFFINITY:
        table.popitem(last=False)


def _affinity_from_json(raw: Any) -> tuple[str, float]:
    if (not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[0], str)
            or isinstance(raw[1], bool) or not isinstance(raw[1], (int, float))):
        raise TypeError("not a [credential, expiry] pair")
    return raw[0], float(raw[1])


def _affinity_merge(local: Any, remote: Any, now: float) -> Any:
    if local is None or remote is None:
        return local if remote is None else remote
    return local if local[1] >= remote[1] else remote


def _affinity_quiet(sent: Any, new: Any) -> bool:
    """An extension of a binding already sent is sent again only once it moved L{AFFINITY_RESEND}."""
    return (sent is not None and new is not None and sent[0] == new[0]
            and new[1] - sent[1] < AFFINITY_RESEND)


def _session_fields(keys: tuple[str, ...], *_: Any) -> Iterable[str]:
    return keys


VALUES: list[Replicated] = [
    Replicated(
        "model_states",
        fields=lambda s: _nested_fields(s._models),
        get=_nested_get("_models"),
        put=_nested_put("_models"),
        to_json=asdict,
        from_json=_state_from_json,
        merge=longer_or_newer("next_retry_at"),
        keep=lambda st, now: bool(st.blocked(now) or st.backoff_level),
        watch={"set_model_state": lambda cred, model, *_: (f"{cred}{SEP}{model}",)},
    ),
    Replicated(
        "group_states",
        fields=lambda s: _nested_fields(s._groups),
        get=_nested_get("_groups"),
        put=_nested_put("_groups"),
        to_json=asdict,
        from_json=lambda raw: _checked(GroupState, _GROUP_TYPES, raw),
        merge=longer_or_newer("auto_until"),
        keep=lambda st, now: bool(st.manual or st.manual_reason or st.auto_active(now)),
        watch={"set_group_state": lambda cred, group, *_: (f"{cred}{SEP}{group}",)},
    ),
    Replicated(
        "affinity",
        fields=lambda s: list(s._affinity),
        get=_affinity_get,
        put=_affinity_put,
        to_json=list,
        from_json=_affinity_from_json,
        merge=_affinity_merge,
        keep=lambda v, now: v[1] > now,
        watch={"bind_session": _session_fields, "unbind_session": _session_fields},
        quiet=_affinity_quiet,
    ),
]

_COUNTS = ("requests", "successes", "failures")


def _counter_get(attr: str) -> Callable[[Any, str], int]:
    def get(store: Any, name: str) -> int:
        key, _, what = name.partition(SEP)
        item = getattr(store, attr).get(key)
        return getattr(item, what) if item is not None else 0

    return get


def _counter_add(attr: str, make: Callable[[], Any]) -> Callable[[Any, str, int], None]:
    def add(store: Any, name: str, delta: int) -> None:
        key, _, what = name.partition(SEP)
        if what not in _COUNTS:
            return
        table = getattr(store, attr)
        item = table.get(key)
        if item is None:
            item = table[key] = make()
        setattr(item, what, getattr(item, what) + delta)

    return add


def _counter_fields(attr: str) -> Callable[[Any], Iterable[str]]:
    return lambda s: [f"{k}{SEP}{what}" for k in getattr(s, attr) for what in _COUNTS]


def _recorded(which: int) -> Callable[..., Iterable[tuple[str, int]]]:
    """The counters one L{MemoryStateStore.record} call adds to: C{which} 0 for stats, 1 for usage."""

    def deltas(cred_id: str, model: str, now: float, status: Any, error: str = "") -> Iterable[tuple[str, int]]:
        key = (cred_id, model)[which]
        return ((f"{key}{SEP}requests", 1), (f"{key}{SEP}{'failures' if error else 'successes'}", 1))

    return deltas


def _counted() -> list[Counted]:
    from cliproxyd.state.store import CredentialStats, ModelUsage

    return [
        Counted("stats", _counter_fields("_stats"), _counter_get("_stats"),
                _counter_add("_stats", CredentialStats), {"record": _recorded(0)}),
        Counted("usage", _counter_fields("_usage"), _counter_get("_usage"),
                _counter_add("_usage", ModelUsage), {"record": _recorded(1)}),
    ]


COUNTERS: list[Counted] = _counted()


def _register_shared_kinds() -> None:
    """The issue 16 kinds and client keys' usage (L{cliproxyd.state.sharedkinds}: their rules)."""
    from cliproxyd.state.sharedkinds import kinds

    values, counters = kinds(Replicated, Counted, (_nested_fields, _nested_get, _nested_put))
    VALUES.extend(values)
    COUNTERS.extend(counters)


_register_shared_kinds()


# -- the connection ---------------------------------------------------------------------


#: Open a connection: C{connect(subscriber, on_message)} fires with a
#: connected txredisapi protocol (a subscriber one when C{subscriber}).
Connect = Callable[[bool, Callable[[str, str], None] | None], "Deferred[Any]"]


class _NoFactory:
    """What txredisapi's protocol calls on its factory when AUTH or SELECT fails."""

    isLazy = False

    def __init__(self, failed: Callable[[str], None]) -> None:
        self._failed = failed

    def stopTrying(self) -> None:
        pass

    def connectionError(self, why: str) -> None:
        self._failed(why)


def tcp_connect(reactor: Any, clock: IReactorTime, host: str, port: int, db: int,
                password: str | None = None, username: str | None = None, tls: bool = False,
                timeout: float = REPLY_TIMEOUT) -> Connect:
    """Connections to one Redis server over TCP (TLS for C{rediss://}), one protocol each."""
    import txredisapi
    from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS

    def connect(subscriber: bool, on_message: Callable[[str, str], None] | None) -> "Deferred[Any]":
        if subscriber:
            class Subscriber(txredisapi.SubscriberProtocol):
                def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
                    if on_message is not None:
                        on_message(channel, message)

            proto = Subscriber(replyTimeout=None, password=password, dbid=None, convertNumbers=False,
                               username=username)
        else:
            proto = txredisapi.RedisProtocol(replyTimeout=timeout, password=password, dbid=db,
                                             convertNumbers=False, username=username)
        proto.callLater = clock.callLater
        ready: Deferred[Any] = Deferred()

        def failed(why: str) -> None:
            if not ready.called:
                ready.errback(ConnectionError(why))

        proto.factory = _NoFactory(failed)
        endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
        if tls:
            from twisted.internet.ssl import optionsForClientTLS

            endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)

        def connected(p: Any) -> Any:
            p.whenConnected().addCallback(lambda _: ready.called or ready.callback(p))
            p.whenDisconnected().addCallback(lambda _: failed("connection closed during set-up"))
            return p

        attempt = connectProtocol(endpoint, proto).addCallbacks(connected, lambda f: failed(str(f.value)))

        def given_up(f: Failure) -> Failure:
            # a timeout or a failed AUTH/SELECT: nothing of this attempt stays open
            attempt.cancel()
            if proto.transport is not None:
                proto.transport.loseConnection()
            return f

        return ready.addTimeout(timeout * 2, clock).addErrback(given_up)

    return connect


# -- the store --------------------------------------------------------------------------


class RedisStateStore(MemoryStateStore):
    """
    The memory store, replicated through Redis; see the module docstring.

    @param connect: opens connections (L{tcp_connect}).
    @param prefix: the keys' and channels' common start; its braces are the Cluster hash tag.
    @param timers: what runs the flushes and reconnections (C{clock} by default).
    """

    #: the counters are the cluster's (replicated as deltas): /status must not add them up per worker
    shares_counters = True

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        connect: Connect,
        *,
        prefix: str = "{cliproxyd}",
        shown: str = "redis",
        instance: str | None = None,
        values: Iterable[Replicated] | None = None,
        counters: Iterable[Counted] | None = None,
        flush_delay: float = FLUSH_DELAY,
        timers: IReactorTime | None = None,
    ) -> None:
        super().__init__()
        self._clock = clock
        #: what runs the flushes and the reconnection job (C{clock}; tests
        #: give the conductor a Clock and the connection the reactor)
        self._timers = timers or clock
        self._connect = connect
        self._prefix = prefix
        self._shown = shown
        self.instance = instance or uuid.uuid4().hex
        self._values = {k.name: k for k in (VALUES if values is None else values)}
        self._counters = {k.name: k for k in (COUNTERS if counters is None else counters)}
        self._flush_delay = flush_delay
        self._channel = f"{prefix}:changes"
        self._token_channel = f"{prefix}:tokens"
        #: (kind, field) changed here and not yet in Redis
        self._pending: set[tuple[str, str]] = set()
        #: (kind, field) -> delta not yet in Redis
        self._deltas: dict[tuple[str, str], int] = {}
        #: a batch of deltas sent but not acknowledged: resent first, under its id
        self._unsent: tuple[str, dict[tuple[str, str], int]] | None = None
        #: (kind, field) -> the JSON text Redis has, as far as we know ("" for none)
        self._sent: dict[tuple[str, str], str] = {}
        #: (kind, field) of a time bucket -> when it is over (then dropped from Redis)
        self._expiring: dict[tuple[str, str], float] = {}
        #: the kinds' own bookkeeping (e.g. the key usage last sent), by kind
        self.scratch: dict[str, Any] = {}
        #: (kind, field) of the flush in flight
        self._in_flight: set[tuple[str, str]] = set()
        self._flush_call: Any = None
        self._flushing = False
        #: fires when the flush in flight is over
        self._flush_done: Deferred[None] = succeed(None)
        self._conn: Any = None
        self._sub: Any = None
        self._connecting = False
        self._epoch: str | None = None
        self._attempts = 0
        self._next_attempt = 0.0
        self._down_logged = False
        self._token_listeners: list[Callable[[str, dict | None], None]] = []
        #: called with (kind, field) after a change from Redis is applied (the daemon
        #: points it at the running conductor, whose scheduler indexes cooldowns)
        self.on_change: Callable[[str, str], None] | None = None
        #: what the management API shows
        self.connected = False
        self.last_error = ""
        self.loads = 0
        self.reconnects = 0
        self.service = Periodic("state-store-redis", BACKOFF_FIRST, self._tick, self._timers, now=True,
                                on_stop=self.close)
        for kind in self._values.values():
            for method, fields_of in kind.watch.items():
                self._watch_value(method, kind.name, fields_of)
        for counter in self._counters.values():
            for method, deltas_of in counter.watch.items():
                self._watch_counter(method, counter.name, deltas_of)
            for method, diff_of in counter.diff.items():
                self._watch_diff(method, counter.name, diff_of)

    # -- noticing changes (the request path: memory only) ------------------------------

    def _watch_value(self, method: str, kind: str, fields_of: Callable[..., Iterable[str]]) -> None:
        inner = getattr(self, method)
        pending = self._pending

        def changed(*args: Any, **kw: Any) -> Any:
            result = inner(*args, **kw)
            for name in fields_of(*args, **kw):
                pending.add((kind, name))
            if self._flush_call is None:
                self._schedule()
            return result

        setattr(self, method, changed)

    def _watch_counter(self, method: str, kind: str, deltas_of: Callable[..., Iterable[tuple[str, int]]]) -> None:
        inner = getattr(self, method)
        deltas = self._deltas

        def counted(*args: Any, **kw: Any) -> Any:
            result = inner(*args, **kw)
            for name, delta in deltas_of(*args, **kw):
                key = (kind, name)
                deltas[key] = deltas.get(key, 0) + delta
            if self._flush_call is None:
                self._schedule()
            return result

        setattr(self, method, counted)

    def _watch_diff(self, method: str, kind: str, diff_of: Callable[..., Iterable[tuple[str, int]]]) -> None:
        inner = getattr(self, method)
        deltas = self._deltas

        def counted(*args: Any, **kw: Any) -> Any:
            for name, delta in diff_of(self, *args, **kw):
                key = (kind, name)
                deltas[key] = deltas.get(key, 0) + delta
            result = inner(*args, **kw)
            if self._flush_call is None:
                self._schedule()
            return result

        setattr(self, method, counted)

    def _note_expiry(self, kind: str, name: str) -> None:
        """Remember when a time bucket's field is over, to drop it from Redis then."""
        counter = self._counters.get(kind)
        if counter is not None and counter.expires is not None:
            at = counter.expires(name)
            if at is not None:
                self._expiring[(kind, name)] = at

    def _schedule(self) -> None:
        if self.connected and self._flush_call is None and not self._flushing:
            self._flush_call = self._timers.callLater(self._flush_delay, self._flush)

    @property
    def pending_writes(self) -> int:
        unsent = len(self._unsent[1]) if self._unsent is not None else 0
        return len(self._pending) + len(self._deltas) + unsent

    def describe(self) -> dict[str, Any]:
        return {"kind": "redis", "url": self._shown, "connected": self.connected,
                "last_error": self.last_error, "pending_writes": self.pending_writes,
                "reconnects": self.reconnects, "instance": self.instance}

    def restore(self, data: Any, now: float) -> list[str]:
        """The state file's entries count as local changes: merged with Redis's at the first load."""
        problems = super().restore(data, now)
        for kind in self._values.values():
            self._pending.update((kind.name, f) for f in kind.fields(self))
        return problems

    # -- flushing (off the request path) ----------------------------------------------

    def _key(self, kind: str) -> str:
        return f"{self._prefix}:{kind}"

    def _take_batch(self) -> tuple[list[list[Any]], dict[tuple[str, str], int]]:
        """
        The pending changes as script operations (kind, hash, field, new
        value, the value we believe Redis has; "" for none) and the deltas;
        pending is emptied.
        """
        now = self._clock.seconds()
        ops = []
        for kind_name, name in list(self._pending):
            kind = self._values.get(kind_name)
            if kind is None:
                continue
            value = kind.get(self, name)
            new = kind.to_json(value) if value is not None and kind.keep(value, now) else None
            new_raw = json.dumps(new) if new is not None else ""
            sent_raw = self._sent.get((kind_name, name), "")
            if new_raw == sent_raw:
                continue
            if kind.quiet is not None and sent_raw and kind.quiet(json.loads(sent_raw), new):
                continue
            ops.append([kind_name, self._key(kind_name), name, new_raw, sent_raw])
        # cleared in place: the method wrappers hold these very objects
        self._pending.clear()
        deltas = dict(self._deltas)
        self._deltas.clear()
        return ops, deltas

    def _flush(self) -> "Deferred[None]":
        self._flush_call = None
        if not self.connected or self._flushing:
            return succeed(None)
        if self._unsent is not None:
            batch_id, deltas = self._unsent
            ops: list[list[Any]] = []
        else:
            ops, deltas = self._take_batch()
            if not ops and not deltas:
                return succeed(None)
            batch_id = uuid.uuid4().hex
            self._unsent = (batch_id, deltas)
        for kind_name, name in deltas:
            self._note_expiry(kind_name, name)
        now = self._clock.seconds()
        dead = [key for key, at in self._expiring.items() if at <= now]
        for key in dead:
            del self._expiring[key]
        payload = {"ops": ops, "incr": [[self._key(k), name, d] for (k, name), d in deltas.items()],
                   "msg_incr": [[k, name, d] for (k, name), d in deltas.items()],
                   "hdel": [[self._key(k), name] for k, name in dead]}
        self._flushing = True
        self._flush_done = Deferred()
        self._in_flight = {(op[0], op[2]) for op in ops}
        conn = self._conn
        d = conn.eval(FLUSH_SCRIPT, [f"{self._prefix}:batch:{batch_id}", self._channel],
                      [json.dumps(payload), self.instance, str(BATCH_TTL)])

        def sent(answer: Any) -> None:
            self._flushing = False
            self._flush_done.callback(None)
            self._in_flight = set()
            self._unsent = None
            conflicts = json.loads(answer) if isinstance(answer, str) and answer.startswith(("[", "{")) else []
            lost_race = {(c[0], c[1]): c[2] for c in (conflicts or [])}
            now = self._clock.seconds()
            for kind_name, _hash, name, new_raw, _expect in ops:
                key = (kind_name, name)
                if key in lost_race:
                    # another instance wrote it first: merge with its value and try again
                    self._pending.add(key)
                    self._take_remote(self._values[kind_name], name, lost_race[key] or None, now)
                else:
                    self._sent[key] = new_raw
            if self._pending or self._deltas:
                self._schedule()

        def failed(f: Failure) -> None:
            self._flushing = False
            self._flush_done.callback(None)
            self._in_flight = set()
            # the values are read again at the next flush; the deltas go again under the same id
            for kind_name, _hash, name, _new, _expect in ops:
                self._pending.add((kind_name, name))
            self.log.info("state store: a flush to Redis failed: {why}", why=f.getErrorMessage())
            self._lost(conn, f.getErrorMessage())

        return d.addCallbacks(sent, failed)

    # -- what the others publish ----------------------------------------------------

    def _message(self, channel: Any, raw: Any) -> None:
        channel = channel.decode() if isinstance(channel, bytes) else channel
        try:
            message = json.loads(raw)
            if channel == self._token_channel:
                if message.get("src") != self.instance:
                    for listener in self._token_listeners:
                        listener(message["account"], message["tokens"])
                return
            if message.get("src") == self.instance:
                return
            now = self._clock.seconds()
            for kind_name, name, raw in message.get("set") or ():
                kind = self._values.get(kind_name)
                if kind is not None:
                    self._take_remote(kind, name, raw or None, now)
            for kind_name, name, delta in message.get("incr") or ():
                counter = self._counters.get(kind_name)
                if counter is not None:
                    counter.add(self, name, int(delta))
                    self._note_expiry(kind_name, name)
        except Exception as e:  # a malformed message must not stop the subscriber
            self.log.warn("state store: a change message could not be applied: {why}", why=e)

    def _take_remote(self, kind: Replicated, name: str, raw: str | None, now: float) -> None:
        """
        Apply Redis's (or another instance's) value of a field (its JSON
        text, None for none): a field changed here and not yet in Redis is
        merged by the kind's rule (and stays pending); any other is replaced.
        """
        try:
            remote = kind.from_json(json.loads(raw)) if raw else None
        except (TypeError, ValueError):
            remote = None
        key = (kind.name, name)
        self._sent[key] = raw or ""
        if key in self._pending or key in self._in_flight:
            kind.put(self, name, kind.merge(kind.get(self, name), remote, now))
        else:
            kind.put(self, name, remote if remote is not None and kind.keep(remote, now) else None)
        if self.on_change is not None:
            self.on_change(kind.name, name)

    # -- connecting, loading, losing ------------------------------------------------

    def _tick(self) -> "Deferred[None] | None":
        if self.connected or self._connecting:
            return None
        if self._timers.seconds() < self._next_attempt:
            return None
        return self._open()

    def _open(self) -> "Deferred[None]":
        self._connecting = True
        return Deferred.fromCoroutine(self._open_and_load()).addErrback(self._open_failed)

    async def _open_and_load(self) -> None:
        sub = await self._connect(True, self._message)
        try:
            conn = await self._connect(False, None)
        except BaseException:
            sub.transport.loseConnection()
            raise
        self._sub, self._conn = sub, conn
        await sub.subscribe([self._channel, self._token_channel])
        await self._load(conn)
        self._connecting = False
        self._attempts = 0
        self.connected = True
        if self._down_logged or self.loads > 1:
            self.reconnects += 1
            self.log.info("state store: Redis at {url} is back; state reconciled", url=self._shown)
        elif self.loads == 1:
            self.log.info("state store: shared through Redis at {url}; its state loaded", url=self._shown)
        self._down_logged = False
        self.last_error = ""
        for p in (sub, conn):
            p.whenDisconnected().addCallback(lambda _, p=p: self._lost(p, "connection lost"))
        if self._pending or self._deltas or self._unsent is not None:
            self._schedule()

    async def _load(self, conn: Any) -> None:
        if self._unsent is not None and await conn.exists(f"{self._prefix}:batch:{self._unsent[0]}"):
            self._unsent = None  # it was applied; only its answer was lost
        fresh = uuid.uuid4().hex
        epoch_key = f"{self._prefix}:epoch"
        await conn.set(epoch_key, fresh, only_if_not_exists=True)
        epoch = await conn.get(epoch_key)
        lost = self._epoch is not None and epoch != self._epoch
        created = epoch == fresh
        now = self._clock.seconds()
        if lost:
            # Redis came back empty: everything we know is ours to merge and write again.
            self._sent.clear()
            for kind in self._values.values():
                self._pending.update((kind.name, f) for f in kind.fields(self))
        for kind in self._values.values():
            remote = await conn.hgetall(self._key(kind.name)) or {}
            local_only = {f for k, f in self._pending if k == kind.name} - set(remote)
            for name, raw in remote.items():
                self._take_remote(kind, name, raw, now)
            for name in local_only:
                self._sent.pop((kind.name, name), None)
            if not lost:
                # what only we hold and did not change is gone from the cluster
                for name in list(kind.fields(self)):
                    if name not in remote and (kind.name, name) not in self._pending:
                        kind.put(self, name, None)
                        if self.on_change is not None:
                            self.on_change(kind.name, name)
        for counter in self._counters.values():
            remote = await conn.hgetall(self._key(counter.name)) or {}
            for name in remote:
                self._note_expiry(counter.name, name)
            if created and (self.loads or counter.clear is not None) and not remote:
                # Redis lost the counters and we are the first back: our view seeds them
                for name in counter.fields(self):
                    value = counter.get(self, name) - self._unacked(counter.name, name)
                    if value:
                        self._deltas[(counter.name, name)] = self._deltas.get((counter.name, name), 0) + value
                continue
            if counter.clear is not None:
                # rebuilt from Redis's buckets and what is not yet there (adds merge buckets)
                unacked = {n for k, n in self._deltas if k == counter.name}
                if self._unsent is not None:
                    unacked.update(n for k, n in self._unsent[1] if k == counter.name)
                counter.clear(self)
                for name in set(remote) | unacked:
                    total = int(remote.get(name, 0)) + self._unacked(counter.name, name)
                    if total:
                        counter.add(self, name, total)
                continue
            for name in set(remote) | set(counter.fields(self)):
                unflushed = self._unacked(counter.name, name)
                total = int(remote.get(name, 0)) + unflushed
                counter.add(self, name, total - counter.get(self, name))
        self._epoch = epoch
        self.loads += 1

    def _unacked(self, kind: str, name: str) -> int:
        n = self._deltas.get((kind, name), 0)
        if self._unsent is not None:
            n += self._unsent[1].get((kind, name), 0)
        return n

    def _open_failed(self, f: Failure) -> None:
        self._connecting = False
        for p in (self._sub, self._conn):
            if p is not None and p.transport is not None:
                p.transport.loseConnection()
        self._sub = self._conn = None
        self._note_down(f.getErrorMessage())

    def _note_down(self, why: str) -> None:
        self.last_error = why
        self._attempts += 1
        delay = min(BACKOFF_FIRST * 2 ** (self._attempts - 1), BACKOFF_MAX)
        self._next_attempt = self._timers.seconds() + delay
        if not self._down_logged:
            self._down_logged = True
            self.log.warn("state store: Redis at {url} is unavailable ({why}); serving on the local view, "
                          "retrying with back-off", url=self._shown, why=why)

    def _lost(self, which: Any, why: str) -> None:
        if which is not self._conn and which is not self._sub:
            return  # an older connection
        was = self.connected
        self.connected = False
        for p in (self._sub, self._conn):
            if p is not None and p.transport is not None:
                p.transport.loseConnection()
        self._sub = self._conn = None
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if was or not self._connecting:
            self._attempts = 0
            self._note_down(why)

    def close(self) -> "Deferred[None]":
        """At stop: one last flush if connected, then the connections close."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if self._flushing:
            # the flush in flight first, then one for what came after it
            d = Deferred()
            self._flush_done.addCallback(lambda _: self._flush() if self.connected else None).chainDeferred(d)
        else:
            d = self._flush() if self.connected else succeed(None)
        d.addTimeout(REPLY_TIMEOUT * 2, self._timers)

        def closed(_: Any) -> None:
            self.connected = False
            conns = (self._sub, self._conn)
            self._sub = self._conn = None
            for p in conns:
                if p is not None and p.transport is not None:
                    p.transport.loseConnection()

        return d.addBoth(closed)

    # -- reservations: at most one holder cluster-wide (probes, warmups) ---------------

    def reserve(self, name: str, ttl: float, now: float) -> "Deferred[str | None]":
        """
        Take C{name} for C{ttl} seconds in Redis (C{SET NX PX}): fires with
        a token, or None when any instance holds it. Redis unavailable (or
        failing the command): the reservation is taken locally, as the
        memory store does.
        """
        if not self.connected:
            return succeed(self._reserve_locally(name, ttl, now))
        token = uuid.uuid4().hex
        d = self._conn.set(f"{self._prefix}:reserve:{name}", token, pexpire=max(1, int(ttl * 1000)),
                           only_if_not_exists=True)
        return d.addCallbacks(lambda ok: token if ok else None, lambda _: self._reserve_locally(name, ttl, now))

    def unreserve(self, name: str, token: str) -> "Deferred[Any]":
        """Give C{name} back if C{token} still holds it (compare-and-delete in Redis)."""
        super().unreserve(name, token)
        if not self.connected:
            return succeed(None)
        return self._conn.eval(RELEASE_SCRIPT, [f"{self._prefix}:reserve:{name}"], [token]).addErrback(
            lambda _: None)

    # -- one token refresher per account (ClusterTokens) ------------------------------

    def on_tokens(self, listener: Callable[[str, dict | None], None]) -> None:
        """C{listener(account, tokens)} runs for each account's tokens another instance publishes."""
        self._token_listeners.append(listener)

    def acquire(self, account: str, ttl: float) -> "Deferred[str | None]":
        """
        Take the refresh lock of C{account} for C{ttl} seconds: fires with
        its token, "" when another instance holds it, None when Redis is
        unavailable.
        """
        if not self.connected:
            return succeed(None)
        token = uuid.uuid4().hex
        d = self._conn.set(f"{self._prefix}:lock:{account}", token, pexpire=int(ttl * 1000),
                           only_if_not_exists=True)
        return d.addCallbacks(lambda ok: token if ok else "", lambda _: None)

    def release(self, account: str, token: str) -> "Deferred[Any]":
        if not self.connected:
            return succeed(None)
        return self._conn.eval(RELEASE_SCRIPT, [f"{self._prefix}:lock:{account}"], [token]).addErrback(
            lambda _: None)

    def publish_tokens(self, account: str, tokens: dict | None) -> "Deferred[Any]":
        """Store C{account}'s new tokens and tell every instance; None tells them the refresh failed."""
        if not self.connected:
            return succeed(None)
        message = json.dumps({"src": self.instance, "account": account, "tokens": tokens})
        if tokens is None:
            return self._conn.publish(self._token_channel, message).addErrback(lambda _: None)
        d1 = self._conn.set(f"{self._prefix}:tokens:{account}", json.dumps(tokens), expire=TOKENS_TTL)
        d2 = self._conn.publish(self._token_channel, message)
        return d1.addCallback(lambda _: d2).addErrback(lambda _: None)

    def latest_tokens(self, account: str) -> "Deferred[dict | None]":
        """The last tokens published for C{account}, or None."""
        if not self.connected:
            return succeed(None)

        def decode(raw: Any) -> dict | None:
            try:
                value = json.loads(raw) if raw else None
            except ValueError:
                return None
            return value if isinstance(value, dict) else None

        return self._conn.get(f"{self._prefix}:tokens:{account}").addCallbacks(decode, lambda _: None)


__all__ = ["COUNTERS", "VALUES", "Counted", "RedisStateStore", "Replicated", "longer_or_newer", "tcp_connect"]
