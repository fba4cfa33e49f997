"""
The Conductor: run one request through the targets of its route.

This is the walking skeleton's conductor: round-robin (or fill-first) over
every credential that serves the model, moving on to the next one when an
attempt fails before anything reached the client. Cooldowns and retry
rounds build on this in the conductor issue.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cliproxyd.conductor.selection import Target, attempt_order, build_routes
from cliproxyd.credentials import Credential
from cliproxyd.executors.base import Executor, Reply, StreamReply, UpstreamError
from cliproxyd.formats.openai_chat import ChatRequest
from cliproxyd.state import StateStore


class UnknownModel(Exception):
    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model


class AllAttemptsFailed(Exception):
    """Every target of the route failed; C{last} is the last upstream error."""

    def __init__(self, model: str, last: UpstreamError, attempts: int) -> None:
        super().__init__(model, last, attempts)
        self.model = model
        self.last = last
        self.attempts = attempts


def _who(target: Target) -> dict[str, str]:
    """The log fields that name an attempt's credential (never its key)."""
    cred = target.cred
    return {"cred": cred.id, "key": cred.fingerprint, "provider": cred.provider, "model": target.upstream_model}


class Conductor:
    log = Logger()

    def __init__(
        self,
        creds: tuple[Credential, ...],
        executor: Executor,
        state: StateStore,
        clock: IReactorTime,
        strategy: str = "round-robin",
        max_retry_credentials: int = 0,
        debug: bool = False,
    ) -> None:
        self.creds = creds
        self._executor = executor
        self._state = state
        self._clock = clock
        self._strategy = strategy
        self._max_creds = max_retry_credentials
        self._debug = debug
        self._routes = build_routes(creds)
        owners: dict[str, str] = {}
        for cred in creds:
            for route, _ in cred.models:
                owners.setdefault(route, cred.provider)
        self._models = sorted(owners.items())

    def models(self) -> list[tuple[str, str]]:
        """C{(model, owned_by)} for every model a client can ask for."""
        return self._models

    def order(self, model: str) -> list[Target]:
        tiers = self._routes.get(model)
        if not tiers:
            raise UnknownModel(model)
        cursor = self._state.next_cursor(model) if self._strategy == "round-robin" else 0
        return attempt_order(tiers, self._strategy, cursor)

    async def execute(self, req: ChatRequest) -> Reply | StreamReply:
        """
        Send C{req} to the first target that answers.

        @raise UnknownModel: no credential serves C{req.model}.
        @raise UpstreamError: the request itself was invalid (not retried).
        @raise AllAttemptsFailed: every target failed.
        """
        last: UpstreamError | None = None
        attempted: set[str] = set()
        bodies: dict[str, bytes] = {}
        for target in self.order(req.model):
            cred = target.cred
            if cred.id not in attempted:
                if self._max_creds and len(attempted) >= self._max_creds:
                    break
                attempted.add(cred.id)
            body = bodies.get(target.upstream_model)
            if body is None:
                body = bodies[target.upstream_model] = req.body_for(target.upstream_model)
            try:
                result = await self._executor.execute(cred, body, req.stream)
            except UpstreamError as e:
                self._state.record(cred.id, self._clock.seconds(), e.status or None, str(e))
                if e.request_invalid:
                    raise
                last = e
                self.log.warn(
                    "{provider} key {key} failed for {model} ({kind} {status}): {error}; trying the next credential",
                    kind=e.kind,
                    status=e.status,
                    error=e.message,
                    **_who(target),
                )
                continue
            self._state.record(cred.id, self._clock.seconds(), result.status)
            if self._debug:
                self.log.debug(
                    "{model} answered by {provider} key {key} ({status}, attempt {attempt})",
                    status=result.status,
                    attempt=len(attempted),
                    **_who(target),
                )
            return result
        assert last is not None
        raise AllAttemptsFailed(req.model, last, len(attempted))
