"""
The turns of one Responses websocket connection, as requests.

A client of the Responses API over a websocket sends C{response.create}
(and C{response.append}) messages; each becomes one streamed Responses
request. The upstreams behind cliproxyd are stateless HTTP ones, so the
connection keeps the conversation itself, as CLIProxyAPI does when its
upstream is HTTP: the last request sent and the output of its answer. A
later turn that continues it (C{previous_response_id} naming the last
answer, or a turn that only adds input) is sent as the whole transcript:
the last request's input, the last answer's output, then the new input.
A turn whose input already holds the model's own items (an assistant
message, a tool call) is a full transcript and replaces the kept one.

Pure data: no I/O, no clock. L{Turns} raises L{TurnRefused} for a message
it will not send; the frontend tells the client with a websocket error event.
"""

from __future__ import annotations

from typing import Any

CREATE = "response.create"
APPEND = "response.append"

#: Items of an answer's output that a later turn's input may carry back (a tool call, by its call id).
_CALLS = frozenset({"function_call", "custom_tool_call"})


class TurnRefused(Exception):
    """A message that is not sent: C{status}, C{message}, an OpenAI error C{code} and C{param}."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def _as_items(value: Any, where: str) -> list[Any]:
    """An input as a list of items (a string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if isinstance(value, list):
        return value
    raise TurnRefused(400, f"{where} must be an array of input items or a string", param="input")


def _is_transcript(items: list[Any]) -> bool:
    """Whether the input holds the model's own items: the client sent the whole conversation."""
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind in _CALLS or (kind in (None, "message") and item.get("role") == "assistant"):
            return True
    return False


def _deduped(items: list[Any]) -> list[Any]:
    """
    C{items} with each tool call once (the first of a call id), and each
    item with an C{id} once (the last of that id), so a transcript merged
    from a request and its answer never repeats an item.
    """
    calls: set[str] = set()
    kept: list[Any] = []
    for item in items:
        if isinstance(item, dict) and item.get("type") in _CALLS and isinstance(item.get("call_id"), str):
            if item["call_id"] in calls:
                continue
            calls.add(item["call_id"])
        kept.append(item)
    last: dict[str, int] = {}
    for index, item in enumerate(kept):
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
            last[item["id"]] = index
    return [item for index, item in enumerate(kept)
            if not (isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
                    and last[item["id"]] != index)]


class Turns:
    """What one connection remembers between its turns, and how a message becomes a request."""

    def __init__(self) -> None:
        #: the last request sent whose answer completed (None: none yet)
        self.last_request: dict[str, Any] | None = None
        #: that answer's output items and its id
        self.last_output: list[Any] = []
        self.last_id = ""

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """
        The Responses request body (C{stream} on) for C{message}, a decoded
        client message; the kept state is not changed (see L{completed}).

        @raise TurnRefused: an unknown message type, a turn that continues
            a conversation this connection does not have, no model.
        """
        kind = message.get("type")
        if kind not in (CREATE, APPEND):
            raise TurnRefused(400, f"unsupported websocket message type: {kind!r} "
                                   f"(send {CREATE!r} or {APPEND!r})", param="type")
        body = {k: v for k, v in message.items() if k != "type"}
        previous = body.pop("previous_response_id", None)
        if previous is not None and not isinstance(previous, str):
            raise TurnRefused(400, "previous_response_id must be a string", param="previous_response_id")
        last = self.last_request
        if last is None:
            if kind == APPEND:
                raise TurnRefused(400, f"{APPEND!r} received before any {CREATE!r} completed on this websocket")
            if previous:
                raise _not_found()
            body.setdefault("input", [])
        else:
            if previous and previous != self.last_id:
                raise _not_found()
            items = _as_items(body.get("input"), "input")
            if not _is_transcript(items) or previous:
                items = _deduped(_as_items(last.get("input"), "the previous input") + self.last_output + items)
            body["input"] = items
            if "model" not in body and "model" in last:
                body["model"] = last["model"]
            if "instructions" not in body and "instructions" in last:
                body["instructions"] = last["instructions"]
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise TurnRefused(400, f"missing model in {kind} request", param="model")
        body["stream"] = True
        return body

    def completed(self, request: dict[str, Any], output: list[Any], response_id: str) -> None:
        """The answer to C{request} completed with C{output}: the next turn may continue from it."""
        self.last_request = request
        self.last_output = list(output)
        self.last_id = response_id


def _not_found() -> TurnRefused:
    return TurnRefused(409, "Previous response is not available on this websocket; resend the full "
                            "conversation input without previous_response_id",
                       "previous_response_not_found", "previous_response_id")


class OutputCollector:
    """
    Reads a turn's events as they go to the client: the output items
    (C{response.output_item.done}, by output index) and the final answer
    (C{response.completed}, or C{response.incomplete}), for L{Turns.completed}.
    """

    def __init__(self) -> None:
        self._items: dict[int, Any] = {}
        self.response_id = ""
        self.output: list[Any] | None = None  # set by the final event

    @property
    def done(self) -> bool:
        return self.output is not None

    def event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "response.output_item.done":
            index = data.get("output_index")
            self._items[index if isinstance(index, int) else len(self._items)] = data.get("item")
        elif kind in ("response.completed", "response.incomplete"):
            response = data.get("response")
            response = response if isinstance(response, dict) else {}
            rid = response.get("id")
            self.response_id = rid if isinstance(rid, str) else ""
            output = response.get("output")
            if isinstance(output, list) and output:
                self.output = output
            else:
                self.output = [self._items[i] for i in sorted(self._items) if self._items[i] is not None]
