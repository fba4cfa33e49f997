"""
Stream translation: a consumer that turns an upstream's SSE stream, of any
format, into the client's format through canonical events.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from cliproxyd.formats import canonical as C
from cliproxyd.formats.contract import Decoder, Encoder
from cliproxyd.formats.request import dumps, loads

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
        return list(self.iter_events(chunk))

    def iter_events(self, chunk: bytes) -> Iterator[tuple[bytes, bytes]]:
        """
        L{feed_events} one event at a time: a caller that stops early (a
        stream judged by its first events) leaves the rest of C{chunk}
        unread, kept for the next call.
        """
        buffer = self._pending + chunk
        start = 0
        try:
            while (end := buffer.find(b"\n", start)) >= 0:
                line = buffer[start:end].rstrip(b"\r")
                start = end + 1
                if not line:
                    name, self._name = self._name, b""
                    if self._data:
                        data, self._data = self._data, []
                        yield name, b"\n".join(data)
                elif line.startswith(b"data:"):
                    self._data.append(line[5:].lstrip(b" "))
                elif line.startswith(b"event:"):
                    self._name = line[6:].strip()
        finally:
            self._pending = buffer[start:]


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


_EVENT_END = re.compile(rb"\r?\n\r?\n")


class ModelNamingConsumer:
    """
    Sits between a passed-through stream and the client when the model is
    C{force-mapping}: each event whose JSON names the upstream's model names
    C{model} instead (the format's C{name_answer_model}); every other byte,
    comments and framing included, goes through as it came. An event is
    held only until its blank line arrives.
    """

    def __init__(self, inner: Consumer, fmt: Any, model: str) -> None:
        self._inner = inner
        self._fmt = fmt
        self._model = model
        self._pending = b""

    def write(self, data: bytes) -> None:
        data = self._pending + data
        out = []
        start = 0
        for end in _EVENT_END.finditer(data):
            out.append(self._event(data[start:end.start()]))
            out.append(end.group())
            start = end.end()
        self._pending = data[start:]
        if out:
            self._inner.write(b"".join(out))

    def _event(self, block: bytes) -> bytes:
        lines = block.split(b"\n")
        for i, line in enumerate(lines):
            cr = line.endswith(b"\r")
            text = line[:-1] if cr else line
            if not text.startswith(b"data:"):
                continue
            payload = text[5:].lstrip(b" ")
            if not payload.startswith(b"{"):
                continue
            try:
                chunk = loads(payload)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(chunk, dict) and self._fmt.name_answer_model(chunk, self._model):
                lines[i] = b"data: " + dumps(chunk) + (b"\r" if cr else b"")
        return b"\n".join(lines)

    def flush(self) -> None:
        """What is left of a stream that ended without a blank line, as it came."""
        if self._pending:
            self._inner.write(self._pending)
            self._pending = b""

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._inner.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._inner.unregisterProducer()
