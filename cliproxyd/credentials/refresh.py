"""
Keeping OAuth access tokens fresh, in the background.

A L{Refresher} looks at every account of the running generation once a
minute (its L{check}, run by the C{token-refresh} job on the injected
clock). An account is due when its access token expires within its
provider's lead time (or half the token's life, if that is shorter) (or, with no expiry known, when the lead time has passed
since its last refresh). A due account is marked pending for a minute, so the
next ticks leave it alone, and refreshed under a semaphore of 16; a failure
holds it off for five minutes. The new tokens are written back to the
account's file atomically, keeping its mode, and used by the very next
request.

A 401 from upstream asks for a refresh now (L{Refresher.refresh_now}):
requests that meet the same expired token share one refresh, and an account
whose refresh just failed is not asked again until its back-off ends.

With a shared state store (C{state-store: redis://...}), refreshes are
coordinated across every instance on it (L{ClusterTokens}): an instance
takes the account's lock before it refreshes; the one that wins reads the
tokens last published first (another instance may have refreshed a moment
ago: then it adopts those instead of spending the refresh token again),
refreshes, writes the file, publishes the new tokens and releases the lock.
An instance that finds the lock held waits for the published tokens and
adopts them; every instance adopts published tokens as they arrive. So an
account is refreshed once per expiry and a rotated refresh token is never
sent twice. With Redis unreachable an instance refreshes on its own (an
account left to expire serves no one); with no shared store nothing of
this applies.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from attrs import define
from twisted.internet.defer import Deferred, DeferredSemaphore, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from cliproxyd.credentials import Credential
from cliproxyd.credentials.authfiles import OAuthAccount
from cliproxyd.credentials.providers import PROVIDERS
from cliproxyd.service import Periodic
from cliproxyd.outbound import client_chooser
from cliproxyd.proxies import INHERIT, ProxySetting

#: How often accounts are looked at.
TICK = 60.0
#: Refreshes running at once.
CONCURRENCY = 16
#: An account being refreshed is left alone this long by the loop.
PENDING_BACKOFF = 60.0
#: After a failed refresh, the account waits this long before the next try.
FAILURE_BACKOFF = 300.0
#: A token endpoint that has not answered by then has failed.
REFRESH_TIMEOUT = 30.0
#: The cluster-wide refresh lock's lifetime (a refresh, its file write and some margin).
LOCK_TTL = REFRESH_TIMEOUT * 3

#: Refresh an account's tokens: fires with an object with C{access_token},
#: C{refresh_token}, C{expires_in} and C{id_token} (L{cliproxyd.credentials.tokens.TokenGrant}).
RefreshFn = Callable[[OAuthAccount], "Deferred[Any]"]
#: Write an account's file back; fires when it is durable.
SaveFn = Callable[[OAuthAccount], "Deferred[None]"]


@define
class RefreshStatus:
    """What the management API shows about an account's refreshes."""

    last_refresh: float | None = None
    last_error: str = ""
    next_after: float = 0.0
    refreshing: bool = False


def lead_time(account: OAuthAccount) -> float:
    return PROVIDERS[account.type].lead


def is_due(account: OAuthAccount, now: float) -> bool:
    """Whether the account's token is close enough to expiry (or old enough) to refresh now."""
    lead = lead_time(account)
    if account.expires_at is not None:
        if account.last_refresh is not None and account.expires_at > account.last_refresh:
            # A token that lives shorter than the lead is refreshed at half
            # its life, not on every tick.
            lead = min(lead, (account.expires_at - account.last_refresh) / 2)
        return account.expires_at - now <= lead
    if account.last_refresh is None:
        return True
    return now - account.last_refresh >= lead


class ClusterTokens(Protocol):
    """
    The refresh coordination a shared state store offers
    (L{cliproxyd.state.redisstore.RedisStateStore}); accounts are named by
    their file name, the same on every instance.
    """

    def acquire(self, account: str, ttl: float) -> "Deferred[str | None]":
        """The lock's token; "" when another instance holds it; None when the store is unreachable."""

    def release(self, account: str, token: str) -> "Deferred[Any]": ...

    def publish_tokens(self, account: str, tokens: dict | None) -> "Deferred[Any]":
        """Store and announce the new tokens; None announces that the refresh failed (nothing stored)."""

    def latest_tokens(self, account: str) -> "Deferred[dict | None]": ...

    def on_tokens(self, listener: Callable[[str, dict | None], None]) -> None: ...


def account_tokens(account: OAuthAccount) -> dict:
    """What is published of an account after a refresh (secrets: they go to the shared store only)."""
    return {
        "access_token": account.access_token,
        "refresh_token": account.refresh_token,
        "expires_at": account.expires_at,
        "last_refresh": account.last_refresh,
        "id_token": account.data.get("id_token", "") if isinstance(account.data.get("id_token"), str) else "",
    }


def _newer(tokens: dict | None, account: OAuthAccount) -> bool:
    """Whether published C{tokens} are newer than the account's own."""
    if not isinstance(tokens, dict) or not isinstance(tokens.get("access_token"), str):
        return False
    when = tokens.get("last_refresh")
    if not isinstance(when, (int, float)):
        return False
    return account.last_refresh is None or when > account.last_refresh


class AccountsSource(Protocol):
    """
    Where the accounts to keep fresh are: C{current.accounts} (file name ->
    account) of the running generation, or C{current} None before the first
    (L{cliproxyd.assembly.GenerationSource}).
    """

    current: Any


class Refresher:
    """
    Owns the token state of OAuth accounts: it is the only writer of an
    account's tokens, on the reactor thread (reloads read files in threads
    but never touch account objects).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        refresh: RefreshFn,
        save: SaveFn,
        source: AccountsSource,
        *,
        concurrency: int = CONCURRENCY,
        pending_backoff: float = PENDING_BACKOFF,
        failure_backoff: float = FAILURE_BACKOFF,
        timeout: float = REFRESH_TIMEOUT,
        cluster: ClusterTokens | None = None,
        lock_ttl: float = LOCK_TTL,
    ) -> None:
        self._clock = clock
        self._refresh = refresh
        self._save = save
        self._source = source
        self._pending_backoff = pending_backoff
        self._failure_backoff = failure_backoff
        self._timeout = timeout
        self._semaphore = DeferredSemaphore(concurrency)
        self._status: dict[str, RefreshStatus] = {}
        self._in_flight: dict[str, Deferred[bool]] = {}
        self._cluster = cluster
        self._lock_ttl = lock_ttl
        #: account name -> waiters for its tokens to be published by another instance
        self._awaiting: dict[str, list[Deferred[dict | None]]] = {}
        #: refreshes this instance left to another (it held the lock), and tokens adopted
        self.adopted = 0
        if cluster is not None:
            cluster.on_tokens(self._published)
        #: refreshes ended, by outcome (succeeded, failed, dropped), by provider: read by the metrics
        self.counts: dict[tuple[str, str], int] = {}

    # -- which accounts ---------------------------------------------------------------

    def _accounts(self) -> dict[str, OAuthAccount]:
        """The running generation's accounts, by path."""
        gen = self._source.current
        return {a.path: a for a in gen.accounts.values()} if gen is not None else {}

    def status(self, account: OAuthAccount) -> RefreshStatus:
        return self._status.get(account.path) or RefreshStatus(last_refresh=account.last_refresh)

    @property
    def running_refreshes(self) -> int:
        return len(self._in_flight)

    # -- the loop ---------------------------------------------------------------------

    def check(self) -> int:
        """Start a refresh for every due account; returns how many were started."""
        now = self._clock.seconds()
        accounts = self._accounts()
        for path in [p for p in self._status if p not in accounts and p not in self._in_flight]:
            del self._status[path]  # its file is gone
        started = 0
        for account in accounts.values():
            if account.path in self._in_flight or not account.can_refresh:
                continue
            if now < self._status.get(account.path, RefreshStatus()).next_after:
                continue
            if is_due(account, now):
                self._start(account, now)
                started += 1
        return started

    # -- on demand --------------------------------------------------------------------

    def refresh_now(self, cred: Credential) -> "Deferred[bool]":
        """
        Refresh after the upstream refused the account's token: fires with
        whether a new token is in place. Shares a refresh already running.
        """
        account = cred.account
        if account is None or not account.can_refresh:
            return succeed(False)
        running = self._in_flight.get(account.path)
        if running is not None:
            return _share(running)
        now = self._clock.seconds()
        status = self._status.get(account.path)
        if status is not None and status.last_error and now < status.next_after:
            return succeed(False)  # it just failed: wait out the back-off
        return _share(self._start(account, now))

    # -- one refresh ------------------------------------------------------------------

    def _start(self, account: OAuthAccount, now: float) -> "Deferred[bool]":
        status = self._status.setdefault(account.path, RefreshStatus(last_refresh=account.last_refresh))
        status.next_after = now + self._pending_backoff
        status.refreshing = True
        d = self._semaphore.run(self._run, account)
        self._in_flight[account.path] = d

        def done(result: bool) -> bool:
            self._in_flight.pop(account.path, None)
            status.refreshing = False
            return result

        d.addBoth(done)
        return d

    # -- across instances --------------------------------------------------------------

    def _published(self, name: str, tokens: dict | None) -> None:
        """
        Another instance refreshed C{name}: its tokens are used here at once
        (C{None}: its refresh failed; whoever waits for it stops waiting).
        """
        tokens = tokens if isinstance(tokens, dict) else {}
        for account in self._accounts().values():
            if account.name == name and _newer(tokens, account):
                self._adopt(account, tokens)
        for waiter in self._awaiting.pop(name, []):
            waiter.callback(tokens)

    def _adopt(self, account: OAuthAccount, tokens: dict) -> None:
        now = self._clock.seconds()
        expires_at = tokens.get("expires_at")
        expires_in = expires_at - now if isinstance(expires_at, (int, float)) and expires_at > now else None
        account.apply_grant(tokens["access_token"], tokens.get("refresh_token") or "", expires_in, now,
                            tokens.get("id_token") or "")
        account.last_refresh = tokens["last_refresh"]
        if expires_in is None and isinstance(expires_at, (int, float)):
            account.expires_at = expires_at
        status = self._status.setdefault(account.path, RefreshStatus())
        status.last_refresh = account.last_refresh
        status.last_error = ""
        status.next_after = 0.0
        self.adopted += 1
        self.log.info("took the refreshed token of {account} from another instance", account=account.name)

    def _wait_published(self, name: str) -> "Deferred[dict | None]":
        d: Deferred[dict | None] = Deferred()
        self._awaiting.setdefault(name, []).append(d)

        def gave_up() -> None:
            waiters = self._awaiting.get(name, [])
            if d in waiters:
                waiters.remove(d)
                d.callback(None)

        call = self._clock.callLater(self._lock_ttl, gave_up)
        d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d
    def _count(self, account: OAuthAccount, outcome: str) -> None:
        key = (account.type, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    async def _run(self, account: OAuthAccount) -> bool:
        cluster = self._cluster
        if cluster is None:
            return await self._refresh_once(account)
        lease = await cluster.acquire(account.name, self._lock_ttl)
        if lease is None:
            return await self._refresh_once(account)  # the store is unreachable: on our own
        if lease == "":
            # Another instance is refreshing it: its tokens are what we use.
            tokens = await self._wait_published(account.name)
            if tokens is None:
                tokens = await cluster.latest_tokens(account.name)
            if _newer(tokens, account):
                if self._accounts().get(account.path) is account:
                    self._adopt(account, tokens)
                return True
            if isinstance(tokens, dict) and tokens.get("access_token") == account.access_token:
                return True  # already taken as it was published (L{_published})
            status = self._status[account.path]
            status.last_error = ("the refresh by another instance failed" if tokens == {} else
                                 "another instance held the refresh lock and published no tokens")
            status.next_after = self._clock.seconds() + self._failure_backoff
            return False
        try:
            tokens = await cluster.latest_tokens(account.name)
            if _newer(tokens, account):
                self._adopt(account, tokens)
                if not is_due(account, self._clock.seconds()):
                    return True  # refreshed a moment ago elsewhere: not again
            ok = await self._refresh_once(account)
            # the new tokens, or word that there are none (the others stop waiting)
            await cluster.publish_tokens(account.name, account_tokens(account) if ok else None)
            return ok
        finally:
            await cluster.release(account.name, lease)

    async def _refresh_once(self, account: OAuthAccount) -> bool:
        status = self._status[account.path]
        try:
            d = self._refresh(account)
            d.addTimeout(self._timeout, self._clock)
            grant = await d
        except Exception as e:
            now = self._clock.seconds()
            status.last_error = _describe(e, self._timeout)
            status.next_after = now + self._failure_backoff
            self._count(account, "failed")
            self.log.warn("token refresh of {account} failed: {why}; next try in {backoff:.0f}s",
                          account=account.name, why=status.last_error, backoff=self._failure_backoff)
            return False
        now = self._clock.seconds()
        if self._accounts().get(account.path) is not account:
            # The file was edited or removed while we waited: it wins.
            self._count(account, "dropped")
            self.log.info("token refresh of {account} dropped: its file changed meanwhile", account=account.name)
            return False
        self._count(account, "succeeded")
        account.apply_grant(grant.access_token, grant.refresh_token, grant.expires_in, now,
                            getattr(grant, "id_token", ""), getattr(grant, "fields", None))
        status.last_refresh = now
        status.last_error = ""
        status.next_after = 0.0
        try:
            if account.writes_tokens:
                await self._save(account)
        except Exception as e:
            # The new token is in use; only the copy on disk is stale.
            status.last_error = f"refreshed, but the file could not be written: {e}"
            self.log.error("token refresh of {account}: writing {path} failed: {error}",
                           account=account.name, path=account.path, error=e)
        else:
            self.log.info("refreshed the token of {account}; it expires in {expires}",
                          account=account.name,
                          expires=f"{grant.expires_in:.0f}s" if grant.expires_in else "an unknown time")
        return True


def refresh_job(refresher: Refresher, clock: IReactorTime, tick: float = TICK) -> Periodic:
    """The C{token-refresh} job: L{Refresher.check} now and every C{tick} seconds."""
    return Periodic("token-refresh", tick, refresher.check, clock, now=True)


def _share(d: "Deferred[bool]") -> "Deferred[bool]":
    """A Deferred that fires with C{d}'s result without taking it from C{d}'s other waiters."""
    shared: Deferred[bool] = Deferred()

    def fire(result: Any) -> Any:
        shared.callback(result is True)
        return result

    d.addBoth(fire)
    return shared


def _describe(e: BaseException, timeout: float) -> str:
    from twisted.internet.defer import CancelledError, TimeoutError

    if isinstance(e, (TimeoutError, CancelledError)):
        return f"the token endpoint did not answer within {timeout:g}s"
    return str(e) or type(e).__name__


def file_saver(run_in_thread: Callable[..., "Deferred[Any]"] | None = None) -> SaveFn:
    """Write an account's file atomically (temp file, fsync, rename, mode kept), off the reactor thread."""
    from twisted.internet.threads import deferToThread

    from cliproxyd.credentials.authfiles import digest
    from cliproxyd.fileio import atomic_write

    run = run_in_thread or deferToThread

    def save(account: OAuthAccount) -> "Deferred[None]":
        data = account.to_bytes()

        def written(_: object) -> None:
            # Our own write: the auth-directory watcher must not take it for an edit.
            account.digest = digest(data)

        return run(atomic_write, account.path, data).addCallback(written)

    return save


def account_refresher(client: Any, clock: IReactorTime,
                      proxy_of: Callable[[OAuthAccount], ProxySetting] | None = None) -> RefreshFn:
    """
    The real refresh: the account's provider's token endpoint, with the
    client the file names (Gemini CLI files carry theirs) or the CLI tool's.
    A file's C{token_uri} overrides the endpoint. The call leaves the way
    the account's upstream requests do: C{proxy_of(account)}, through the
    client L{cliproxyd.outbound.OutboundClients} has for it.
    """
    client_for = client_chooser(client)

    def refresh(account: OAuthAccount) -> "Deferred[Any]":
        from cliproxyd.credentials import tokens

        http = client_for(proxy_of(account) if proxy_of is not None else INHERIT)
        provider = PROVIDERS[account.type]
        if provider.grant == "jwt-bearer":
            sa = account.service_account
            return Deferred.fromCoroutine(tokens.service_account_token(
                http, provider, account.signing_key, sa["client_email"], token_url=sa.get("token_uri") or None,
                key_id=str(sa.get("private_key_id") or ""), clock=clock))
        if account.type == "xai":
            return Deferred.fromCoroutine(tokens.refresh(
                http, provider, account.refresh_token,
                token_url=str(account.data.get("token_endpoint") or "") or None, clock=clock))
        if account.type == "kimi":
            device = str(account.data.get("device_id") or "")
            return Deferred.fromCoroutine(tokens.refresh(
                http, provider, account.refresh_token, clock=clock,
                headers={"x-msh-platform": "cliproxyd", **({"x-msh-device-id": device} if device else {})}))
        if account.type == "iflow":
            return Deferred.fromCoroutine(tokens.refresh_iflow(http, provider, account.refresh_token, clock=clock))
        nested = account.data.get("token") if isinstance(account.data.get("token"), dict) else {}
        token_url = nested.get("token_uri") or account.data.get("token_uri") or None
        return Deferred.fromCoroutine(tokens.refresh(
            http, provider, account.refresh_token,
            client_id=nested.get("client_id") or None,
            client_secret=nested.get("client_secret") or None,
            token_url=token_url,
            clock=clock,
        ))

    return refresh
