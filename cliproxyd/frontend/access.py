"""
Client API keys.

A key is accepted from C{Authorization: Bearer}, C{x-api-key},
C{x-goog-api-key} or C{?key=}, so OpenAI, Anthropic and Google clients work
unchanged. Every candidate is compared with every configured C{api-keys}
key in constant time; no comparison stops early. A C{client-keys} key is
found by the SHA-256 of the presented key (one hash and one lookup
whatever the number of entries; the lookup's timing can tell only of
digests, never of the key).

Two kinds of key: C{api-keys} (plain strings with full access, exactly as
CLIProxyAPI has them) and C{client-keys} entries (a name, a scope and
limits; see L{cliproxyd.conductor.keylimits}). An entry's C{key} is the key
itself, C{sha256:<hex>} of it, or a bcrypt hash. A bcrypt hash costs a fifth
of a second of CPU, so it is never checked on the reactor thread: it runs in
a thread (at most L{MAX_CONCURRENT_VERIFICATIONS} at once), once per
presented key and generation; the outcome, match or not, is remembered by
the key's keyed digest (at most L{MAX_REMEMBERED} of them).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import bcrypt
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from cliproxyd.config.model import ClientKey

RunInThread = Callable[..., "Deferred[Any]"]

#: bcrypt verifications running at once; the rest wait their turn.
MAX_CONCURRENT_VERIFICATIONS = 2
#: Presented keys whose bcrypt outcome is remembered (per generation).
MAX_REMEMBERED = 10_000
#: bcrypt reads at most this many bytes of a key.
BCRYPT_MAX_BYTES = 72


class AccessDenied(Exception):
    """C{str()} is the reason shown to the client."""


def presented_keys(request: IRequest) -> list[bytes]:
    """Every key the request presents, in the order CLIProxyAPI checks them."""
    found = []
    auth = request.getHeader(b"authorization")
    if auth:
        scheme, _, rest = auth.partition(b" ")
        found.append(rest.strip() if scheme.lower() == b"bearer" else auth.strip())
    for header in (b"x-goog-api-key", b"x-api-key"):
        value = request.getHeader(header)
        if value:
            found.append(value.strip())
    args = request.args
    if args:
        for value in args.get(b"key", ())[:1]:
            found.append(value)
    return found


def sha256_key(key: str) -> str:
    """How a key is written hashed with SHA-256 in C{client-keys} (what management stores)."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


class ClientAccess:
    """
    Who may use the client routes: C{api-keys} (full access) and
    C{client-keys} entries, disabled and expired ones included (they are
    told apart from unknown keys by L{check}'s caller).
    """

    def __init__(self, keys: tuple[str, ...], client_keys: tuple[ClientKey, ...] = (),
                 run_in_thread: RunInThread = deferToThread) -> None:
        self._keys = tuple(k.encode("utf-8") for k in keys)
        #: SHA-256 of each plain or sha256: client key -> its entry: one hash and one lookup per
        #: presented key, however many entries there are (a digest tells nothing of the key)
        self._by_digest: dict[bytes, ClientKey] = {}
        for k in client_keys:
            if not k.hashed:
                self._by_digest[hashlib.sha256(k.key.encode("utf-8")).digest()] = k
            elif k.hashed == "sha256":
                self._by_digest[bytes.fromhex(k.key.removeprefix("sha256:"))] = k
        self._bcrypt = tuple((k.key.encode("ascii"), k) for k in client_keys if k.hashed == "bcrypt")
        self._run_in_thread = run_in_thread
        self._semaphore = DeferredSemaphore(MAX_CONCURRENT_VERIFICATIONS)
        self._digest_key = os.urandom(32)
        #: keyed digest of a presented key -> the entry it matched, or None
        self._verified: OrderedDict[bytes, ClientKey | None] = OrderedDict()
        self._pending: dict[bytes, list[Deferred[Any]]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._keys or self._by_digest or self._bcrypt)

    def check(self, request: IRequest) -> str | ClientKey | None | Deferred[str | ClientKey]:
        """
        @return: the C{api-keys} key that matched, the C{client-keys} entry
            that did (C{None} when no keys are configured), or a Deferred
            firing with one of them once a bcrypt check has run.
        @raise AccessDenied: (or the Deferred fails with it) when keys are
            configured and none presented matches.
        """
        if not self.enabled:
            return None
        presented = presented_keys(request)
        if not presented:
            raise AccessDenied("Missing API key")
        matched: bytes | None = None
        entry: ClientKey | None = None
        for candidate in presented:
            for key in self._keys:
                if hmac.compare_digest(candidate, key) and matched is None:
                    matched = key
            if self._by_digest and entry is None:
                entry = self._by_digest.get(hashlib.sha256(candidate).digest())
        if matched is not None:
            return matched.decode("utf-8")
        if entry is not None:
            return entry
        if self._bcrypt:
            return self._check_bcrypt(presented)
        raise AccessDenied("Invalid API key")

    # -- bcrypt ---------------------------------------------------------------------

    def _check_bcrypt(self, presented: list[bytes]) -> ClientKey | Deferred[ClientKey]:
        """The first presented key that verifies against a bcrypt entry, remembered or checked in a thread."""
        waits = []
        for candidate in presented:
            digest = hmac.new(self._digest_key, candidate, hashlib.sha256).digest()
            if digest in self._verified:
                found = self._verified[digest]
                if found is not None:
                    return found
                continue
            waits.append(self._verify(candidate, digest))
        if not waits:
            raise AccessDenied("Invalid API key")
        return Deferred.fromCoroutine(_first_match(waits))

    def _verify(self, candidate: bytes, digest: bytes) -> Deferred[ClientKey | None]:
        waiter: Deferred[ClientKey | None] = Deferred()
        pending = self._pending.get(digest)
        if pending is not None:
            pending.append(waiter)
            return waiter
        self._pending[digest] = [waiter]
        secret = candidate[:BCRYPT_MAX_BYTES]
        entries = self._bcrypt

        def run() -> ClientKey | None:
            for hashed, k in entries:
                try:
                    if bcrypt.checkpw(secret, hashed):
                        return k
                except ValueError:
                    continue
            return None

        def done(found: Any) -> None:
            if not isinstance(found, ClientKey):
                found = None  # a failure in the thread is no match
            self._verified[digest] = found
            while len(self._verified) > MAX_REMEMBERED:
                self._verified.popitem(last=False)
            for w in self._pending.pop(digest, []):
                w.callback(found)

        self._semaphore.run(self._run_in_thread, run).addBoth(done)
        return waiter


async def _first_match(waits: list[Deferred[ClientKey | None]]) -> ClientKey:
    for wait in waits:
        found = await wait
        if found is not None:
            return found
    raise AccessDenied("Invalid API key")
