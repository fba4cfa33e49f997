"""
The management API at C{/v0/management}, following CLIProxyAPI's routes and
conventions so its tools and scripts keep working.

Off (every route 404) unless C{remote-management.secret-key} is set; who may
use it is L{ManagementAccess}'s decision, made once per request before any
route runs. Changes to config.yaml go through L{ConfigFile} (re-read,
comments kept, validated, written atomically keeping the mode, serialized)
and then a reload, so they are in effect when the answer is sent.
Credential files are written the same way, atomically and one at a time, in
C{auth-dir}.

The routes live in one resource a module, each a L{Resource} declaring its
routes with L{route} and reading the daemon through the shared L{Context}:

  - L{Status} (C{status}): C{/status}, C{/credentials}, C{/credentials/reset}, C{/usage}
  - L{QuotaGroups} (C{quota}): C{/quota-groups*}
  - L{Settings} (C{settings}): C{/config}, C{/config.yaml} and the scalar settings
  - L{Lists} (C{lists}): C{/api-keys} and the provider lists
  - L{AuthFiles} (C{authfiles}): C{/auth-files*}, C{/model-definitions/<channel>}
  - L{ApiCall} (C{apicall}): C{/api-call}
  - L{OAuthLogins} (C{logins}): C{/<provider>-auth-url}, C{/get-auth-status}, C{/oauth-callback}, C{/oauth-session}
  - L{Logs} (C{logs}): C{/logs}, C{/request-error-logs*}, C{/request-log-by-id/<id>}
  - L{OAuthMaps} (C{oauthmaps}): C{/oauth-excluded-models}, C{/oauth-model-alias}, C{/oauth-request-scoped-errors}
  - L{KeyUsage} (C{keyusage}): C{/api-key-usage}, C{/usage-queue}, C{/reset-quota}, C{/latest-version}
  - L{ClientKeys} (C{clientkeys}): C{/client-keys*}, the C{client-keys} entries and their usage

A CLIProxyAPI route none of them serves answers a 501 saying what cliproxyd
does instead (L{catalog}).

L{ManagementAPI} mounts them all on one router, so matching (and so every
404 and 405) works as for one app. Scalar and list settings share the route
C{/<name>}; a name no resource claims is a 404.

Conventions: scalar settings answer C{GET} with C{{"<name>": value}} and
take C{{"value": ...}} with C{PUT} or C{PATCH}; list settings take a JSON
array (or C{{"items": [...]}}) with C{PUT}, C{{"index"|"match"|"name": ...,
"value": {...}}} with C{PATCH} and C{?index=}, C{?api-key=}, C{?name=} or
C{?value=} with C{DELETE}. A bad body is a 400 naming what is wrong; a
change the config would not accept is a 400 naming the YAML path.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine

from klein import Klein
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from cliproxyd.config.edit import ConfigFile
from cliproxyd.config.model import RemoteManagement
from cliproxyd.credentials.authdir import InvalidName
from cliproxyd.management import catalog
from cliproxyd.management.access import ManagementAccess, Refused
from cliproxyd.management.apicall import ApiCall
from cliproxyd.management.authfiles import AuthFiles
from cliproxyd.management.clientkeys import ClientKeys
from cliproxyd.management.context import Context
from cliproxyd.management.http import Resource, respond, routes
from cliproxyd.management.keyusage import KeyUsage
from cliproxyd.management.lists import Lists
from cliproxyd.management.logins import OAuthLogins
from cliproxyd.management.logs import Logs
from cliproxyd.management.oauthmaps import OAuthMaps
from cliproxyd.management.quota import QuotaGroups
from cliproxyd.management.settings import Settings
from cliproxyd.management.status import Status
from cliproxyd.management.usage import Usage
from cliproxyd.management.usagequeue import UsageRecords
from cliproxyd.state import StateStore

#: The resources, in the order C{/<name>} asks them whether a name is theirs.
RESOURCES: tuple[type[Resource], ...] = (Status, QuotaGroups, Settings, Lists, AuthFiles, OAuthLogins,
                                          ApiCall, Logs, OAuthMaps, KeyUsage, ClientKeys)


class ManagementAPI:
    """
    The management API: C{app.resource()} is mounted at C{/v0/management}.
    Every route of L{RESOURCES} is on C{app}; each request is authorized
    once (L{ManagementAccess.check}) before its route runs.

    @ivar context: what the resources share, made from the arguments.
    @ivar resources: one of each of L{RESOURCES}, in that order.
    """

    app = Klein()
    log = Logger()

    def __init__(
        self,
        runtime: Any,
        state: StateStore,
        clock: IReactorTime,
        in_flight: Callable[[], int],
        *,
        config_file: ConfigFile | None = None,
        refresher: Any = None,
        usage: Usage | None = None,
        records: UsageRecords | None = None,
        warmups: Any = None,
        run_in_thread: Callable[..., Any] = deferToThread,
        recent: Any = None,
        client: Any = None,
        reactor: Any = None,
        oauth_providers: Any = None,
        management_password: str = "",
        log_files: Any = None,
        keys: Any = None,
        peers: Any = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """
        @param management_password: C{MANAGEMENT_PASSWORD} from the
            environment ("" when unset); see L{ManagementAccess}.
        @param runtime: the running generation (its C{current}, whose
            C{config.remote_management} says who may use this API) and
            reloads (its C{reload(reason)}): L{cliproxyd.runtime.Runtime}.
        @param peers: in a worker process, the other workers' counts; see L{Context}.
        @param on_change: after a config or auth-file write; see L{Context}.
        """
        self.context = Context(
            state=state,
            clock=clock,
            started=clock.seconds(),
            in_flight=in_flight,
            config_file=config_file,
            runtime=runtime,
            refresher=refresher,
            usage=usage,
            records=records if records is not None else UsageRecords(clock),
            warmups=warmups,
            run_in_thread=run_in_thread,
            recent=recent,
            client=client,
            reactor=reactor,
            oauth_providers=oauth_providers,
            log_files=log_files,
            keys=keys,
            peers=peers,
            on_change=on_change,
        )
        self.resources = tuple(kind(self.context) for kind in RESOURCES)
        # Off until a generation says otherwise; see _settings.
        self._settings = RemoteManagement()
        self.access = ManagementAccess("", False, clock, run_in_thread=run_in_thread,
                                       env_password=management_password)

    def close(self) -> None:
        """The daemon is stopping: let go of what the resources hold open (web logins: ports, timers)."""
        for resource in self.resources:
            close = getattr(resource, "close", None)
            if close is not None:
                close()

    @property
    def usage(self) -> Usage | None:
        """The usage counters C{/usage} shows."""
        return self.context.usage

    def _follow(self) -> None:
        """Take the running generation's C{remote-management} if a reload changed it (bans and verified keys survive)."""
        gen = self.context.generation()
        settings = gen.config.remote_management if gen is not None else None
        if settings is None or settings is self._settings:
            return
        self._settings = settings
        try:
            self.access.reconfigure(settings.secret_key, settings.allow_remote)
        except ValueError as e:
            self.log.error("management settings not applied: {error}", error=e)

    @property
    def enabled(self) -> bool:
        self._follow()
        return self.access.enabled

    def _authorize(self, request: IRequest):
        self._follow()
        if self.context.peers is not None:
            # Which worker answers (with --workers N): operators and tests can tell them apart.
            request.setHeader(b"x-cliproxyd-worker", b"%d" % self.context.peers.index)
        return maybeDeferred(self.access.check, request)

    @app.route("/<path:name>", methods=["GET", "PUT", "PATCH", "DELETE"])
    async def named(self, request: IRequest, name: str) -> bytes:
        """A setting: the resource whose L{Resource.names} has C{name} answers."""
        await self._authorize(request)
        for resource in self.resources:
            if name in resource.names:
                return await resource.named(request, name)
        raise catalog.refusal(request.method.decode(), "/" + name) or Refused(404, "not found")

    # -- errors ---------------------------------------------------------------------------

    @app.handle_errors(Refused)
    def _refused(self, request: IRequest, failure: Failure) -> bytes:
        e: Refused = failure.value
        if getattr(e, "retry_after", None):
            request.setHeader(b"retry-after", str(e.retry_after).encode())
        return respond(request, {"error": e.message}, e.status)

    @app.handle_errors(InvalidName)
    def _invalid_name(self, request: IRequest, failure: Failure) -> bytes:
        # A name the auth directory refused once a route had taken it (the state file's).
        return respond(request, {"error": str(failure.value)}, 400)

    @app.handle_errors(Exception)
    def _other(self, request: IRequest, failure: Failure) -> bytes:
        # Unknown routes: 404 whether or not the API is on, without saying more;
        # a CLIProxyAPI route cliproxyd does not serve says why, to a caller with the key.
        if failure.check(HTTPException):
            status = failure.value.code
            if status in (404, 405) and self.enabled:
                refused = catalog.refusal(request.method.decode(), _below_mount(request.path))
                if refused is not None:
                    return Deferred.fromCoroutine(self._explain(request, refused))
        else:
            status = 500
            self.log.failure("unhandled management error on {path}", failure, path=request.path)
        text = {404: "not found", 405: "method not allowed"}.get(status, "error")
        return respond(request, {"error": text}, status)


    async def _explain(self, request: IRequest, refused: Refused) -> bytes:
        """A CLIProxyAPI route cliproxyd does not serve: checked like any route, then why not."""
        try:
            await self._authorize(request)
        except Refused as e:
            refused = e
        return self._refused(request, Failure(refused))


#: Where the daemon mounts this API; the catalogue's paths are below it.
MOUNT = b"/v0/management"


def _below_mount(path: bytes) -> str:
    if path.startswith(MOUNT + b"/"):
        path = path[len(MOUNT):]
    return path.decode("utf-8", "replace")


def _serving(index: int, method: str) -> Callable[..., Coroutine[Any, Any, bytes]]:
    """The endpoint of a route of C{RESOURCES[index]}: the access check, then its C{method}."""

    async def serve(api: ManagementAPI, request: IRequest, **kw: Any) -> bytes:
        await api._authorize(request)
        return await getattr(api.resources[index], method)(request, **kw)

    return serve


def _mount() -> None:
    for index, kind in enumerate(RESOURCES):
        for method, r in routes(kind):
            endpoint = f"{kind.__name__}.{method}"
            ManagementAPI.app.route(r.path, methods=list(r.methods), endpoint=endpoint)(_serving(index, method))


_mount()
