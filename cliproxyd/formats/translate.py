"""
Translation seams: a canonical request as the conductor sees it, and a
consumer that turns an upstream's SSE stream into the client's format.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from cliproxyd.formats import canonical as C
from cliproxyd.formats import openai_chat
from cliproxyd.modelnames import parse_model, suffix_effort

log = Logger(namespace="cliproxyd.formats.translate")


class TranslatedRequest:
    """
    A request decoded from another format, sent to OpenAI-compatible
    upstreams. It has what the conductor uses of a request: C{model},
    C{stream} and C{body_for}.
    """

    def __init__(self, canonical: C.Request) -> None:
        self.canonical = canonical
        self.model = canonical.model
        self.stream = canonical.stream

    def body_for(self, upstream_model: str) -> bytes:
        name = parse_model(upstream_model)
        body = openai_chat.from_canonical(self.canonical, name.base)
        effort = suffix_effort(name.suffix) if name.suffix else None
        if effort is not None:
            body["reasoning_effort"] = effort
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class SSEParser:
    """Incremental SSE parsing: bytes in, the C{data} of each complete event out."""

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        events = []
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(line[5:].lstrip(b" "))
        return events


class Encoder(Protocol):
    def feed(self, event: C.Event) -> bytes: ...
    def close(self) -> bytes: ...


class Consumer(Protocol):
    def write(self, data: bytes) -> None: ...
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...


class TranslatingConsumer:
    """Sits between a stream relay and the client: OpenAI chunks in, the client's events out."""

    def __init__(self, inner: Consumer, encoder: Encoder) -> None:
        self._inner = inner
        self._encoder = encoder
        self._parser = SSEParser()
        self._decoder = openai_chat.StreamDecoder()

    def write(self, data: bytes) -> None:
        out = []
        for payload in self._parser.feed(data):
            if payload == b"[DONE]":
                continue
            try:
                chunk: Any = json.loads(payload)
            except (ValueError, UnicodeDecodeError):
                log.debug("skipping an upstream event that is not JSON")
                continue
            if isinstance(chunk, dict):
                out.extend(self._encoder.feed(e) for e in self._decoder.feed(chunk))
        if out:
            self._inner.write(b"".join(out))

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._inner.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._inner.unregisterProducer()

    def close(self) -> None:
        self._inner.write(self._encoder.close())

    def fail(self, message: str) -> None:
        self._inner.write(self._encoder.feed(C.ErrorEvent(message)))
