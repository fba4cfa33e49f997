"""
JSON read strictly and written without recursion (cliproxyd.jsontext): what
every client body, management body and upstream answer goes through.
"""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cliproxyd.jsontext import MAX_DEPTH, dumps, join_path, loads, too_deep
from tests.conftest import nest


@pytest.mark.parametrize("text", [
    b"NaN", b"[Infinity]", b"-Infinity", b"1e400", b'"\\ud800"', b'"\\udc00"', b'"\\ude00\\ud83d"',
    b'{"\\ud800": 1}', b"\xef\xbb\xbf{}", b'"\xff"', b'"\xed\xa0\x80"', b'"\xc0\xaf"', b"[" * 1025 + b"]" * 1025,
    b"", b"{} {}", b"{'a': 1}", b'"a\x01"', '{}'.encode("utf-16"),
], ids=["NaN", "Infinity", "-Infinity", "beyond a double", "lone high surrogate", "lone low surrogate",
        "reversed pair", "surrogate key", "BOM", "invalid UTF-8", "encoded surrogate", "overlong", "1025 deep",
        "empty", "two values", "single quotes", "raw control character", "UTF-16"])
def test_what_rfc_8259_leaves_undefined_is_refused(text):
    with pytest.raises(ValueError):
        loads(text)


def test_what_it_reads():
    assert loads(b'"\\ud83d\\ude00"') == "\U0001f600"  # a pair is one character
    assert dumps(loads(b"[" * 1024 + b"]" * 1024)) == b"[" * 1024 + b"]" * 1024
    assert loads(b'{"a": 1, "a": 2}') == {"a": 2}  # the last of duplicate keys, as most parsers
    assert loads(b"18446744073709551615") == 2**64 - 1
    assert loads(b"18446744073709551616") == float(2**64)  # beyond 64 bits: a float


def test_deep_values_are_written_without_recursion():
    limit = sys.getrecursionlimit()
    deep = nest(limit * 2, {"k": ["v", None, True, 1.5]})
    text = dumps(deep)
    assert text == b"[" * (limit * 2) + b'{"k":["v",null,true,1.5]}' + b"]" * (limit * 2)


def test_what_orjson_will_not_write_is_written_as_json_does():
    value = {"big": 2**70, "small": -(2**70), "odd": "\ud800", "deep": nest(300, {})}
    assert json.loads(dumps(value)) == json.loads(json.dumps(value))
    with pytest.raises(TypeError):
        dumps(nest(300, {1: 2}))
    with pytest.raises(TypeError):
        dumps(nest(300, object()))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(0, 300))
def test_written_deep_or_not_it_reads_back_the_same(value, depth):
    assert json.loads(dumps(nest(depth, value))) == json.loads(json.dumps(nest(depth, value)))


def test_too_deep_names_the_first_place_in_document_order():
    assert too_deep({"a": 1}) is None
    assert too_deep(nest(MAX_DEPTH - 1, {})) is None  # MAX_DEPTH levels in all
    body = {"messages": [{"content": "hi"}, {"content": [{"input": nest(MAX_DEPTH)}]}], "b": nest(MAX_DEPTH)}
    assert too_deep(body).startswith("messages[1].content[0].input[0][0]")
    assert too_deep({"x" * 100: nest(3)}, limit=1) == '["' + "x" * 40 + '\\u2026"]'
    assert too_deep({"a b": {"\n": nest(3)}}, limit=2) == '["a b"]["\\n"]'
    assert too_deep(nest(5), limit=2, where="tools[0].parameters") == "tools[0].parameters[0][0]"


def test_path_steps():
    assert join_path("", "messages") == "messages"
    assert join_path("messages", 2) == "messages[2]"
    assert join_path("messages[2]", "tool-call_id") == "messages[2].tool-call_id"
    assert join_path("a", "1x") == 'a["1x"]'
