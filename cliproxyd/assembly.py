"""
How a config becomes a running generation: the one factory.

A L{Generation} is everything one config and one look at the auth
directory make: credentials, their executors, the conductor that routes
over them, its settings and quota groups. L{Assembly.build} makes one,
through constructors only; the composition root (L{cliproxyd.tap}), every
reload (L{cliproxyd.runtime}) and the tests all use it, so what runs in
production is what the tests run.

The parts that outlive generations (the HTTP client, the clock, the
StateStore, the warmup tracker, the token refresher, the usage counters)
are handed to the L{Assembly} once; each generation's conductor is wired to
them when it is built. To carry a new config key to the object that uses
it, change that object's settings' C{from_config} (for the conductor,
L{ConductorSettings.from_config}); nothing else needs to know.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from attrs import Factory, field, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cliproxyd.conductor.conductor import Attempt, Conductor, ConductorSettings, Unauthorized
from cliproxyd.conductor.quota import DEFAULT_GROUPS, QuotaGroup, compile_groups
from cliproxyd.conductor.warmup import Warmups
from cliproxyd.config.model import Config
from cliproxyd.credentials import Credential, credentials_from_config
from cliproxyd.credentials.authfiles import AuthDirScan, OAuthAccount, oauth_credentials
from cliproxyd.credentials.refresh import SaveFn
from cliproxyd.executors import Executors
from cliproxyd.executors.dispatch import alternate_kinds
from cliproxyd.executors.upstreams import WireSettings
from cliproxyd.formats.request import COMPACT
from cliproxyd.replies import Executor
from cliproxyd.state import StateStore

log = Logger(namespace="cliproxyd.assembly")


@frozen
class Generation:
    """One config's worth of running parts. Immutable: a change builds a new one."""

    config: Config
    #: auth file name -> its account, for the files in use
    accounts: dict[str, OAuthAccount]
    creds: tuple[Credential, ...]
    conductor: Conductor
    #: auth file name -> why it is not in use
    problems: dict[str, str] = field(factory=dict)
    #: the largest client request body, in bytes (C{max-body-mb}): read per request, so worked out here
    max_body: int = field(init=False, default=Factory(lambda g: int(g.config.max_body_mb * (1 << 20)),
                                                     takes_self=True))


def providers_serving(config: Config, creds: Iterable[Credential], alt: str) -> frozenset[str]:
    """
    The providers that serve the client endpoint C{alt} (C{"responses/compact"}):
    those with a credential whose executor serves it, and for compaction the
    C{openai-compatibility} providers with C{responses-compact: true}.
    """
    kinds = alternate_kinds(alt)
    serving = {c.provider for c in creds if c.kind in kinds}
    if alt == COMPACT:
        serving.update(p.name for p in config.openai_compatibility if p.responses_compact)
    return frozenset(serving)


#: What L{GenerationSource.config} gives before the first generation.
_DEFAULTS = Config()


class GenerationSource:
    """
    Where the running generation is read: C{current}, None until the first
    one is built. Made first and handed to every consumer (the frontend,
    the management API, the refresher); the L{cliproxyd.runtime.Runtime}
    is its only writer.
    """

    def __init__(self) -> None:
        self.current: Generation | None = None

    def config(self) -> Config:
        """The running generation's config; the defaults until the first is built."""
        gen = self.current
        return gen.config if gen is not None else _DEFAULTS


def quota_groups(config: Config) -> tuple[QuotaGroup, ...]:
    """The config's C{oauth-quota-groups}, or the default groups when the key is absent."""
    return compile_groups(DEFAULT_GROUPS if config.oauth_quota_groups is None else config.oauth_quota_groups)


class Assembly:
    """
    Builds generations over the parts that outlive them.

    @param metric_observers: observers of attempts for the metrics, given
        only to the conductors of configs with C{metrics.enabled}.
    @param wrap_executor: given each generation's real L{Executors},
        returns what the conductor sends through (tests put a double or a
        recorder there; production leaves it out).
    """

    def __init__(
        self,
        client: Any,
        clock: IReactorTime,
        state: StateStore,
        *,
        warmups: Warmups | None = None,
        on_unauthorized: Unauthorized | None = None,
        observers: Iterable[Callable[[Attempt], None]] = (),
        metric_observers: Iterable[Callable[[Attempt], None]] = (),
        wrap_executor: Callable[[Executor], Executor] | None = None,
        save_account: SaveFn | None = None,
    ) -> None:
        self.client = client
        self.clock = clock
        self.state = state
        self.warmups = warmups
        self._on_unauthorized = on_unauthorized
        self._observers = tuple(observers)
        self._metric_observers = tuple(metric_observers)
        self._wrap_executor = wrap_executor
        self._save_account = save_account

    def build(self, config: Config, scan: AuthDirScan | None = None) -> Generation:
        """A whole generation from C{config} and the accounts of C{scan} (none by default)."""
        scan = scan if scan is not None else AuthDirScan()
        oauth, unusable = oauth_credentials(scan.accounts, config)
        creds = credentials_from_config(config) + oauth
        settings = ConductorSettings.from_config(config)
        if settings.warmup.enabled and settings.strategy != "fill-first":
            log.warn("routing.warmup is enabled but routing.strategy is not fill-first: no warmups will be sent")
        executor: Executor = Executors(self.client, self.clock, config.timeouts, creds,
                                         WireSettings.from_config(config), self._save_account)
        if self._wrap_executor is not None:
            executor = self._wrap_executor(executor)
        conductor = Conductor(
            creds,
            executor,
            self.state,
            self.clock,
            settings,
            quota_groups=quota_groups(config),
            warmups=self.warmups,
            on_unauthorized=self._on_unauthorized,
            observers=self._observers + (self._metric_observers if config.metrics.enabled else ()),
        )
        accounts = {name: a for name, a in scan.accounts.items() if name not in unusable}
        return Generation(config, accounts, creds, conductor, {**scan.problems, **unusable})
