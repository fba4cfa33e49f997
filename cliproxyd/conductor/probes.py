"""
Reset probes (issue 16): a credential cooled for a long time is re-checked
cheaply instead of waited out.

A 429's reset time may be stale, a 5-hour or weekly window may end early,
an operator may reset the quota upstream: a cooldown of more than
C{routing.reset-probe.after-seconds} is probed every
C{interval-seconds}, off the request path, with the cheapest call that
shows whether the credential would answer a request again (L{call_for}):

- the provider's own usage endpoint where it has one (Claude and Codex
  accounts, Gemini CLI, Antigravity; L{cliproxyd.executors.quota}): its
  answer says whether the model's windows have quota again and when the
  spent one resets, and it costs no tokens;
- count_tokens for a Claude or Gemini API key cooled for something other
  than its quota (a revoked key, an unpaid bill, an upstream that was
  down): any counted answer shows the key works. A quota cooldown is not
  probed with a count: Anthropic and Gemini meter counting apart from
  generation, so a count's success would end a cooldown that still holds;
- otherwise a one-token request with reasoning off.

A usage endpoint that fails (it may not be served to every account, or be
limited itself) falls back to the one-token request in the same probe. At
most one probe runs per credential at a time, cluster-wide with the Redis
store (a reservation taken in Redis before the probe is sent). Quota back (or a success)
ends the cooldown and the quota group's automatic suspension, so traffic
returns to the higher tier at once (with its slow start); still exhausted
keeps the cooldown, with the reset time the usage endpoint (or the 429)
gave as its new hint. A usage reading's fractions feed headroom too.

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
from cliproxyd.executors.quota import QUOTA_CALLS, QuotaReading
from cliproxyd.formats.request import ClientRequest
from cliproxyd.replies import UpstreamError
from cliproxyd.service import Periodic, ServiceTree
from cliproxyd.state.records import ProbeState

if TYPE_CHECKING:
    from cliproxyd.conductor.conductor import Conductor
    from cliproxyd.credentials import Credential
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
    #: why it cools (a L{PROBED_REASONS} reason; a group's suspension is C{quota})
    reason: str = "quota"


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


#: The kinds whose count_tokens call goes upstream and proves the key works.
COUNTED_KINDS = frozenset({"claude-api-key", "gemini-api-key"})
#: The reasons a count's success ends (not quota: counting is metered apart).
COUNTED_REASONS = PROBED_REASONS - {"quota"}


def call_for(kind: str, reason: str) -> str:
    """The probe call for a credential of C{kind} cooling for C{reason}: C{usage}, C{count} or C{request}."""
    if kind in QUOTA_CALLS:
        return "usage"
    if kind in COUNTED_KINDS and reason in COUNTED_REASONS:
        return "count"
    return "request"


@frozen
class Outcome:
    """What a probe learned: C{ok} (quota back), the upstream error, the usage reading, the call made."""

    ok: bool
    error: UpstreamError | None = None
    reading: QuotaReading | None = None
    call: str = "request"


def probe_request(model: str) -> ClientRequest:
    """The cheapest request a model answers: one token, no reasoning."""
    return ClientRequest.of(C.Request(model, (C.Message("user", (C.Text("hi"),)),), max_tokens=1))


async def run_probe(executor: object, cred: Credential, c: Candidate, log: Logger) -> Outcome:
    """
    One probe of C{c}: the usage endpoint, count_tokens or a one-token
    request (L{call_for}); a usage endpoint that fails falls back to the
    request. Raises what the last call raised (L{UpstreamError} and the
    like), except that a usage reading saying "exhausted" is an outcome.
    """
    call = call_for(cred.kind, c.reason)
    if call == "usage":
        read = getattr(executor, "read_quota", None)
        pending = read(cred, c.model) if read is not None else None
        if pending is not None:
            try:
                reading = await pending
            except UpstreamError as e:
                log.info("usage endpoint of {provider} key {key_fp} failed ({why}); probing with a request",
                         provider=cred.provider, key_fp=cred.fingerprint, why=e.kind if not e.status else e.status)
            else:
                return Outcome(reading.available, reading=reading, call="usage")
        call = "request"
    if call == "count":
        await executor.count_tokens(cred, probe_request(c.model), c.model)  # type: ignore[attr-defined]
        return Outcome(True, call="count")
    await executor.execute(cred, probe_request(c.model), c.model)  # type: ignore[attr-defined]
    return Outcome(True, call="request")


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
        self.log.info("probing {provider} key {key_fp} ({target}, cooling {left:.0f}s more) for {model} by {call}",
                      provider=cred.provider, key_fp=cred.fingerprint, cred=cred.id, target=c.target,
                      left=c.until - now, model=c.model, call=call_for(cred.kind, c.reason))
        d = Deferred.fromCoroutine(run_probe(conductor.executor, cred, c, self.log))
        d.addTimeout(PROBE_TIMEOUT, self._clock)
        self._in_flight[c.cred_id] = d

        def done(result: Outcome | Failure) -> None:
            self._in_flight.pop(c.cred_id, None)
            self._state.unreserve(name, token)
            at = self._clock.seconds()
            error = result.value if isinstance(result, Failure) else None
            if isinstance(error, CancelledError):
                # Stopped (or timed out): nothing was learned.
                st = self._state.probe_state(c.cred_id, c.target)
                self._state.set_probe_state(c.cred_id, c.target, evolve(st, running_since=None, last_at=at))
                return
            if error is not None and not isinstance(error, (UpstreamError, TimeoutError)):
                self.log.failure("probe of {key_fp} broke", result, key_fp=cred.fingerprint)
            outcome = result if isinstance(result, Outcome) else Outcome(
                False, error if isinstance(error, UpstreamError) else None)
            ok = outcome.ok
            if outcome.error is not None:
                status = outcome.error.status or None
            else:
                status = 200 if ok or outcome.reading is not None else None
            st = self._state.probe_state(c.cred_id, c.target)
            self._state.set_probe_state(c.cred_id, c.target, evolve(
                st, running_since=None, last_at=at, last_ok=ok, last_status=status,
                succeeded=st.succeeded + ok))
            self._state.count_pacing("probes_succeeded" if ok else "probes_failed")
            if error is None:
                self._state.count_pacing(f"probes_by_{outcome.call}")
            live = self._conductor()
            if live is None or live.credential(c.cred_id) is None:
                return  # the config changed under the probe
            if outcome.reading is not None:
                live.note_quota(c.cred_id, outcome.reading, at)
            live.settle_probe(c, outcome.error, ok, at,
                              None if outcome.reading is None else outcome.reading.reset_at)
            if ok:
                self.log.info("probe of {provider} key {key_fp} ({call}) answered: its cooldown ({target}) is over",
                              provider=cred.provider, key_fp=cred.fingerprint, cred=cred.id, target=c.target,
                              call=outcome.call)

        d.addBoth(done)
