"""The OpenAI-compatible executor: C{POST {base-url}/chat/completions}."""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from cliproxyd.config.model import Timeouts
from cliproxyd.credentials import Credential
from cliproxyd.executors.base import Reply, StreamReply, UpstreamError
from cliproxyd.executors.stream import (
    MAX_ERROR_BODY,
    BodyCollector,
    StreamRelay,
    describe,
    is_cancellation,
)


def parse_retry_after(value: bytes | None, now: float) -> float | None:
    """Seconds from a C{Retry-After} header: delta-seconds or an HTTP date."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError):
            return None
    return max(seconds, 0.0)


def _duration(value: object) -> float | None:
    """C{"12s"}, C{"1.5s"} (protobuf Duration) or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    return None


def retry_hint_from_body(body: bytes, now: float) -> float | None:
    """
    A retry hint inside an error body, in the forms providers use: Gemini's
    C{error.details[].retryDelay} (C{"12s"}), Codex's
    C{error.resets_in_seconds} or C{error.resets_at} (epoch seconds).
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None
    for detail in err.get("details") or ():
        if isinstance(detail, dict) and "retryDelay" in detail:
            seconds = _duration(detail["retryDelay"])
            if seconds is not None:
                return max(seconds, 0.0)
    seconds = _duration(err.get("resets_in_seconds"))
    if seconds is not None:
        return max(seconds, 0.0)
    at = err.get("resets_at")
    if isinstance(at, (int, float)) and not isinstance(at, bool):
        return max(float(at) - now, 0.0)
    return None


class OpenAICompatExecutor:
    log = Logger()

    def __init__(self, client: HTTPClient, clock: IReactorTime, timeouts: Timeouts) -> None:
        self._client = client
        self._clock = clock
        self._timeouts = timeouts
        self._urls: dict[str, str] = {}
        self._headers: dict[str, dict[bytes, list[bytes]]] = {}

    def prepare(self, creds: tuple[Credential, ...]) -> None:
        """Precompute each credential's URL and headers (at config load, not per request)."""
        self._urls = {c.id: c.base_url + "/chat/completions" for c in creds}
        self._headers = {c.id: c.request_headers() for c in creds}

    async def execute(self, cred: Credential, body: bytes, stream: bool) -> Reply | StreamReply:
        headers = Headers(self._headers[cred.id])
        if stream:
            headers.setRawHeaders(b"accept", [b"text/event-stream"])
        d = self._client.request(
            "POST",
            self._urls[cred.id],
            data=body,
            headers=headers,
            unbuffered=True,
            allow_redirects=False,
        )
        timed_out = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        limit = self._timeouts.response
        deadline = self._clock.callLater(limit, expire) if limit > 0 else None
        try:
            response = await d
        except Exception as e:
            if timed_out:
                raise UpstreamError(
                    "timeout", f"no response within {self._timeouts.response:g}s"
                ) from None
            if is_cancellation(e):
                # The client went away: no other credential gets tried.
                raise CancelledError() from None
            raise UpstreamError("connect", describe(e)) from None
        finally:
            if deadline is not None and deadline.active():
                deadline.cancel()

        status = response.code
        content_type = (response.headers.getRawHeaders(b"content-type") or [b"application/json"])[0]
        if not 200 <= status < 300:
            try:
                body = await self._read(response, MAX_ERROR_BODY)
            except UpstreamError:
                body = b""
            now = self._clock.seconds()
            retry_after = parse_retry_after(
                (response.headers.getRawHeaders(b"retry-after") or [None])[0], now
            )
            if retry_after is None:
                retry_after = retry_hint_from_body(body, now)
            # An upstream that echoes the key back must not put it in our
            # logs or in the client's error.
            body = body.replace(cred.api_key.encode(), cred.fingerprint.encode())
            raise UpstreamError(
                "http",
                _error_message(body) or f"HTTP {status}",
                status=status,
                body=body,
                retry_after=retry_after,
            )
        if stream and content_type.startswith(b"text/event-stream"):
            relay = StreamRelay(self._clock, self._timeouts.stream_idle)
            response.deliverBody(relay)
            await relay.first
            return StreamReply(status=status, content_type=content_type, relay=relay)
        return Reply(status=status, content_type=content_type, body=await self._read(response))

    async def _read(self, response, limit: int | None = None) -> bytes:
        collector = BodyCollector(self._clock, self._timeouts.stream_idle, limit)
        response.deliverBody(collector)
        return await collector.done


def _error_message(body: bytes) -> str:
    """The message of an OpenAI-shaped error body, for logs; empty if there is none."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:500]
        if isinstance(err, str):
            return err[:500]
    return ""
