"""
The Conductor: run one request through picks, attempts, retries and rounds.

Policy lives in L{cliproxyd.conductor.policy} (pure), selection in
L{cliproxyd.conductor.scheduler}, state in the StateStore; this object
drives them:

    round:  pick a credential the request has not tried (tried += it)
            -> its execution models (the alias pool rotated, cooling members
               dropped); none left: skip it, it does not count as attempted
            -> attempted += it; stop the round at max-retry-credentials
            -> try each model: success answers; a request-invalid error
               answers at once; anything else moves on
    rounds: when a round fails, wait for the nearest cooldown if it ends
            within max-retry-interval and the credential has request-retry
            rounds left, then run another round; otherwise answer.

Every attempt's outcome goes through L{Conductor._settle}: the cooldown
table, the scheduler, counters, usage, observers and one log line.
"""

from __future__ import annotations

import math
from typing import Awaitable, Callable, Iterable

from attrs import frozen
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from cliproxyd.conductor.budget import RetryBudget, spent_by
from cliproxyd.conductor.headroom import reader_for
from cliproxyd.conductor.pacing import (
    HEADROOM_LOW,
    add_failure,
    admit,
    back_at,
    count_request,
    count_tokens,
    limit_until,
    pace_live,
    share,
)
from cliproxyd.conductor.policy import (
    TRANSIENT_COOLDOWN,
    apply_failure,
    apply_success,
    force_cooldown,
    is_request_invalid,
    retry_wait,
    transient_cooldown,
)
from cliproxyd.conductor.probes import PROBED_REASONS, Candidate, ProbeSettings
from cliproxyd.conductor.quota import QuotaGroup, group_for
from cliproxyd.conductor.scheduler import Pick, Scheduler
from cliproxyd.conductor.warmup import Warmups, WarmupSettings
from cliproxyd.config.model import Config
from cliproxyd.credentials import Credential, Route
from cliproxyd.replies import Executor, Outbound, Reply, StreamReply, UpstreamError
from cliproxyd.modelnames import parse_model
from cliproxyd.state import StateStore
from cliproxyd.state.records import GroupState, Headroom, ModelState, Pace
from cliproxyd.executors.quota import QUOTA_CALLS, QuotaReading


class UnknownModel(Exception):
    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model


class AllAttemptsFailed(Exception):
    """Every credential of the route failed; C{last} is the last upstream error."""

    def __init__(self, model: str, last: UpstreamError, attempts: int) -> None:
        super().__init__(model, last, attempts)
        self.model = model
        self.last = last
        self.attempts = attempts


class AllCooling(Exception):
    """Every credential that serves the model is cooling down (CLIProxyAPI's model_cooldown)."""

    def __init__(self, model: str, providers: tuple[str, ...], until: float | None, now: float) -> None:
        super().__init__(model, providers, until)
        self.model = model
        self.providers = providers
        # None: unknown, or never by itself (a manual quota-group suspension)
        self.reset_seconds = max(0.0, until - now) if until is not None and not math.isinf(until) else None


class RequestInvalid(Exception):
    """The upstream said the request itself is wrong; no other credential was tried."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error)
        self.error = error


@frozen
class RequestMeta:
    """
    Routing hints that travel with a request.

    @ivar pinned: a credential id the request must use and never leave.
    @ivar session: the request's session ids (L{cliproxyd.conductor.session.session_ids}),
        primary first; with session-affinity on, the request prefers the
        credential its session is bound to.
    """

    pinned: str | None = None
    session: tuple[str, ...] = ()
    #: the providers that may serve it (a client key's C{providers}); empty: any
    providers: frozenset[str] = frozenset()
    #: the request's retry budget (L{cliproxyd.conductor.budget}), spent as it goes
    budget: RetryBudget | None = None


NO_META = RequestMeta()


@frozen
class Attempt:
    """One attempt's outcome, as observers see it."""

    cred_id: str
    provider: str
    model: str
    ok: bool
    status: int | None
    error: str
    latency: float
    count: bool = False
    #: a streamed success's time until its first content could be relayed (C{latency} runs
    #: to its end); None otherwise (a JSON answer's first byte comes with its whole body)
    first_byte: float | None = None


class _RoundFailed(Exception):
    def __init__(self, last: UpstreamError | None, cooling: AllCooling | None, attempts: int,
                 budget_spent: bool = False) -> None:
        super().__init__(last, cooling)
        self.last = last
        self.cooling = cooling
        self.attempts = attempts
        #: the round ended because the request's retry budget allowed no more
        self.budget_spent = budget_spent


Call = Callable[[Credential, str], Awaitable[Reply | StreamReply]]


def _who(cred: Credential, model: str) -> dict[str, str]:
    """The log fields that name an attempt's credential (never its key)."""
    return {"cred": cred.id, "key": cred.fingerprint, "provider": cred.provider, "model": model}


@frozen
class ConductorSettings:
    """
    The config values a conductor routes by. L{from_config} is the one
    place a config key reaches the conductor.
    """

    strategy: str = "round-robin"
    max_retry_credentials: int = 0
    request_retry: int = 0
    max_retry_interval: float = 0
    disable_cooling: bool = False
    debug: bool = False
    warmup: WarmupSettings = WarmupSettings()
    #: transient-error-cooldown-seconds, worked out (None: transient failures do not cool)
    transient_cooldown: float | None = TRANSIENT_COOLDOWN
    session_affinity: bool = False
    session_ttl: float = 3600.0
    #: streaming.bootstrap-retries: reruns of a stream that failed before its first byte
    bootstrap_retries: int = 0
    #: routing.headroom: steer away from credentials their upstream says are nearly spent
    headroom: bool = True
    #: routing.slow-start-seconds: the ramp after a cooldown, and the failure penalty (0: neither)
    slow_start: float = 30.0
    #: routing.reset-probe (L{cliproxyd.conductor.probes})
    reset_probe: ProbeSettings = ProbeSettings()

    @classmethod
    def from_config(cls, config: Config) -> "ConductorSettings":
        w = config.routing.warmup
        return cls(
            strategy=config.routing.strategy,
            max_retry_credentials=config.max_retry_credentials,
            request_retry=config.request_retry,
            max_retry_interval=config.max_retry_interval,
            disable_cooling=config.disable_cooling,
            transient_cooldown=transient_cooldown(config.transient_error_cooldown_seconds),
            session_affinity=config.routing.session_affinity,
            session_ttl=config.routing.session_affinity_ttl,
            debug=config.debug,
            warmup=WarmupSettings(w.enabled, frozenset(w.providers), w.ttl, w.timeout),
            bootstrap_retries=config.streaming.bootstrap_retries,
            headroom=config.routing.headroom,
            slow_start=config.routing.slow_start_seconds,
            reset_probe=ProbeSettings(config.routing.reset_probe.enabled, config.routing.reset_probe.after_seconds,
                                      config.routing.reset_probe.interval_seconds),
        )


def _scoped_action(cred: Credential, error: UpstreamError) -> str | None:
    """The action of C{cred}'s request-scoped-errors rule that C{error} matches (its status, then its body)."""
    rules = cred.scoped_errors
    if not rules or not rules.has_status(error.status):
        return None
    body = error.body.decode("utf-8", "replace") if error.body else error.message
    return rules.action(error.status, body)


def bootstrap_eligible(error: UpstreamError) -> bool:
    """Whether a stream that failed so before its first byte is worth a bootstrap retry (CLIProxyAPI's list)."""
    status = error.status
    return status == 0 or status in (401, 402, 403, 408, 429) or status >= 500


#: Refreshes an OAuth account's token after a 401; fires with whether it did.
Unauthorized = Callable[[Credential], Awaitable[bool]]


class Conductor:
    """
    Runs requests for one generation of the config: its credentials, its
    executor, its settings. Everything it learns goes to the StateStore,
    which outlives generations.

    @param warmups: the process's warmup tracker, used when the settings
        enable warmups and the strategy is fill-first.
    @param on_unauthorized: asked to refresh an OAuth account after a 401.
    @param observers: called with every attempt's L{Attempt}.
    """

    log = Logger()

    def __init__(
        self,
        creds: tuple[Credential, ...],
        executor: Executor,
        state: StateStore,
        clock: IReactorTime,
        settings: ConductorSettings = ConductorSettings(),
        *,
        quota_groups: tuple[QuotaGroup, ...] = (),
        warmups: Warmups | None = None,
        on_unauthorized: Unauthorized | None = None,
        observers: Iterable[Callable[[Attempt], None]] = (),
    ) -> None:
        self.creds = creds
        self.settings = settings
        self.quota_groups = quota_groups
        self._executor = executor
        self._state = state
        self._clock = clock
        self._max_creds = settings.max_retry_credentials
        self._request_retry = settings.request_retry
        self._max_retry_interval = settings.max_retry_interval
        self._disable_cooling = settings.disable_cooling
        self._transient = settings.transient_cooldown
        self._sessions = settings.session_affinity
        self._session_ttl = settings.session_ttl
        self._debug = settings.debug
        fill_first = settings.strategy == "fill-first"
        self._warmups = warmups if warmups is not None and settings.warmup.enabled and fill_first else None
        self._on_unauthorized = on_unauthorized
        self._observers = tuple(observers)
        self.scheduler = Scheduler(creds, settings.strategy, state.next_cursor)
        self._providers: dict[str, tuple[str, ...]] = {}
        self._simple_waits: dict[str, bool] = {}
        owners: dict[str, str] = {}
        for name, routes in self.scheduler.routes.items():
            members = list(self.scheduler.members(name))
            self._providers[name] = tuple(dict.fromkeys(c.provider for c, _, _ in members))
            owners[name] = members[0][0].provider
            # Retry waits can come straight from the scheduler's heaps unless
            # pools or per-credential request-retry overrides are involved.
            self._simple_waits[name] = not any(r.pooled or c.request_retry is not None for c, r, _ in members)
        self._models = sorted(owners.items())
        # Quota groups: which group each (credential, model) belongs to, and
        # the scheduler slots a group's suspension covers.
        self._group_of: dict[tuple[str, str], QuotaGroup] = {}
        self._group_slots: dict[tuple[str, str], set[str]] = {}
        self._by_id = {c.id: c for c in creds}
        self._cred_groups: dict[str, set[str]] = {}
        # Pacing (issue 16), worked out here so a pick pays dict lookups only.
        self._limits = {c.id: c.limits for c in creds if c.limits}
        self._readers = {c.id: r for c in creds if (r := reader_for(c.kind))} if settings.headroom else {}
        self._slow_start = settings.slow_start
        # Headroom also comes from reset probes' usage readings (L{note_quota}).
        self._headroom = bool(self._readers) or (
            settings.headroom and settings.reset_probe.enabled and any(c.kind in QUOTA_CALLS for c in creds))
        self._pacing = self._headroom or self._slow_start > 0
        # state key -> the upstream model a reset probe asks for
        self._probe_models = {
            c.id: {**{r.state_key: r.upstream[0] for r in c.routes if not r.pooled},
                   **{m: m for r in c.routes if r.pooled for m in r.upstream}}
            for c in creds
        }
        if quota_groups:
            for cred in creds:
                for r in cred.routes:
                    for key in (r.upstream if r.pooled else (r.state_key,)):
                        names = (key,) if r.pooled else (key, *r.upstream)
                        group = next((g for n in names if (g := group_for(quota_groups, cred.provider, n))), None)
                        if group is None:
                            continue
                        self._group_of[(cred.id, key)] = group
                        self._cred_groups.setdefault(cred.id, set()).add(group.id)
                        if not r.pooled:
                            self._group_slots.setdefault((cred.id, group.id), set()).add(key)
                    if r.pooled and any((cred.id, m) in self._group_of for m in r.upstream):
                        self._simple_waits[r.name] = False
        self._sync_scheduler()

    def _sync_scheduler(self) -> None:
        """Put restored cooldowns and group suspensions into the scheduler."""
        now = self._clock.seconds()
        for cred in self.creds:
            for key in {r.state_key for r in cred.routes if not r.pooled}:
                self._refresh_slot(cred.id, key, now)

    def _group_until(self, cred_id: str, key: str, now: float) -> float | None:
        group = self._group_of.get((cred_id, key))
        if group is None:
            return None
        return self._state.group_state(cred_id, group.id).blocked_until(now)

    def _blocked_until(self, cred_id: str, key: str, now: float) -> float | None:
        """When (credential, model) is usable again: its own cooldown or its quota group's, the later."""
        state = self._state.model_state(cred_id, key)
        until = state.next_retry_at if state.blocked(now) else None
        group = self._group_until(cred_id, key, now)
        if group is not None and (until is None or group > until):
            until = group
        return until

    def _refresh_slot(self, cred_id: str, key: str, now: float) -> None:
        self.scheduler.set_blocked(cred_id, key, self._blocked_until(cred_id, key, now))

    def _refresh_group(self, cred_id: str, group_id: str, now: float) -> None:
        for key in self._group_slots.get((cred_id, group_id), ()):
            self._refresh_slot(cred_id, key, now)

    def state_changed(self, kind: str, cred_id: str, key: str) -> None:
        """
        Another instance changed shared state (C{state-store}): the
        scheduler follows a (credential, model) cooldown (C{kind}
        C{model_states}) or a (credential, group) suspension (C{group_states}).
        """
        now = self._clock.seconds()
        if kind == "model_states":
            self._refresh_slot(cred_id, key, now)
        elif kind == "group_states":
            self._refresh_group(cred_id, key, now)

    @property
    def executor(self) -> Executor:
        """What sends this conductor's requests (warmups send theirs through it too)."""
        return self._executor

    def models(self) -> list[tuple[str, str]]:
        """C{(model, owned_by)} for every model a client can ask for."""
        return self._models

    def providers(self, model: str) -> tuple[str, ...]:
        """The providers whose credentials serve C{model} (its thinking suffix ignored); none for an unknown one."""
        return self._providers.get(parse_model(model).base, ())

    # -- the three paths ----------------------------------------------------------

    async def execute(self, req: Outbound, meta: RequestMeta = NO_META) -> Reply | StreamReply:
        """
        Send C{req} (streamed or not) to the first credential that answers.

        @raise UnknownModel: no credential serves C{req.model}.
        @raise RequestInvalid: the upstream rejected the request itself.
        @raise AllCooling: every credential is cooling down.
        @raise AllAttemptsFailed: every credential failed.
        """

        def call(cred: Credential, upstream: str) -> Awaitable[Reply | StreamReply]:
            return self._executor.execute(cred, req, upstream)

        if meta.budget is not None:
            req.retry_budget = meta.budget  # type: ignore[attr-defined]

        if not req.stream or not self.settings.bootstrap_retries:
            return await self._run(req.model, meta, call, count=False)
        return await self._bootstrap(req.model, meta, call)

    async def _bootstrap(self, model: str, meta: RequestMeta, call: Call) -> Reply | StreamReply:
        """
        C{streaming.bootstrap-retries}: a stream whose every attempt failed
        before its first byte reached the client is run again from the
        start, up to that many times, while the failure is one another try
        may cure (L{bootstrap_eligible}). A rerun finds only the credentials
        that are not cooling; when none is left the first failure is
        answered if it was a server error (CLIProxyAPI's rule), else the
        cooldown.
        """
        first: AllAttemptsFailed | None = None
        for rerun in range(self.settings.bootstrap_retries + 1):
            try:
                return await self._run(model, meta, call, count=False)
            except AllAttemptsFailed as e:
                first = first or e
                if rerun == self.settings.bootstrap_retries or not bootstrap_eligible(e.last):
                    raise
            except AllCooling:
                if first is not None and first.last.status >= 500:
                    raise first from None
                raise
            self.log.info("stream for {model} failed before its first byte; bootstrap retry {n} of {of}",
                          model=model, n=rerun + 1, of=self.settings.bootstrap_retries)
        raise AssertionError("unreachable")

    async def count(self, req: Outbound, meta: RequestMeta = NO_META) -> Reply:
        """
        Count tokens with the same picking. A count the executor made
        locally (C{Reply.local}) is recorded but never clears a cooldown.
        """

        def call(cred: Credential, upstream: str) -> Awaitable[Reply]:
            return self._executor.count_tokens(cred, req, upstream)

        if meta.budget is not None:
            req.retry_budget = meta.budget  # type: ignore[attr-defined]

        return await self._run(req.model, meta, call, count=True)

    # -- rounds -------------------------------------------------------------------

    async def _run(self, model: str, meta: RequestMeta, call: Call, count: bool) -> Reply | StreamReply:
        name = parse_model(model)
        route = name.base
        if not self.scheduler.knows(route):
            raise UnknownModel(model)
        attempt = 0
        while True:
            try:
                return await self._round(route, name.suffix, meta, call, count)
            except _RoundFailed as failed:
                now = self._clock.seconds()
                wait = self._retry_wait(route, attempt, now)
                budget = meta.budget
                if wait is not None and budget is not None and not (
                        budget.allows(now) and budget.allows_wait(now, wait)):
                    wait = None  # no round the budget cannot pay for, or that would start too late
                    self._state.count_pacing("budget_stops")
                if wait is None:
                    if failed.last is None and failed.budget_spent:
                        raise AllAttemptsFailed(model, UpstreamError(
                            "timeout", "the request's retry budget is spent", status=504), 0) from None
                    if failed.last is None:
                        assert failed.cooling is not None
                        raise failed.cooling from None
                    raise AllAttemptsFailed(model, failed.last, failed.attempts) from None
                self.log.info(
                    "round {round} for {model} failed; next round in {wait:.3f}s",
                    round=attempt + 1,
                    model=model,
                    wait=wait,
                    decision="next round",
                )
                await deferLater(self._clock, wait)
                attempt += 1

    async def _round(self, route: str, suffix: str, meta: RequestMeta, call: Call, count: bool):
        # The session's binding keys for this route, when session-affinity is on.
        sessions = tuple(f"{route}|{sid}" for sid in meta.session) if self._sessions and not meta.pinned else ()
        # Credentials of providers the request may not use count as tried from the start.
        tried: set[str] = set() if not meta.providers else {
            c.id for c, _, _ in self.scheduler.members(route) if c.provider not in meta.providers}
        attempted: set[str] = set()
        limited: list[float] = []  # when each credential skipped at its local limit frees
        last: UpstreamError | None = None
        budget = meta.budget
        spent = False
        while not (self._max_creds and len(attempted) >= self._max_creds):
            now = self._clock.seconds()
            if budget is not None and not budget.allows(now):
                spent = True
                self._state.count_pacing("budget_stops")
                break
            pick = self._pick(route, meta, sessions, tried, now, limited)
            if pick is None:
                break
            cred = pick.cred
            if not tried and not count and not meta.pinned:
                self._maybe_warm(route, pick, now)
            tried.add(cred.id)
            models = self._execution_models(pick, now)
            if not models:
                continue  # every pool member is cooling: skipped, not attempted
            attempted.add(cred.id)
            for upstream in models:
                state_key = upstream if pick.route.pooled else pick.route.state_key
                started = self._clock.seconds()
                if budget is not None and not budget.allows(started):
                    break  # the round's next pick finds the budget spent
                if cred.id in self._limits and not count:
                    self._state.set_limit_window(cred.id, count_request(self._state.limit_window(cred.id), started))
                try:
                    result = await self._attempt(call, cred, f"{upstream}({suffix})" if suffix else upstream)
                except UpstreamError as e:
                    self._read_headroom(cred, e.headers)
                    if budget is not None:
                        # A proxy behind us says what it spent of what it was given.
                        budget.spend(spent_by(e.headers) if self._executor_forwards(cred) else 1)
                    action = _scoped_action(cred, e)
                    if action is None:
                        stop = is_request_invalid(e.status, e.detail)
                    else:
                        stop = action.startswith("stop")
                    self._settle(cred, state_key, upstream, started, e, count, "answer" if stop else "next", count,
                                 action)
                    if sessions and action != "stop" and action != "continue" and not (action is None and stop):
                        # The credential failed the session (not the request itself): forget the binding.
                        self._state.unbind_session(sessions, cred.id)
                    if stop:
                        raise RequestInvalid(e) from None
                    last = e
                    continue
                self._read_headroom(cred, result.headers)
                if budget is not None:
                    budget.spend(1)
                if cred.id in self._limits and self._limits[cred.id].tpm is not None:
                    self._count_tokens(cred, result)
                if isinstance(result, StreamReply):
                    self._settle_stream_later(cred, state_key, upstream, started, result)
                else:
                    self._settle(cred, state_key, upstream, started, None, count and result.local, "success")
                if sessions:
                    self._state.bind_session(sessions, cred.id, self._clock.seconds() + self._session_ttl)
                return result
        if spent:
            raise _RoundFailed(last, None, len(attempted), budget_spent=True)
        cooling = None
        if last is None:
            now = self._clock.seconds()
            until = self._earliest(route, now)
            if limited:
                # A local limit frees like a cooldown ends: the answer says the first.
                until = min(limited) if until is None else min(until, *limited)
            cooling = AllCooling(route, self._providers[route], until, now)
        raise _RoundFailed(last, cooling, len(attempted))

    async def _attempt(self, call: Call, cred: Credential, model: str) -> Reply | StreamReply:
        """One call; an OAuth account refused with a 401 gets its token refreshed and one more try."""
        try:
            return await call(cred, model)
        except UpstreamError as e:
            refresh = self._on_unauthorized
            if e.status != 401 or cred.account is None or refresh is None:
                raise
            if not await refresh(cred):
                raise
        self.log.info("{provider} account {key}: token refreshed after a 401; trying {model} again",
                      **_who(cred, model))
        return await call(cred, model)

    def _pick(self, route: str, meta: RequestMeta, sessions: tuple[str, ...], tried: set[str],
              now: float, limited: list[float]) -> Pick | None:
        if meta.pinned:
            # A pinned request never leaves its credential.
            pick = self.scheduler.pick_exactly(route, meta.pinned, tried, now)
            return None if pick is not None and self._at_limit(pick, tried, now, limited) else pick
        # A session's binding outranks priority while its credential is
        # available; a cooling or failed one is left for the usual pick (and
        # the session is bound to whichever answers).
        for key in sessions:
            cred_id = self._state.session(key, now)
            if cred_id is not None:
                pick = self.scheduler.pick_exactly(route, cred_id, tried, now)
                if pick is not None and not self._at_limit(pick, tried, now, limited):
                    return pick
        if not self._limits and not self._pacing:
            return self.scheduler.pick(route, tried, now)
        return self._paced_pick(route, tried, now, limited)

    @staticmethod
    def _executor_forwards(cred: Credential) -> bool:
        """Whether C{cred}'s upstream may be another proxy (it gets the retry budget)."""
        return cred.kind == "openai-compatibility"

    # -- pacing (issue 16) ------------------------------------------------------------

    def _at_limit(self, pick: Pick, tried: set[str], now: float, limited: list[float]) -> bool:
        """A credential at its local limit is skipped for the round, like a cooling one."""
        limits = self._limits.get(pick.cred.id)
        if limits is None:
            return False
        until = limit_until(self._state.limit_window(pick.cred.id), limits, now)
        if until is None:
            return False
        tried.add(pick.cred.id)
        limited.append(until)
        self._state.count_pacing("limit_skips")
        return True

    def _paced_pick(self, route: str, tried: set[str], now: float, limited: list[float]) -> Pick | None:
        """
        The scheduler's pick, with the local limits (hard: skipped) and the
        shares of L{cliproxyd.conductor.pacing} (soft: a credential below its
        share is passed over for the next one of the same priority, and
        taken when there is none, so traffic never leaves a tier for them).
        """
        passed: list[Pick] = []
        found = None
        while True:
            pick = self.scheduler.pick(route, tried, now)
            if pick is None:
                break
            if self._at_limit(pick, tried, now, limited):
                continue
            if passed and pick.cred.priority < passed[0].cred.priority:
                break  # the tier has no other: take the first passed over
            if self._admitted(pick.cred.id, now):
                found = pick
                break
            passed.append(pick)
            tried.add(pick.cred.id)
        for p in passed:
            tried.discard(p.cred.id)
        if found is None and passed:
            found = passed[0]
        if passed and found is not passed[0]:
            self._state.count_pacing("passed_over", len(passed))
        return found

    def _admitted(self, cred_id: str, now: float) -> bool:
        pace = self._state.pace(cred_id)
        headroom = self._state.headroom(cred_id) if self._headroom else None
        if pace is None and headroom is None:
            return True
        s = share(pace, headroom, now, self._slow_start)
        if s >= 1.0:
            if pace is not None and not pace_live(pace, now, self._slow_start):
                self._state.set_pace(cred_id, None)
            return True
        ok, credit = admit(pace.credit if pace is not None else 0.0, s)
        if pace is not None:
            self._state.set_pace(cred_id, Pace(pace.since, pace.penalty, pace.penalty_at, credit))
        return ok

    def _read_headroom(self, cred: Credential, headers: object) -> None:
        """What the answer's rate-limit headers say; only a nearly spent credential is remembered."""
        reader = self._readers.get(cred.id)
        if reader is None or headers is None:
            return
        now = self._clock.seconds()
        stored = self._state.headroom(cred.id) is not None
        # Without a stored reading only a low one matters (a healthy answer builds nothing).
        reading = reader(headers, now, HEADROOM_LOW, stored)
        if reading is None:
            return
        if reading.fraction < HEADROOM_LOW:
            self._state.set_headroom(cred.id, reading)
            self._state.count_pacing("headroom_low_readings")
        elif stored:
            self._state.set_headroom(cred.id, None)

    def _count_tokens(self, cred: Credential, result: Reply | StreamReply) -> None:
        """An answer's token usage, for C{tpm}: a whole one's now, a stream's when it ends (L{_count_stream})."""
        if isinstance(result, StreamReply):
            self._count_stream(cred, result)
            return
        data = getattr(result, "data", None)
        if not isinstance(data, dict):
            return
        usage = data.get("usage") or data.get("usageMetadata") or (data.get("response") or {}).get("usage")
        if not isinstance(usage, dict):
            return
        tokens = usage.get("total_tokens") or usage.get("totalTokenCount")
        if tokens is None:
            tokens = (usage.get("input_tokens") or 0) + (usage.get("output_tokens") or 0)
        if isinstance(tokens, int) and tokens > 0:
            now = self._clock.seconds()
            self._state.set_limit_window(cred.id, count_tokens(self._state.limit_window(cred.id), tokens, now))

    def _count_stream(self, cred: Credential, reply: StreamReply) -> None:
        """
        A stream's tokens, counted in the minute it ends: read once, from the
        final usage the relay kept the bytes of (nothing per chunk); a
        stream the client left reports nothing.
        """
        read = getattr(reply.relay, "usage_tokens", None)
        if read is None:
            return

        def ended(outcome: object) -> object:
            # Passed on as it came: the stream's settling reads it next.
            if not isinstance(outcome, Failure):
                tokens = read()
                if tokens:
                    now = self._clock.seconds()
                    self._state.set_limit_window(cred.id, count_tokens(self._state.limit_window(cred.id), tokens, now))
            return outcome

        reply.relay.ended.addBoth(ended)

    def _paced_failure(self, cred: Credential, back: float | None, now: float) -> None:
        """
        A failure adds to the penalty, unless cooling is off for the
        credential (the penalty is a softer cooldown); a cooldown sets where
        the ramp starts.
        """
        if self._slow_start <= 0:
            return
        cred_id = cred.id
        old = pace = self._state.pace(cred_id) or Pace()
        disable = self._disable_cooling if cred.disable_cooling is None else cred.disable_cooling
        if not disable:
            pace = add_failure(pace, now)
        if back is not None and not math.isinf(back):
            pace = back_at(pace, back)
        if pace != old:
            self._state.set_pace(cred_id, pace)

    # -- reset probes (issue 16; the prober is L{cliproxyd.conductor.probes.ResetProber}) --

    def probe_candidates(self, now: float) -> list[Candidate]:
        """Every cooldown and automatic group suspension a probe could end, with the model to probe."""
        out = []
        # The store holds states only where something is wrong: a tick costs
        # what is cooling, not what is configured (10,000 keys, a handful cooling).
        for cred_id, key, st in self._state.every_model_state():
            cred = self._by_id.get(cred_id)
            if cred is None or cred.disabled or not st.blocked(now) or st.reason not in PROBED_REASONS:
                continue
            upstream = self._probe_models.get(cred_id, {})
            if key in upstream:
                out.append(Candidate(cred_id, key, upstream[key], st.next_retry_at,
                                     now if st.updated_at is None else st.updated_at, st.reason))
        for cred_id, group_id, g in self._state.group_states():
            keys = self._group_slots.get((cred_id, group_id))
            if not keys or not g.auto_active(now) or g.manual:
                continue
            upstream = self._probe_models.get(cred_id, {})
            model = next((upstream[k] for k in sorted(keys) if k in upstream), None)
            if model is not None:
                out.append(Candidate(cred_id, f"group:{group_id}", model, g.auto_until,
                                         now if g.updated_at is None else g.updated_at))
        return out

    def settle_probe(self, c: Candidate, error: UpstreamError | None, ok: bool, now: float,
                     reset_at: float | None = None) -> None:
        """
        A probe's answer: a success ends the cooldown it probed (every
        model of the group, for a group) and the group's automatic
        suspension; a usage reading's reset time (C{reset_at}) or a 429's
        hint moves the cooldown to it; anything else leaves the cooldown as
        it is.
        """
        group_id = c.target.removeprefix("group:") if c.target.startswith("group:") else None
        keys = sorted(self._group_slots.get((c.cred_id, group_id), ())) if group_id else [c.target]
        if ok:
            for key in keys:
                if self._state.model_state(c.cred_id, key).blocked(now):
                    self.reset_cooldowns(c.cred_id, key)
            if group_id is not None:
                self.clear_auto(c.cred_id, [group_id])
            else:
                group = self._group_of.get((c.cred_id, c.target))
                if group is not None:
                    self.clear_auto(c.cred_id, [group.id])
            self.came_back(c.cred_id, now)
            return
        if reset_at is not None and reset_at > now:
            until = reset_at
        elif error is not None and error.status == 429 and error.retry_after is not None:
            until = now + error.retry_after
        else:
            return
        cred = self._by_id[c.cred_id]
        detail = error.detail[:500] if error is not None else "the usage endpoint reports the quota spent"
        for key in keys:
            old = self._state.model_state(c.cred_id, key)
            if old.blocked(now):
                self._state.set_model_state(c.cred_id, key, ModelState(
                    unavailable=True, next_retry_at=until, backoff_level=old.backoff_level, quota_exceeded=True,
                    reason="quota", last_status=429, last_error=detail, updated_at=old.updated_at))
                self._refresh_slot(c.cred_id, key, now)
        if group_id is not None:
            old_g = self._state.group_state(c.cred_id, group_id)
            self._state.set_group_state(c.cred_id, group_id, GroupState(
                auto_until=until, auto_reason=old_g.auto_reason, manual=old_g.manual,
                manual_reason=old_g.manual_reason, updated_by="reset-probe", updated_at=old_g.updated_at))
            self._refresh_group(c.cred_id, group_id, now)
        if self._slow_start > 0:
            self._state.set_pace(c.cred_id, back_at(self._state.pace(c.cred_id) or Pace(), until))
        self.log.info("probe of {provider} key {key_fp}: still limited, for {seconds:.0f}s more (its new hint)",
                      provider=cred.provider, key_fp=cred.fingerprint, cred=cred.id, seconds=until - now)

    def note_quota(self, cred_id: str, reading: QuotaReading, now: float) -> None:
        """
        A usage endpoint's reading, into headroom as an answer's headers
        would be: a nearly spent credential is remembered (until its reset),
        one with room again forgets an older low reading.
        """
        if not self._headroom or reading.fraction is None:
            return
        stored = self._state.headroom(cred_id) is not None
        if reading.fraction < HEADROOM_LOW:
            reset = reading.reset_at
            if reset is None or reset <= now:
                reset = None
            self._state.set_headroom(cred_id, Headroom(fraction=reading.fraction, reset_at=reset, read_at=now,
                                                       source=reading.source))
            self._state.count_pacing("headroom_low_readings")
        elif stored:
            self._state.set_headroom(cred_id, None)

    # -- what the management API shows ------------------------------------------------

    def pacing_counters(self) -> dict[str, object]:
        """The issue 16 counters, with the settings they run under."""
        counters = dict.fromkeys(("limit_skips", "passed_over", "headroom_low_readings", "probes_sent",
                                  "probes_succeeded", "probes_failed", "probes_by_usage", "probes_by_count",
                                  "probes_by_request", "budget_stops"), 0)
        counters.update(self._state.pacing_counters())
        return {**counters, "headroom": self._headroom, "slow_start_seconds": self._slow_start,
                "reset_probe": {"enabled": self.settings.reset_probe.enabled,
                                "after_seconds": self.settings.reset_probe.after,
                                "interval_seconds": self.settings.reset_probe.interval}}

    def pacing_status(self, cred: Credential, now: float) -> dict[str, object]:
        """One credential's limits and their use, its headroom, its share and its probes (only what it has)."""
        out: dict[str, object] = {}
        limits = self._limits.get(cred.id)
        if limits is not None:
            w = self._state.limit_window(cred.id)
            until = limit_until(w, limits, now)
            out["limits"] = {"rpm": limits.rpm, "tpm": limits.tpm, "rpd": limits.rpd,
                             "minute_requests": w.minute_requests, "minute_tokens": w.minute_tokens,
                             "day_requests": w.day_requests,
                             "limited_for_seconds": None if until is None else round(until - now, 3)}
        h = self._state.headroom(cred.id)
        if h is not None:
            out["headroom"] = {"fraction": h.fraction, "reset_at": h.reset_at, "source": h.source}
        pace = self._state.pace(cred.id)
        if pace is not None or h is not None:
            out["share"] = round(share(pace, h, now, self._slow_start), 3)
        probes = {t: st for t, st in ((k, self._state.probe_state(cred.id, k)) for k in self._probe_targets(cred.id))
                  if st.sent}
        if probes:
            out["probes"] = {t: {"sent": st.sent, "succeeded": st.succeeded, "running": st.running_since is not None,
                                 "last_at": st.last_at, "last_ok": st.last_ok, "last_status": st.last_status}
                             for t, st in sorted(probes.items())}
        return out

    def _probe_targets(self, cred_id: str) -> list[str]:
        groups = sorted(self._cred_groups.get(cred_id, ()))
        return [*self._probe_models.get(cred_id, {}), *(f"group:{g}" for g in groups)]

    def came_back(self, cred_id: str, now: float) -> None:
        """A cooldown ended early (a probe, a reset): the ramp starts now."""
        if self._slow_start > 0:
            pace = self._state.pace(cred_id) or Pace()
            self._state.set_pace(cred_id, Pace(now, pace.penalty, pace.penalty_at, 0.0))

    def _maybe_warm(self, route: str, primary: Pick, now: float) -> None:
        """Fill-first over several providers: warm the others' next credentials (never for counts or pins)."""
        warmups = self._warmups
        if warmups is None:
            return
        providers = self._providers[route]
        if len(providers) > 1:
            warmups.after_pick(self.settings.warmup, self.scheduler, self._executor, route, providers, primary, now)

    def _execution_models(self, pick: Pick, now: float) -> list[str]:
        route = pick.route
        if not route.pooled:
            return [route.upstream[0]]
        size = len(route.upstream)
        offset = self._state.next_pool_offset(f"{pick.cred.id}|{route.state_key}") % size
        rotated = route.upstream[offset:] + route.upstream[:offset]
        return [m for m in rotated if self._blocked_until(pick.cred.id, m, now) is None]

    # -- waits ----------------------------------------------------------------------

    def _cooling_until(self, cred: Credential, route: Route, until: float | None, now: float) -> float | None:
        if not route.pooled:
            return until
        times = [self._blocked_until(cred.id, m, now) for m in route.upstream]
        if any(t is None for t in times):
            return None
        return min(times)

    def _earliest(self, route: str, now: float) -> float | None:
        if self._simple_waits[route]:
            return self.scheduler.blocked_until(route)
        times = [
            t
            for cred, r, until in self.scheduler.members(route)
            if (t := self._cooling_until(cred, r, until, now)) is not None
        ]
        return min(times, default=None)

    def _retry_wait(self, route: str, attempt: int, now: float) -> float | None:
        if self._max_retry_interval <= 0:
            return None
        if self._simple_waits[route]:
            if attempt >= self._request_retry:
                return None
            until = self.scheduler.blocked_until(route)
            return retry_wait([] if until is None else [until - now], self._max_retry_interval)
        waits = []
        for cred, r, until in self.scheduler.members(route):
            retries = self._request_retry if cred.request_retry is None else cred.request_retry
            if attempt >= retries:
                continue
            t = self._cooling_until(cred, r, until, now)
            if t is not None:
                waits.append(t - now)
        return retry_wait(waits, self._max_retry_interval)

    # -- results --------------------------------------------------------------------

    def _settle(
        self,
        cred: Credential,
        state_key: str,
        upstream: str,
        started: float,
        error: UpstreamError | None,
        keep_cooldowns: bool,
        decision: str,
        count: bool = False,
        action: str | None = None,
        first_byte: float | None = None,
    ) -> None:
        """
        The one place an attempt's outcome lands. C{action} is the
        request-scoped-errors rule that matched C{error}, if one did:
        C{stop} and C{continue} leave the cooldown state alone, the
        C{*-and-cooldown} ones cool whatever disable-cooling says.
        """
        now = self._clock.seconds()
        old = self._state.model_state(cred.id, state_key)
        if error is None:
            status, message = 200, ""
            new = old if keep_cooldowns else apply_success(old, now)
        elif count and error.status == 404:
            # An upstream without a count endpoint says nothing about the model.
            status, message = 404, error.detail
            new = old
        elif action == "stop" or action == "continue":
            status, message = error.status, error.detail
            new = old
        else:
            status, message = error.status, error.detail
            disable = self._disable_cooling if cred.disable_cooling is None else cred.disable_cooling
            forced = action is not None
            new = apply_failure(old, now, error.status, message, error.retry_after, disable and not forced,
                                error.kind, error.protocol_fault, self._transient)
            if forced:
                new = force_cooldown(new, now)
        if new is not old:
            self._state.set_model_state(cred.id, state_key, new)
            self._refresh_slot(cred.id, state_key, now)
            if status == 429 and new.blocked(now):
                self._suspend_group(cred, state_key, new.next_retry_at, now)
        if error is not None and new is not old:
            self._paced_failure(cred, new.next_retry_at if new.blocked(now) else None, now)
        self._state.record(cred.id, state_key, now, status or None, message)
        latency = now - started
        attempt = Attempt(cred.id, cred.provider, state_key, error is None, status or None, message, latency,
                          first_byte=first_byte if error is None else None)
        for observer in self._observers:
            observer(attempt)
        if error is None and not self._debug:
            return
        self.log.emit(
            LogLevel.debug if error is None else LogLevel.warn,
            "{decision}: {provider} key {key} {model} -> {status} in {latency_ms} ms{why}",
            decision={"next": "next credential"}.get(decision, decision),
            status=status or (error.kind if error else 200),
            latency_ms=round(latency * 1000, 1),
            why=f" ({error.message})" if error else "",
            cooldown_until=new.next_retry_at if new.blocked(now) else None,
            upstream=upstream,
            scoped_rule=action,
            **_who(cred, state_key),
        )

    # -- quota groups ---------------------------------------------------------------

    def _suspend_group(self, cred: Credential, key: str, until: float, now: float) -> None:
        """A 429 on one model of a quota group: the whole group of this credential waits."""
        group = self._group_of.get((cred.id, key))
        if group is None:
            return
        old = self._state.group_state(cred.id, group.id)
        if old.auto_until is not None and old.auto_until >= until:
            return
        self._state.set_group_state(cred.id, group.id, GroupState(
            auto_until=until, auto_reason=f"quota exhausted on {key}", manual=old.manual,
            manual_reason=old.manual_reason, updated_by="cliproxyd", updated_at=now))
        self._refresh_group(cred.id, group.id, now)
        self.log.warn(
            "{provider} key {key_fp}: quota group {group} suspended for {seconds:.0f}s after a 429 on {model}",
            provider=cred.provider, key_fp=cred.fingerprint, cred=cred.id, group=group.id,
            seconds=until - now, model=key)

    @property
    def uses_quota_groups(self) -> bool:
        """Whether any credential has a model in a quota group."""
        return bool(self._group_of)

    def group(self, group_id: str) -> QuotaGroup | None:
        return next((g for g in self.quota_groups if g.id == group_id), None)

    def credential(self, cred_id: str) -> Credential | None:
        return self._by_id.get(cred_id)

    def set_manual(self, cred_id: str, group_id: str, suspended: bool, reason: str, updated_by: str) -> GroupState:
        now = self._clock.seconds()
        old = self._state.group_state(cred_id, group_id)
        new = GroupState(auto_until=old.auto_until, auto_reason=old.auto_reason, manual=suspended,
                         manual_reason=reason if suspended else "", updated_by=updated_by, updated_at=now)
        self._state.set_group_state(cred_id, group_id, new)
        self._refresh_group(cred_id, group_id, now)
        return new

    def clear_auto(self, cred_id: str, group_ids: list[str] | None = None) -> list[str]:
        """Clear automatic suspensions (manual ones stay); return the groups cleared."""
        now = self._clock.seconds()
        cleared = []
        for gid in group_ids if group_ids is not None else [g.id for g in self.quota_groups]:
            old = self._state.group_state(cred_id, gid)
            if old.auto_until is None:
                continue
            self._state.set_group_state(cred_id, gid, old.cleared_auto())
            self._refresh_group(cred_id, gid, now)
            cleared.append(gid)
        return cleared

    def reset_cooldowns(self, cred_id: str, model: str | None = None) -> list[str]:
        """Forget a credential's cooldowns (of one model, or all); returns the models that were cooling."""
        now = self._clock.seconds()
        states = self._state.model_states(cred_id)
        keys = [model] if model is not None else list(states)
        reset = []
        for key in keys:
            old = states.get(key)
            if old is None:
                continue
            if old.blocked(now):
                reset.append(key)
            self._state.set_model_state(cred_id, key, ModelState())
            self._refresh_slot(cred_id, key, now)
        return sorted(reset)

    def _settle_stream_later(
        self, cred: Credential, state_key: str, upstream: str, started: float, reply: StreamReply
    ) -> None:
        """
        A stream is judged when it ends: complete (success); broken off,
        ended before its final event, idle or ended by the upstream's error
        event (a failure of this credential); or by a client leaving
        (nothing).
        """
        first_byte = self._clock.seconds() - started

        def ended(error: UpstreamError | None) -> None:
            decision = "success" if error is None else "stream failed after it started"
            action = None if error is None else _scoped_action(cred, error)
            self._settle(cred, state_key, upstream, started, error, False, decision, action=action,
                         first_byte=first_byte)

        def left(failure):
            failure.trap(CancelledError)

        reply.relay.ended.addCallbacks(ended, left)
