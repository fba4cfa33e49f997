"""
C{GET /metrics}: who may read it, and the figures read when Prometheus
scrapes (the counted ones are L{cliproxyd.metrics.Metrics}'s).

Read like the management API (its key, its loopback and allow-remote rules,
its bans) unless C{metrics.public} is true; not served at all when
C{metrics.enabled} is false. The figures read at scrape time cost nothing
between scrapes: cooldowns and quota-group suspensions come from the
StateStore, credentials from the running generation, token refreshes and
warmups from their owners' counts, idle connections from the outbound pools.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from cliproxyd.assembly import GenerationSource
from cliproxyd.management.access import Refused
from cliproxyd.management.http import respond
from cliproxyd.metrics import CONTENT_TYPE, Metrics
from cliproxyd.state import StateStore


class MetricsPage:
    """The answer to C{GET /metrics} (the frontend routes it here)."""

    def __init__(self, metrics: Metrics, source: GenerationSource, management: Any) -> None:
        """@param management: the L{cliproxyd.management.ManagementAPI} whose rules guard the page."""
        self._metrics = metrics
        self._source = source
        self._management = management

    async def answer(self, request: IRequest) -> bytes:
        settings = self._source.config().metrics
        if not settings.enabled:
            return respond(request, {"error": "not found"}, 404)
        if not settings.public:
            try:
                await self._management._authorize(request)
            except Refused as e:
                if e.retry_after:
                    request.setHeader(b"retry-after", str(e.retry_after).encode())
                return respond(request, {"error": e.message}, e.status)
        request.setHeader(b"content-type", CONTENT_TYPE)
        return self._metrics.render()


def state_figures(source: GenerationSource, state: StateStore, clock: IReactorTime) -> Callable[[], Iterable[Metric]]:
    """Credentials served, cooldowns and quota-group suspensions now, from the running generation and the store."""

    def collect() -> Iterable[Metric]:
        gen = source.current
        creds = gen.conductor.creds if gen is not None else ()
        now = clock.seconds()
        served = GaugeMetricFamily("cliproxyd_credentials", "Credentials in service, by provider", labels=("provider",))
        cooling = GaugeMetricFamily("cliproxyd_cooldowns", "Credentials cooling down now, by provider and model",
                                    labels=("provider", "model"))
        suspended = GaugeMetricFamily("cliproxyd_quota_group_suspensions", "Credentials whose quota group is "
                                      "suspended now, by provider and group", labels=("provider", "group"))
        by_provider: dict[str, int] = {}
        by_model: dict[tuple[str, str], int] = {}
        provider_of: dict[str, str] = {}
        for cred in creds:
            provider_of[cred.id] = cred.provider
            by_provider[cred.provider] = by_provider.get(cred.provider, 0) + 1
        for cred_id, model, st in state.every_model_state():
            provider = provider_of.get(cred_id)
            if provider is not None and st.blocked(now):
                by_model[(provider, model)] = by_model.get((provider, model), 0) + 1
        groups: dict[tuple[str, str], int] = {}
        for cred_id, group_id, st in state.group_states():
            provider = provider_of.get(cred_id)
            if provider is not None and st.blocked_until(now) is not None:
                groups[(provider, group_id)] = groups.get((provider, group_id), 0) + 1
        for provider, n in sorted(by_provider.items()):
            served.add_metric((provider,), n)
        for labels, n in sorted(by_model.items()):
            cooling.add_metric(labels, n)
        for labels, n in sorted(groups.items()):
            suspended.add_metric(labels, n)
        return (served, cooling, suspended)

    return collect


def work_figures(refresher: Any, warmups: Any) -> Callable[[], Iterable[Metric]]:
    """Token refreshes (by provider and outcome) and warmups (by outcome), as their owners count them."""

    def collect() -> Iterable[Metric]:
        refreshes = CounterMetricFamily("cliproxyd_token_refreshes", "OAuth token refreshes ended, by provider "
                                        "and outcome", labels=("provider", "outcome"))
        for labels, n in sorted(getattr(refresher, "counts", {}).items()):
            refreshes.add_metric(labels, n)
        warm = CounterMetricFamily("cliproxyd_warmups", "Fill-first warmups, by outcome (sent, succeeded, failed, "
                                   "skipped_in_flight, skipped_ttl)", labels=("outcome",))
        for outcome, n in sorted(getattr(warmups, "counts", {}).items()):
            warm.add_metric((outcome,), n)
        return (refreshes, warm)

    return collect


def pool_figures(pools: Callable[[], list[Any]]) -> Callable[[], Iterable[Metric]]:
    """Idle persistent connections the outbound pools keep (pool 0 is the direct one, then one per proxy)."""

    def collect() -> Iterable[Metric]:
        idle = GaugeMetricFamily("cliproxyd_pool_idle_connections", "Idle persistent upstream connections held "
                                 "by each outbound pool (0: direct, then one per proxy)", labels=("pool",))
        for i, pool in enumerate(pools()):
            idle.add_metric((str(i),), sum(len(c) for c in getattr(pool, "_connections", {}).values()))
        return (idle,)

    return collect
