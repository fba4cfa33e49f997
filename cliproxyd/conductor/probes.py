"""
Reset probes (issue 16): a credential cooled for a long time is re-checked
cheaply instead of waited out.

A 429's reset time may be stale, a 5-hour or weekly window may end early,
an operator may reset the quota upstream: a cooldown of more than
C{routing.reset-probe.after-seconds} is probed every
C{interval-seconds}, off the request path, with the cheapest call that
shows whether the credential would answer a request again: a one-token
request with reasoning off. (A count_tokens call is cheaper still, but
Anthropic and Gemini meter it apart from generation, so its success would
end a cooldown that still holds.) At most one probe runs per credential at
a time, cluster-wide with the Redis store (a reservation taken in Redis
before the probe is sent). A success ends the cooldown and the quota group's automatic
suspension, so traffic returns to the higher tier at once (with its slow
start); a failure keeps the cooldown, with the upstream's new hint if it
sent one.

L{due} is the pure rule; L{ResetProber} is the service that applies it to
the running generation's conductor every tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from attrs import evolve, frozen
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cliproxyd.formats import canonical as C
from cliproxyd.formats.request import ClientRequest
from cliproxyd.replies import UpstreamError
from cliproxyd.service import Periodic, ServiceTree
from cliproxyd.state.records import ProbeState

if TYPE_CHECKING:
    from cliproxyd.conductor.conductor import Conductor
    from cliproxyd.state import StateStore

#: A probe's own timeout: it is one token.
PROBE_TIMEOUT = 60.0
#: A reservation older than this is taken for lost (the probe's Deferred never fired).
STALE_RESERVATION = 2 * PROBE_TIMEOUT
#: How often the prober looks for due probes (less when interval-seconds is shorter).
TICK = 30.0
#: The cooldown reasons a probe can end: they hold for a time window. A model
#: the credential does not serve (404, model-support) is not a matter of time.
PROBED_REASONS = frozenset({"quota", "payment_required", "unauthorized", "transient", "timeout", "connect", "error"})


@frozen
class ProbeSettings:
    """C{routing.reset-probe}."""

    enabled: bool = True
    after: float = 600.0
    interval: float = 300.0


@frozen
class Candidate:
    """
    One cooldown a probe could end: a (credential, model) or a
    (credential, quota group), cooling from C{since} until C{until}, with
    C{model} the upstream model a probe asks for.
    """

    cred_id: str
    target: str
    model: str
    until: float
    since: float


def running(state: ProbeState, now: float) -> bool:
    return state.running_since is not None and now - state.running_since < STALE_RESERVATION


def due(candidates: Iterable[Candidate], probes: Mapping[tuple[str, str], ProbeState], now: float,
        settings: ProbeSettings) -> list[Candidate]:
    """
    The probes to start now: for each credential with no probe running, its
    cooldown that holds longest, if that cooldown is longer than
    C{settings.after} in all, still has time to run, and was not probed (nor
    started) within C{settings.interval}.
    """
    if not settings.enabled:
        return []
    busy = {cred for (cred, _), st in probes.items() if running(st, now)}
    best: dict[str, Candidate] = {}
    for c in candidates:
        if c.cred_id in busy or c.until <= now or c.until - c.since <= settings.after:
            continue
        last = probes.get((c.cred_id, c.target))
        since = max(c.since, last.last_at) if last is not None and last.last_at is not None else c.since
        if now - since < settings.interval:
            continue
        held = best.get(c.cred_id)
        if held is None or c.until > held.until:
            best[c.cred_id] = c
    return sorted(best.values(), key=lambda c: (c.cred_id, c.target))


def probe_request(model: str) -> ClientRequest:
    """The cheapest request a model answers: one token, no reasoning."""
    return ClientRequest.of(C.Request(model, (C.Message("user", (C.Text("hi"),)),), max_tokens=1))


class ResetProber(ServiceTree):
    """
    Runs L{due} probes against the running generation's conductor
    (C{conductor()}, None before the first), one tick every L{TICK}
    seconds at most; stopping cancels the probes in flight.
    """

    name = "reset-probes"
    log = Logger()

    def __init__(self, conductor: Callable[[], Conductor | None], state: StateStore, clock: IReactorTime,
                 tick: float = TICK) -> None:
        super().__init__()
        self._conductor = conductor
        self._state = state
        self._clock = clock
        #: set at stop: a reservation answered afterwards sends nothing
        self._stopped = False
        self._in_flight: dict[str, Deferred[object]] = {}
        Periodic("reset-probe", tick, self.tick, clock).setServiceParent(self)

    def stopService(self) -> Deferred[None]:
        self._stopped = True
        for d in list(self._in_flight.values()):
            d.cancel()
        return super().stopService()

    def tick(self) -> None:
        conductor = self._conductor()
        if conductor is None:
            return
        settings = conductor.settings.reset_probe
        if not settings.enabled:
            return
        now = self._clock.seconds()
        candidates = conductor.probe_candidates(now)
        probes = {(c.cred_id, c.target): self._state.probe_state(c.cred_id, c.target) for c in candidates}
        for cred_id in self._in_flight:  # this process's own probes, whatever the store says
            probes[(cred_id, "*")] = ProbeState(running_since=now)
        for c in due(candidates, probes, now, settings):
            self._start(conductor, c, now)

    def _start(self, conductor: Conductor, c: Candidate, now: float) -> None:
        """
        Reserve the credential's probe in the StateStore first (with the
        Redis store: cluster-wide, so no two instances probe one credential
        at once), then send it; a reservation another holds skips it.
        """
        if conductor.credential(c.cred_id) is None:
            return
        name = f"probe:{c.cred_id}"
        reserving = self._state.reserve(name, STALE_RESERVATION, now)
        self._in_flight[c.cred_id] = reserving  # the slot is taken while the store answers

        def reserved(token: str | None) -> None:
            if self._in_flight.get(c.cred_id) is reserving:
                del self._in_flight[c.cred_id]
            if token is None:
                self._state.count_pacing("probes_held_elsewhere")
                return
            if self._stopped:
                self._state.unreserve(name, token)
                return
            self._send(conductor, c, self._clock.seconds(), name, token)

        def lost(f: Failure) -> None:
            if self._in_flight.get(c.cred_id) is reserving:
                del self._in_flight[c.cred_id]
            if not f.check(CancelledError):
                self.log.failure("probe reservation of {cred} broke", f, cred=c.cred_id)

        reserving.addCallbacks(reserved, lost)

    def _send(self, conductor: Conductor, c: Candidate, now: float, name: str, token: str) -> None:
        cred = conductor.credential(c.cred_id)
        if cred is None:
            self._state.unreserve(name, token)
            return
        old = self._state.probe_state(c.cred_id, c.target)
        self._state.set_probe_state(c.cred_id, c.target, evolve(old, running_since=now, sent=old.sent + 1))
        self._state.count_pacing("probes_sent")
        self.log.info("probing {provider} key {key_fp} ({target}, cooling {left:.0f}s more) with {model}",
                      provider=cred.provider, key_fp=cred.fingerprint, cred=cred.id, target=c.target,
                      left=c.until - now, model=c.model)
        d = Deferred.fromCoroutine(conductor.executor.execute(cred, probe_request(c.model), c.model))
        d.addTimeout(PROBE_TIMEOUT, self._clock)
        self._in_flight[c.cred_id] = d

        def done(result: object) -> None:
            self._in_flight.pop(c.cred_id, None)
            self._state.unreserve(name, token)
            at = self._clock.seconds()
            error = result.value if isinstance(result, Failure) else None
            if isinstance(error, CancelledError):
                # Stopped (or timed out): nothing was learned.
                st = self._state.probe_state(c.cred_id, c.target)
                self._state.set_probe_state(c.cred_id, c.target, evolve(st, running_since=None, last_at=at))
                return
            ok = error is None
            if error is not None and not isinstance(error, (UpstreamError, TimeoutError)):
                self.log.failure("probe of {key_fp} broke", result, key_fp=cred.fingerprint)
            status = error.status if isinstance(error, UpstreamError) else (None if not ok else 200)
            st = self._state.probe_state(c.cred_id, c.target)
            self._state.set_probe_state(c.cred_id, c.target, evolve(
                st, running_since=None, last_at=at, last_ok=ok, last_status=status or None,
                succeeded=st.succeeded + ok))
            self._state.count_pacing("probes_succeeded" if ok else "probes_failed")
            live = self._conductor()
            if live is None or live.credential(c.cred_id) is None:
                return  # the config changed under the probe
            live.settle_probe(c, error if isinstance(error, UpstreamError) else None, ok, at)
            if ok:
                self.log.info("probe of {provider} key {key_fp} answered: its cooldown ({target}) is over",
                              provider=cred.provider, key_fp=cred.fingerprint, cred=cred.id, target=c.target)

        d.addBoth(done)
