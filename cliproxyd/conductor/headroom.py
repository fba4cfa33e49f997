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
from datetime import datetime
from typing import Any, Callable

from cliproxyd.state.records import Headroom

Reader = Callable[[Any, float], "Headroom | None"]

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


def parse_rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _tightest(readings: list[tuple[float, float | None, str]]) -> tuple[float, float | None, str] | None:
    """The reading with the least left; of equals, the one that resets last."""
    if not readings:
        return None
    return min(readings, key=lambda r: (r[0], -(r[1] or 0.0)))


def _fraction(remaining: float | None, limit: float | None) -> float | None:
    if remaining is None:
        return None
    if limit is None or limit <= 0:
        return 0.0 if remaining <= 0 else None  # without a limit only "none left" means anything
    return max(0.0, min(1.0, remaining / limit))


def _openai(headers: Any, now: float) -> list[tuple[float, float | None, str]]:
    out = []
    for what in (b"requests", b"tokens"):
        f = _fraction(_number(_get(headers, b"x-ratelimit-remaining-" + what)),
                      _number(_get(headers, b"x-ratelimit-limit-" + what)))
        if f is not None:
            reset = parse_duration(_get(headers, b"x-ratelimit-reset-" + what))
            out.append((f, None if reset is None else now + reset, "openai-" + what.decode()))
    return out


def _anthropic(headers: Any, now: float) -> list[tuple[float, float | None, str]]:
    out = []
    for what in (b"requests", b"tokens", b"input-tokens", b"output-tokens"):
        base = b"anthropic-ratelimit-" + what
        f = _fraction(_number(_get(headers, base + b"-remaining")), _number(_get(headers, base + b"-limit")))
        if f is not None:
            out.append((f, parse_rfc3339(_get(headers, base + b"-reset")), "anthropic-" + what.decode()))
    return out


def _unified(headers: Any, now: float) -> list[tuple[float, float | None, str]]:
    out = []
    for window in (b"5h", b"7d"):
        used = _number(_get(headers, b"anthropic-ratelimit-unified-" + window + b"-utilization"))
        if used is not None:
            reset = _number(_get(headers, b"anthropic-ratelimit-unified-" + window + b"-reset"))
            out.append((max(0.0, 1.0 - used), reset, "unified-" + window.decode()))
    if _get(headers, b"anthropic-ratelimit-unified-status") == "rejected":
        out.append((0.0, _number(_get(headers, b"anthropic-ratelimit-unified-reset")), "unified-status"))
    return out


def _codex(headers: Any, now: float) -> list[tuple[float, float | None, str]]:
    out = []
    for window in (b"primary", b"secondary"):
        used = _number(_get(headers, b"x-codex-" + window + b"-used-percent"))
        if used is not None:
            after = _number(_get(headers, b"x-codex-" + window + b"-reset-after-seconds"))
            out.append((max(0.0, 1.0 - used / 100.0), None if after is None else now + after,
                        "codex-" + window.decode()))
    return out


_FAMILIES = {"openai": _openai, "anthropic": _anthropic, "unified": _unified, "codex": _codex}

#: Which families each provider's answers carry (by credential kind; anything else: openai).
FAMILIES_BY_KIND: dict[str, tuple[str, ...]] = {
    "claude": ("anthropic", "unified"),
    "claude-api-key": ("anthropic", "unified"),
    "codex": ("codex", "openai"),
    "codex-api-key": ("codex", "openai"),
    "openai-compatibility": ("openai", "anthropic"),
    "gemini": (),
    "gemini-api-key": (),
    "gemini-cli": (),
    "antigravity": (),
    "vertex": (),
}


def reader_for(kind: str) -> Reader | None:
    """The headroom reader of a credential kind, or None when its answers carry no such headers."""
    families = tuple(_FAMILIES[f] for f in FAMILIES_BY_KIND.get(kind, ("openai",)))
    if not families:
        return None

    def read(headers: Any, now: float) -> Headroom | None:
        if headers is None:
            return None
        readings: list[tuple[float, float | None, str]] = []
        for family in families:
            readings.extend(family(headers, now))
        best = _tightest(readings)
        if best is None:
            return None
        return Headroom(fraction=best[0], reset_at=best[1], read_at=now, source=best[2])

    return read
