"""
Who may use the management API: CLIProxyAPI's rules.

  - No C{remote-management.secret-key}: the API is off, every route 404.
  - The key is required from every client, loopback included, as
    C{Authorization: Bearer KEY} (any other C{Authorization} value is taken
    as the key itself) or C{X-Management-Key: KEY}.
  - A client not on loopback is refused (403) unless
    C{remote-management.allow-remote} is true. A client on the daemon's
    unix socket is local, as a loopback one is: only processes on this
    machine that the socket's file permissions let in can connect.
  - C{secret-key} is a bcrypt hash (C{$2a$}, C{$2b$} or C{$2y$}; the daemon
    replaces a plaintext key in config.yaml by its hash at start-up, see
    L{ensure_hashed}) or, until then, plaintext compared in constant time.
  - C{MANAGEMENT_PASSWORD} in the daemon's environment (read once, at
    start-up) turns the API on even without a C{secret-key}, lets remote
    clients in as C{allow-remote: true} would, and is accepted as a key
    (plaintext, compared in constant time) beside the C{secret-key}, which
    still works.
  - A client not local that fails C{max_failures} times in a row is
    banned for C{ban_seconds} (403, even with the right key); a success
    clears its count, and an address idle for two hours is forgotten.
    Local clients are never banned (nor are they told apart: every unix
    socket client has the same address).

bcrypt takes a fifth of a second of CPU by design, so it never runs on the
reactor thread: verifications go to C{run_in_thread}, at most
L{MAX_CONCURRENT_VERIFICATIONS} at a time (the reactor's thread pool also
resolves host names), and concurrent requests presenting the same key share
one. A key that verified is remembered (as a keyed SHA-256 digest, never the
key) until the secret changes, so an operator's requests after the first
cost a hash, not a bcrypt run. A key that failed is never remembered as good.

Use from a Klein route, where a L{Refused} becomes the response::

    async def status(self, request):
        await maybeDeferred(self.access.check, request)
        ...

    @app.handle_errors(Refused)
    def refused(self, request, failure):
        request.setResponseCode(failure.value.status)
        ...
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
from typing import Any, Callable

import attrs
import bcrypt
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, DeferredSemaphore, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from cliproxyd.config.edit import ConfigFile, set_path
from cliproxyd.config.load import BCRYPT_PREFIXES, ConfigError, is_bcrypt_hash

RunInThread = Callable[..., "Deferred[Any]"]

#: Failed attempts in a row after which a remote address is banned.
MAX_FAILURES = 5
#: How long a ban lasts.
BAN_SECONDS = 30 * 60.0
#: A remote address with no failure for this long (and no ban) is forgotten.
IDLE_FORGET_SECONDS = 2 * 3600.0
#: How often, at most, forgotten addresses are dropped (on the next check).
PURGE_INTERVAL = 3600.0
#: bcrypt verifications running at once; the rest wait their turn.
MAX_CONCURRENT_VERIFICATIONS = 2
#: bcrypt reads at most this many bytes of a key.
BCRYPT_MAX_BYTES = 72

_log = Logger()


class Refused(Exception):
    """The request may not use the management API: answer C{status} with C{message}."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        #: seconds until a banned client may try again (for a Retry-After header)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


@attrs.define
class _Attempts:
    """One remote address's failures."""

    failures: int = 0
    last_failure: float = 0.0
    banned_until: float = 0.0


@attrs.define(eq=False)
class _Verification:
    """One bcrypt check in flight, shared by every request presenting the same key."""

    secret: bytes
    generation: int
    #: whether a loopback client waits for it
    local: bool = False
    #: the remote addresses waiting for it
    hosts: set[str] = attrs.Factory(set)
    waiters: list[Deferred[Any]] = attrs.Factory(list)


#: A verification not run because every client waiting for it was banned meanwhile.
_SKIPPED = object()


class ManagementAccess:
    """
    Decides whether a request may use the management API; see the module
    docstring for the rules. Time comes from C{clock}; bcrypt runs in
    C{run_in_thread} (L{deferToThread} by default).
    """

    log = Logger()

    def __init__(
        self,
        secret: str,
        allow_remote: bool,
        clock: IReactorTime,
        *,
        max_failures: int = MAX_FAILURES,
        ban_seconds: float = BAN_SECONDS,
        run_in_thread: RunInThread = deferToThread,
        env_password: str = "",
    ) -> None:
        """
        @param env_password: C{MANAGEMENT_PASSWORD} ("" when unset), fixed for the life of the process.
        """
        self._clock = clock
        self._env_password = env_password.strip().encode("utf-8")
        self._max_failures = max_failures
        self._ban_seconds = ban_seconds
        self._run_in_thread = run_in_thread
        self._attempts: dict[str, _Attempts] = {}
        self._next_purge = clock.seconds() + PURGE_INTERVAL
        self._semaphore = DeferredSemaphore(MAX_CONCURRENT_VERIFICATIONS)
        self._digest_key = os.urandom(32)
        self._generation = 0
        self._secret = ""
        self._good: set[bytes] = set()
        self._pending: dict[bytes, _Verification] = {}
        self.reconfigure(secret, allow_remote)

    def reconfigure(self, secret: str, allow_remote: bool) -> None:
        """
        Take new settings (a reloaded config) and keep the failure counts and
        bans. A new secret forgets every key that verified against the old one.

        @raise ValueError: C{secret} starts like a bcrypt hash but is not one.
        """
        secret = secret.strip()
        hashed = secret.startswith(BCRYPT_PREFIXES)
        if hashed and not is_bcrypt_hash(secret):
            raise ValueError("remote-management.secret-key starts like a bcrypt hash but is not a valid one")
        if secret != self._secret:
            self._generation += 1
            self._good = set()
            self._pending = {}
        self._secret = secret
        self._hashed = hashed
        self._secret_bytes = secret.encode("utf-8")
        # MANAGEMENT_PASSWORD lets remote clients in, as in CLIProxyAPI.
        self.allow_remote = allow_remote or bool(self._env_password)

    @property
    def enabled(self) -> bool:
        """Whether the management API is on (a secret key or C{MANAGEMENT_PASSWORD} is set)."""
        return bool(self._secret or self._env_password)

    def check(self, request: IRequest) -> "Deferred[None] | None":
        """
        Let C{request} through, or refuse it.

        @return: C{None} when the answer is known at once, else a Deferred
            firing with C{None} (a bcrypt verification ran in a thread).
        @raise Refused: (or the Deferred fails with it) 404 when the API is
            off, 403 for a remote client without C{allow-remote} or while its
            address is banned, 401 for a missing or wrong key.
        """
        if not self.enabled:
            raise Refused(404, "not found")
        host, local = _client(request)
        now = self._clock.seconds()
        self._purge(now)
        if not local:
            self._refuse_if_banned(host, now)
            if not self.allow_remote:
                raise Refused(403, "remote management disabled")
        key = _presented_key(request)
        if not key:
            self._failed(host, local, now, "missing")
            raise Refused(401, "missing management key")
        return self._check_key(key, host, local)

    # -- keys --------------------------------------------------------------------------

    def _digest(self, key: bytes) -> bytes:
        return hmac.new(self._digest_key, key, hashlib.sha256).digest()

    def _check_key(self, key: bytes, host: str, local: bool) -> "Deferred[None] | None":
        if self._env_password and hmac.compare_digest(self._digest(key), self._digest(self._env_password)):
            return self._settle(host, local, True)
        if not self._secret:
            return self._settle(host, local, False)
        if not self._hashed:
            # Digests first: compare_digest would tell the length of the secret.
            ok = hmac.compare_digest(self._digest(key), self._digest(self._secret_bytes))
            return self._settle(host, local, ok)
        digest = self._digest(key)
        if digest in self._good:
            return self._settle(host, local, True)
        if len(key) > BCRYPT_MAX_BYTES:
            # No key of ours is that long (bcrypt cannot hash one), and
            # bcrypt would judge only the first 72 bytes of it.
            return self._settle(host, local, False)
        return self._verify(key, digest, host, local)

    def _settle(self, host: str, local: bool, ok: bool) -> None:
        now = self._clock.seconds()
        if not ok:
            self._failed(host, local, now, "invalid")
            raise Refused(401, "invalid management key")
        if not local:
            self._attempts.pop(host, None)
        return None

    def _verify(self, key: bytes, digest: bytes, host: str, local: bool) -> "Deferred[None]":
        v = self._pending.get(digest)
        start = v is None
        if v is None:
            v = self._pending[digest] = _Verification(self._secret_bytes, self._generation)
        if local:
            v.local = True
        else:
            v.hosts.add(host)
        waiter: Deferred[Any] = Deferred()
        v.waiters.append(waiter)
        waiter.addCallback(self._after_verify, key, host, local, v.generation)
        if start:
            # Only now: with a free slot (and a synchronous run_in_thread)
            # the job may run, and finish, at once.
            self._semaphore.run(self._bcrypt, key, v).addBoth(self._verified, digest, v)
        return waiter

    def _bcrypt(self, key: bytes, v: _Verification) -> "Deferred[Any]":
        now = self._clock.seconds()
        if not v.local and all(self._banned_until(h, now) for h in v.hosts):
            return succeed(_SKIPPED)
        return maybeDeferred(self._run_in_thread, _checkpw, key, v.secret)

    def _verified(self, result: Any, digest: bytes, v: _Verification) -> None:
        if self._pending.get(digest) is v:
            del self._pending[digest]
        if isinstance(result, Failure):
            self.log.failure("could not verify a management key", result)
            result = Refused(500, "could not verify the management key")
        elif result is True and v.generation == self._generation:
            if len(self._good) >= 16:
                self._good.clear()
            self._good.add(digest)
        for waiter in v.waiters:
            waiter.callback(result)

    def _after_verify(self, result: Any, key: bytes, host: str, local: bool, generation: int) -> "Deferred[None] | None":
        if isinstance(result, Refused):
            raise result
        if generation != self._generation:
            # The secret changed while bcrypt ran: judge the key by the new one.
            if not self.enabled:
                raise Refused(404, "not found")
            return self._check_key(key, host, local)
        now = self._clock.seconds()
        if not local:
            self._refuse_if_banned(host, now)
        if result is _SKIPPED:
            return self._check_key(key, host, local)
        return self._settle(host, local, result is True)

    # -- failures and bans -------------------------------------------------------------

    def _banned_until(self, host: str, now: float) -> float:
        a = self._attempts.get(host)
        return a.banned_until if a is not None and a.banned_until > now else 0.0

    def _refuse_if_banned(self, host: str, now: float) -> None:
        a = self._attempts.get(host)
        if a is None or not a.banned_until:
            return
        if now < a.banned_until:
            left = a.banned_until - now
            minutes = math.ceil(left / 60)
            raise Refused(
                403,
                "IP banned due to too many failed attempts. "
                f"Try again in {minutes} minute{'s' if minutes != 1 else ''}",
                retry_after=math.ceil(left),
            )
        a.banned_until = 0.0
        a.failures = 0

    def _failed(self, host: str, local: bool, now: float, reason: str) -> None:
        self.log.info("management key {reason} from {client}", reason=reason, client=host or "?")
        if local:
            return
        a = self._attempts.setdefault(host, _Attempts())
        a.failures += 1
        a.last_failure = now
        if a.failures >= self._max_failures:
            a.banned_until = now + self._ban_seconds
            a.failures = 0
            self.log.warn(
                "management: {client} banned for {seconds:.0f}s after {failures} failed attempts",
                client=host,
                seconds=self._ban_seconds,
                failures=self._max_failures,
            )

    def _purge(self, now: float) -> None:
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL
        for host in [h for h, a in self._attempts.items()
                     if a.banned_until <= now and now - max(a.last_failure, a.banned_until) > IDLE_FORGET_SECONDS]:
            del self._attempts[host]


def _checkpw(key: bytes, hashed: bytes) -> bool:
    # $2a$, $2b$ and $2y$ differ only for keys longer than bcrypt reads (the
    # prefixes name fixes of other implementations' bugs); the library's
    # newest name works whatever its version accepts.
    try:
        return bcrypt.checkpw(key, b"$2b$" + hashed[4:])
    except ValueError:
        return False


def _client(request: IRequest) -> tuple[str, bool]:
    """The client's address as the ban table keys it, and whether it is local (loopback, a unix socket)."""
    address = request.getClientAddress()
    if isinstance(address, UNIXAddress):
        # Only a process on this machine, with the socket file's permissions,
        # can connect: local, as loopback is. (Whatever a reverse proxy in
        # front of the socket lets through is local too, as it would be
        # through loopback.) A shared "remote" ban bucket would let five
        # wrong keys from anyone lock every local client out.
        return "unix", True
    host = getattr(address, "host", None)
    if not isinstance(host, str) or not host:
        return "unknown", False
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host, False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), ip.is_loopback


def _presented_key(request: IRequest) -> bytes:
    auth = (request.getHeader(b"authorization") or b"").strip()
    if auth:
        scheme, _, rest = auth.partition(b" ")
        key = rest.strip() if scheme.lower() == b"bearer" else auth
        if key:
            return key
    return (request.getHeader(b"x-management-key") or b"").strip()


# -- the secret in config.yaml ---------------------------------------------------------


def hash_secret(plain: str) -> str:
    """
    The bcrypt hash (default cost, C{$2b$}) of C{plain}.

    @raise ValueError: C{plain} is longer than bcrypt's 72 bytes.
    """
    data = plain.encode("utf-8")
    if len(data) > BCRYPT_MAX_BYTES:
        raise ValueError(f"bcrypt hashes at most {BCRYPT_MAX_BYTES} bytes; this key has {len(data)}")
    return bcrypt.hashpw(data, bcrypt.gensalt()).decode("ascii")


class _Unchanged(Exception):
    """The file no longer holds the plaintext key that was loaded."""


def ensure_hashed(config_file: ConfigFile, secret: str) -> "Deferred[str]":
    """
    Make sure config.yaml does not keep the management key in plaintext.

    C{secret} is C{remote-management.secret-key} as loaded from
    C{config_file}. A hash, or no key, is returned as it is and the file is
    not touched. A plaintext key is hashed (in C{config_file.run_in_thread})
    and, if the file still holds that key, replaced there by its hash with
    L{ConfigFile.edit} (comments, quoting and mode kept).

    @return: a Deferred firing with the hash to check keys against.
    @raise ConfigError: (the Deferred fails) the key is longer than the 72
        bytes bcrypt can hash.
    """
    return Deferred.fromCoroutine(_ensure_hashed(config_file, secret))


def check_hashable(path: str, secret: str) -> None:
    """
    @raise ConfigError: C{secret} is a plaintext key longer than the 72
        bytes bcrypt can hash (a pure check: start-up runs it before anything else).
    """
    secret = secret.strip()
    if secret and not secret.startswith(BCRYPT_PREFIXES) and len(secret.encode("utf-8")) > BCRYPT_MAX_BYTES:
        raise ConfigError(path, "remote-management.secret-key",
                          f"is longer than the {BCRYPT_MAX_BYTES} bytes bcrypt can hash; use a shorter key")


async def _ensure_hashed(config_file: ConfigFile, secret: str) -> str:
    secret = secret.strip()
    check_hashable(config_file.path, secret)
    if not secret or secret.startswith(BCRYPT_PREFIXES):
        return secret
    hashed: str = await maybeDeferred(config_file.run_in_thread, hash_secret, secret)

    def mutate(doc: Any) -> None:
        section = doc.get("remote-management")
        current = section.get("secret-key") if isinstance(section, dict) else None
        if not isinstance(current, str) or current.strip() != secret:
            raise _Unchanged()
        set_path(doc, ("remote-management", "secret-key"), hashed)

    try:
        await config_file.edit(mutate)
    except _Unchanged:
        _log.info(
            "remote-management.secret-key in {path} changed since it was loaded; not rewritten",
            path=config_file.path,
        )
    else:
        _log.info("remote-management.secret-key in {path} replaced by its bcrypt hash", path=config_file.path)
    return hashed
