"""
The temporary files of atomic writes killed half-way (kill -9 during a state
flush, a token save or a config edit) are removed at the next start-up, and
no file of anyone else's ever is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet.task import Clock

from cliproxyd import fileio
from cliproxyd.assembly import Assembly
from cliproxyd.fileio import atomic_write, remove_stale_temps, temp_target
from cliproxyd.runtime import LIVE_WRITE_SECONDS, Runtime
from cliproxyd.state import MemoryStateStore
from cliproxyd.state.persist import StatePersistence

ROOT = Path(__file__).resolve().parent.parent


def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def made(path: Path, seconds_ago: float = 0) -> Path:
    """A file at C{path}, last written C{seconds_ago}."""
    path.write_text("{}")
    then = time.time() - seconds_ago
    os.utime(path, (then, then))
    return path


def test_the_names_recognised_are_the_names_atomic_write_gives_its_temporary_files(tmp_path, monkeypatch):
    seen = []
    replace = os.replace

    def looking(src, dst):
        seen.extend(n for n in os.listdir(tmp_path) if n != "state.json")
        replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", looking)
    for _ in range(20):
        atomic_write(str(tmp_path / "state.json"), b"{}")
    assert len(seen) == 20
    assert {temp_target(n) for n in seen} == {"state.json"}
    for other in ("state.json", ".state.json", ".state.json.tmp", "state.json.abcdefgh.tmp",
                  ".state.json.abcdefg.tmp", ".state.json.ABCDEFGH.tmp", ".state.json.abcdefgh.tmp.bak"):
        assert temp_target(other) is None, other


def test_a_state_write_killed_half_way_leaves_a_temporary_file_the_next_start_removes(tmp_path):
    state = tmp_path / "state.json"
    old = json.dumps(MemoryStateStore().snapshot(0))
    state.write_text(old)
    # A real process killed with SIGKILL in the middle of atomic_write (after
    # the data is written, before the rename).
    kill_mid_write = (
        "import os, signal\n"
        "from cliproxyd import fileio\n"
        "fileio.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"fileio.atomic_write({str(state)!r}, b'new')\n"
    )
    result = subprocess.run([sys.executable, "-c", kill_mid_write], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            timeout=60)
    assert result.returncode == -9
    [left] = [n for n in names(tmp_path) if n != "state.json"]
    assert temp_target(left) == "state.json"
    assert state.read_text() == old  # the old file is whole
    # Files that only look alike are someone else's.
    others = [".state.json.tmp", "state.json.abcdefgh.tmp", ".other.json.abcdefgh.tmp", "notes.tmp"]
    for other in others:
        made(tmp_path / other)
    (tmp_path / ".state.json.zzzzzzzz.tmp").mkdir()  # not a file
    StatePersistence(MemoryStateStore(), str(state), Clock(), run_in_thread=None).load()
    assert names(tmp_path) == sorted(["state.json", ".state.json.zzzzzzzz.tmp", *others])


def test_start_up_removes_stale_temporary_files_of_auth_files_and_of_the_config(tmp_path):
    auth = tmp_path / "auth"
    auth.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"auth-dir": str(auth)}))
    for name in (".a.json.abcdefgh.tmp", ".b.json.x1_y2z3w.tmp"):
        made(auth / name, LIVE_WRITE_SECONDS + 1)
    young = made(auth / ".c.json.abcdefgh.tmp", 5)  # perhaps a login writing it right now
    others = [made(auth / n, 3600) for n in (".a.txt.abcdefgh.tmp", "..hidden.json.abcdefgh.tmp", "d.json.tmp",
                                                ".e.json.tmp", "f.json")]
    made(tmp_path / ".config.yaml.abcdefgh.tmp", 1)  # only this daemon writes its config
    other_config = made(tmp_path / ".other.yaml.abcdefgh.tmp", 3600)
    runtime = Runtime(Assembly(None, Clock(), MemoryStateStore()), config_path=str(config), poll=0)
    runtime.start()
    assert names(auth) == sorted(p.name for p in [young, *others])
    assert names(tmp_path) == sorted(["auth", "config.yaml", other_config.name])


def test_a_temporary_file_that_cannot_be_removed_is_logged_and_start_up_goes_on(tmp_path, monkeypatch):
    from twisted.logger import capturedLogs

    (tmp_path / ".x.json.abcdefgh.tmp").write_text("{}")

    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(fileio.os, "unlink", refuse)
    with capturedLogs() as events:
        assert remove_stale_temps(str(tmp_path), "x.json".__eq__) == []
    assert [e["error"] for e in events if "error" in e] == ["Permission denied"]
    assert remove_stale_temps(str(tmp_path / "missing"), "x.json".__eq__) == []
