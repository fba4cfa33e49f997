"""
What the client routes do for a C{client-keys} key: count its request
against its limits while it runs, and settle it with the tokens the upstream
reported when it ends (L{Metering}); which models its lists show
(L{KeyModels}).

Nothing here runs for C{api-keys} or without keys. Usage is read from
answers only for keys with a token limit: a key limited only in requests or
parallelism costs no JSON pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer

from cliproxyd.conductor.keylimits import BYTES_PER_TOKEN, KeyMeter, Scope, Ticket
from cliproxyd.config.model import ClientKey
from cliproxyd.formats.request import loads
from cliproxyd.formats.translate import Consumer
from cliproxyd.formats.usage import StreamUsage, answer_tokens
from cliproxyd.replies import Reply


class UsageTap:
    """
    Between a stream relay and what it writes to: every byte goes on as it
    came; the bytes so far raise the request's estimate (a token per
    L{BYTES_PER_TOKEN} bytes, on top of the request's own), and the stream's
    usage events are read (L{StreamUsage}).
    """

    def __init__(self, inner: Consumer, fmt: str, grow: Callable[[int], None], base: int) -> None:
        self._inner = inner
        self._grow = grow
        self._base = base
        self._bytes = 0
        self.usage = StreamUsage(fmt)

    def write(self, data: bytes) -> None:
        self._bytes += len(data)
        self.usage.feed(data)
        self._grow(self._base + self._bytes // BYTES_PER_TOKEN)
        self._inner.write(data)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._inner.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._inner.unregisterProducer()


class Metering:
    """One admitted request of a client key, from admission to settlement."""

    def __init__(self, meter: KeyMeter, ticket: Ticket) -> None:
        self._meter = meter
        self._ticket = ticket
        self._counts = ticket.key.token_limited
        #: the tokens to settle at: 0 until an answer comes (a request that failed used none);
        #: None, the estimate
        self._used: int | None = 0
        self._tap: UsageTap | None = None

    def answer(self, result: Reply) -> None:
        """A whole answer: its reported usage (or, when it reports none, the estimate)."""
        if not self._counts:
            return
        data = result.data
        if data is None:
            try:
                data = loads(result.body)
            except (ValueError, UnicodeDecodeError):
                data = None
        self._used = answer_tokens(result.fmt, data)

    def tap(self, consumer: Any, fmt: str) -> Any:
        """C{consumer}, behind a L{UsageTap} when the key counts tokens."""
        if not self._counts:
            return consumer
        self._used = None
        tap = self._tap = UsageTap(consumer, fmt, self._grow, self._ticket.reserved)
        return tap

    def _grow(self, tokens: int) -> None:
        self._meter.grow(self._ticket, tokens)

    def settle(self) -> None:
        used = self._used
        if self._tap is not None and self._tap.usage.tokens is not None:
            used = self._tap.usage.tokens
        self._meter.settle(self._ticket, used)


class KeyModels:
    """The model lists a client key sees: only the models its scope allows, made once per key and generation."""

    def __init__(self, models: list[tuple[str, str]], providers: Callable[[str], tuple[str, ...]],
                 render: Callable[[list[tuple[str, str]]], tuple[bytes, bytes, bytes]]) -> None:
        self._models = models
        self._providers = providers
        self._render = render
        self._lists: dict[str, tuple[bytes, bytes, bytes]] = {}

    def lists(self, key: ClientKey, scope: Scope) -> tuple[bytes, bytes, bytes]:
        """OpenAI's, Claude's and Gemini's model lists for C{key}."""
        made = self._lists.get(key.name)
        if made is None:
            made = self._lists[key.name] = self._render(self.allowed(scope))
        return made

    def allowed(self, scope: Scope) -> list[tuple[str, str]]:
        return [(name, owner) for name, owner in self._models
                if scope.allows_model(name) and scope.allowed_providers(self._providers(name))]
