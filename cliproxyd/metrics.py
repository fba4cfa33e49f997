"""
What ``GET /metrics`` shows, in Prometheus's text format (prometheus-client).

Two kinds of figures:

  - counted on the request path: client requests (route, client format,
    model, status), upstream attempts (provider, credential fingerprint,
    model, outcome) and three histograms (a stream's upstream time to first
    byte, upstream total time, cliproxyd's own overhead). Each label set's
    series is looked up once and kept, so a request costs a dict look-up and
    an increment per figure, never a label parse. A lone process counts in
    plain numbers (L{_Count}, L{_Buckets}): the reactor's thread is their only
    writer, so the lock each of prometheus-client's children takes per
    increment would be the most of what counting costs (2 % of a request's
    instructions; ours are under 1 %, docs/benchmarks.rst). prometheus-client
    still writes them out at scrape time (L{_Counted}), but for the attempts
    family, which has a series per credential tried (10,000 with a pool that
    size) and is written with its labels made once. In multiprocess mode
    every counted figure is prometheus-client's own, whose files are how the
    workers are summed.
  - read when Prometheus scrapes (L{Metrics.add_collector}): cooldowns and
    quota-group suspensions from the StateStore, the credentials served,
    token refreshes and warmups from their owners' counts, and the idle
    connections of the outbound pools. Nothing is kept for them between
    scrapes and the request path never touches them.

Worker processes: prometheus-client's multiprocess mode. When
C{PROMETHEUS_MULTIPROC_DIR} names a directory in the environment of every
process *before* prometheus-client is imported, each process's counted
figures go to files there and L{Metrics.render} sums the files of all
processes (L{multiprocess_dir}); the figures read at scrape time are those
of the process that answers the scrape (the StateStore it reads is the one
every worker shares, or its own). The process that starts workers clears the
directory at start and calls L{worker_exited} for each worker that ends.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

#: The content type of L{Metrics.render}'s text.
CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()

#: Upstream times (first byte, total): from a cached answer to a long generation.
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: cliproxyd's own time on a request: tens of microseconds to a few milliseconds.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

#: The upstream attempts family (one series per credential, model and outcome tried).
ATTEMPTS = "cliproxyd_upstream_attempts"
ATTEMPTS_HELP = "Upstream attempts, by provider, credential fingerprint, upstream model and outcome"
_ATTEMPTS_HEAD = (f"# HELP {ATTEMPTS}_total {ATTEMPTS_HELP}\n# TYPE {ATTEMPTS}_total counter\n").encode()


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _series(name: str, **labels: str) -> bytes:
    """A sample line's name and labels, written once for the life of the series."""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return f"{name}{{{inner}}}".encode()


class _Count:
    """A counter's series in a lone process: its labels (or its line's start, written once) and a count."""

    __slots__ = ("labels", "value")

    def __init__(self, labels: Any) -> None:
        self.labels = labels
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class _Buckets:
    """A histogram's series in a lone process: a count per bucket (the last one +Inf) and the sum."""

    __slots__ = ("labels", "bounds", "counts", "sum")

    def __init__(self, labels: tuple[str, ...], bounds: tuple[float, ...]) -> None:
        self.labels = labels
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value: Prometheus's "le"
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            total += n
            out.append((floatToGoString(bound), total))
        return out


class _Family:
    """A counted family of a lone process: its series by label values, written out by L{_Counted}."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...],
                 buckets: tuple[float, ...] | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.buckets = buckets
        self.series: list[Any] = []

    def labels(self, *values: str) -> Any:
        one = _Count(values) if self.buckets is None else _Buckets(values, self.buckets)
        self.series.append(one)
        return one

    def collect(self) -> Metric:
        if self.buckets is None:
            family: Any = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
            for one in self.series:
                family.add_metric(one.labels, one.value)
        else:
            family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
            for one in self.series:
                family.add_metric(one.labels, one.cumulative(), one.sum)
        return family


class _Counted:
    """The collector of a lone process's counted families."""

    def __init__(self, families: list[_Family]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return [f.collect() for f in self.families]


#: The model label of a request for a model no credential serves (a client may send any name).
OTHER_MODEL = "other"


def multiprocess_dir(environ: dict[str, str] | None = None) -> str:
    """The directory of multiprocess mode, or "" when this process counts alone."""
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    return environ.get("PROMETHEUS_MULTIPROC_DIR") or environ.get("prometheus_multiproc_dir") or ""


def worker_exited(pid: int, directory: str | None = None) -> None:
    """A worker process ended: its live gauges leave the sums (its counters stay, as they must)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory or multiprocess_dir() or None)


class _Scraped:
    """A collector that asks its functions for metric families when Prometheus scrapes."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Iterable[Metric]]] = []

    def collect(self) -> Iterable[Metric]:
        for source in self.sources:
            yield from source()


class Metrics:
    """
    The process's figures. C{request}, C{attempt} and C{overhead} are the
    request path's (cheap); C{add_collector} adds what is read at scrape
    time; C{render} is the answer to C{GET /metrics}.
    """

    def __init__(self, fingerprint: Callable[[str], str] = lambda cred_id: cred_id,
                 directory: str | None = None) -> None:
        """
        @param fingerprint: how a credential id is shown (its fingerprint,
            never its key); asked once per credential.
        @param directory: multiprocess mode's directory (L{multiprocess_dir} by default).
        """
        self.directory = multiprocess_dir() if directory is None else directory
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        shared = bool(self.directory)

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Any:
            return Counter(name, doc, labels, registry=r) if shared else _Family(name, doc, labels)

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Any:
            return (Histogram(name, doc, labels, buckets=buckets, registry=r) if shared
                    else _Family(name, doc, labels, buckets))

        self._requests = counter("cliproxyd_requests", "Client requests answered, by route, client format, "
                                 "model and status", ("route", "format", "model", "status"))
        # One series per credential that was tried: with 10,000 keys, prometheus-client's own
        # families and text cost a scrape half a second. A lone process writes their lines itself
        # (L{render}); in multiprocess mode the counter's files are what sums the workers.
        self._attempts = Counter(ATTEMPTS, ATTEMPTS_HELP, ("provider", "credential", "model", "outcome"),
                                 registry=r if shared else None)
        self._own_attempts: list[_Count] | None = None if shared else []
        self._first_byte = histogram("cliproxyd_upstream_first_byte_seconds",
                                     "Successful streamed attempts: time from sending until the first "
                                     "content could be relayed (a JSON answer's is its upstream_seconds)",
                                     ("provider",), UPSTREAM_BUCKETS)
        self._upstream = histogram("cliproxyd_upstream_seconds", "Time from sending an attempt until it "
                                   "ended (a stream's last byte), every attempt", ("provider",), UPSTREAM_BUCKETS)
        self._overhead = histogram("cliproxyd_overhead_seconds", "cliproxyd's own time on a request: "
                                   "the route's time without the wait for the upstream's answer, by "
                                   "passthrough or translation", ("path",), OVERHEAD_BUCKETS)
        if not shared:
            r.register(_Counted([self._requests, self._first_byte, self._upstream, self._overhead]))
        self._scraped = _Scraped()
        r.register(self._scraped)
        self._fingerprint = fingerprint
        self._request_children: dict[tuple[str, str, str, int], Any] = {}
        self._attempt_children: dict[tuple[str, str, int | None], tuple[Any, Any, Any]] = {}
        self._provider_children: dict[str, tuple[Any, Any]] = {}
        self._overhead_children = {True: self._overhead.labels("translated"),
                                   False: self._overhead.labels("passthrough")}

    # -- the request path ------------------------------------------------------------

    def request(self, route: str, fmt: str, model: str, status: int) -> None:
        """One client request answered (C{model}: as served, or L{OTHER_MODEL})."""
        key = (route, fmt, model, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self._requests.labels(route, fmt, model, str(status))
        child.inc()

    def overhead(self, seconds: float, translated: bool) -> None:
        self._overhead_children[translated].observe(seconds)

    def attempt(self, attempt: Any) -> None:
        """
        A conductor observer: one attempt's outcome (L{cliproxyd.conductor.conductor.Attempt}).
        The outcome label is C{success}, the upstream's status, or
        C{no_response} when none came (connect errors, timeouts).
        """
        key = (attempt.cred_id, attempt.model, None if attempt.ok else attempt.status)
        children = self._attempt_children.get(key)
        if children is None:
            outcome = "success" if attempt.ok else str(attempt.status) if attempt.status else "no_response"
            provider = attempt.provider
            timers = self._provider_children.get(provider)
            if timers is None:  # once per provider, not per credential (a pool may hold 10,000 keys)
                timers = self._provider_children[provider] = (self._upstream.labels(provider),
                                                              self._first_byte.labels(provider))
            children = self._attempt_children[key] = (
                self._attempt_counter(provider, self._fingerprint(attempt.cred_id), attempt.model, outcome),
                *timers,
            )
        counter, total, first = children
        counter.inc()
        latency = attempt.latency
        total.observe(latency)
        first_byte = getattr(attempt, "first_byte", None)
        if first_byte is not None:  # a stream's (a JSON answer's is its upstream_seconds)
            first.observe(first_byte)

    # -- scrape time -----------------------------------------------------------------

    def add_collector(self, source: Callable[[], Iterable[Metric]]) -> None:
        """C{source} yields metric families whenever Prometheus scrapes."""
        self._scraped.sources.append(source)

    def _attempt_counter(self, provider: str, credential: str, model: str, outcome: str) -> Any:
        if self._own_attempts is None:
            return self._attempts.labels(provider, credential, model, outcome)
        count = _Count(_series(ATTEMPTS + "_total", provider=provider, credential=credential, model=model,
                                      outcome=outcome))
        self._own_attempts.append(count)
        return count

    def render(self) -> bytes:
        """The text of C{GET /metrics}: every process's counted figures, and this one's scraped ones."""
        if self._own_attempts is not None:
            lines = [_ATTEMPTS_HEAD]
            lines.extend(b"%s %d\n" % (count.labels, count.value) for count in self._own_attempts)
            return generate_latest(self.registry) + b"".join(lines)
        from prometheus_client import multiprocess

        registry = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(registry, path=self.directory)
        registry.register(self._scraped)
        return generate_latest(registry)
