"""
C{/auth-files*} and C{/model-definitions/<channel>} as the Management
Center calls them (authFiles.ts): each request sent as the panel sends it
(method, path, body), and every field the panel reads from the answer
asserted present with the type it expects. In memory (the management rig),
and over loopback for the multipart upload, whose bytes a browser makes.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import pytest_twisted
from treq.testing import StubTreq

from cliproxyd.credentials.index import auth_index
from cliproxyd.credentials.providers import PROVIDERS
from cliproxyd.management.recent import BUCKET_SECONDS, BUCKETS
from cliproxyd.testing.authserver import SimulatedAuthServer, unsigned_jwt
from tests.management_support import (
    AUTH,
    CONFIG_TEXT,
    SECRET_HASH,
    ManagementRig,
    claude_file,
)

NOW = 1_800_000_000.0


@pytest.fixture
def rig(tmp_path):
    rig = ManagementRig(tmp_path)
    rig.clock.advance(NOW)
    return rig


def codex_file(**extra) -> bytes:
    token = unsigned_jwt({"email": "c@x.com", "https://api.openai.com/auth": {
        "chatgpt_account_id": "acct-9", "chatgpt_plan_type": "pro",
        "chatgpt_subscription_active_until": "2027-03-01T00:00:00Z"}})
    return json.dumps({"type": "codex", "access_token": "tok-c", "refresh_token": "r", "id_token": token,
                       "email": "c@x.com", "account_id": "acct-9", "expired": "2099-01-01T00:00:00Z",
                       **extra}).encode()


def multipart(*files: tuple[str, bytes], boundary: str = "----WebKitFormBoundaryq3ZxT0pAbC") -> tuple[bytes, dict]:
    """A body as a browser's FormData makes it: one C{file} part per file."""
    out = b""
    for name, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/json\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}


# -- the list ------------------------------------------------------------------------------

#: field -> the types the panel accepts for it (authFiles.ts normalizeAuthFileEntry, the quota resolvers)
LIST_FIELDS = {
    "id": str, "auth_index": str, "name": str, "type": str, "provider": str, "email": str, "label": str,
    "status": str, "status_message": str, "disabled": bool, "unavailable": bool, "runtime_only": bool,
    "source": str, "path": str, "size": int, "modtime": str, "updated_at": str, "success": int, "failed": int,
    "recent_requests": list, "account_type": str, "account": str, "priority": int, "note": str,
}


def test_every_field_the_panel_reads_is_in_each_entry_with_its_type(rig):
    assert rig.call("POST", "/auth-files?name=claude-a.json", raw=claude_file(note="team a", weight=3))[0] == 200
    assert rig.chat("claude-sonnet-4-5")[0] == 200
    rig.upstream.script("tok-a", "status:500")
    assert rig.chat("claude-sonnet-4-5")[0] != 200
    code, body = rig.call("GET", "/auth-files")
    assert code == 200 and isinstance(body["files"], list)
    [entry] = body["files"]
    for field, kind in LIST_FIELDS.items():
        assert isinstance(entry.get(field), kind), (field, entry.get(field))
    assert entry["weight"] == 3 and entry["note"] == "team a"
    assert (entry["source"], entry["runtime_only"], entry["account_type"], entry["account"]) == \
        ("file", False, "oauth", "a@x.com")
    assert (entry["success"], entry["failed"]) == (1, 1)
    assert entry["auth_index"] == auth_index(rig.runtime.current.creds[-1])
    assert len(entry["auth_index"]) == 16
    buckets = entry["recent_requests"]
    assert len(buckets) == BUCKETS and all(set(b) == {"time", "success", "failed"} for b in buckets)
    assert buckets[-1]["success"] == 1 and buckets[-1]["failed"] == 1
    assert sum(b["success"] + b["failed"] for b in buckets[:-1]) == 0
    assert entry["modtime"].endswith("Z") and entry["path"].endswith("/claude-a.json")


def test_recent_requests_move_on_with_the_clock(rig):
    assert rig.call("POST", "/auth-files?name=claude-a.json", raw=claude_file())[0] == 200
    assert rig.chat("claude-sonnet-4-5")[0] == 200
    rig.clock.advance(BUCKET_SECONDS)
    buckets = rig.call("GET", "/auth-files")[1]["files"][0]["recent_requests"]
    assert [b["success"] for b in buckets[-2:]] == [1, 0]
    rig.clock.advance(BUCKET_SECONDS * BUCKETS)
    buckets = rig.call("GET", "/auth-files")[1]["files"][0]["recent_requests"]
    assert sum(b["success"] for b in buckets) == 0
    assert rig.call("GET", "/auth-files")[1]["files"][0]["success"] == 1  # the total stays


def test_a_codex_entry_carries_its_id_token_claims_and_a_cooling_one_is_unavailable(rig):
    assert rig.call("POST", "/auth-files?name=codex-c.json", raw=codex_file())[0] == 200
    [entry] = rig.call("GET", "/auth-files")[1]["files"]
    assert entry["id_token"] == {"chatgpt_account_id": "acct-9", "plan_type": "pro",
                                 "chatgpt_subscription_active_until": "2027-03-01T00:00:00Z"}
    assert entry["unavailable"] is False
    cred = rig.runtime.current.creds[-1]
    from cliproxyd.state.records import ModelState

    for route in cred.routes:
        rig.state.set_model_state(cred.id, route.state_key, ModelState(unavailable=True, next_retry_at=NOW + 60))
    [entry] = rig.call("GET", "/auth-files")[1]["files"]
    assert entry["unavailable"] is True and entry["status"] == "error"
    assert entry["next_retry_after"] == "2027-01-15T08:01:00Z"


def test_the_list_filters_by_name_and_auth_index(rig):
    for name in ("a.json", "b.json"):
        assert rig.call("POST", f"/auth-files?name={name}", raw=claude_file())[0] == 200
    files = rig.call("GET", "/auth-files")[1]["files"]
    assert [f["name"] for f in rig.call("GET", "/auth-files?name=b.json")[1]["files"]] == ["b.json"]
    index = files[0]["auth_index"]
    assert [f["name"] for f in rig.call("GET", f"/auth-files?auth_index={index}")[1]["files"]] == ["a.json"]
    assert files[0]["auth_index"] != files[1]["auth_index"]


# -- upload --------------------------------------------------------------------------------


def test_a_multipart_upload_of_several_files_writes_each_under_its_name(rig):
    raw, headers = multipart(("claude-a.json", claude_file()), ("codex-c.json", codex_file()))
    code, body = rig.call("POST", "/auth-files", raw=raw, headers=headers)
    assert (code, body) == (200, {"status": "ok", "uploaded": 2, "files": ["claude-a.json", "codex-c.json"],
                                  "failed": []})
    assert (rig.auth_dir / "codex-c.json").read_bytes() == codex_file()
    assert {"claude-sonnet-4-5", "gpt-5.5"} <= rig.models()  # gpt-5.5: in the pro plan's list


def test_a_multipart_upload_names_the_bad_files_and_keeps_the_good(rig):
    raw, headers = multipart(("good.json", claude_file()), ("bad.json", b"{nope"), ("x.txt", claude_file()))
    code, body = rig.call("POST", "/auth-files", raw=raw, headers=headers)
    assert code == 207 and (body["status"], body["uploaded"], body["files"]) == ("partial", 1, ["good.json"])
    assert [f["name"] for f in body["failed"]] == ["bad.json", "x.txt"]
    assert "not JSON" in body["failed"][0]["error"] and "must end in .json" in body["failed"][1]["error"]
    assert os.listdir(rig.auth_dir) == ["good.json"]
    raw, headers = multipart(("bad.json", b'{"type": "someday", "access_token": "t"}'))
    code, body = rig.call("POST", "/auth-files", raw=raw, headers=headers)
    assert code == 400 and "type must be one of" in body["error"]
    raw, headers = multipart(("x.json", b"{}"))
    raw = raw.replace(b'; filename="x.json"', b"")  # a form field, not a file
    code, body = rig.call("POST", "/auth-files", raw=raw, headers=headers)
    assert code == 400 and "no files uploaded" in body["error"]


@pytest_twisted.ensureDeferred
async def test_over_loopback_a_form_upload_made_by_treq_arrives_byte_for_byte(tmp_path, reactor):
    from cliproxyd.daemon import build_daemon
    from cliproxyd.frontend import QuietSite
    from cliproxyd.outbound import make_http_client

    (tmp_path / "auth").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG_TEXT.format(port=0, auth_dir=tmp_path / "auth", secret=SECRET_HASH,
                                         base="http://127.0.0.1:9"))
    pool, client = make_http_client(reactor, 5)
    daemon = build_daemon(reactor, client, config_path=str(config), poll=0)
    daemon.runtime.start()
    port = reactor.listenTCP(0, QuietSite(daemon.resource()), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/v0/management/auth-files"
        files = {"file": [("claude-ü.json", "application/json", claude_file(note="é" * 3000)),
                          ("codex-c.json", "application/json", codex_file())]}
        import io

        response = await client.post(url, headers=AUTH, files=[
            ("file", (name, kind, io.BytesIO(data))) for name, kind, data in files["file"]])
        body = json.loads(await response.content())
        assert response.code == 200, body
        assert body["files"] == ["claude-ü.json", "codex-c.json"]
        assert (tmp_path / "auth" / "claude-ü.json").read_bytes() == claude_file(note="é" * 3000)
        response = await client.get(url, headers=AUTH)
        listed = json.loads(await response.content())["files"]
        assert [f["name"] for f in listed] == ["claude-ü.json", "codex-c.json"]
    finally:
        await port.stopListening()
        await daemon.runtime.stopService()
        await pool.closeCachedConnections()


# -- delete, status, fields ----------------------------------------------------------------


def test_delete_takes_the_panels_names_body_and_counts(rig):
    for name in ("a.json", "b.json", "c.json"):
        assert rig.call("POST", f"/auth-files?name={name}", raw=claude_file())[0] == 200
    assert rig.call("DELETE", "/auth-files", {"names": ["a.json", "b.json"]}) == \
        (200, {"status": "ok", "deleted": 2, "files": ["a.json", "b.json"], "failed": []})
    assert rig.call("DELETE", "/auth-files", {"names": ["c.json", "a.json"]}) == \
        (207, {"status": "partial", "deleted": 1, "files": ["c.json"],
               "failed": [{"name": "a.json", "error": "no auth file 'a.json'"}]})
    assert rig.call("DELETE", "/auth-files", {"names": ["a.json"]}) == (404, {"error": "no auth file 'a.json'"})
    assert rig.call("DELETE", "/auth-files", {"names": "a.json"}) == \
        (400, {"error": "names must be a list of file names"})
    assert rig.call("DELETE", "/auth-files", {"nmes": ["a.json"]})[0] == 400
    assert rig.call("DELETE", "/auth-files", {"names": ["../x.json"]}) == \
        (400, {"error": "name must be a file name, with no path"})


def test_status_answers_disabled_and_takes_the_auth_index_the_panel_sends(rig):
    assert rig.call("POST", "/auth-files?name=a.json", raw=claude_file())[0] == 200
    index = rig.call("GET", "/auth-files")[1]["files"][0]["auth_index"]
    assert rig.call("PATCH", "/auth-files/status", {"name": "a.json", "auth_index": index, "disabled": True}) == \
        (200, {"status": "ok", "disabled": True})
    assert rig.call("GET", "/auth-files")[1]["files"][0]["disabled"] is True


def test_fields_takes_every_field_the_panel_edits(rig):
    assert rig.call("POST", "/auth-files?name=a.json", raw=claude_file())[0] == 200
    patch = {"name": "a.json", "auth_index": "ignored", "prefix": "team", "priority": 4, "weight": 7,
             "note": "n", "headers": {"X-Team": "a"}, "disable_cooling": True, "disable-cooling": True,
             "websockets": False, "excluded_models": ["claude-haiku-*"], "request_retry": 2}
    assert rig.call("PATCH", "/auth-files/fields", patch) == (200, {"status": "ok"})
    data = json.loads((rig.auth_dir / "a.json").read_text())
    assert {k: data[k] for k in ("prefix", "priority", "weight", "note", "headers", "disable_cooling",
                                 "websockets", "excluded_models", "request_retry")} == \
        {"prefix": "team", "priority": 4, "weight": 7, "note": "n", "headers": {"X-Team": "a"},
         "disable_cooling": True, "websockets": False, "excluded_models": ["claude-haiku-*"], "request_retry": 2}
    models = rig.models()
    assert "team/claude-sonnet-4-5" in models and "team/claude-haiku-4-5" not in models
    entry = rig.call("GET", "/auth-files")[1]["files"][0]
    assert (entry["weight"], entry["priority"], entry["prefix"]) == (7, 4, "team")
    assert rig.call("PATCH", "/auth-files/fields", {"name": "a.json", "weight": None, "headers": {},
                                                    "excluded-models": []})[0] == 200
    data = json.loads((rig.auth_dir / "a.json").read_text())
    assert not {"weight", "headers", "excluded_models"} & set(data)


@pytest.mark.parametrize("patch, says", [
    ({"weight": -1}, "weight must not be negative"),
    ({"weight": "3"}, "weight must be a whole number"),
    ({"headers": {"X": 1}}, "headers must be an object of strings"),
    ({"websockets": "yes"}, "websockets must be true or false"),
    ({"excluded_models": "x"}, "excluded_models must be a list of strings"),
    ({"disable_cooling": True, "disable-cooling": False}, "disagree"),
    ({"expired": "soon"}, "expired must be a time"),
    ({"weigth": 3}, "unknown field 'weigth'"),
])
def test_wrong_fields_are_named(rig, patch, says):
    assert rig.call("POST", "/auth-files?name=a.json", raw=claude_file())[0] == 200
    code, body = rig.call("PATCH", "/auth-files/fields", {"name": "a.json", **patch})
    assert code == 400 and says in body["error"], body


def test_an_expiry_in_the_past_refreshes_the_token_now(tmp_path):
    sim = SimulatedAuthServer(PROVIDERS["claude"], None)
    rig = ManagementRig(tmp_path, client=StubTreq(sim.resource()))
    sim.clock = rig.clock
    rig.clock.advance(NOW)
    refresh = sim.issue_refresh_token("a@x.com")
    raw = claude_file(refresh_token=refresh, token_uri="http://auth.test/token")
    assert rig.call("POST", "/auth-files?name=a.json", raw=raw)[0] == 200
    past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 60))
    assert rig.call("PATCH", "/auth-files/fields", {"name": "a.json", "expired": past}) == \
        (200, {"status": "ok", "refreshed": True})
    [token] = sim.access_tokens
    data = json.loads((rig.auth_dir / "a.json").read_text())
    assert data["access_token"] == token and data["expired"] == "2027-01-15T09:00:00Z"
    assert sim.calls["refresh_token"] == 1


# -- models --------------------------------------------------------------------------------


def test_the_models_of_a_file_and_of_a_channel(rig):
    assert rig.call("POST", "/auth-files?name=a.json", raw=claude_file(prefix="p"))[0] == 200
    code, body = rig.call("GET", "/auth-files/models?name=a.json")
    assert code == 200 and isinstance(body["models"], list)
    assert all(isinstance(m["id"], str) and isinstance(m["type"], str) and isinstance(m["owned_by"], str)
               for m in body["models"])
    assert "p/claude-sonnet-4-5" in {m["id"] for m in body["models"]}
    assert rig.call("GET", "/auth-files/models?name=none.json") == \
        (404, {"error": "no auth file 'none.json' is loaded"})
    assert rig.call("GET", "/auth-files/models")[0] == 400
    code, body = rig.call("GET", "/model-definitions/codex")
    assert code == 200 and body["channel"] == "codex" and "gpt-5" in {m["id"] for m in body["models"]}
    code, body = rig.call("GET", "/model-definitions/gemini_cli")
    assert code == 200 and body["channel"] == "gemini-cli"
    code, body = rig.call("GET", "/model-definitions/kimi")
    assert code == 200 and body["channel"] == "kimi" and "kimi-k2" in {m["id"] for m in body["models"]}
    code, body = rig.call("GET", "/model-definitions/aistudio")
    assert code == 400 and body["channel"] == "aistudio" and "unknown channel" in body["error"]


@pytest.mark.parametrize("kind, body, says", [
    ("multipart/form-data", b"--x\r\n\r\n{}\r\n--x--\r\n", "invalid multipart form"),
    ("multipart/form-data; boundary=zzz", b"garbage", "is the boundary right"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n",
     "no files uploaded"),
])
def test_a_form_the_daemon_cannot_read_is_a_400_that_says_why(kind, body, says):
    """The daemon's site leaves forms to the route (Twisted's own parsing would answer a bare 400)."""
    from twisted.web.test.requesthelper import DummyRequest

    from cliproxyd.management.access import Refused
    from cliproxyd.management.authfiles import multipart_files

    request = DummyRequest([b"auth-files"])
    request.requestHeaders.setRawHeaders(b"content-type", [kind.encode()])
    with pytest.raises(Refused) as refused:
        multipart_files(request, body)
    assert refused.value.status == 400 and says in refused.value.message
