"""
What every management resource shares about HTTP: JSON answers, request
bodies read within a limit and parsed and checked in one step (strict JSON,
bounded depth, known fields only), query arguments (UTF-8, whole numbers),
and the L{route} marker with which a L{Resource} declares the routes
L{ManagementAPI} mounts.

A resource is a class taking the shared L{Context}; its routes are thin
async methods that take the request (and the route's path arguments) and
return the body, having set the content type: the access check is done
once, before any of them runs, and a L{Refused} raised anywhere becomes the
JSON error answer.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Collection, TypeVar

from attrs import frozen
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from cliproxyd import jsontext
from cliproxyd.management.access import Refused
from cliproxyd.management.context import Context

JSON = b"application/json"

#: The largest management request body, in bytes: config.yaml and credential
#: files are a few kilobytes.
MAX_BODY = 1024 * 1024

_DIGITS = re.compile(r"[0-9]{1,9}")

F = TypeVar("F", bound=Callable[..., Any])

_ROUTES = "__management_routes__"


def respond(request: IRequest, body: Any, status: int = 200) -> bytes:
    """Answer C{status} with C{body} as JSON."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON)
    return json.dumps(body).encode("utf-8")


def is_read(request: IRequest) -> bool:
    """
    Whether C{request} only reads: a GET, or a HEAD, which werkzeug routes
    to the GET handlers (a handler that tells writes apart by method must
    never take a HEAD for one).
    """
    return request.method in (b"GET", b"HEAD")


def read_body(request: IRequest) -> bytes:
    """
    The request body, at most L{MAX_BODY} bytes.

    @raise Refused: 413, for a larger body (or one the site did not keep,
        being over C{max-body-mb}: it arrives empty, flagged).
    """
    raw = request.content.read()
    if getattr(request, "body_too_large", False) or len(raw) > MAX_BODY:
        raise Refused(413, f"the body is larger than {MAX_BODY} bytes")
    return raw


def parse_json(raw: bytes) -> Any:
    """
    C{raw} as JSON, strictly (L{jsontext.loads}: no NaN, byte order mark or
    unpaired surrogate).

    @raise ValueError: it is not JSON.
    @raise Refused: 400, it nests more than L{jsontext.MAX_DEPTH} levels.
    """
    data = jsontext.loads(raw)
    deep = jsontext.too_deep(data)
    if deep is not None:
        raise Refused(400, f"the body is nested more than {jsontext.MAX_DEPTH} levels deep (at {deep})")
    return data


def read_json(request: IRequest, expect: type | None = None,
              refusal: str = "the body must be a JSON object", fields: Collection[str] | None = None) -> Any:
    """
    The request body as JSON (C{None} for no body).

    @param expect: when given, the type the body must be (C{dict}, C{list}).
    @param refusal: the error for a body of another type.
    @param fields: when given, the only keys an object body may have.
    @raise Refused: 400, the body is not JSON (L{parse_json}), not of type
        C{expect} or has a key not in C{fields}; 413, it is too large
        (L{read_body}).
    """
    raw = read_body(request)
    try:
        data = parse_json(raw) if raw else None
    except ValueError:
        raise Refused(400, "the body is not valid JSON") from None
    if expect is not None and not isinstance(data, expect):
        raise Refused(400, refusal)
    if fields is not None and isinstance(data, dict):
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise Refused(400, f"unknown field {unknown[0]!r}: the fields are {', '.join(fields)}")
    return data


def arg(request: IRequest, name: str) -> str | None:
    """
    The first value of the query argument C{name}, if it is given.

    @raise Refused: 400, it is not UTF-8.
    """
    values = args(request, name)
    return values[0] if values else None


def args(request: IRequest, name: str) -> list[str]:
    """
    Every value of the query argument C{name}, in order.

    @raise Refused: 400, one is not UTF-8.
    """
    try:
        return [v.decode("utf-8") for v in request.args.get(name.encode(), [])]
    except UnicodeDecodeError:
        raise Refused(400, f"?{name}= must be UTF-8 text") from None


def whole_number(request: IRequest, name: str) -> int | None:
    """
    The query argument C{name} as a whole number (0 to 10**9), if it is given.

    @raise Refused: 400, it is something else.
    """
    value = arg(request, name)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        raise Refused(400, f"{name} must be a whole number")
    return int(value)


@frozen
class Route:
    path: str
    methods: tuple[str, ...]


def route(path: str, *methods: str) -> Callable[[F], F]:
    """
    Declare the decorated method of a L{Resource} the handler of C{methods}
    on C{path} (a werkzeug rule, below C{/v0/management}). Stacked, it
    declares several routes.
    """

    def mark(f: F) -> F:
        f.__dict__.setdefault(_ROUTES, []).append(Route(path, methods))
        return f

    return mark


def routes(kind: type) -> list[tuple[str, Route]]:
    """The routes a resource class declares, with the name of the method of each."""
    return [(name, r) for name in dir(kind) for r in getattr(getattr(kind, name), _ROUTES, ())]


class Resource:
    """
    One resource of the management API: its routes are its methods marked
    with L{route}.

    @cvar names: the names this resource answers for under C{/<name>}
        (C{GET}, C{PUT}, C{PATCH}, C{DELETE}), with L{named}: settings
        share that one route, so a name no resource claims is a 404.
    """

    log = Logger()
    names: Collection[str] = ()

    def __init__(self, context: Context) -> None:
        self.context = context

    async def named(self, request: IRequest, name: str) -> bytes:
        """Answer a request to C{/<name>}, one of L{names}."""
        raise NotImplementedError
