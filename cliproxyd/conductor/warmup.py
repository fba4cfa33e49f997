"""
Fill-first warmup (CLIProxyAPI PR #2720, in its final reviewed form).

With fill-first routing over several providers, traffic sits on the first
provider until it fails; the others are cold, and their upstream rate-limit
windows only start when the failover happens. After the primary credential
is picked, this sends one tiny request to the next credential of each
allowlisted secondary provider, in the background, so those windows start
early. Rules the PR's reviews settled:

- one warmup in flight per provider, and a TTL per (provider, credential),
  checked before any work is started; TTL entries are pruned periodically;
- every warmup has its own timeout and is cancelled when the service stops;
- a non-2xx answer is a failed warmup and releases the TTL reservation;
- count requests and pinned requests never warm anything;
- warming never advances an alias-pool or routing cursor, and the thinking
  suffix is not sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from cliproxyd.replies import Executor, UpstreamError
from cliproxyd.formats import canonical as C
from cliproxyd.formats.request import ClientRequest
from cliproxyd.service import Periodic, ServiceTree

if TYPE_CHECKING:
    from cliproxyd.conductor.scheduler import Pick, Scheduler
    from cliproxyd.state import StateStore


#: How often expired TTL entries are dropped (the composition root uses the configured TTL).
PRUNE_INTERVAL = 60.0


@frozen
class WarmupSettings:
    """A generation's C{routing.warmup}: on or off, for which providers, how long a warmup holds."""

    enabled: bool = False
    providers: frozenset[str] = frozenset()
    ttl: float = 60.0
    timeout: float = 10.0


class Warmups(ServiceTree):
    """
    Sends and tracks warmups for every generation of the running config:
    one warmup in flight per provider, the TTL reservations, the counters.
    Each conductor hands over its own settings, scheduler and executor with
    every pick, so a warmup always goes through the generation that picked.
    Its child job prunes expired TTL entries; stopping cancels what is in
    flight.
    """

    name = "warmups"
    log = Logger()

    def __init__(self, state: "StateStore", clock: IReactorTime, prune_interval: float = PRUNE_INTERVAL) -> None:
        super().__init__()
        self._state = state
        self._clock = clock
        self._ttl: dict[tuple[str, str], float] = {}
        #: set at stop: a reservation answered afterwards sends nothing
        self._stopped = False
        self._in_flight: dict[str, Deferred[None]] = {}
        self.counts = {"sent": 0, "succeeded": 0, "failed": 0, "skipped_ttl": 0, "skipped_in_flight": 0,
                       "skipped_elsewhere": 0}
        Periodic("warmup-prune", prune_interval, self.prune, clock).setServiceParent(self)

    # -- service ------------------------------------------------------------------

    def stopService(self) -> "Deferred[None]":
        self._stopped = True
        for d in list(self._in_flight.values()):
            d.cancel()
        return super().stopService()

    def prune(self) -> None:
        """Drop TTL entries that have expired (the map never outgrows the credentials warmed in one TTL)."""
        now = self._clock.seconds()
        for key in [k for k, until in self._ttl.items() if until <= now]:
            del self._ttl[key]

    def status(self, settings: WarmupSettings) -> dict:
        """What the management API shows, under the running generation's C{settings}."""
        return {
            "enabled": settings.enabled,
            "providers": sorted(settings.providers),
            "in_flight": sorted(self._in_flight),
            "reserved": len(self._ttl),
            **self.counts,
        }

    # -- the hook -----------------------------------------------------------------

    def after_pick(self, settings: WarmupSettings, scheduler: "Scheduler", executor: Executor, route: str,
                   providers: tuple[str, ...], primary: "Pick", now: float) -> None:
        """
        Called by a conductor once the primary credential of an execute or
        stream request is picked, with its generation's settings, scheduler
        and executor.
        """
        for provider in providers:
            if provider == primary.cred.provider or provider not in settings.providers:
                continue
            if provider in self._in_flight:
                self.counts["skipped_in_flight"] += 1
                continue
            pick = scheduler.peek(route, provider, now)
            if pick is None:
                continue
            key = (provider, pick.cred.id)
            if self._ttl.get(key, 0.0) > now:
                self.counts["skipped_ttl"] += 1
                continue
            model = self._model(pick, now)
            if model is None:
                continue
            self._ttl[key] = now + settings.ttl
            self._reserve(executor, settings, provider, pick, model, key, now)

    def _reserve(self, executor: Executor, settings: WarmupSettings, provider: str, pick: "Pick", model: str,
                 key: tuple[str, str], now: float) -> None:
        """
        The TTL reservation in the StateStore too (with the Redis store:
        cluster-wide, so one instance warms a credential per TTL); held
        elsewhere, this instance skips it for the TTL as well.
        """
        name = f"warmup:{provider}:{pick.cred.id}"
        reserving = self._state.reserve(name, settings.ttl, now)
        self._in_flight[provider] = reserving  # one in flight per provider, from now

        def reserved(token: str | None) -> None:
            if self._in_flight.get(provider) is reserving:
                del self._in_flight[provider]
            if token is None:
                self.counts["skipped_elsewhere"] += 1
                return
            if self._stopped:
                self._state.unreserve(name, token)
                return
            self._start(executor, settings.timeout, provider, pick, model, key, (name, token))

        def lost(f: Failure) -> None:
            if self._in_flight.get(provider) is reserving:
                del self._in_flight[provider]
            self._ttl.pop(key, None)

        reserving.addCallbacks(reserved, lost)

    def _model(self, pick: "Pick", now: float) -> str | None:
        """The upstream model to warm, without touching the pool's rotation, and with no suffix."""
        for member in pick.route.upstream:
            state_key = member if pick.route.pooled else pick.route.state_key
            if not self._state.model_state(pick.cred.id, state_key).blocked(now):
                return member
        return None

    def _start(self, executor: Executor, timeout: float, provider: str, pick: "Pick", model: str,
               key: tuple[str, str], reservation: tuple[str, str]) -> None:
        req = ClientRequest.of(C.Request(model, (C.Message("user", (C.Text("hi"),)),), max_tokens=1))
        d = Deferred.fromCoroutine(executor.execute(pick.cred, req, model))
        d.addTimeout(timeout, self._clock)
        self._in_flight[provider] = d
        self.counts["sent"] += 1
        self.log.info(
            "warming {provider} key {key_fp} with {model}",
            provider=provider,
            key_fp=pick.cred.fingerprint,
            cred=pick.cred.id,
            model=model,
        )

        def done(result: object) -> None:
            self._in_flight.pop(provider, None)
            if isinstance(result, Failure):
                error = result.value
                self._ttl.pop(key, None)  # a failed warmup may be retried at once
                self._state.unreserve(*reservation)
                self.counts["failed"] += 1
                if not isinstance(error, CancelledError):
                    why = "timed out" if isinstance(error, TimeoutError) else str(error)
                    if not isinstance(error, (UpstreamError, TimeoutError)):
                        why = f"{type(error).__name__}: {error}"
                    self.log.warn("warmup of {provider} key {key_fp} failed: {why}",
                                  provider=provider, key_fp=pick.cred.fingerprint, why=why)
            else:
                self.counts["succeeded"] += 1

        d.addBoth(done)
