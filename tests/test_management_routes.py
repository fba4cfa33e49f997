"""
The management API as an operator meets it, in memory: every route driven
the way curl would drive it, against a L{Runtime} on a real config file and
auth directory in tmp_path (see L{tests.management_support}). Every write is
checked in the file (comments and mode kept) and in the daemon's behaviour
(in effect before the answer). What needs the whole daemon (the key hashed
at start-up, OAuth refreshes) is in test_management_daemon.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from twisted.internet.defer import gatherResults

from tests.management_support import AUTH, SECRET, ManagementRig, claude_file


@pytest.fixture
def rig(tmp_path) -> ManagementRig:
    return ManagementRig(tmp_path)


# -- access ----------------------------------------------------------------------------


def test_the_key_is_required_from_localhost_in_either_header(rig):
    assert rig.call("GET", "/debug", headers={})[0] == 401
    code, body = rig.call("GET", "/debug", headers={"Authorization": "Bearer wrong"})
    assert (code, body) == (401, {"error": "invalid management key"})
    assert rig.call("GET", "/debug")[0] == 200
    assert rig.call("GET", "/debug", headers={"X-Management-Key": SECRET})[0] == 200


def test_without_a_secret_every_route_is_404(tmp_path):
    rig = ManagementRig(tmp_path, secret='""')
    assert rig.call("GET", "/debug")[0] == 404
    assert rig.call("GET", "/auth-files")[0] == 404


def test_unknown_routes_are_404(rig):
    assert rig.call("GET", "/no-such-setting") == (404, {"error": "not found"})
    assert rig.call("PUT", "/status", {"value": 1}) == (404, {"error": "not found"})


# -- config ----------------------------------------------------------------------------


def test_get_config_hides_the_listener_and_the_management_settings(rig):
    code, body = rig.call("GET", "/config")
    assert code == 200
    assert body["openai-compatibility"][0]["name"] == "sim"
    assert not {"host", "port", "remote-management", "auth-dir"} & set(body)


def test_put_config_yaml_is_validated_before_it_is_written(rig):
    code, text = rig.call("GET", "/config.yaml")
    assert code == 200 and b"# cliproxyd test config" in text
    code, body = rig.call("PUT", "/config.yaml", raw=text + b"routing:\n  strategy: sideways\n")
    assert code == 422 and body["error"] == "invalid_config" and "routing.strategy" in body["message"]
    assert rig.config.read_bytes() == text
    code, body = rig.call("PUT", "/config.yaml", raw=text + b"api-keys: [sk-client]\n")
    assert (code, body) == (200, {"ok": True, "changed": ["config"]})
    assert rig.chat()[0] == 401  # in effect at once
    assert rig.chat(headers={"Authorization": "Bearer sk-client"})[0] == 200
    assert stat.S_IMODE(os.stat(rig.config).st_mode) == 0o640


def test_without_a_config_file_nothing_can_be_changed(tmp_path):
    rig = ManagementRig(tmp_path, config_file=False)
    for method, path, body in [("GET", "/config", None), ("PUT", "/debug", {"value": True}),
                               ("PUT", "/api-keys", ["k"])]:
        assert rig.call(method, path, body) == \
            (409, {"error": "this daemon runs without a config file (--demo): nothing to change"})


# -- scalars ---------------------------------------------------------------------------


def test_scalar_settings_are_written_with_comments_and_mode_kept(rig):
    assert rig.call("GET", "/request-retry") == (200, {"request-retry": 0})
    assert rig.call("PUT", "/request-retry", {"value": 2}) == (200, {"status": "ok"})
    assert rig.call("GET", "/request-retry") == (200, {"request-retry": 2})
    assert rig.runtime.current.config.request_retry == 2  # in effect before the answer
    text = rig.config.read_text()
    assert "request-retry: 2   # no extra rounds" in text and "# retry settings" in text
    assert stat.S_IMODE(os.stat(rig.config).st_mode) == 0o640
    assert rig.call("PATCH", "/debug", {"value": True})[0] == 200
    assert "debug: true" in rig.config.read_text()
    assert rig.call("PUT", "/routing/strategy", {"value": "ff"})[0] == 200
    assert rig.call("GET", "/routing/strategy") == (200, {"strategy": "fill-first"})
    assert rig.call("DELETE", "/routing/strategy") == (200, {"status": "ok"})
    assert rig.call("GET", "/routing/strategy") == (200, {"strategy": "round-robin"})


def test_bad_scalar_bodies_are_400_with_a_reason_and_change_nothing(rig):
    before = rig.config.read_bytes()
    for path, body, reason in [
        ("/request-retry", {"value": -1}, "whole number"),
        ("/debug", {"value": "yes"}, "true or false"),
        ("/routing/strategy", {"value": "sideways"}, "round-robin"),
        ("/max-body-mb", {"value": 0}, "above 0"),
        ("/proxy-url", {"value": 5}, "a string"),
        ("/debug", [1], '{"value": ...}'),
    ]:
        code, answer = rig.call("PUT", path, body)
        assert code == 400 and reason in answer["error"], (path, answer)
    code, answer = rig.call("PUT", "/debug", raw=b"{nope")
    assert (code, answer) == (400, {"error": "the body is not valid JSON"})
    assert rig.config.read_bytes() == before


# -- lists -----------------------------------------------------------------------------


def test_head_reads_like_get_and_never_writes(rig):
    # HEAD reaches the GET routes (werkzeug adds it); it once fell through to a list's DELETE.
    assert rig.call("PUT", "/api-keys", ["k1", "k2"])[0] == 200
    assert rig.call("PUT", "/oauth-excluded-models", {"claude": ["claude-opus-4-1"]})[0] == 200
    for path in ("/api-keys?index=0", "/api-keys?value=k1", "/oauth-excluded-models?provider=claude",
                 "/debug", "/request-retry"):
        assert rig.call("HEAD", path)[0] == 200, path
    assert rig.call("GET", "/api-keys") == (200, {"api-keys": ["k1", "k2"]})
    assert rig.call("GET", "/oauth-excluded-models")[1] == {"oauth-excluded-models": {"claude": ["claude-opus-4-1"]}}


def test_api_keys_list_put_patch_delete(rig):
    assert rig.call("GET", "/api-keys") == (200, {"api-keys": []})
    assert rig.call("PUT", "/api-keys", ["k1", "k2"])[0] == 200
    assert rig.chat(headers={"Authorization": "Bearer k2"})[0] == 200
    assert rig.call("PATCH", "/api-keys", {"old": "k2", "new": "k3"})[0] == 200
    assert rig.call("PATCH", "/api-keys", {"index": 0, "value": "k0"})[0] == 200
    assert rig.call("GET", "/api-keys") == (200, {"api-keys": ["k0", "k3"]})
    assert rig.chat(headers={"Authorization": "Bearer k2"})[0] == 401
    assert rig.call("DELETE", "/api-keys?value=k0")[0] == 200
    assert rig.call("DELETE", "/api-keys?index=0")[0] == 200
    assert rig.call("GET", "/api-keys") == (200, {"api-keys": []})
    assert rig.call("DELETE", "/api-keys?value=nope") == (404, {"error": "no such entry"})
    assert rig.call("PUT", "/api-keys", ["k1"])[0] == 200
    assert rig.call("PATCH", "/api-keys", {"index": 9, "value": "x"}) == \
        (400, {"error": "index must be between 0 and 0"})
    assert rig.call("PATCH", "/api-keys", {"index": 0, "value": " "}) == \
        (400, {"error": "value must be a non-empty string"})
    assert rig.call("DELETE", "/api-keys?index=x") == (400, {"error": "index must be a whole number"})
    assert rig.call("PUT", "/api-keys", {"nope": 1}) == \
        (400, {"error": 'the body must be a JSON array or {"items": [...]}'})


def test_provider_lists_take_effect_at_once(rig):
    entry = {"api-key": "sk-ant-1", "base-url": rig.base, "models": [{"name": "claude-x", "alias": "cx"}]}
    assert rig.call("PUT", "/claude-api-key", {"items": [entry]})[0] == 200
    assert "cx" in rig.models()
    code, body = rig.call("PATCH", "/claude-api-key", {"match": "sk-ant-1", "value": {"prefix": "team"}})
    assert code == 200, body
    assert "team/cx" in rig.models()
    code, body = rig.call("PATCH", "/openai-compatibility",
                          {"name": "sim", "value": {"models": [{"name": "sim-small", "alias": "small"}]}})
    assert code == 200, body
    assert "small" in rig.models() and "gpt-4o-mini" not in rig.models()
    code, body = rig.call("PATCH", "/claude-api-key", {"match": "sk-ant-1", "value": "team"})
    assert (code, body) == (400, {"error": '"value" must be an object of the fields to change'})
    code, body = rig.call("PUT", "/gemini-api-key", [{"api-key": ""}])
    assert code == 400 and "gemini-api-key[0].api-key" in body["error"]
    assert rig.call("DELETE", "/claude-api-key?api-key=sk-ant-1")[0] == 200
    assert "cx" not in rig.models()
    assert "# the simulated upstream" in rig.config.read_text()


def test_concurrent_writes_never_lose_one_another(rig):
    assert rig.call("PUT", "/api-keys", [f"old-{i}" for i in range(10)])[0] == 200
    calls = [rig.send("PATCH", "/api-keys", {"index": i, "value": f"new-{i}"}) for i in range(10)]
    calls += [rig.send("PUT", "/request-retry", {"value": 3}), rig.send("PUT", "/debug", {"value": True})]
    results = rig.settle(gatherResults(calls))
    assert all(code == 200 for code, _ in results)
    assert rig.call("GET", "/api-keys") == (200, {"api-keys": [f"new-{i}" for i in range(10)]})
    assert rig.call("GET", "/request-retry") == (200, {"request-retry": 3})
    assert rig.call("GET", "/debug") == (200, {"debug": True})


# -- credentials, cooldowns and usage ----------------------------------------------------


def test_credential_status_cooldown_reset_and_usage(rig):
    rig.upstream.script("sk-up-1", "status:429:60", "ok")
    rig.upstream.script("sk-up-2", "ok")
    for _ in range(2):
        assert rig.chat()[0] == 200
    code, body = rig.call("GET", "/status")
    assert code == 200 and body["in_flight"] == 0 and len(body["credentials"]) == 2
    code, body = rig.call("GET", "/credentials")
    cooling = [c for c in body["credentials"] if c["model_states"].get("gpt-4o-mini", {}).get("cooling")]
    assert len(cooling) == 1
    cred_id = cooling[0]["id"]
    assert rig.call("POST", "/credentials/reset", {"id": "nope"}) == (404, {"error": "no credential 'nope'"})
    assert rig.call("POST", "/credentials/reset", {"model": 5})[0] == 400
    assert rig.call("POST", "/credentials/reset", {"id": cred_id, "model": 5}) == \
        (400, {"error": "model must be a string"})
    code, body = rig.call("POST", "/credentials/reset", {"id": cred_id, "model": "gpt-4o-mini"})
    assert (code, body["reset"]) == (200, ["gpt-4o-mini"])
    code, body = rig.call("GET", "/credentials")
    assert not any(c["model_states"].get("gpt-4o-mini", {}).get("cooling") for c in body["credentials"])
    code, body = rig.call("GET", "/usage?limit=2")
    usage = body["usage"]
    assert usage["total_requests"] == 3 and usage["failure_count"] == 1 and usage["success_count"] == 2
    assert usage["by_status"] == {"200": 2, "429": 1}
    assert len(usage["recent"]) == 2 and usage["recent"][-1]["ok"] is True
    assert rig.call("GET", "/usage?limit=x") == (400, {"error": "limit must be a whole number"})


# -- quota groups ------------------------------------------------------------------------


def test_quota_groups_manual_suspension_and_auto_clear(rig):
    groups = b"oauth-quota-groups:\n  - id: claude-all\n    providers: [claude]\n    models: ['claude-*']\n"
    assert rig.call("PUT", "/config.yaml", raw=rig.config.read_bytes() + groups)[0] == 200
    assert rig.call("POST", "/auth-files?name=claude-a.json", raw=claude_file())[0] == 200
    code, body = rig.call("GET", "/quota-groups")
    assert code == 200 and [g["id"] for g in body["groups"]] == ["claude-all"]
    cred, group = "claude:claude-a.json", "claude-all"
    assert {"auth_id": cred, "group_id": group} in [
        {k: s[k] for k in ("auth_id", "group_id")} for s in body["states"]]
    code, body = rig.call("PATCH", "/quota-groups/manual",
                          {"auth_id": cred, "group_id": group, "manual_suspended": True, "reason": "r"})
    assert code == 200 and body["manual_suspended"] is True and body["updated_by"] == "management"
    assert rig.call("PATCH", "/quota-groups/manual", {"auth_id": cred, "group_id": group}) == \
        (400, {"error": "'manual_suspended' is required and must be true or false"})
    assert rig.call("PATCH", "/quota-groups/auto-clear", {"auth_id": cred, "group_id": "nope"}) == \
        (404, {"error": "no quota group 'nope'"})
    assert rig.call("PATCH", "/quota-groups/auto-clear", {"auth_id": cred, "group_id": group}) == \
        (200, {"cleared": []})
    assert rig.call("POST", "/quota-groups/auto-clear-all", {"auth_id": "nope"}) == \
        (404, {"error": "no credential 'nope'"})
    assert rig.call("POST", "/quota-groups/auto-clear-all", {"auth_id": cred}) == (200, {"cleared": []})


# -- auth files ------------------------------------------------------------------------


def test_auth_files_upload_list_disable_fields_download_delete(rig):
    code, body = rig.call("POST", "/auth-files?name=claude-a.json", raw=claude_file())
    assert (code, body) == (200, {"status": "ok", "name": "claude-a.json"})
    path = rig.auth_dir / "claude-a.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "claude-sonnet-4-5" in rig.models()
    code, body = rig.call("GET", "/auth-files")
    [entry] = body["files"]
    assert (entry["name"], entry["type"], entry["email"], entry["status"], entry["size"]) == \
        ("claude-a.json", "claude", "a@x.com", "active", len(claude_file()))
    assert rig.call("PATCH", "/auth-files/status", {"name": "claude-a.json", "disabled": True})[0] == 200
    assert json.loads(path.read_text())["disabled"] is True
    assert rig.call("GET", "/auth-files")[1]["files"][0]["status"] == "disabled"
    assert rig.chat("claude-sonnet-4-5")[0] != 200
    assert rig.call("PATCH", "/auth-files/status", {"name": "claude-a.json", "disabled": False})[0] == 200
    assert rig.call("PATCH", "/auth-files/fields",
                    {"name": "claude-a.json", "priority": 5, "note": "team a", "prefix": "a"})[0] == 200
    data = json.loads(path.read_text())
    assert (data["priority"], data["note"], data["prefix"]) == (5, "team a", "a")
    assert "a/claude-sonnet-4-5" in rig.models()
    assert rig.call("PATCH", "/auth-files/fields", {"name": "claude-a.json", "note": ""})[0] == 200
    assert "note" not in json.loads(path.read_text())
    response = rig.response("GET", "/auth-files/download?name=claude-a.json",
                            headers={"Authorization": f"Bearer {SECRET}"})
    assert response.code == 200 and json.loads(response.body)["prefix"] == "a"
    assert response.headers.getRawHeaders(b"content-disposition") == [b'attachment; filename="claude-a.json"']
    assert rig.call("DELETE", "/auth-files?name=claude-a.json&name=gone.json") == \
        (207, {"status": "partial", "deleted": 1, "files": ["claude-a.json"],
               "failed": [{"name": "gone.json", "error": "no auth file 'gone.json'"}]})
    assert not path.exists() and "claude-sonnet-4-5" not in rig.models()


def test_all_auth_files_can_be_deleted_at_once(rig):
    for name in ("a.json", "b.json"):
        assert rig.call("POST", f"/auth-files?name={name}", raw=claude_file())[0] == 200
    (rig.auth_dir / "notes.txt").write_text("kept")
    assert rig.call("DELETE", "/auth-files?all=true") == \
        (200, {"status": "ok", "deleted": 2, "files": ["a.json", "b.json"], "failed": []})
    assert os.listdir(rig.auth_dir) == ["notes.txt"]
    assert rig.call("GET", "/auth-files") == (200, {"files": []})


def test_auth_file_names_are_plain_file_names_on_every_route(rig):
    """A line feed once made a file called "x.json\\n"; no route takes such a name, and none writes one."""
    assert rig.call("POST", "/auth-files?name=a.json", raw=claude_file())[0] == 200
    refused = (400, {"error": "name must not contain control characters, line breaks or quotes"})
    assert rig.call("POST", "/auth-files?name=x.json%0A", raw=claude_file()) == refused
    assert rig.call("GET", "/auth-files/download?name=a.json%0A") == refused
    assert rig.call("DELETE", "/auth-files?name=a.json%0A") == refused
    assert rig.call("PATCH", "/auth-files/status", {"name": "a.json\n", "disabled": True}) == refused
    assert rig.call("PATCH", "/auth-files/fields", {"name": "a.json\r", "note": "x"}) == refused
    assert sorted(os.listdir(rig.auth_dir)) == ["a.json"]


def test_a_name_beyond_ascii_is_downloaded_under_its_own_name(rig):
    assert rig.call("POST", "/auth-files?name=%C3%A9l%C3%A8ve.json", raw=claude_file())[0] == 200
    response = rig.response("GET", "/auth-files/download?name=%C3%A9l%C3%A8ve.json", headers=AUTH)
    assert response.headers.getRawHeaders(b"content-disposition") == [
        b"attachment; filename=\"?l?ve.json\"; filename*=UTF-8''%C3%A9l%C3%A8ve.json"]


def test_bad_auth_file_requests_are_400_or_404(rig):
    for name, problem in (("../x.json", "must be a file name, with no path"), ("x.txt", "must end in .json"),
                          (".hidden.json", "must not start with a dot")):
        code, body = rig.call("POST", f"/auth-files?name={name}", raw=claude_file())
        assert (code, body) == (400, {"error": f"name {problem}"}), name
    code, body = rig.call("POST", "/auth-files?name=a.json", raw=b"{nope")
    assert code == 400 and body["error"].startswith("a.json: not JSON")
    code, body = rig.call("POST", "/auth-files?name=a.json", raw=b'{"type": "someday", "access_token": "t"}')
    assert code == 400 and "type must be one of" in body["error"]
    assert rig.call("GET", "/auth-files/download?name=none.json") == (404, {"error": "no auth file 'none.json'"})
    assert rig.call("PATCH", "/auth-files/status", {"name": "none.json", "disabled": True}) == \
        (404, {"error": "no auth file 'none.json'"})
    assert rig.call("PATCH", "/auth-files/status", {"name": "a.json"})[0] == 400
    assert rig.call("PATCH", "/auth-files/fields", {"name": "a.json"}) == \
        (400, {"error": "give at least one of prefix, proxy_url, headers, priority, weight, note, disable_cooling, "
                "websockets, using_api, excluded_models, request_retry, expired"})
    assert rig.call("PATCH", "/auth-files/fields", {"name": "a.json", "priority": "1"}) == \
        (400, {"error": "priority must be a whole number"})
    assert rig.call("DELETE", "/auth-files")[0] == 400
    assert rig.call("DELETE", "/auth-files?name=none.json") == (404, {"error": "no auth file 'none.json'"})
    (rig.auth_dir / "broken.json").write_text("{nope")
    (rig.auth_dir / "other.json").write_text('{"type": "someday"}')
    rig.call("POST", "/auth-files?name=b.json", raw=claude_file())
    files = {f["name"]: f for f in rig.call("GET", "/auth-files")[1]["files"]}
    assert files["broken.json"]["status"] == "error" and "not JSON" in files["broken.json"]["status_message"]
    assert (files["other.json"]["status"], files["other.json"]["status_message"]) == \
        ("ignored", "not an OAuth credential cliproxyd serves")
    assert rig.call("PATCH", "/auth-files/status", {"name": "other.json", "disabled": True}) == \
        (400, {"error": "other.json: not an OAuth credential cliproxyd serves"})
    assert rig.call("PATCH", "/auth-files/status", {"name": "broken.json", "disabled": True})[0] == 400
    assert (rig.auth_dir / "broken.json").read_text() == "{nope"


def test_auth_files_need_an_auth_dir(tmp_path):
    rig = ManagementRig(tmp_path)
    text = rig.config.read_text().replace(f"auth-dir: {rig.auth_dir}\n", "")
    assert rig.call("PUT", "/config.yaml", raw=text.encode())[0] == 200
    assert rig.call("GET", "/auth-files") == (409, {"error": "auth-dir is not set in the config"})


def test_status_lists_the_settings_a_reload_could_not_apply_until_a_restart(rig):
    assert rig.call("GET", "/status")[1]["restart_needed"] == []
    rig.config.write_text(rig.config.read_text().replace("port: 8317", "port: 9000"))
    assert rig.settle(rig.runtime.reload("test")) is True
    code, body = rig.call("GET", "/status")
    assert (code, body["restart_needed"]) == (200, ["port"])
