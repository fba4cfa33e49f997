"""
The providers' own usage and quota endpoints, read for reset probes and
headroom (issue 16): the cheapest call that says whether a credential
would answer a request again.

===============  ===============================================================  ================================
kind             call                                                             answer read
===============  ===============================================================  ================================
claude (OAuth)   C{GET /api/oauth/usage} (beta C{oauth-2025-04-20})                C{five_hour}, C{seven_day} (and
                                                                                  the per-model weekly windows):
                                                                                  C{utilization} 0-100, C{resets_at}
codex (OAuth)    C{GET /backend-api/wham/usage} (C{Chatgpt-Account-Id})            C{rate_limit}: C{allowed},
                                                                                  C{limit_reached}, C{primary_window}
                                                                                  and C{secondary_window} with
                                                                                  C{used_percent}, C{reset_at} or
                                                                                  C{reset_after_seconds}
gemini-cli       C{POST v1internal:retrieveUserQuota} C{{"project": P}}            C{buckets}: C{modelId},
                                                                                  C{remainingFraction}, C{resetTime}
antigravity      C{POST v1internal:fetchAvailableModels} C{{"project": P}}         C{models.M.quotaInfo}:
                                                                                  C{remainingFraction}, C{resetTime}
===============  ===============================================================  ================================

Each answer is read into a L{QuotaReading}: whether the model probed has
quota now, when the exhausted window resets, and the least fraction left.
Reading is pure (C{read_*}, on the decoded answer and C{now}); L{read_quota}
makes the call through the credential's executor, with its headers, proxy
and token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from attrs import frozen

from cliproxyd.formats.common import parse_rfc3339
from cliproxyd.formats.request import dumps
from cliproxyd.replies import UpstreamError

if TYPE_CHECKING:
    from cliproxyd.credentials import Credential
    from cliproxyd.executors.upstreams import HTTPExecutor

#: The Claude OAuth beta its usage endpoint wants.
CLAUDE_OAUTH_BETA = b"oauth-2025-04-20"
#: Below this fraction left a window counts as exhausted (the providers round: 0.4 % left is none).
EXHAUSTED = 0.005


@frozen
class QuotaReading:
    """
    What a usage endpoint says of one credential (and the model probed).

    @ivar available: a request for the model would go through now.
    @ivar reset_at: when the window that holds it resets; when available, when
        the window with the least left resets (None: not said).
    @ivar fraction: the least fraction left of any window read (0 to 1), None when none said.
    @ivar source: which window gave C{fraction} (C{"claude-five_hour"}, C{"codex-primary"}, ...).
    """

    available: bool
    reset_at: float | None = None
    fraction: float | None = None
    source: str = ""


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().rstrip("%"))
        except ValueError:
            return None
    return None


def _pick(d: dict[str, Any], *names: str) -> Any:
    """The first of C{names} C{d} has (the providers answer in snake_case or camelCase)."""
    for n in names:
        if n in d:
            return d[n]
    return None


def _verdict(windows: list[tuple[str, float, float | None]], blocked: bool | None = None) -> QuotaReading:
    """
    One reading of C{(source, fraction left, reset_at)} windows: the least
    left is the headroom; an exhausted window (or C{blocked}) holds the
    credential until the latest reset among the exhausted ones.
    """
    if not windows:
        if blocked is None:
            raise ValueError("the answer reports no quota window")
        return QuotaReading(available=not blocked)
    source, least, least_reset = min(windows, key=lambda w: w[1])
    spent = [w for w in windows if w[1] <= EXHAUSTED]
    if blocked is None:
        blocked = bool(spent)
    if not blocked:
        return QuotaReading(True, least_reset, least, source)
    resets = [w[2] for w in (spent or windows) if w[2] is not None]
    return QuotaReading(False, max(resets) if resets else None, least, source)


#: Claude's usage windows that hold every model (the per-model weekly ones are read by model family).
CLAUDE_WINDOWS = ("five_hour", "seven_day", "seven_day_oauth_apps")
CLAUDE_MODEL_WINDOWS = {"opus": "seven_day_opus", "sonnet": "seven_day_sonnet"}


def read_claude(data: Any, model: str, now: float) -> QuotaReading:
    """Claude OAuth's C{/api/oauth/usage}: windows with C{utilization} (percent used) and C{resets_at}."""
    if not isinstance(data, dict):
        raise ValueError("the usage answer is not an object")
    names = list(CLAUDE_WINDOWS)
    names += [w for family, w in CLAUDE_MODEL_WINDOWS.items() if family in model.lower()]
    windows = []
    for name in names:
        w = data.get(name)
        if not isinstance(w, dict):
            continue
        used = _num(w.get("utilization"))
        if used is None:
            continue
        windows.append((f"claude-{name}", max(0.0, min(1.0, 1.0 - used / 100.0)),
                        parse_rfc3339(w.get("resets_at") if isinstance(w.get("resets_at"), str) else None)))
    return _verdict(windows)


def _codex_reset(w: dict[str, Any], now: float) -> float | None:
    at = _num(_pick(w, "reset_at", "resetAt"))
    if at is not None:
        return at / 1000.0 if at > 1e11 else at  # seconds, or milliseconds
    after = _num(_pick(w, "reset_after_seconds", "resetAfterSeconds"))
    return None if after is None else now + after


def read_codex(data: Any, model: str, now: float) -> QuotaReading:
    """Codex's C{/backend-api/wham/usage}: C{rate_limit} with its primary (5 h) and secondary (weekly) windows."""
    if not isinstance(data, dict):
        raise ValueError("the usage answer is not an object")
    limit = _pick(data, "rate_limit", "rateLimit")
    if not isinstance(limit, dict):
        raise ValueError("the usage answer has no rate_limit")
    windows = []
    for name in ("primary", "secondary"):
        w = _pick(limit, f"{name}_window", f"{name}Window")
        if not isinstance(w, dict):
            continue
        used = _num(_pick(w, "used_percent", "usedPercent"))
        if used is None:
            continue
        windows.append((f"codex-{name}", max(0.0, min(1.0, 1.0 - used / 100.0)), _codex_reset(w, now)))
    reached = _pick(limit, "limit_reached", "limitReached")
    allowed = limit.get("allowed")
    blocked = None
    if reached is True or allowed is False:
        blocked = True
    elif reached is False or allowed is True:
        blocked = any(w[1] <= EXHAUSTED for w in windows)
    return _verdict(windows, blocked)


def _model_matches(bucket_model: str, model: str) -> bool:
    a = bucket_model.removeprefix("models/").lower()
    b = model.removeprefix("models/").lower()
    return a == b or a.removesuffix("_vertex") == b


def _fraction_of(info: dict[str, Any]) -> float | None:
    """A Google quota's C{remainingFraction}; a C{resetTime} without one means none is left (Google omits 0)."""
    fraction = _num(_pick(info, "remainingFraction", "remaining_fraction"))
    if fraction is None:
        amount = _num(_pick(info, "remainingAmount", "remaining_amount"))
        if amount is not None and amount <= 0:
            return 0.0
        return 0.0 if _pick(info, "resetTime", "reset_time") else None
    return max(0.0, min(1.0, fraction))


def _google_window(source: str, info: dict[str, Any]) -> tuple[str, float, float | None] | None:
    fraction = _fraction_of(info)
    if fraction is None:
        return None
    reset = _pick(info, "resetTime", "reset_time")
    return source, fraction, parse_rfc3339(reset) if isinstance(reset, str) else None


def _google_reading(quotas: Any, model: str, what: str) -> QuotaReading:
    """The reading of C{(source, quota info)} pairs: Code Assist's buckets or Antigravity's models."""
    windows = [w for source, info in quotas if (w := _google_window(source, info)) is not None]
    if not windows:
        raise ValueError(f"the {what} answer has no quota for {model}")
    return _verdict(windows)


def read_gemini_cli(data: Any, model: str, now: float) -> QuotaReading:
    """Code Assist's C{retrieveUserQuota}: C{buckets} per model (and token type)."""
    if not isinstance(data, dict) or not isinstance(data.get("buckets"), list):
        raise ValueError("the quota answer has no buckets")
    buckets = ((f"gemini-cli-{m}", b) for b in data["buckets"] if isinstance(b, dict)
               and isinstance(m := _pick(b, "modelId", "model_id"), str) and _model_matches(m, model))
    return _google_reading(buckets, model, "quota")


def read_antigravity(data: Any, model: str, now: float) -> QuotaReading:
    """Antigravity's C{fetchAvailableModels}: C{models}, each with its C{quotaInfo}."""
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ValueError("the models answer has no models")
    infos = ((f"antigravity-{name}", info) for name, entry in models.items()
             if isinstance(entry, dict) and _model_matches(name, model)
             and isinstance(info := _pick(entry, "quotaInfo", "quota_info"), dict))
    return _google_reading(infos, model, "models")


def _codex_usage_url(cred: Credential) -> str:
    base = cred.base_url.rstrip("/")
    return base.removesuffix("/codex") + "/wham/usage"


@frozen
class QuotaCall:
    """How one kind's usage endpoint is called: method, URL, body, extra headers, and the reader."""

    method: bytes
    url: Callable[["Credential"], str]
    read: Callable[[Any, str, float], QuotaReading]
    #: the body for the credential's project (Code Assist), else empty
    project_body: bool = False
    headers: tuple[tuple[bytes, bytes], ...] = ()


#: The kinds with a usage endpoint, and how it is called.
QUOTA_CALLS: dict[str, QuotaCall] = {
    "claude": QuotaCall(b"GET", lambda c: c.base_url.rstrip("/") + "/api/oauth/usage", read_claude,
                        headers=((b"anthropic-beta", CLAUDE_OAUTH_BETA),)),
    "codex": QuotaCall(b"GET", _codex_usage_url, read_codex),
    "gemini-cli": QuotaCall(b"POST", lambda c: c.base_url.rstrip("/") + "/v1internal:retrieveUserQuota",
                            read_gemini_cli, project_body=True),
    "antigravity": QuotaCall(b"POST", lambda c: c.base_url.rstrip("/") + "/v1internal:fetchAvailableModels",
                             read_antigravity, project_body=True),
}


async def read_quota(executor: HTTPExecutor, cred: Credential, model: str, now: Callable[[], float]) -> QuotaReading:
    """
    Call C{cred}'s usage endpoint through its executor (its headers, token
    and proxy) and read the answer for C{model}; an answer that is not one
    raises L{UpstreamError} (C{broken}), as an HTTP failure does.
    """
    call = QUOTA_CALLS[cred.kind]
    body = b""
    if call.project_body:
        project = await executor.known_project(cred)  # type: ignore[attr-defined]
        body = dumps({"project": project})
    response = await executor._send(cred, call.url(cred), body, False, method=call.method,
                                    headers=call.headers)
    raw = await executor._read(response)
    try:
        return call.read(executor._answer_object(cred, raw), model, now())
    except (ValueError, TypeError, AttributeError) as e:
        raise UpstreamError("broken", f"the usage answer is not one: {e}", status=502) from None
