"""
What every management resource shares about HTTP: JSON answers, request
bodies parsed and checked in one step, query arguments, and the L{route}
marker with which a L{Resource} declares the routes L{ManagementAPI}
mounts.

A resource is a class taking the shared L{Context}; its routes are thin
async methods that take the request (and the route's path arguments) and
return the body, having set the content type: the access check is done
once, before any of them runs, and a L{Refused} raised anywhere becomes the
JSON error answer.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Collection, TypeVar

from attrs import frozen
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from cliproxyd.management.access import Refused
from cliproxyd.management.context import Context

JSON = b"application/json"

F = TypeVar("F", bound=Callable[..., Any])

_ROUTES = "__management_routes__"


def respond(request: IRequest, body: Any, status: int = 200) -> bytes:
    """Answer C{status} with C{body} as JSON."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON)
    return json.dumps(body).encode("utf-8")


def read_json(request: IRequest, expect: type | None = None,
              refusal: str = "the body must be a JSON object") -> Any:
    """
    The request body as JSON (C{None} for no body).

    @param expect: when given, the type the body must be (C{dict}, C{list}).
    @param refusal: the error for a body of another type.
    @raise Refused: 400, the body is not JSON or not of type C{expect}.
    """
    try:
        data = json.loads(request.content.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "the body is not valid JSON") from None
    if expect is not None and not isinstance(data, expect):
        raise Refused(400, refusal)
    return data


def arg(request: IRequest, name: str) -> str | None:
    """The first value of the query argument C{name}, if it is given."""
    values = request.args.get(name.encode())
    return values[0].decode("utf-8") if values else None


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
