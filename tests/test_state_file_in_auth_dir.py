"""
The state file lives in auth-dir by default, but it is the daemon's own
file, not a credential: the scan, the reload poll and the management API's
auth-files routes leave it out.
"""

from __future__ import annotations

import json

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from cliproxyd.assembly import Assembly
from cliproxyd.config import parse_config
from cliproxyd.credentials.authfiles import daemon_files, read_auth_dir
from cliproxyd.runtime import Runtime
from cliproxyd.state import MemoryStateStore
from tests.management_support import ManagementRig, claude_file

STATE = "cliproxyd-state.json"


def state_snapshot() -> bytes:
    return json.dumps(MemoryStateStore().snapshot(0)).encode()


def test_the_state_file_is_no_auth_file_to_the_management_api(tmp_path):
    rig = ManagementRig(tmp_path)
    state = rig.auth_dir / STATE
    state.write_bytes(state_snapshot())
    assert rig.call("POST", "/auth-files?name=claude-a.json", raw=claude_file())[0] == 200
    assert [f["name"] for f in rig.call("GET", "/auth-files")[1]["files"]] == ["claude-a.json"]
    missing = (404, {"error": f"no auth file {STATE!r}"})
    assert rig.call("GET", f"/auth-files/download?name={STATE}") == missing
    assert rig.call("PATCH", "/auth-files/status", {"name": STATE, "disabled": True}) == missing
    assert rig.call("PATCH", "/auth-files/fields", {"name": STATE, "note": "x"}) == missing
    assert rig.call("DELETE", f"/auth-files?name={STATE}") == missing
    code, body = rig.call("POST", f"/auth-files?name={STATE}", raw=claude_file())
    assert (code, body) == (400, {"error": f"{STATE} is cliproxyd's own file (state-file), not a credential file"})
    assert rig.call("DELETE", "/auth-files?all=true") == \
        (200, {"status": "ok", "deleted": 1, "files": ["claude-a.json"], "failed": []})
    assert rig.call("DELETE", f"/auth-files?name=claude-a.json&name={STATE}")[0] == 404
    assert state.read_bytes() == state_snapshot()  # untouched through all of it


def test_the_scan_and_the_reload_poll_leave_the_state_file_out(tmp_path):
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / "claude-a.json").write_bytes(claude_file())
    (auth / STATE).write_bytes(state_snapshot())
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"auth-dir": str(auth)}))
    jobs = []

    def thread(f, *args):
        jobs.append(f.__name__)
        return succeed(f(*args))

    runtime = Runtime(Assembly(None, Clock(), MemoryStateStore()), config_path=str(config), poll=0,
                      run_in_thread=thread)
    gen = runtime.start()
    assert list(gen.accounts) == ["claude-a.json"] and gen.problems == {}
    for flush in range(3):  # the state file is rewritten every few seconds while requests flow
        (auth / STATE).write_bytes(state_snapshot() + b" " * flush)
        runtime._check()
    assert "_read" not in jobs, "a state flush made the poll re-read the auth directory"
    (auth / "claude-a.json").write_bytes(claude_file(token="tok-b"))
    runtime._check()
    assert "_read" in jobs  # a credential change still does


def test_only_the_configured_state_file_is_left_out(tmp_path):
    auth = tmp_path / "auth"

    def left_out(**top):
        config, _ = parse_config({"auth-dir": str(auth), **top})
        return daemon_files(config)

    assert left_out() == {STATE}
    assert left_out(**{"state-file": str(auth / "state.json")}) == {"state.json"}
    assert left_out(**{"state-file": str(auth) + "/./state.json"}) == {"state.json"}
    assert left_out(**{"state-file": str(tmp_path / "state.json")}) == set()
    assert daemon_files(parse_config({})[0]) == set()
    # With the state file elsewhere, a credential that happens to have the default name is one.
    auth.mkdir()
    (auth / STATE).write_bytes(claude_file())
    scan = read_auth_dir(str(auth), skip=left_out(**{"state-file": str(tmp_path / "state.json")}))
    assert list(scan.accounts) == [STATE]
