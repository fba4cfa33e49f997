"""
The management API's /client-keys: list with usage and remaining limits,
add (the key shown once, stored hashed), edit, disable, rotate, remove,
reset; usage per key in /usage. Changes go to config.yaml with its comments
kept, and take effect on the request path at once.
"""

from __future__ import annotations

import json

import yaml

from tests.management_support import ManagementRig


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_added_is_shown_once_stored_hashed_and_works_at_once(tmp_path):
    rig = ManagementRig(tmp_path)
    status, made = rig.call("POST", "/client-keys", {"name": "app", "models": ["gpt-4o*"], "rpm": 2,
                                                     "daily-tokens": 5000})
    assert status == 201
    key = made["key"]
    assert key.startswith("sk-cpd-") and len(key) > 40
    assert made["stored"] == "sha256" and made["rpm"] == 2 and made["models"] == ["gpt-4o*"]
    text = rig.config.read_text()
    assert key not in text and "sha256:" in text
    assert "# cliproxyd test config" in text and "# no extra rounds" in text  # comments kept
    assert rig.chat(headers=bearer(key))[0] == 200
    # never shown again
    status, listed = rig.call("GET", "/client-keys")
    [entry] = listed["client-keys"]
    assert "key" not in entry and key not in json.dumps(listed)
    assert entry["usage"]["requests"] == 1
    assert entry["usage"]["remaining"]["rpm"] == 1
    assert entry["usage"]["tokens"] > 0
    assert entry["usage"]["remaining"]["daily-tokens"] == 5000 - entry["usage"]["tokens"]
    assert rig.call("POST", "/client-keys", {"name": "app"})[0] == 409


def test_edit_disable_rotate_reset_and_remove(tmp_path):
    rig = ManagementRig(tmp_path)
    _, made = rig.call("POST", "/client-keys", {"name": "app", "rpm": 1})
    key = made["key"]
    assert rig.chat(headers=bearer(key))[0] == 200
    assert rig.chat(headers=bearer(key))[0] == 429
    status, after = rig.call("POST", "/client-keys/app/reset")
    assert status == 200 and after["usage"]["requests"] == 0
    assert rig.chat(headers=bearer(key))[0] == 200

    status, changed = rig.call("PATCH", "/client-keys/app", {"rpm": None, "models": ["nothing-*"]})
    assert status == 200 and "rpm" not in changed and changed["models"] == ["nothing-*"]
    assert rig.chat(headers=bearer(key))[0] == 403
    rig.call("PATCH", "/client-keys/app", {"models": None, "disabled": True})
    status, body = rig.chat(headers=bearer(key))
    assert status == 401 and b"disabled" in body
    rig.call("PATCH", "/client-keys/app", {"disabled": False})
    assert rig.chat(headers=bearer(key))[0] == 200

    status, rotated = rig.call("POST", "/client-keys/app/rotate")
    assert status == 200 and rotated["key"] != key
    assert rig.chat(headers=bearer(key))[0] == 401
    assert rig.chat(headers=bearer(rotated["key"]))[0] == 200

    rig.call("POST", "/client-keys", {"name": "other"})
    assert rig.call("DELETE", "/client-keys/app") == (200, {"removed": "app"})
    assert [k["name"] for k in yaml.safe_load(rig.config.read_text())["client-keys"]] == ["other"]
    assert rig.chat(headers=bearer(rotated["key"]))[0] == 401
    assert rig.state.key_usage("app") is None
    assert rig.call("DELETE", "/client-keys/other")[0] == 200
    assert "client-keys" not in yaml.safe_load(rig.config.read_text())  # the emptied list goes with its key


def test_bad_changes_are_400s_and_unknown_keys_404s(tmp_path):
    rig = ManagementRig(tmp_path)
    assert rig.call("POST", "/client-keys", {"models": []})[0] == 400
    status, body = rig.call("POST", "/client-keys", {"name": "x", "rpm": -1})
    assert status == 400 and "client-keys[0].rpm" in body["error"]
    assert rig.call("POST", "/client-keys", {"name": "x", "key": "mine"})[0] == 400  # keys are made here
    assert rig.call("PATCH", "/client-keys/nope", {"rpm": 1})[0] == 404
    assert rig.call("POST", "/client-keys/nope/rotate")[0] == 404
    assert rig.call("DELETE", "/client-keys/nope")[0] == 404
    assert "client-keys" not in rig.config.read_text()


def test_usage_shows_each_client_key_by_name(tmp_path):
    rig = ManagementRig(tmp_path)
    _, made = rig.call("POST", "/client-keys", {"name": "app"})
    rig.chat(headers=bearer(made["key"]))
    status, body = rig.call("GET", "/usage")
    assert status == 200
    assert body["client-keys"]["app"]["requests"] == 1
    assert made["key"] not in json.dumps(body)
