"""
Bad management input, case by case: bodies that are not JSON (or not
strict JSON), of the wrong type, with fields no route takes, too large;
auth-file names that are not plain file names; indexes that are not
indexes. Each is a 4xx with a JSON error, nothing in config.yaml or the
auth directory changes, and nothing is logged at error level.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

import pytest
from attrs import frozen
from twisted.logger import LogLevel, capturedLogs
from twisted.web.test.requesthelper import DummyRequest

from cliproxyd.management.access import Refused
from cliproxyd.management.http import MAX_BODY, read_body, read_json
from tests.management_support import AUTH, ManagementRig, claude_file

CLAUDE_KEY = {"api-key": "sk-ant-1", "base-url": "http://upstream.test",
              "models": [{"name": "claude-sonnet-4-5"}]}
DEEP = b"[" * 10_000 + b"]" * 10_000
#: An auth-file name one byte longer than a name may be.
LONG = "a" * 196 + ".json"


@frozen
class Case:
    id: str
    method: str
    path: str
    body: Any = None
    #: bytes sent as they are (not as JSON)
    raw: bytes | None = None
    status: int = 400
    #: words the error must have
    says: str = ""


def pad(n: int) -> str:
    return "x" * n


CASES = [
    # -- bodies that are not JSON, or not strict JSON ------------------------------------------
    Case("not JSON", "PUT", "/debug", raw=b"{nope", says="not valid JSON"),
    Case("empty", "PUT", "/debug", raw=b"", says='{"value": ...}'),
    Case("NaN", "PUT", "/request-retry", raw=b'{"value": NaN}', says="not valid JSON"),
    Case("Infinity", "PUT", "/max-body-mb", raw=b'{"value": Infinity}', says="not valid JSON"),
    Case("a lone surrogate", "PUT", "/proxy-url", raw=b'{"value": "\\ud800"}', says="not valid JSON"),
    Case("a byte order mark", "PUT", "/debug", raw=b'\xef\xbb\xbf{"value": true}', says="not valid JSON"),
    Case("invalid UTF-8", "PUT", "/proxy-url", raw=b'{"value": "\xff"}', says="not valid JSON"),
    Case("10,000 deep", "PUT", "/api-keys", raw=DEEP, says="not valid JSON"),
    Case("100 deep", "PUT", "/api-keys", raw=b"[" * 100 + b"]" * 100, says="nested more than 64"),
    Case("a deep list entry", "PUT", "/openai-compatibility", raw=b'[{"name": "x", "models": ' + b"[" * 70
         + b"]" * 70 + b"}]", says="nested more than 64"),
    Case("a deep quota body", "PATCH", "/quota-groups/manual", raw=b'{"auth_id": ' + b"[" * 80 + b"]" * 80 + b"}",
         says="nested more than 64"),
    Case("a deep auth file", "POST", "/auth-files?name=deep.json",
         raw=b'{"type": "claude", "access_token": "t", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}", says="not JSON"),
    Case("an auth file 100 deep", "POST", "/auth-files?name=deep.json",
         raw=b'{"type": "claude", "access_token": "t", "x": ' + b"[" * 100 + b"]" * 100 + b"}",
         says="nested more than 64"),
    Case("an auth file with a lone surrogate", "POST", "/auth-files?name=s.json",
         raw=b'{"type": "claude", "access_token": "\\udc00"}', says="not JSON"),
    Case("an auth file with NaN", "POST", "/auth-files?name=n.json",
         raw=b'{"type": "claude", "access_token": "t", "expires_in": NaN}', says="not JSON"),
    # -- the wrong types -------------------------------------------------------------------------
    Case("a boolean that is a string", "PUT", "/debug", {"value": "yes"}, says="true or false"),
    Case("a count below 0", "PUT", "/request-retry", {"value": -1}, says="whole number"),
    Case("a count that is a float", "PUT", "/request-retry", {"value": 1.5}, says="whole number"),
    Case("a count that is a boolean", "PATCH", "/max-retry-credentials", {"value": True}, says="whole number"),
    Case("a count beyond 64 bits", "PUT", "/request-retry", raw=b'{"value": 99999999999999999999}',
         says="whole number"),
    Case("a size of 0", "PUT", "/max-body-mb", {"value": 0}, says="above 0"),
    Case("a strategy that is a number", "PUT", "/routing/strategy", {"value": 5}, says="round-robin"),
    Case("a proxy URL that is a number", "PUT", "/proxy-url", {"value": 5}, says="string"),
    Case("a body that is a list", "PUT", "/debug", [True], says='{"value": ...}'),
    Case("a list that is a number", "PUT", "/api-keys", 5, says="JSON array"),
    Case("an api key that is a number", "PATCH", "/api-keys", {"index": 0, "value": 5}, says="non-empty string"),
    Case("a list entry value that is a string", "PATCH", "/claude-api-key", {"index": 0, "value": "x"},
         says='"value" must be an object'),
    Case("a list entry field of the wrong type", "PATCH", "/claude-api-key",
         {"index": 0, "value": {"priority": "high"}}, says="claude-api-key[0].priority"),
    Case("disabled that is a string", "PATCH", "/auth-files/status", {"name": "a.json", "disabled": "yes"},
         says="disabled"),
    Case("a priority that is a string", "PATCH", "/auth-files/fields", {"name": "a.json", "priority": "high"},
         says="priority"),
    Case("a priority that is a boolean", "PATCH", "/auth-files/fields", {"name": "a.json", "priority": True},
         says="priority"),
    Case("a note that is a number", "PATCH", "/auth-files/fields", {"name": "a.json", "note": 5}, says="note"),
    Case("an auth_id that is a number", "PATCH", "/quota-groups/manual",
         {"auth_id": 5, "group_id": "g", "manual_suspended": True}, says="auth_id"),
    Case("manual_suspended that is a string", "PATCH", "/quota-groups/manual",
         {"auth_id": "a", "group_id": "g", "manual_suspended": "yes"}, says="manual_suspended"),
    Case("a credential id that is a number", "POST", "/credentials/reset", {"id": 5}, says="credential id"),
    Case("a reset model that is a number", "POST", "/credentials/reset", {"id": "x", "model": 5}, says="model"),
    Case("an auth file that is a list", "POST", "/auth-files?name=l.json", raw=b"[1]", says="JSON object"),
    Case("an auth file whose token is a number", "POST", "/auth-files?name=t.json",
         raw=b'{"type": "claude", "access_token": 5}', says="strings"),
    # -- fields no route takes ----------------------------------------------------------------------
    Case("a setting with another field", "PUT", "/debug", {"value": True, "also": 1}, says="unknown field 'also'"),
    Case("a misspelt auth-file field beside a good one", "PATCH", "/auth-files/fields",
         {"name": "a.json", "note": "team a", "prority": 5}, says="unknown field 'prority'"),
    Case("an auth-file field this version does not change", "PATCH", "/auth-files/fields",
         {"name": "a.json", "weight": 3, "colour": "red"}, says="unknown field 'colour'"),
    Case("a status with another field", "PATCH", "/auth-files/status",
         {"name": "a.json", "disabled": True, "why": "x"}, says="unknown field 'why'"),
    Case("a list PATCH with another field", "PATCH", "/api-keys", {"index": 0, "value": "k", "mode": "x"},
         says="unknown field 'mode'"),
    Case("a reset with another field", "POST", "/credentials/reset", {"id": "x", "all": True},
         says="unknown field 'all'"),
    Case("an auto-clear with another field", "PATCH", "/quota-groups/auto-clear",
         {"auth_id": "a", "group_id": "g", "force": True}, says="unknown field 'force'"),
    Case("a list entry with a key the config does not know", "PATCH", "/claude-api-key",
         {"index": 0, "value": {"bogus-key": 1}}, says="claude-api-key[0].bogus-key: unknown key"),
    Case("a new list with a key the config does not know", "PUT", "/openai-compatibility",
         [{"name": "x", "base-url": "http://x.test/v1", "api-key-entries": [{"api-key": "k"}], "modles": []}],
         says="openai-compatibility[0].modles: unknown key"),
    # -- too large ------------------------------------------------------------------------------
    Case("a config.yaml over the limit", "PUT", "/config.yaml", raw=b"# " + pad(MAX_BODY).encode() + b"\ndebug: true\n",
         status=413, says="larger than"),
    Case("an auth file over the limit", "POST", "/auth-files?name=big.json",
         raw=json.dumps({"type": "claude", "access_token": "t", "pad": pad(MAX_BODY)}).encode(),
         status=413, says="larger than"),
    Case("a list over the limit", "PUT", "/api-keys", [pad(1000)] * (MAX_BODY // 1000), status=413,
         says="larger than"),
    Case("a setting over the limit", "PUT", "/proxy-url", {"value": pad(MAX_BODY)}, status=413, says="larger than"),
    # -- auth-file names ---------------------------------------------------------------------------
    Case("a name ending in a line feed", "POST", "/auth-files?name=x.json%0A", raw=claude_file(),
         says="control characters"),
    Case("a name with a carriage return", "POST", "/auth-files?name=x%0D.json", raw=claude_file(),
         says="control characters"),
    Case("a name with a NUL", "POST", "/auth-files?name=x%00.json", raw=claude_file(), says="control characters"),
    Case("a name with a tab", "POST", "/auth-files?name=x%09y.json", raw=claude_file(), says="control characters"),
    Case("a name with a right-to-left override", "POST", "/auth-files?name=x%E2%80%AEnosj.json",
         raw=claude_file(), says="control characters"),
    Case("a name with a quote", "POST", "/auth-files?name=x%22.json", raw=claude_file(), says="quotes"),
    Case("a name that is a path", "POST", "/auth-files?name=..%2Fx.json", raw=claude_file(), says="no path"),
    Case("a name with a backslash", "POST", "/auth-files?name=..%5Cx.json", raw=claude_file(), says="no path"),
    Case("a hidden name", "POST", "/auth-files?name=.x.json", raw=claude_file(), says="dot"),
    Case("a name without .json", "POST", "/auth-files?name=x.txt", raw=claude_file(), says="end in .json"),
    Case("only .json", "POST", "/auth-files?name=.json", raw=claude_file(), says="dot"),
    Case("a name that is too long", "POST", f"/auth-files?name={LONG}", raw=claude_file(), says="at most 200 bytes"),
    Case("a name that is not UTF-8", "POST", "/auth-files?name=%FF.json", raw=claude_file(), says="UTF-8"),
    Case("an empty name", "POST", "/auth-files?name=", raw=claude_file(), says="required"),
    Case("a download by a bad name", "GET", "/auth-files/download?name=a.json%0A", says="control characters"),
    Case("a download by a name that is not UTF-8", "GET", "/auth-files/download?name=%FF", says="UTF-8"),
    Case("a delete by a bad name", "DELETE", "/auth-files?name=a.json%0A", says="control characters"),
    Case("a delete by a name that is not UTF-8", "DELETE", "/auth-files?name=a.json&name=%FF.json", says="UTF-8"),
    Case("a delete by a path", "DELETE", "/auth-files?name=..%2Fconfig.json", says="no path"),
    Case("a status by a bad name", "PATCH", "/auth-files/status", {"name": "a.json\n", "disabled": True},
         says="control characters"),
    Case("a status by a name that is a number", "PATCH", "/auth-files/status", {"name": 5, "disabled": True},
         says="required"),
    Case("fields by a path", "PATCH", "/auth-files/fields", {"name": "../a.json", "note": "x"}, says="no path"),
    Case("fields by a hidden name", "PATCH", "/auth-files/fields", {"name": ".a.json", "note": "x"}, says="dot"),
    # -- indexes ---------------------------------------------------------------------------------
    Case("a negative index", "DELETE", "/api-keys?index=-1", says="whole number"),
    Case("an index that is a word", "DELETE", "/api-keys?index=one", says="whole number"),
    Case("an index in other digits", "DELETE", "/api-keys?index=%C2%B2", says="whole number"),
    Case("an index of 5,000 digits", "DELETE", "/api-keys?index=" + "9" * 5000, says="whole number"),
    Case("an empty index", "DELETE", "/api-keys?index=", says="whole number"),
    Case("an index past the end", "DELETE", "/api-keys?index=9", says="between 0 and 1"),
    Case("a list entry index past the end", "DELETE", "/claude-api-key?index=1", says="between 0 and 0"),
    Case("a JSON index past the end", "PATCH", "/api-keys", {"index": 2, "value": "k"}, says="between 0 and 1"),
    Case("a JSON index below 0", "PATCH", "/api-keys", {"index": -1, "value": "k"}, says="between 0 and 1"),
    Case("a JSON index that is a string", "PATCH", "/api-keys", {"index": "0", "value": "k"}, says="between"),
    Case("a JSON index that is a boolean", "PATCH", "/api-keys", {"index": True, "value": "k"}, says="between"),
    Case("a JSON index that is a float", "PATCH", "/claude-api-key", {"index": 0.0, "value": {"priority": 1}},
         says="between"),
    Case("a usage limit in other digits", "GET", "/usage?limit=%C2%B2", says="whole number"),
    Case("a negative usage limit", "GET", "/usage?limit=-1", says="whole number"),
    Case("an entry no one has", "DELETE", "/api-keys?value=nope", status=404, says="no such entry"),
    Case("an auth file no one has", "DELETE", "/auth-files?name=gone.json", status=404, says="no auth file"),
    # -- the Management Center's auth-file, login and api-call routes ----------------------------
    Case("a delete whose names are not a list", "DELETE", "/auth-files", {"names": "a.json"}, says="list"),
    Case("a delete whose names hold a path", "DELETE", "/auth-files", {"names": ["../a.json"]}, says="no path"),
    Case("a delete body with another field", "DELETE", "/auth-files", {"names": ["a.json"], "all": True},
         says="unknown field 'all'"),
    Case("a weight that is negative", "PATCH", "/auth-files/fields", {"name": "a.json", "weight": -2},
         says="weight"),
    Case("headers that are a list", "PATCH", "/auth-files/fields", {"name": "a.json", "headers": ["X"]},
         says="headers"),
    Case("an expiry that is no time", "PATCH", "/auth-files/fields", {"name": "a.json", "expired": "later"},
         says="expired"),
    Case("a callback whose url is a number", "POST", "/oauth-callback", {"redirect_url": 5}, says="string"),
    Case("a callback with another field", "POST", "/oauth-callback", {"state": "s", "code": "c", "why": 1},
         says="unknown field 'why'"),
    Case("a callback for no login", "POST", "/oauth-callback", {"state": "s", "code": "c"}, status=404,
         says="unknown or expired state"),
    Case("an api-call whose header is a list", "POST", "/api-call", {"method": "GET", "url": "https://x/",
                                                                       "header": ["a"]}, says="header"),
    Case("an api-call to anywhere", "POST", "/api-call", {"method": "GET", "url": "https://example.com/"},
         status=403, says="auth_index"),
    Case("an api-call with a proxy", "POST", "/api-call", {"method": "GET", "url": "https://x/",
                                                            "proxy_url": "http://p:1"}, says="proxy_url"),
    Case("model definitions of no channel", "GET", "/model-definitions/nope", says="unknown channel"),
]


def snapshot(rig: ManagementRig) -> tuple[bytes, dict[str, bytes]]:
    """config.yaml and every file of the auth directory, as they are."""
    return rig.config.read_bytes(), {p.name: p.read_bytes() for p in rig.auth_dir.iterdir()}


@pytest.fixture
def rig(tmp_path) -> ManagementRig:
    """A daemon with two client keys, a Claude key and an auth file to aim at."""
    rig = ManagementRig(tmp_path)
    assert rig.call("PUT", "/api-keys", ["key-1", "key-2"])[0] == 200
    assert rig.call("PUT", "/claude-api-key", [CLAUDE_KEY])[0] == 200
    assert rig.call("POST", "/auth-files?name=a.json", raw=claude_file())[0] == 200
    return rig


def test_the_table_is_large():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_management_input_is_a_4xx_and_changes_nothing(rig, case):
    before = snapshot(rig)
    raw = case.raw if case.raw is not None else (None if case.body is None else json.dumps(case.body).encode())
    with capturedLogs() as events:
        response = rig.response(case.method, case.path, headers=AUTH, **({"data": raw} if raw is not None else {}))
    assert response.code == case.status, response.body
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    error = json.loads(response.body)["error"]
    assert isinstance(error, str) and case.says in error, error
    assert snapshot(rig) == before
    assert not [e for e in events if e["log_level"] >= LogLevel.error or "log_failure" in e]


def test_the_names_refused_are_never_written(rig):
    """The name that made a file called "x.json\\n" is refused, and nothing like it is in the directory."""
    code, body = rig.call("POST", "/auth-files?name=x.json%0A", raw=claude_file())
    assert code == 400 and "control characters" in body["error"]
    assert sorted(p.name for p in rig.auth_dir.iterdir()) == ["a.json"]


def test_a_body_the_site_did_not_keep_is_a_413_not_an_empty_body():
    """Over max-body-mb the site keeps nothing and flags the request: that is never read as "no body"."""
    request = DummyRequest([b""])
    request.content = BytesIO(b"")
    request.body_too_large = True
    for read in (read_body, read_json):
        with pytest.raises(Refused) as e:
            read(request)
        assert e.value.status == 413
