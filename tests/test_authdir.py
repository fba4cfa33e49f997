"""The auth-dir store: names checked, files listed, read, written, deleted and edited one at a time, in the thread."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import pytest
from twisted.internet.defer import Deferred, maybeDeferred

from cliproxyd.credentials.authdir import AuthDir, AuthFileInfo, InvalidName, valid_name
from cliproxyd.credentials.authfiles import AuthFileError
from tests.management_support import Threads, claude_file


def sync(f, *args):
    return maybeDeferred(f, *args)


def result(d: Deferred) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


@pytest.fixture
def store(tmp_path) -> AuthDir:
    return AuthDir(str(tmp_path), sync)


@pytest.mark.parametrize("name", ["a.json", "claude-a@x.com.json", "with space.json", "gemini-a+b@x.com-proj-1.json",
                                  "\u00e9l\u00e8ve.json", "a" * 195 + ".json"])
def test_good_names(name):
    assert valid_name(name) == name


REQUIRED = "is required: a file name ending in .json"
NO_PATH = "must be a file name, with no path"
NO_DOT = "must not start with a dot"
NO_CONTROL = "must not contain control characters, line breaks or quotes"
SUFFIX = "must end in .json"


@pytest.mark.parametrize("name, problem", [
    (None, REQUIRED), ("", REQUIRED), (".json", NO_DOT), (".hidden.json", NO_DOT), ("../x.json", NO_PATH),
    ("a/b.json", NO_PATH), ("a\\b.json", NO_PATH), ("a\x00.json", NO_CONTROL), ("x.json\n", NO_CONTROL),
    ("x\r\n.json", NO_CONTROL), ("a\tb.json", NO_CONTROL), ("a\x7f.json", NO_CONTROL), ("a\u0085.json", NO_CONTROL),
    ("a\u202eb.json", NO_CONTROL), ("a\u2028.json", NO_CONTROL), ("a\u00a0.json", NO_CONTROL),
    ("a\ud800.json", NO_CONTROL), ('a".json', NO_CONTROL), ("x.txt", SUFFIX), ("x.json.bak", SUFFIX),
    ("x.JSON", SUFFIX), ("a" * 196 + ".json", "must be at most 200 bytes long (UTF-8)"),
    ("\u00e9" * 98 + ".json", "must be at most 200 bytes long (UTF-8)"),
])
def test_bad_names_are_refused_before_the_disk_is_touched(store, name, problem):
    with pytest.raises(InvalidName) as info:
        valid_name(name)
    assert str(info.value) == f"name {problem}"
    for call in (store.read, store.delete, lambda n: store.write(n, b"{}"), lambda n: store.edit(n, dict.clear)):
        with pytest.raises(InvalidName):
            call(name)


def test_files_lists_the_visible_json_files_with_size_and_mtime(tmp_path, store):
    (tmp_path / "b.json").write_bytes(b"{}")
    (tmp_path / "a.json").write_bytes(b"[1, 2]")
    (tmp_path / ".hidden.json").write_bytes(b"{}")
    (tmp_path / "notes.txt").write_bytes(b"x")
    os.utime(tmp_path / "a.json", (1000, 1000))
    files = result(store.files())
    assert [f.name for f in files] == ["a.json", "b.json"]
    assert files[0] == AuthFileInfo("a.json", 6, 1000.0)


def test_a_missing_directory_has_no_files(tmp_path):
    assert result(AuthDir(str(tmp_path / "none"), sync).files()) == []


def test_read_and_delete(tmp_path, store):
    (tmp_path / "a.json").write_bytes(b"{}")
    assert result(store.read("a.json")) == b"{}"
    result(store.delete("a.json"))
    assert not (tmp_path / "a.json").exists()
    with pytest.raises(FileNotFoundError):
        result(store.read("a.json"))
    with pytest.raises(FileNotFoundError):
        result(store.delete("a.json"))


def test_write_is_atomic_new_files_are_0600_and_an_existing_file_keeps_its_mode(tmp_path, store):
    result(store.write("a.json", b"one"))
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o600
    os.chmod(tmp_path / "a.json", 0o640)
    result(store.write("a.json", b"two"))
    assert (tmp_path / "a.json").read_bytes() == b"two"
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o640
    assert os.listdir(tmp_path) == ["a.json"]  # no temporary file left


def test_edit_changes_the_json_and_keeps_the_mode(tmp_path, store):
    path = tmp_path / "a.json"
    path.write_bytes(claude_file(note="old"))
    os.chmod(path, 0o640)
    result(store.edit("a.json", lambda d: d.update(note="new", disabled=True)))
    data = json.loads(path.read_text())
    assert (data["note"], data["disabled"], data["type"]) == ("new", True, "claude")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_edit_refuses_a_file_that_is_no_credential_and_writes_nothing(tmp_path, store):
    (tmp_path / "other.json").write_bytes(b'{"type": "someday"}')
    (tmp_path / "broken.json").write_bytes(b"{nope")
    with pytest.raises(AuthFileError, match="not an OAuth credential cliproxyd serves"):
        result(store.edit("other.json", lambda d: d.update(disabled=True)))
    with pytest.raises(AuthFileError, match="not JSON"):
        result(store.edit("broken.json", lambda d: d.update(disabled=True)))
    with pytest.raises(FileNotFoundError):
        result(store.edit("none.json", lambda d: d.update(disabled=True)))
    assert (tmp_path / "other.json").read_bytes() == b'{"type": "someday"}'
    assert (tmp_path / "broken.json").read_bytes() == b"{nope"


def test_an_edit_that_breaks_the_file_is_not_written(tmp_path, store):
    (tmp_path / "a.json").write_bytes(claude_file())
    with pytest.raises(AuthFileError):
        result(store.edit("a.json", lambda d: d.update(access_token=5)))
    assert (tmp_path / "a.json").read_bytes() == claude_file()


def test_changes_run_in_the_thread_one_at_a_time(tmp_path):
    threads = Threads()
    store = AuthDir(str(tmp_path), threads)
    (tmp_path / "a.json").write_bytes(claude_file())
    done: list[str] = []
    store.write("b.json", b"{}").addCallback(lambda _: done.append("write"))
    store.edit("a.json", lambda d: d.update(note="n")).addCallback(lambda _: done.append("edit"))
    store.delete("b.json").addCallback(lambda _: done.append("delete"))
    for expected in (["write"], ["write", "edit"], ["write", "edit", "delete"]):
        assert len(threads.waiting) == 1  # the next change waits for the lock, not in a thread
        threads.drain()
        assert done == expected
    assert not threads.waiting and not (tmp_path / "b.json").exists()
    assert json.loads((tmp_path / "a.json").read_text())["note"] == "n"
    # Reads and listings take no lock, but run in the thread too.
    store.read("a.json")
    store.files()
    assert len(threads.waiting) == 2
