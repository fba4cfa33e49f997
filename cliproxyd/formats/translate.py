"""
Stream translation: a consumer that turns an upstream's SSE stream, of any
format, into the client's format through canonical events.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from cliproxyd.formats import canonical as C
from cliproxyd.formats.contract import Decoder, Encoder
from cliproxyd.formats.request import loads

log = Logger(namespace="cliproxyd.formats.translate")


class SSEParser:
    """Incremental SSE parsing: bytes in, the C{data} of each complete event out."""

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []
        self._name = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        return [data for _, data in self.feed_events(chunk)]

    def feed_events(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """C{(event name, data)} of each complete event with data (the name is C{b""} when it has none)."""
        events = []
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:
                if self._data:
                    events.append((self._name, b"\n".join(self._data)))
                    self._data = []
                self._name = b""
            elif line.startswith(b"data:"):
                self._data.append(line[5:].lstrip(b" "))
            elif line.startswith(b"event:"):
                self._name = line[6:].strip()
        return events


class Consumer(Protocol):
    def write(self, data: bytes) -> None: ...
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...


class TranslatingConsumer:
    """Sits between a stream relay and the client: the upstream's events in, the client's out."""

    def __init__(self, inner: Consumer, decoder: Decoder, encoder: Encoder) -> None:
        self._inner = inner
        self._encoder = encoder
        self._parser = SSEParser()
        self._decoder = decoder

    def write(self, data: bytes) -> None:
        out = []
        for payload in self._parser.feed(data):
            if payload == b"[DONE]":
                continue
            try:
                chunk: Any = loads(payload)
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
