"""
What the format modules share: the checks their C{validate}s start with,
the depth a translated body may have, tool arguments between JSON text and
objects, images as C{data:} URLs, the top of an upstream answer, error
bodies, SSE payloads, answer ids, and the L{Origin} of the times and ids an
answer is given.

Helpers for the format modules, not part of their contract (see
L{cliproxyd.formats.contract}). An error message here is the one a client
sees, word for word; a module whose wording differs passes its own.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any, Callable, Iterable, Protocol

from attrs import frozen
from twisted.logger import Logger

from cliproxyd import jsontext
from cliproxyd.formats import canonical as C
from cliproxyd.jsontext import MAX_DEPTH

log = Logger(namespace="cliproxyd.formats.common")


# -- where times and ids come from -------------------------------------------------------


def _uuid_hex() -> str:
    return uuid.uuid4().hex


@frozen
class Origin:
    """
    Where the encoders take the time an answer was created and the ids they
    make up, so that a caller (the frontend, with its reactor's clock; a
    test, with a fixed clock and a counter) decides them.

    An encoder reads L{now} once, when it is built or called, never per
    event; it asks L{new_id} only for an id the upstream did not give.

    @ivar now: the time, in seconds since the epoch (C{time.time}, or an
        C{IReactorTime}'s C{seconds}).
    @ivar new_id: a fresh id, of ASCII letters and digits, unique among the
        answers of a process (C{uuid4().hex}, 32 hex digits, by default; a
        format may use a prefix of it).
    """

    now: Callable[[], float] = time.time
    new_id: Callable[[], str] = _uuid_hex


#: The wall clock and random ids: what an encoder uses when it is given no origin.
DEFAULT_ORIGIN = Origin()


# -- checks of a client body -----------------------------------------------------------


def body_object(data: Any) -> dict[str, Any]:
    """C{data}, if it is a JSON object. @raise C.BadRequest: if not."""
    if not isinstance(data, dict):
        raise C.BadRequest("the body must be a JSON object")
    return data


def model_field(data: dict[str, Any], message: str = "model: a non-empty string is required") -> str:
    """The body's C{model}, a non-empty string. @raise C.BadRequest: C{message}, if it is not one."""
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise C.BadRequest(message)
    return model


def non_empty_array(data: dict[str, Any], key: str, message: str | None = None) -> list[Any]:
    """
    C{data[key]}, a non-empty array.

    @raise C.BadRequest: C{message}, or C{"<key>: a non-empty array is
        required"}, if it is not one.
    """
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise C.BadRequest(message or f"{key}: a non-empty array is required")
    return value


def stream_flag(data: dict[str, Any], message: str = "stream must be true or false", null: bool = True) -> bool:
    """
    The body's C{stream}: C{False} when it is absent, or C{null} and
    C{null} is allowed.

    @raise C.BadRequest: C{message}, if it is anything but a boolean.
    """
    value = data.get("stream", False)
    if value is None and null:
        return False
    if not isinstance(value, bool):
        raise C.BadRequest(message)
    return value


def number(data: dict[str, Any], key: str) -> float | None:
    """C{data[key]}: a number, or None when absent. @raise C.BadRequest: if it is not a number."""
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise C.BadRequest(f"{key} must be a number")
    return value


def positive_int(data: dict[str, Any], key: str) -> int | None:
    """C{data[key]}: an integer above 0, or None when absent. @raise C.BadRequest: if it is not one."""
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise C.BadRequest(f"{key} must be a positive integer")
    return value


def optional(data: dict[str, Any], key: str, kinds: tuple[type, ...], what: str) -> Any:
    """
    C{data[key]}: of one of C{kinds}, or None when absent (a boolean only
    if C{bool} is one of C{kinds}).

    @raise C.BadRequest: C{"<key> must be <what>"}, if it is something else.
    """
    value = data.get(key)
    if value is not None and ((isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds)):
        raise C.BadRequest(f"{key} must be {what}")
    return value


def objects(items: list[Any], where: str) -> list[Any]:
    """
    C{items}, if every one is an object (a top-level check, not a walk).

    @raise C.BadRequest: C{"<where>[i] must be an object"} for the first that is not.
    """
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise C.BadRequest(f"{where}[{i}] must be an object")
    return items


def shallow(data: Any, where: str = "") -> Any:
    """
    C{data}, if it nests at most L{MAX_DEPTH} levels: what every
    C{request_to_canonical} checks first, so that nothing translation does
    to a body (walking tool schemas, writing JSON) goes deeper than that.

    @param where: the JSON path of C{data} (empty for the body itself).
    @raise C.BadRequest: naming where it goes deeper.
    """
    path = jsontext.too_deep(data, MAX_DEPTH, where)
    if path is not None:
        raise C.BadRequest(f"{path}: nested more than {MAX_DEPTH} levels deep")
    return data


def set_model(data: dict[str, Any], model: str) -> dict[str, Any]:
    """A shallow copy of a client body that names its model in C{"model"}, naming C{model} instead."""
    return {**data, "model": model}


def name_model_at(data: dict[str, Any], model: str, key: str, *wrappers: str) -> bool:
    """
    Set C{data[key]}, or C{data[wrapper][key]} for the first wrapper that
    holds an object, to C{model} where it is a string; whether one was.
    """
    for holder in (data, *(data.get(w) for w in wrappers)):
        if isinstance(holder, dict) and isinstance(holder.get(key), str):
            holder[key] = model
            return True
    return False


# -- parts -------------------------------------------------------------------------------


def compact_json(value: Any) -> str:
    """
    C{value} as compact JSON text, non-ASCII written as it is: tool
    arguments as the canonical model holds them. Never recurses, however
    deep an upstream's answer.
    """
    return jsontext.dumps(value).decode("utf-8")


def arguments_text(value: Any, where: str) -> str:
    """
    A tool call's arguments in a client's request (Chat Completions,
    Responses): a string, kept as the model wrote it. Text that is not JSON
    is carried as it is (a model's call cut short is still a well-formed
    request, and a format that sends text sends it; one that sends an
    object sends C{{}}, see L{arguments_object}); JSON nested more than
    L{MAX_DEPTH} levels is refused, as a body nested so deeply is.

    @raise C.BadRequest: naming C{where}.
    """
    if not isinstance(value, str):
        raise C.BadRequest(f"{where} must be a string")
    try:
        parsed = jsontext.loads(value)
    except ValueError:
        return value
    if jsontext.too_deep(parsed, MAX_DEPTH) is not None:
        raise C.BadRequest(f"{where}: nested more than {MAX_DEPTH} levels deep")
    return value


def arguments_object(text: str) -> dict[str, Any]:
    """
    A tool call's JSON arguments as an object, for the formats that send
    one; C{{}} when they are not one, or nest more than L{MAX_DEPTH}
    levels (an upstream's answer is not checked as a request is).
    """
    text = text or "{}"
    try:
        value = jsontext.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or jsontext.too_deep(value, MAX_DEPTH) is not None:
        log.debug("tool arguments are not a JSON object; sending {{}}: {text!r}", text=text[:200])
        return {}
    # Read again by the standard library, which keeps integers beyond 64 bits
    # exact (orjson makes floats of them); at this depth its recursion is safe.
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def joined_text(parts: Iterable[C.Part]) -> str:
    """The text of the L{C.Text} parts among C{parts}, joined."""
    return "".join(p.text for p in parts if isinstance(p, C.Text))


def base64_image(url: str) -> C.Image | None:
    """The inline image of a base64 C{data:} URL; None when C{url} is not one."""
    header, comma, data = url.partition(",")
    if not comma or not header.startswith("data:") or not header.endswith(";base64"):
        return None
    return C.Image(data=data, media_type=header[len("data:"):-len(";base64")])


def web_url(url: str) -> bool:
    """Whether C{url} is an http or https URL (an image an upstream can fetch)."""
    scheme, sep, rest = url.partition("://")
    return bool(sep and rest) and scheme.lower() in ("http", "https")


def image_url(image: C.Image) -> str:
    """An image's URL, or its inline data as a base64 C{data:} URL."""
    return image.url or f"data:{image.media_type};base64,{image.data}"


def tool_schema(tool: C.Tool) -> dict[str, Any]:
    """A tool's parameters schema; an object with no properties when it has none."""
    return tool.parameters or {"type": "object", "properties": {}}


def set_present(body: dict[str, Any], **values: Any) -> None:
    """Set in C{body} those of C{values} that are not None, in order."""
    body.update((key, value) for key, value in values.items() if value is not None)


# -- answers -----------------------------------------------------------------------------


def answer(data: dict[str, Any], parts: Iterable[C.Part], stop_reason: str, usage: C.Usage) -> C.Response:
    """A canonical answer, its C{id} and C{model} from the top of the upstream answer C{data}."""
    return C.Response(
        id=str(data.get("id", "")),
        model=str(data.get("model", "")),
        parts=tuple(parts),
        stop_reason=stop_reason,
        usage=usage,
    )


def openai_usage(raw: Any, input_key: str, output_key: str) -> C.Usage:
    """
    An OpenAI usage object (C{prompt_tokens} and C{completion_tokens} in
    Chat Completions, C{input_tokens} and C{output_tokens} in Responses,
    each with its C{_details}) as canonical usage.
    """
    if not isinstance(raw, dict):
        return C.Usage()
    cached = (raw.get(input_key + "_details") or {}).get("cached_tokens") or 0
    reasoning = (raw.get(output_key + "_details") or {}).get("reasoning_tokens") or 0
    return C.Usage(int(raw.get(input_key) or 0), int(raw.get(output_key) or 0), int(cached), int(reasoning))


def google_usage(usage: C.Usage, prompt: str, output: str, total: str, thoughts: str, cached: str) -> dict[str, int]:
    """
    Canonical usage as Google's formats (Gemini, Interactions) count it,
    under their names: the output without the thoughts, which (and the
    cached input) are given only when there are any.
    """
    out = {prompt: usage.input_tokens, output: max(usage.output_tokens - usage.reasoning_tokens, 0),
           total: usage.input_tokens + usage.output_tokens}
    if usage.reasoning_tokens:
        out[thoughts] = usage.reasoning_tokens
    if usage.cached_tokens:
        out[cached] = usage.cached_tokens
    return out


def prefixed_id(prefix: str, given: str, origin: Origin) -> str:
    """
    An answer's id: C{given} if it has C{prefix}, else C{prefix} before it,
    or before a fresh id from C{origin} if it is empty.
    """
    return given if given.startswith(prefix) else prefix + (given or origin.new_id())


# -- bodies and frames -------------------------------------------------------------------


class ModelFacts(Protocol):
    """
    What a model list may say about a model beyond its name (the config's
    L{cliproxyd.config.model.ModelInfo}); zero and empty mean "not said".
    """

    display_name: str
    context_length: int
    output_tokens: int
    thinking: Any  # levels, min, max, zero_allowed, dynamic_allowed; or None
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]


def thinking_json(thinking: Any) -> dict[str, Any]:
    """A model's thinking support as JSON: only what was said."""
    out: dict[str, Any] = {}
    if thinking.levels:
        out["levels"] = list(thinking.levels)
    for key in ("min", "max"):
        if getattr(thinking, key):
            out[key] = getattr(thinking, key)
    for key in ("zero_allowed", "dynamic_allowed"):
        if getattr(thinking, key):
            out[key] = True
    return out


def json_body(data: Any) -> bytes:
    """C{data} as the UTF-8 JSON of a whole answer, non-ASCII written as it is."""
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


def error_json(err: dict[str, Any], extra: dict[str, Any] | None, **envelope: Any) -> bytes:
    """
    An error body: C{{**envelope, "error": err}}, with C{extra} merged into
    C{err} (overriding what it has), as L{json_body}.
    """
    if extra:
        err.update(extra)
    return json_body({**envelope, "error": err})


#: Error types and codes, as the four formats (and the providers behind them) name
#: them, and the HTTP status each comes with when it is not inside a 200.
ERROR_STATUSES = {
    "rate_limit_error": 429, "rate_limit_exceeded": 429, "insufficient_quota": 429, "RESOURCE_EXHAUSTED": 429,
    "overloaded_error": 529, "server_is_overloaded": 503, "UNAVAILABLE": 503,
    "api_error": 500, "server_error": 500, "INTERNAL": 500, "DEADLINE_EXCEEDED": 504,
    "authentication_error": 401, "invalid_api_key": 401, "UNAUTHENTICATED": 401,
    "permission_error": 403, "PERMISSION_DENIED": 403,
}


def error_status(*names: Any) -> int:
    """
    The HTTP status an error object stands for, from its fields in order of
    precedence (its code, status or type): a number that is an HTTP error
    status is one, a name of L{ERROR_STATUSES} stands for its status; 0 when
    none says. An invalid-request type is deliberately unknown here: inside a
    stream it says nothing about the request that a 4xx would have said.
    """
    for name in names:
        if isinstance(name, str) and name.isdigit():
            name = int(name)
        if isinstance(name, int) and not isinstance(name, bool):
            if 400 <= name <= 599:
                return name
        elif isinstance(name, str) and name in ERROR_STATUSES:
            return ERROR_STATUSES[name]
    return 0


def sse_json(data: Any) -> bytes:
    """
    C{data} as the compact JSON of an SSE data line. ASCII escapes: a client
    that splits lines on U+2028 or U+0085 (as C{str.splitlines} does) must
    still see one data line per event.
    """
    return json.dumps(data, separators=(",", ":")).encode("ascii")


def parse_rfc3339(text: str | None) -> float | None:
    """An RFC 3339 time (Anthropic's and Google's resets, C{Z} or an offset) as Unix seconds, or None."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
