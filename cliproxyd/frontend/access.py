"""
Client API keys.

A key is accepted from C{Authorization: Bearer}, C{x-api-key},
C{x-goog-api-key} or C{?key=}, so OpenAI, Anthropic and Google clients work
unchanged. Every candidate is compared with every configured key in
constant time; no comparison stops early.
"""

from __future__ import annotations

import hmac

from twisted.web.iweb import IRequest


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


class ClientAccess:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(k.encode("utf-8") for k in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, request: IRequest) -> str | None:
        """
        @return: the client key that matched (C{None} when no keys are configured).
        @raise AccessDenied: when keys are configured and none presented matches.
        """
        if not self._keys:
            return None
        presented = presented_keys(request)
        if not presented:
            raise AccessDenied("Missing API key")
        matched = None
        for candidate in presented:
            for key in self._keys:
                if hmac.compare_digest(candidate, key) and matched is None:
                    matched = key
        if matched is None:
            raise AccessDenied("Invalid API key")
        return matched.decode("utf-8")
