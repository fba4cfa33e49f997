"""
Every format module keeps the contract of L{cliproxyd.formats.contract}: each
name of the protocol, with a signature its callers can call as the protocol
does (the same parameter names and kinds, in order; anything more with a
default). A module that drifts (renames a parameter, adds a required one,
drops a name) fails here, not at a caller in production.
"""

from __future__ import annotations

import inspect
import json
from types import ModuleType
from typing import Any, Protocol

import pytest

from cliproxyd import formats
from cliproxyd.formats import FORMATS, CountingFormat, Decoder, Encoder, Format, contract
from cliproxyd.formats import canonical as C
from cliproxyd.formats import common

#: The formats with a count endpoint.
COUNTING = {"claude", "gemini"}

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def members(protocol: type) -> dict[str, Any]:
    """The names a protocol asks for: its attributes and methods, its bases' included."""
    found: dict[str, Any] = {}
    for cls in reversed(protocol.__mro__):
        if cls in (object, Protocol) or not issubclass(cls, Protocol) or not getattr(cls, "_is_protocol", False):
            continue
        found.update(dict.fromkeys(getattr(cls, "__annotations__", {})))
        found.update({name: value for name, value in vars(cls).items()
                      if not name.startswith("_") and callable(value)})
    return found


def mismatches(spec: inspect.Signature, impl: inspect.Signature) -> list[str]:
    """What keeps C{impl} from being called every way C{spec} allows."""
    problems = []
    spec_params = list(spec.parameters.values())
    impl_params = {p.name: p for p in impl.parameters.values()}
    impl_positional = [p for p in impl.parameters.values() if p.kind in _POSITIONAL]
    for i, want in enumerate(p for p in spec_params if p.kind in _POSITIONAL):
        have = impl_positional[i] if i < len(impl_positional) else None
        if have is None or have.name != want.name or have.kind != want.kind:
            problems.append(f"positional parameter {i} should be {want.name!r} ({want.kind.description}),"
                            f" not {have and have.name!r}")
    for want in spec_params:
        have = impl_params.get(want.name)
        if want.kind == inspect.Parameter.KEYWORD_ONLY and (have is None or have.kind != want.kind):
            problems.append(f"{want.name!r} should be a keyword-only parameter")
        if have is not None and want.default is not inspect.Parameter.empty and have.default is inspect.Parameter.empty:
            problems.append(f"{want.name!r} should have a default")
    spec_names = {p.name for p in spec_params}
    for have in impl.parameters.values():
        if have.name not in spec_names and have.kind not in _VARIADIC and have.default is inspect.Parameter.empty:
            problems.append(f"{have.name!r} is required, and the contract does not pass it")
    return problems


def unbound(signature: inspect.Signature) -> inspect.Signature:
    """A protocol method's signature without C{self}: how a module's function is called."""
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def check(impl: Any, protocol: type, drop_self: bool) -> list[str]:
    """Every way C{impl} (a module, or a class) fails C{protocol}."""
    problems = []
    for name, spec in members(protocol).items():
        if not hasattr(impl, name):
            problems.append(f"{name} is missing")
        elif spec is not None:
            want = inspect.signature(spec)
            problems += [f"{name}: {p}" for p in mismatches(unbound(want) if drop_self else want,
                                                           inspect.signature(getattr(impl, name)))]
    return problems


def test_the_protocol_names_what_the_contract_lists():
    assert set(members(Format)) == {
        "NAME", "validate", "set_model", "apply_reasoning", "request_to_canonical", "request_from_canonical",
        "response_to_canonical", "response_from_canonical", "StreamDecoder", "StreamEncoder",
        "error_body", "stream_error_event", "is_stream_end", "name_answer_model"}
    assert set(members(CountingFormat)) - set(members(Format)) == {"count_request", "count_body", "count_from_body"}
    assert set(members(Decoder)) == {"feed"} and set(members(Encoder)) == {"feed", "close"}


def test_the_formats_package_re_exports_the_contract():
    assert (formats.Format, formats.CountingFormat) == (contract.Format, contract.CountingFormat)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_keeps_the_contract(name: str):
    module = FORMATS[name]
    assert module.NAME == name and isinstance(module.NAME, str)
    assert check(module, Format, drop_self=True) == []


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_streams_with_the_contract_s_decoder_and_encoder(name: str):
    module = FORMATS[name]
    assert check(module.StreamDecoder, Decoder, drop_self=False) == []
    assert check(module.StreamEncoder, Encoder, drop_self=False) == []


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_exactly_the_formats_with_a_count_endpoint_keep_the_counting_contract(name: str):
    problems = check(FORMATS[name], CountingFormat, drop_self=True)
    if name in COUNTING:
        assert problems == []
    else:
        assert {p.partition(" ")[0] for p in problems} == {"count_request", "count_body", "count_from_body"}


# -- the check itself catches drift --------------------------------------------------


def _drifted(**changes: Any) -> ModuleType:
    """The OpenAI format module, as a copy with some of its names replaced."""
    module = ModuleType("drifted")
    module.__dict__.update({k: v for k, v in vars(FORMATS["openai"]).items() if not k.startswith("__")})
    module.__dict__.update(changes)
    for name, value in changes.items():
        if value is None:
            delattr(module, name)
    return module


@pytest.mark.parametrize(("changes", "problem"), [
    ({"error_body": None}, "error_body is missing"),
    ({"NAME": None}, "NAME is missing"),
    ({"validate": lambda body: ("", False)}, "validate: positional parameter 0 should be 'data'"),
    ({"set_model": lambda data, model, extra: data}, "set_model: 'extra' is required"),
    ({"apply_reasoning": lambda data, reasoning, model: None}, "apply_reasoning: 'model' should have a default"),
    ({"response_from_canonical": lambda resp: {}}, "response_from_canonical: positional parameter 1 should be 'model'"),
    ({"stream_error_event": lambda *, message: b""}, "stream_error_event: positional parameter 0"),
])
def test_a_module_that_drifts_fails_the_check(changes: dict[str, Any], problem: str):
    problems = check(_drifted(**changes), Format, drop_self=True)
    assert len(problems) >= 1 and problems[0].startswith(problem)


def test_a_class_that_drifts_fails_the_check():
    class Encoder2:
        def feed(self, event: Any, final: bool) -> bytes:
            return b""

    assert check(Encoder2, Encoder, drop_self=False) == ["feed: 'final' is required, and the contract does not pass it",
                                                        "close is missing"]


def test_more_than_the_contract_asks_is_allowed_when_it_has_a_default():
    def encoder(model: str, sse: bool = True, *, origin: Any = None, limit: int = 0) -> None:
        pass

    assert check(_drifted(StreamEncoder=encoder), Format, drop_self=True) == []


def test_an_encoder_without_the_origin_keyword_fails_the_check():
    def encoder(model: str, sse: bool = True) -> None:
        pass

    assert check(_drifted(StreamEncoder=encoder), Format, drop_self=True) == [
        "StreamEncoder: 'origin' should be a keyword-only parameter"]
    assert check(_drifted(response_from_canonical=lambda resp, model, origin: {}), Format, drop_self=True) == [
        "response_from_canonical: 'origin' should be a keyword-only parameter",
        "response_from_canonical: 'origin' should have a default"]


#: Text that looks like the end of a stream of some format, as content.
TRICKY = ['data: [DONE]', '"finish_reason":"stop"', '"message_stop"', '"response.completed"',
          '"finishReason": "STOP"', "line\ndata: [DONE]\n\n"]


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_formats_final_event_is_found_in_a_stream_and_never_in_its_content(name):
    fmt = FORMATS[name]
    encoder = fmt.StreamEncoder("m")
    body = encoder.feed(C.Start("id-1", "m")) + b"".join(encoder.feed(C.TextDelta(t)) for t in TRICKY)
    body += encoder.feed(C.ToolCallStart(0, "call_1", "f")) + encoder.feed(C.ToolCallDelta(0, json.dumps(TRICKY)))
    assert not fmt.is_stream_end(body)
    assert fmt.is_stream_end(body + encoder.feed(C.Finish(C.STOP)) + encoder.close())


def test_error_statuses_come_from_codes_first_then_names():
    assert common.error_status(429, "server_error") == 429
    assert common.error_status("503", None) == 503
    assert common.error_status(None, "RESOURCE_EXHAUSTED") == 429
    assert common.error_status("rate_limit_exceeded", "requests") == 429
    assert common.error_status(None, "overloaded_error") == 529
    assert common.error_status(200, True, "invalid_request_error", None) == 0


@pytest.mark.parametrize("name", list(FORMATS))
def test_an_encoder_writes_nothing_after_an_error(name):
    """A stream's error is its last event: a second error (the relay's, after the upstream's) adds nothing."""
    encoder = FORMATS[name].StreamEncoder("m")
    assert encoder.feed(C.TextDelta("partial")) and encoder.feed(C.ErrorEvent("upstream error", status=429))
    assert encoder.feed(C.ErrorEvent("ended before its final event")) == b""
    assert encoder.feed(C.TextDelta("late")) == b"" and encoder.close() == b""
