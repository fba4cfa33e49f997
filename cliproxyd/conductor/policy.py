"""
Pure policy: model names, exclusions, the cooldown table, retry decisions.

Nothing here reads a clock or does I/O: every function takes C{now} (epoch
seconds) and values, and returns values, so plain tests and Hypothesis can
drive it. The Conductor and the scheduler apply these decisions.
"""

from __future__ import annotations

from typing import Iterable

from attrs import evolve

from cliproxyd.state.records import ModelState

# -- errors ----------------------------------------------------------------------

MODEL_SUPPORT_PATTERNS = (
    "model_not_supported",
    "requested model is not supported",
    "requested model is unsupported",
    "requested model is unavailable",
    "model is not supported",
    "model not supported",
    "unsupported model",
    "model unavailable",
    "not available for your plan",
    "not available for your account",
)


def is_model_support_error(status: int, message: str) -> bool:
    """A 400 or 422 saying the model is not available to this credential."""
    if status not in (400, 422):
        return False
    lower = message.lower()
    return any(p in lower for p in MODEL_SUPPORT_PATTERNS)


def is_request_invalid(status: int, message: str) -> bool:
    """
    The request itself is wrong, so no credential would do better: a 422, or
    a 400 that says C{invalid_request_error}, unless it is a model-support
    error (those move on to another credential or pool member).
    """
    if is_model_support_error(status, message):
        return False
    if status == 422:
        return True
    return status == 400 and "invalid_request_error" in message


# -- the cooldown table ----------------------------------------------------------

QUOTA_BACKOFF_BASE = 1.0
QUOTA_BACKOFF_MAX = 30 * 60.0
AUTH_COOLDOWN = 30 * 60.0  # 401, 402, 403
NOT_FOUND_COOLDOWN = 12 * 3600.0  # 404, and model-support errors
TRANSIENT_COOLDOWN = 60.0  # 408, 500, 502, 503, 504, 529 (Anthropic's overloaded), and an upstream that timed out
TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504, 529})
#: A connection refused, reset or not made in connect-seconds: shorter than a
#: timeout's, because finding out again costs a request little (milliseconds,
#: at most connect-seconds) and such an upstream is often back in seconds.
CONNECT_COOLDOWN = 30.0
#: The failures with no status that cool, by kind.
NO_ANSWER_COOLDOWNS = {"timeout": TRANSIENT_COOLDOWN, "connect": CONNECT_COOLDOWN}
#: A protocol fault: an answer whose form is broken (a body cut short or not
#: JSON, a stream that ended before its final event). It is one answer gone
#: wrong on its way, not the credential refused or out of quota, and it is
#: often the path's doing (a proxy, a connection, an upstream deploy) and so
#: strikes every credential behind that path alike: a minute's cooldown each
#: would then lock the whole model out for everyone (429 model_cooldown),
#: although any of them may answer the next request. A few seconds steer the
#: next requests to the other credentials while they are there, and no more.
PROTOCOL_COOLDOWN = 5.0


CLEAR = ModelState()


def next_quota_cooldown(level: int, disable_cooling: bool) -> tuple[float, int]:
    """The cooldown for a 429 with no hint, and the next backoff level: 1 s doubling, capped at 30 min."""
    level = max(level, 0)
    if disable_cooling:
        return 0.0, level
    cooldown = QUOTA_BACKOFF_BASE * (2**level)
    if cooldown >= QUOTA_BACKOFF_MAX:
        return QUOTA_BACKOFF_MAX, level
    return cooldown, level + 1


def apply_success(state: ModelState, now: float) -> ModelState:
    """A success clears the model's error, cooldown, quota flag and backoff."""
    return evolve(CLEAR, updated_at=now)


def apply_failure(
    state: ModelState,
    now: float,
    status: int,
    message: str,
    retry_after: float | None,
    disable_cooling: bool,
    kind: str = "http",
    protocol: bool = False,
    transient: float | None = TRANSIENT_COOLDOWN,
) -> ModelState:
    """
    CLIProxyAPI's MarkResult table for one (credential, model), with its
    transient cooldown also for the failures that have no status.

    ====================================  =========================================
    outcome                               cooldown
    ====================================  =========================================
    a protocol fault (C{protocol})        5 s, whatever the status
    400/422 model-support message         12 h
    401, 402, 403                         30 min
    404                                   12 h
    429 with a retry hint                 the hint (always; backoff level unchanged)
    429 without                           1 s * 2^level, max 30 min (level + 1)
    408, 500, 502, 503, 504, 529          1 min
    no answer in time (C{kind} timeout)   1 min
    no connection (C{kind} connect)       30 s
    anything else                         none (failure recorded, not blocked)
    ====================================  =========================================

    CLIProxyAPI cools none of the failures without a status, so an upstream
    that hangs or refuses stays in rotation and every request that picks it
    pays for finding out again (a hang: the whole response-seconds).

    C{disable_cooling} removes the protocol, hintless 429, transient,
    timeout and connect cooldowns, not the others.

    @param kind: the L{cliproxyd.replies.UpstreamError} kind; it matters
        only when C{status} is 0.
    @param protocol: the failure is a protocol fault of this one answer
        (L{PROTOCOL_COOLDOWN} says why it cools so briefly), whichever
        status it carries.
    @param transient: the cooldown of the transient statuses and of a
        timeout (C{transient-error-cooldown-seconds}, L{transient_cooldown});
        C{None}: they do not cool.
    """
    base = evolve(
        state,
        unavailable=True,
        last_status=status or None,
        last_error=message[:500],
        updated_at=now,
    )
    if protocol:
        until = None if disable_cooling else now + PROTOCOL_COOLDOWN
        return evolve(base, next_retry_at=until, reason="protocol")
    if is_model_support_error(status, message):
        return evolve(base, next_retry_at=now + NOT_FOUND_COOLDOWN, reason="model_not_supported")
    if status == 401:
        return evolve(base, next_retry_at=now + AUTH_COOLDOWN, reason="unauthorized")
    if status in (402, 403):
        return evolve(base, next_retry_at=now + AUTH_COOLDOWN, reason="payment_required")
    if status == 404:
        return evolve(base, next_retry_at=now + NOT_FOUND_COOLDOWN, reason="not_found")
    if status == 429:
        level = state.backoff_level
        if retry_after is not None:
            until: float | None = now + retry_after
        else:
            cooldown, level = next_quota_cooldown(level, disable_cooling)
            until = now + cooldown if cooldown > 0 else None
        return evolve(base, next_retry_at=until, backoff_level=level, quota_exceeded=True, reason="quota")
    if status in TRANSIENT_STATUSES:
        until = None if disable_cooling or transient is None else now + transient
        return evolve(base, next_retry_at=until, reason="transient")
    if not status and kind in NO_ANSWER_COOLDOWNS:
        cooldown = transient if kind == "timeout" else NO_ANSWER_COOLDOWNS[kind]
        until = None if disable_cooling or cooldown is None else now + cooldown
        return evolve(base, next_retry_at=until, reason=kind)
    return evolve(base, next_retry_at=None, reason="error")


def transient_cooldown(seconds: int) -> float | None:
    """
    C{transient-error-cooldown-seconds} as CLIProxyAPI reads it: 0 keeps
    the 60 s default, a negative value turns transient cooldowns off.
    """
    if seconds < 0:
        return None
    return float(seconds) if seconds else TRANSIENT_COOLDOWN


def force_cooldown(state: ModelState, now: float) -> ModelState:
    """
    A failure a C{*-and-cooldown} request-scoped rule matched: it cools
    even under disable-cooling, for the table's time, or for
    L{TRANSIENT_COOLDOWN} where the table has none (as CLIProxyAPI's
    forced cooldown does).
    """
    if state.blocked(now):
        return state
    return evolve(state, unavailable=True, next_retry_at=now + TRANSIENT_COOLDOWN, reason="request_scoped")


def retry_wait(waits: Iterable[float], max_retry_interval: float) -> float | None:
    """
    Whether another retry round should run, and after how long: the nearest
    of C{waits} (each the time until a credential that still has retry rounds
    left recovers), if it is within C{max_retry_interval}. A zero interval
    turns retry rounds off, as in CLIProxyAPI.
    """
    if max_retry_interval <= 0:
        return None
    # A cooldown that ended since the round's last pick means "go again now".
    nearest = min((max(w, 0.0) for w in waits), default=None)
    if nearest is None or nearest > max_retry_interval:
        return None
    return nearest
