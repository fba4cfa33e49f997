"""
Usage kept across restarts with usage-statistics-enabled: the counters of
one daemon are in the next one's /usage, written atomically in a thread by
the state file's machinery; nothing is written or read while it is off,
and the usage file in auth-dir is never taken for a credential.
"""

from __future__ import annotations

import json

from cliproxyd.config import parse_config
from cliproxyd.credentials.authfiles import daemon_files
from cliproxyd.management.usage import Usage, UsagePersistence
from tests.management_support import ManagementRig


def _rig(root, usage_path) -> ManagementRig:
    root.mkdir(exist_ok=True)
    return ManagementRig(root, usage_path=str(usage_path))


def _persistence(rig: ManagementRig) -> UsagePersistence:
    [service] = [s for s in rig.daemon.services if isinstance(s, UsagePersistence)]
    return service


def test_usage_survives_a_restart_when_enabled(tmp_path):
    path = tmp_path / "usage.json"
    first = _rig(tmp_path / "a", path)
    assert first.call("GET", "/usage-statistics-enabled") == (200, {"usage-statistics-enabled": False})
    assert first.call("PUT", "/usage-statistics-enabled", {"value": True}) == (200, {"status": "ok"})
    service = _persistence(first)
    service.startService()
    for _ in range(3):
        assert first.chat()[0] == 200
    first.clock.advance(5)
    first.threads.drain()
    saved = json.loads(path.read_text())
    assert saved["total"] == 3 and saved["version"] == 1
    assert first.chat()[0] == 200
    first.settle(service.stopService())  # the last snapshot at stop
    assert json.loads(path.read_text())["total"] == 4

    second = _rig(tmp_path / "b", path)
    second.call("PUT", "/usage-statistics-enabled", {"value": True})
    _persistence(second).startService()
    usage = second.call("GET", "/usage")[1]["usage"]
    assert (usage["total_requests"], usage["success_count"]) == (4, 4)
    assert sum(v["success"] for v in usage["by_model"].values()) == 4
    assert len(usage["recent"]) == 4
    second.settle(_persistence(second).stopService())


def test_nothing_is_kept_while_it_is_off(tmp_path):
    path = tmp_path / "usage.json"
    rig = _rig(tmp_path / "a", path)
    service = _persistence(rig)
    service.startService()
    assert rig.chat()[0] == 200
    rig.clock.advance(5)
    rig.threads.drain()
    rig.settle(service.stopService())
    assert not path.exists()
    # A file left from when it was on is not read while it is off.
    path.write_text(json.dumps({"version": 1, "total": 9}))
    again = _rig(tmp_path / "b", path)
    _persistence(again).startService()
    assert again.call("GET", "/usage")[1]["usage"]["total_requests"] == 0


def test_a_snapshot_of_another_shape_is_skipped_not_fatal():
    usage = Usage(clock=None)
    assert usage.restore({"version": 7}) == ["the usage snapshot (not a version 1 snapshot)"]
    assert usage.restore({"version": 1, "total": "x", "by_model": {"m": [1]}}) == ["total", "by_model.m"]
    assert usage.total == 0


def test_the_usage_file_in_auth_dir_is_not_a_credential(tmp_path):
    config, _ = parse_config({"auth-dir": str(tmp_path)})
    assert config.usage_path == str(tmp_path / "cliproxyd-usage.json")
    assert daemon_files(config) == {"cliproxyd-state.json", "cliproxyd-usage.json"}
    custom, _ = parse_config({"auth-dir": str(tmp_path), "state-file": str(tmp_path / "s.json")})
    assert custom.usage_path == str(tmp_path / "s-usage.json")
