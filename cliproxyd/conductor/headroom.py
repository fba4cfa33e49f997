"""
Headroom: the rate-limit state upstreams send on every answer, read into a
L{Headroom} record (issue 16).

Each provider family has its own headers:

==========  ====================================================================
family      headers read
==========  ====================================================================
openai      C{x-ratelimit-limit-requests}/C{-remaining-requests}/C{-reset-requests}
            and the same for C{-tokens} (resets as C{"1s"}, C{"6m0s"}, C{"20ms"})
anthropic   C{anthropic-ratelimit-requests-limit}/C{-remaining}/C{-reset} (RFC 3339)
            and the same for C{tokens}, C{input-tokens}, C{output-tokens}
unified     Claude subscriptions: C{anthropic-ratelimit-unified-5h-utilization}
            and C{-7d-utilization} (0 to 1) with their C{-reset} (epoch
            seconds), and C{-unified-status} (C{rejected}: nothing left)
codex       C{x-codex-primary-used-percent} and C{x-codex-secondary-used-percent}
            (0 to 100) with their C{-reset-after-seconds}
==========  ====================================================================

Gemini sends none of these on a success; its quota details come in a 429's
body, which the executor already turns into the cooldown's retry hint.

Which families a credential's answers carry is decided once, at config load
(L{reader_for}); a read then costs a few header lookups and no JSON.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from attrs import frozen

from cliproxyd.formats.common import parse_rfc3339
from cliproxyd.state.records import Headroom

Reader = Callable[..., "Headroom | None"]

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _get(headers: Any, name: bytes) -> str | None:
    values = headers.getRawHeaders(name)
    if not values:
        return None
    return values[0].decode("latin-1").strip()


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset durations (C{"1s"}, C{"6m0s"}, C{"20ms"}, C{"1h2m3.5s"}), or plain seconds."""
    if not text:
        return None
    plain = _number(text)
    if plain is not None:
        return plain
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


@frozen
class Meter:
    """
    One limit an answer may report: the header that says what is left (or
    used), the one with the limit (for counts), and the one with its reset.

    @ivar kind: C{count} (remaining of limit), C{used1} (utilisation 0 to
        1), C{used100} (percent used) or C{rejected} (a status header whose
        value C{rejected} means nothing is left).
    @ivar reset_kind: C{duration} (OpenAI's C{"6m0s"} from now), C{rfc3339},
        C{epoch} (Unix seconds) or C{after} (seconds from now).
    """

    source: str
    kind: str
    value: bytes
    reset: bytes
    reset_kind: str
    limit: bytes = b""


def _count_meters(prefix: str, what: str, reset_kind: str, style: str) -> Meter:
    if style == "openai":  # x-ratelimit-remaining-requests, x-ratelimit-limit-requests, x-ratelimit-reset-requests
        names = [f"{prefix}-{part}-{what}" for part in ("remaining", "limit", "reset")]
    else:  # anthropic-ratelimit-requests-remaining, ...-limit, ...-reset
        names = [f"{prefix}-{what}-{part}" for part in ("remaining", "limit", "reset")]
    remaining, limit, reset = (n.encode() for n in names)
    return Meter(f"{style}-{what}", "count", remaining, reset, reset_kind, limit)


_U = "anthropic-ratelimit-unified"
#: The meters of each header family.
FAMILIES: dict[str, tuple[Meter, ...]] = {
    "openai": tuple(_count_meters("x-ratelimit", w, "duration", "openai") for w in ("requests", "tokens")),
    "anthropic": tuple(_count_meters("anthropic-ratelimit", w, "rfc3339", "anthropic")
                       for w in ("requests", "tokens", "input-tokens", "output-tokens")),
    "unified": (
        Meter("unified-5h", "used1", f"{_U}-5h-utilization".encode(), f"{_U}-5h-reset".encode(), "epoch"),
        Meter("unified-7d", "used1", f"{_U}-7d-utilization".encode(), f"{_U}-7d-reset".encode(), "epoch"),
        Meter("unified-status", "rejected", f"{_U}-status".encode(), f"{_U}-reset".encode(), "epoch"),
    ),
    "codex": tuple(Meter(f"codex-{w}", "used100", f"x-codex-{w}-used-percent".encode(),
                         f"x-codex-{w}-reset-after-seconds".encode(), "after") for w in ("primary", "secondary")),
}


def _value(headers: Any, name: bytes) -> float | None:
    """A number header, read straight from its bytes."""
    values = headers.getRawHeaders(name)
    if not values:
        return None
    try:
        return float(values[0])
    except ValueError:
        return None


def _left(headers: Any, m: Meter) -> float | None:
    """The fraction of C{m}'s limit left, or None when the answer does not say."""
    if m.kind == "rejected":
        return 0.0 if _get(headers, m.value) == "rejected" else None
    value = _value(headers, m.value)
    if value is None:
        return None
    if m.kind == "used1":
        return max(0.0, min(1.0, 1.0 - value))
    if m.kind == "used100":
        return max(0.0, min(1.0, 1.0 - value / 100.0))
    limit = _value(headers, m.limit)
    if limit is None or limit <= 0:
        return 0.0 if value <= 0 else None  # without a limit only "none left" means anything
    return max(0.0, min(1.0, value / limit))


def _reset(headers: Any, m: Meter, now: float) -> float | None:
    raw = _get(headers, m.reset)
    if m.reset_kind == "rfc3339":
        return parse_rfc3339(raw)
    if m.reset_kind == "duration":
        after = parse_duration(raw)
    else:
        after = _number(raw)
        if m.reset_kind == "epoch":
            return after
    return None if after is None else now + after


#: Which families each provider's answers carry (by credential kind; anything else: openai).
FAMILIES_BY_KIND: dict[str, tuple[str, ...]] = {
    "claude": ("unified", "anthropic"),
    "claude-api-key": ("anthropic",),
    "codex": ("codex",),
    "codex-api-key": ("openai",),
    "openai-compatibility": ("openai",),
    "gemini": (),
    "gemini-api-key": (),
    "gemini-cli": (),
    "antigravity": (),
    "vertex": (),
    "interactions-api-key": (),
}


def reader_for(kind: str) -> Reader | None:
    """The headroom reader of a credential kind, or None when its answers carry no such headers."""
    meters = tuple(m for f in FAMILIES_BY_KIND.get(kind, ("openai",)) for m in FAMILIES[f])
    if not meters:
        return None

    def read(headers: Any, now: float, low: float = 1.0, high: bool = True) -> Headroom | None:
        """
        The tightest limit the headers report, or None when they report
        none (or, without C{high}, when it is not below C{low}); its reset
        is read only when less than C{low} of it is left.
        """
        if headers is None:
            return None
        best: Meter | None = None
        least = 2.0
        for m in meters:
            left = _left(headers, m)
            if left is not None and left < least:
                best, least = m, left
        if best is None or (not high and least >= low):
            return None
        return Headroom(fraction=least, reset_at=_reset(headers, best, now) if least < low else None,
                        read_at=now, source=best.source)

    return read
