"""
What the management resources share: the daemon's parts they read and
change, given once to L{ManagementAPI} and handed to every resource, so a
new route needs no new constructor argument.

The running conductor and generation are read only through
L{Context.conductor} and L{Context.generation}, and reloads asked for only
through L{Context.reload}: where they come from is this module's business.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import yaml
from attrs import frozen
from twisted.internet.interfaces import IReactorTime

from cliproxyd.config import ConfigError, parse_config
from cliproxyd.config.edit import ConfigFile
from cliproxyd.management.access import Refused, RunInThread

if TYPE_CHECKING:
    from cliproxyd.assembly import Generation
    from cliproxyd.conductor.conductor import Conductor
    from cliproxyd.management.usagequeue import UsageRecords
    from cliproxyd.management.usage import Usage
    from cliproxyd.state import StateStore


@frozen(kw_only=True)
class Context:
    """
    @ivar state: the routing state: counters, cooldowns, quota-group states.
    @ivar clock: the time.
    @ivar started: when the API was made (C{clock.seconds()}), for the uptime.
    @ivar in_flight: how many client requests are being served.
    @ivar config_file: the config file the changes go to; C{None} (C{--demo}) refuses them.
    @ivar runtime: the source of the running L{Generation} (its C{current})
        and of reloads (its C{reload(reason)}, a Deferred); C{None} when
        nothing reloads.
    @ivar refresher: the OAuth token refresher, for the state of each
        account's refresh; C{None} without one.
    @ivar usage: the usage counters; C{None} without them.
    @ivar records: the usage queue and the totals per credential (CLIProxyAPI's usage routes).
    @ivar warmups: the warmup tracker (L{cliproxyd.conductor.warmup.Warmups}); C{None} without one.
    @ivar run_in_thread: where blocking file work runs (L{deferToThread} in the daemon).
    @ivar recent: each credential's recent requests
        (L{cliproxyd.management.recent.RecentRequests}); C{None} without them.
    @ivar client: the shared outbound HTTP client (treq's C{HTTPClient}), for
        C{/api-call} and the web logins' token exchanges; C{None} without one.
    @ivar reactor: listens on the providers' local callback ports for web
        logins (C{listenTCP}); C{None} (tests) takes callbacks only through
        C{/oauth-callback}.
    @ivar oauth_providers: the OAuth providers web logins use, by type
        (L{cliproxyd.credentials.providers.PROVIDERS} by default; tests
        point them at L{cliproxyd.testing.authserver.SimulatedAuthServer}).
    @ivar log_files: the log directory and main.log (L{cliproxyd.management.logs.LogFiles}); C{None} without one.
    @ivar keys: the client keys' meter (L{cliproxyd.conductor.keylimits.KeyMeter}); C{None} without one.
    @ivar peers: in a worker process, the other workers' counts
        (L{cliproxyd.workers.peers.PeerCounts}: its C{machine()} and C{index});
        C{None} in a daemon of its own.
    @ivar on_change: after a write and its reload, tells the other
        processes serving this config to reload too (a worker signals its
        parent); C{None} when there are none.
    """

    state: StateStore
    clock: IReactorTime
    started: float
    in_flight: Callable[[], int]
    config_file: ConfigFile | None = None
    runtime: Any = None
    refresher: Any = None
    usage: Usage | None = None
    records: UsageRecords
    warmups: Any = None
    run_in_thread: RunInThread
    recent: Any = None
    client: Any = None
    reactor: Any = None
    oauth_providers: Any = None
    log_files: Any = None
    keys: Any = None
    peers: Any = None
    on_change: Callable[[], None] | None = None

    # -- the running daemon ---------------------------------------------------------------

    def conductor(self) -> Conductor:
        """The conductor serving new requests now."""
        return self.runtime.current.conductor

    def warmup_status(self) -> dict[str, Any]:
        """The warmup counters under the running generation's settings (C{{"enabled": false}} when off)."""
        settings = self.conductor().settings.warmup
        if self.warmups is None or not settings.enabled:
            return {"enabled": False}
        return self.warmups.status(settings)

    def generation(self) -> Generation | None:
        """The running generation (config, accounts, credentials, conductor, problems), if there is one."""
        return self.runtime.current if self.runtime is not None else None

    async def reload(self) -> None:
        """Apply what was written: the running generation is the new one when this returns."""
        if self.runtime is not None:
            await self.runtime.reload("management API")
        if self.on_change is not None:
            self.on_change()

    # -- the config file ------------------------------------------------------------------

    def config(self) -> ConfigFile:
        """The config file, or a 409 for a daemon that runs without one."""
        if self.config_file is None:
            raise Refused(409, "this daemon runs without a config file (--demo): nothing to change")
        return self.config_file

    async def read_yaml(self) -> dict[str, Any]:
        """The config file's top-level mapping as it is now (empty for an empty file)."""
        raw = await self.config().read()
        data = yaml.safe_load(raw) if raw else {}
        return data if isinstance(data, dict) else {}

    async def edit(self, mutate: Callable[[Any], Any], tolerate: Callable[[str], bool] | None = None) -> Any:
        """
        Change the config file with C{mutate} (see L{ConfigFile.edit}), then
        reload so the change is in effect before the answer; a change the
        config would not accept, that C{mutate} refuses, or that adds a key
        the config does not know (a typo, kept and ignored otherwise) is a
        400, and nothing is written.

        @param tolerate: says which such keys (by YAML path) to write all
            the same: fields CLIProxyAPI knows that cliproxyd does not act on,
            which its tools send back as they read them.
        @return: what C{mutate} returned.
        """
        try:
            _, result = await self.config().edit(lambda doc: _known_keys_only(doc, mutate, tolerate))
        except ConfigError as e:
            raise Refused(400, f"the config would not load: {e}") from None
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise Refused(400, str(e).strip("'\"")) from None
        await self.reload()
        return result


_UNKNOWN = ": unknown key; ignored"


def _unknown_keys(doc: Any) -> set[str]:
    """The YAML paths of the keys in C{doc} the config does not know; none for a document that does not load."""
    try:
        _, warnings = parse_config(doc)
    except ConfigError:
        return set()
    return {w.removesuffix(_UNKNOWN) for w in warnings if w.endswith(_UNKNOWN)}


def _known_keys_only(doc: Any, mutate: Callable[[Any], Any],
                     tolerate: Callable[[str], bool] | None = None) -> Any:
    """
    C{mutate(doc)}, refused if it adds a key the config does not know (those
    already there stay, and those C{tolerate} accepts).
    """
    before = _unknown_keys(doc)
    result = mutate(doc)
    added = sorted(k for k in _unknown_keys(doc) - before if tolerate is None or not tolerate(k))
    if added:
        raise Refused(400, f"{added[0]}: unknown key")
    return result
