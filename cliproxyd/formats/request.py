"""
A client's request on its way to whichever upstream the conductor picks.

The request is parsed once at the frontend, strictly (L{loads}: no NaN, no
byte order mark, no unpaired surrogates, at most 1024 levels), and checked as
far as its format's C{validate} goes (the model, the stream flag, the types
of the top-level fields). An upstream of the client's own format gets the
client's bytes untouched (renamed, or with thinking fields, only when it
must be) and is the judge of the rest: a field we do not know is not ours to
refuse. Nothing on that path walks the body in Python, so nothing there
recurses. Another format gets the request translated through the canonical
model, decoded the first time one is needed (a body that does not decode,
or nests more than L{cliproxyd.jsontext.MAX_DEPTH} levels, is the client's
400, raised before anything is sent) and kept for the next attempt.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

import attrs

from cliproxyd.formats import canonical as C
from cliproxyd.jsontext import dumps, loads
from cliproxyd.modelnames import parse_model, parse_reasoning

__all__ = ["COMPACT", "ClientRequest", "dumps", "loads"]

#: The client endpoint C{POST /v1/responses/compact}, as a request's C{alt} names it (CLIProxyAPI's name).
COMPACT = "responses/compact"


class ClientRequest:
    """
    What the conductor and executors use of a request: C{model} (as the
    client asked, suffix included), C{stream}, and the body for a target
    format.
    """

    def __init__(
        self, fmt: ModuleType | None, data: dict[str, Any], raw: bytes, model: str, stream: bool,
        canonical: C.Request | None = None, headers: Any = None,
    ) -> None:
        self.fmt = fmt
        #: the client's request headers (twisted's Headers), for payload rules and $NAME headers; None for ours
        self.headers = headers
        self.data = data
        self.raw = raw
        self.model = model
        self.stream = stream
        self._canonical = canonical
        self._bodies: dict[tuple[str, str], bytes] = {}
        #: the request's retry budget (L{cliproxyd.conductor.budget}), set by the conductor when it has
        #: one; an executor whose upstream may be another proxy sends what is left of it
        self.retry_budget: Any = None
        #: the client endpoint when it is not generation, as CLIProxyAPI names it (C{"responses/compact"});
        #: an executor serves it with L{execute_alternate<cliproxyd.executors.upstreams.HTTPExecutor>}
        self.alt = ""

    @classmethod
    def decode(cls, fmt: ModuleType, raw: bytes, model: str | None = None,
               stream: bool | None = None, headers: Any = None,
               named: Callable[[str], str] | None = None) -> "ClientRequest":
        """
        Parse a client body of format C{fmt}; C{model} and C{stream} are given
        when the URL carries them (Gemini); C{named}, when given, says which
        model the body's model name stands for. Raises L{C.BadRequest}.
        """
        try:
            data = loads(raw)
        except ValueError as e:
            raise C.BadRequest(f"the body is not valid JSON: {e}") from None
        body_model, body_stream = fmt.validate(data)
        if named is not None:
            body_model = named(body_model)
        model = body_model if model is None else model
        if not model.strip():
            raise C.BadRequest("model: a non-empty model name is required")
        return cls(fmt, data, raw, model, body_stream if stream is None else stream, headers=headers)

    @classmethod
    def of(cls, canonical: C.Request) -> "ClientRequest":
        """A request we make ourselves (a warmup), from the canonical model."""
        return cls(None, {}, b"", canonical.model, canonical.stream, canonical)

    @property
    def canonical(self) -> C.Request:
        if self._canonical is None:
            assert self.fmt is not None
            decoded = self.fmt.request_to_canonical(self.data)
            self._canonical = attrs.evolve(decoded, model=self.model, stream=self.stream)
        return self._canonical

    def body_for(self, upstream: str, target: ModuleType) -> bytes:
        """
        The body for an upstream of format C{target} asking for C{upstream}
        (a model name, maybe with a thinking suffix, which overrides the
        body's own thinking fields).
        """
        key = (target.NAME, upstream)
        body = self._bodies.get(key)
        if body is None:
            body = self._bodies[key] = self._encode(upstream, target)
        return body

    def _encode(self, upstream: str, target: ModuleType) -> bytes:
        name = parse_model(upstream)
        reasoning = parse_reasoning(name.suffix) if name.suffix else None
        if target is self.fmt:
            if reasoning is None and self.data.get("model", name.base) == name.base:
                return self.raw
            data = dict(target.set_model(self.data, name.base))
            if reasoning is not None:
                target.apply_reasoning(data, reasoning, name.base)
            return dumps(data)
        canonical = self.canonical
        if reasoning is not None:
            canonical = attrs.evolve(canonical, reasoning=reasoning)
        return dumps(target.request_from_canonical(canonical, name.base))

    def count_body_for(self, upstream: str, target: ModuleType) -> bytes:
        """The body of a token count at an upstream of format C{target}."""
        data = loads(self.body_for(upstream, target))
        return dumps(target.count_request(data, parse_model(upstream).base))
