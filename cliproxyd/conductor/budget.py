"""
The retry budget that travels (issue 16).

When cliproxyd sits behind or in front of another proxy, retries multiply:
three attempts here, each of which another proxy turns into three, make
nine identical upstream calls. A client (or the proxy in front of us) caps
that with one header::

    x-cliproxyd-retry-budget: attempts=3; deadline=1767225600.5

C{attempts}: the upstream calls the request may cause in all, here and in
every proxy behind us; C{deadline} (optional): Unix time after which no
attempt starts and no retry round waits (clocks are assumed in sync, as
NTP keeps them). cliproxyd never spends more: each upstream call costs
one; a call to an C{openai-compatibility} upstream (which may be another
proxy) carries the header with what is left, and costs what its answer's
C{x-cliproxyd-attempts} header says it spent (one when it says nothing).
cliproxyd's own error answers to a request that carried a budget say what
it spent in C{x-cliproxyd-attempts}, so a cliproxyd in front learns it.

A header that does not parse is ignored (the request runs as if it had
none); C{attempts} is capped at L{MAX_ATTEMPTS}.
"""

from __future__ import annotations

import math

from attrs import define

HEADER = b"x-cliproxyd-retry-budget"
SPENT_HEADER = b"x-cliproxyd-attempts"
MAX_ATTEMPTS = 100


@define
class RetryBudget:
    """What one request may still spend (mutable: the conductor spends it as it goes)."""

    attempts: int
    deadline: float | None = None
    spent: int = 0

    def allows(self, now: float) -> bool:
        """Whether another attempt may start now."""
        return self.attempts > 0 and (self.deadline is None or now < self.deadline)

    def allows_wait(self, now: float, wait: float) -> bool:
        """Whether a retry round that starts after C{wait} seconds would still be in time."""
        return self.deadline is None or now + wait < self.deadline

    def spend(self, n: int = 1) -> None:
        n = max(1, n)
        self.attempts = max(0, self.attempts - n)
        self.spent += n

    def header(self) -> bytes:
        """The header value for a proxy behind us: what is left."""
        value = f"attempts={self.attempts}"
        if self.deadline is not None:
            value += f"; deadline={self.deadline:.3f}"
        return value.encode("ascii")


def parse_budget(value: bytes | str | None) -> RetryBudget | None:
    """C{attempts=N[; deadline=T]} (commas also separate), or None when it does not parse."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    fields: dict[str, str] = {}
    for part in text.replace(",", ";").split(";"):
        name, sep, raw = part.partition("=")
        if not sep:
            if part.strip():
                return None
            continue
        fields[name.strip().lower()] = raw.strip()
    try:
        attempts = int(fields["attempts"])
        deadline = float(fields["deadline"]) if "deadline" in fields else None
    except (KeyError, ValueError):
        return None
    if attempts < 0 or (deadline is not None and not math.isfinite(deadline)):
        return None
    return RetryBudget(min(attempts, MAX_ATTEMPTS), deadline)


def spent_by(headers: object) -> int:
    """What a proxy behind us says an answer cost (C{x-cliproxyd-attempts}); 1 when it says nothing."""
    values = headers.getRawHeaders(SPENT_HEADER) if headers is not None else None  # type: ignore[attr-defined]
    if not values:
        return 1
    try:
        return max(1, int(values[0]))
    except ValueError:
        return 1
