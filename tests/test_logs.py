"""
Logs that exist for real: main.log with rotation by size and the total
size limit, GET/DELETE /logs as the Management Center reads them, request
logs and error logs (secrets as fingerprints) and their download routes,
and the settings routes that turn them on. In memory: the rig's Clock, its
queued "threads", a private log publisher.
"""

from __future__ import annotations

import os
import time

from twisted.logger import Logger, LogLevel, LogPublisher

from cliproxyd.logging import MainLog, enforce_total_size, format_line, log_directory
from cliproxyd.management.logs import mask_url, read_logs, request_log_name
from tests.management_support import ManagementRig


def _rig(tmp_path, **kw) -> tuple[ManagementRig, Logger]:
    publisher = LogPublisher()
    rig = ManagementRig(tmp_path, log_publisher=publisher, log_rotate_bytes=kw.pop("rotate", 10 * 1024 * 1024),
                        **kw)
    rig.log_dir = tmp_path / "logs"
    rig.settle(rig.daemon.log_files.follow())
    return rig, Logger(namespace="test", observer=publisher)


def _turn_on(rig: ManagementRig, name: str, value) -> None:
    assert rig.call("PUT", f"/{name}", {"value": value}) == (200, {"status": "ok"})
    rig.settle(rig.daemon.log_files.follow())


# -- main.log ------------------------------------------------------------------------------------


def test_the_log_directory_is_logs_beside_the_config(tmp_path):
    assert log_directory(str(tmp_path / "config.yaml"), {}) == str(tmp_path / "logs")
    assert log_directory(str(tmp_path / "config.yaml"), {"WRITABLE_PATH": "/var/lib/c"}) == "/var/lib/c/logs"
    assert log_directory(None, {}) == ""


def test_lines_are_in_cliproxyapis_format():
    event = {"log_time": time.mktime((2026, 12, 2, 1, 2, 3, 0, 0, -1)), "log_level": LogLevel.warn,
             "log_namespace": "cliproxyd.x", "log_format": "cooled {cred}", "cred": "fp:1234"}
    assert format_line(event) == "[2026-12-02 01:02:03] [--------] [warn ] [cliproxyd.x] cooled fp:1234\n"


def test_main_log_rotates_by_size_and_the_total_is_kept_under_the_limit(tmp_path):
    rotated = []
    main = MainLog(str(tmp_path), rotate_bytes=300, on_rotate=lambda: rotated.append(1))
    log = Logger(namespace="t", observer=main)
    for i in range(40):
        log.info("line {i} " + "x" * 40, i=i)
    main.close()
    names = sorted(os.listdir(tmp_path))
    assert "main.log" in names and "main.log.1" in names and "main.log.3" in names
    assert rotated
    assert os.path.getsize(tmp_path / "main.log") <= 300 + 100
    # The newest lines are in main.log, older ones in main.log.1 and up.
    assert "line 39" in (tmp_path / "main.log").read_text()
    total = sum(os.path.getsize(tmp_path / n) for n in names)
    removed = enforce_total_size(str(tmp_path), total - 200)
    assert removed and "main.log" not in removed
    left = set(os.listdir(tmp_path))
    # The oldest went first: the highest rotation numbers.
    highest = max(int(n.rsplit(".", 1)[1]) for n in names if n != "main.log")
    assert f"main.log.{highest}" not in left and "main.log.1" in left


def test_logging_to_file_writes_main_log_and_get_logs_reads_it_incrementally(tmp_path):
    rig, log = _rig(tmp_path)
    assert rig.call("GET", "/logs") == (400, {"error": "logging to file disabled"})
    assert rig.call("GET", "/logging-to-file") == (200, {"logging-to-file": False})
    _turn_on(rig, "logging-to-file", True)
    assert rig.call("GET", "/logging-to-file") == (200, {"logging-to-file": True})
    log.info("first line")
    log.debug("not at debug level")
    code, answer = rig.call("GET", "/logs")
    assert code == 200
    assert [line.split("] ", 4)[-1] for line in answer["lines"]] == ["first line"]
    assert answer["line-count"] == 1 and answer["next-cursor"] == ""
    latest = answer["latest-timestamp"]
    assert abs(latest - time.time()) < 5
    # Nothing new after the latest timestamp ...
    assert rig.call("GET", f"/logs?after={latest}")[1]["lines"] == []
    assert rig.call("GET", f"/logs?after={latest}")[1]["latest-timestamp"] == latest
    # ... until there is (a line a second later than the last).
    with open(rig.log_dir / "main.log", "a") as f:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(latest + 1))
        f.write(f"[{stamp}] [--------] [info ] [t] second line\n  a continuation\n")
    code, answer = rig.call("GET", f"/logs?after={latest}")
    assert [line.rsplit("] ", 1)[-1] for line in answer["lines"]] == ["second line", "  a continuation"]
    assert answer["latest-timestamp"] == latest + 1
    assert len(rig.call("GET", "/logs?limit=1")[1]["lines"]) == 1
    assert rig.call("GET", "/logs?limit=0")[0] == 400
    rig.daemon.log_files.stop()


def test_debug_true_logs_debug_lines_too(tmp_path):
    rig, log = _rig(tmp_path)
    _turn_on(rig, "logging-to-file", True)
    _turn_on(rig, "debug", True)
    log.debug("a debug line")
    assert any("a debug line" in line for line in rig.call("GET", "/logs")[1]["lines"])
    rig.daemon.log_files.stop()


def test_delete_logs_empties_main_log_and_removes_rotations(tmp_path):
    rig, log = _rig(tmp_path, rotate=200)
    _turn_on(rig, "logging-to-file", True)
    for i in range(20):
        log.info("line {i} " + "y" * 30, i=i)
    assert (rig.log_dir / "main.log.1").exists()
    code, answer = rig.call("DELETE", "/logs")
    assert code == 200 and answer["success"] is True and answer["removed"] >= 1
    assert sorted(os.listdir(rig.log_dir)) == ["main.log"]
    assert rig.call("GET", "/logs")[1]["lines"] == []
    log.info("after clearing")
    lines = rig.call("GET", "/logs")[1]["lines"]
    assert len(lines) == 1 and lines[0].endswith("after clearing")
    assert b"\0" not in (rig.log_dir / "main.log").read_bytes()
    _turn_on(rig, "logging-to-file", False)
    log.info("not written: logging to file is off")
    assert "not written" not in (rig.log_dir / "main.log").read_text()
    assert rig.call("DELETE", "/logs")[0] == 400


def test_logs_max_total_size_mb_removes_the_oldest_files_every_minute(tmp_path):
    rig, log = _rig(tmp_path)
    _turn_on(rig, "logging-to-file", True)
    assert rig.call("PUT", "/logs-max-total-size-mb", {"value": 1}) == (200, {"status": "ok"})
    assert rig.call("GET", "/logs-max-total-size-mb") == (200, {"logs-max-total-size-mb": 1})
    for n in (1, 2, 3):
        (rig.log_dir / f"main.log.{n}").write_bytes(b"z" * 400_000)
        os.utime(rig.log_dir / f"main.log.{n}", (1000 - n, 1000 - n))
    rig.daemon.log_files.service.startService()
    try:
        rig.clock.advance(60)
        rig.threads.drain()
        assert sorted(os.listdir(rig.log_dir)) == ["main.log", "main.log.1", "main.log.2"]
    finally:
        rig.settle(rig.daemon.log_files.service.stopService())
    assert rig.call("PUT", "/logs-max-total-size-mb", {"value": -1})[0] == 400


# -- request logs and error logs -------------------------------------------------------------------


def test_request_log_names_and_masking():
    stamp = time.mktime((2026, 12, 2, 19, 58, 11, 0, 0, -1))
    assert request_log_name("/v1/chat/completions?x=1", stamp, "a1b2c3d4", False) == \
        "v1-chat-completions-2026-12-02T195811-a1b2c3d4.log"
    assert request_log_name("/", stamp, "a1b2c3d4", True) == "error-root-2026-12-02T195811-a1b2c3d4.log"
    masked = mask_url("/v1beta/models/x:generateContent?alt=sse&key=AIzaSECRET")
    assert "AIzaSECRET" not in masked and "alt=sse&key=fp:" in masked


def test_request_log_writes_every_request_with_its_secrets_masked(tmp_path):
    rig, _ = _rig(tmp_path)
    _turn_on(rig, "logging-to-file", True)
    assert rig.call("GET", "/request-log") == (200, {"request-log": False})
    _turn_on(rig, "request-log", True)
    code, _ = rig.chat(headers={"Authorization": "Bearer client-secret-key"})
    assert code == 200
    rig.threads.drain()
    logs = [n for n in os.listdir(rig.log_dir) if n.startswith("v1-chat-completions-")]
    assert len(logs) == 1
    text = (rig.log_dir / logs[0]).read_text()
    assert "client-secret-key" not in text and "Authorization: Bearer fp:" in text
    assert "=== REQUEST INFO ===" in text and "Method: POST" in text and '"hi"' in text
    assert "=== RESPONSE ===\nStatus: 200" in text and "chat.completion" in text
    request_id = logs[0].rsplit("-", 1)[1].removesuffix(".log")
    # main.log has the request's line with its id, as the panel reads it.
    lines = rig.call("GET", "/logs")[1]["lines"]
    assert any(f"[{request_id}]" in line and '| POST "/v1/chat/completions"' in line and "| 200 |" not in line
               and line.split("] ")[-1].startswith("200 |") for line in lines)
    response = rig.response("GET", f"/request-log-by-id/{request_id}",
                            headers={"Authorization": "Bearer mgmt-secret-1"})
    assert response.code == 200 and response.body.decode() == text
    assert response.headers.getRawHeaders("content-disposition") == [f'attachment; filename="{logs[0]}"']
    assert rig.call("GET", "/request-log-by-id/ffffffff")[0] == 404
    # With request-log on, there are no error logs to list.
    assert rig.call("GET", "/request-error-logs") == (200, {"files": []})
    rig.daemon.log_files.stop()


def test_errors_are_logged_while_request_log_is_off_and_the_newest_are_kept(tmp_path):
    rig, _ = _rig(tmp_path)
    assert rig.call("GET", "/error-logs-max-files") == (200, {"error-logs-max-files": 10})
    assert rig.call("PUT", "/error-logs-max-files", {"value": 2}) == (200, {"status": "ok"})
    assert rig.chat()[0] == 200
    rig.threads.drain()
    assert not rig.log_dir.exists() or os.listdir(rig.log_dir) == []
    for i in range(3):
        rig.clock.advance(1)
        assert rig.chat(model=f"no-such-model-{i}")[0] >= 400
        rig.threads.drain()
    files = rig.call("GET", "/request-error-logs")[1]["files"]
    assert len(files) == 2
    assert all(f["name"].startswith("error-v1-chat-completions-") and f["size"] > 0 for f in files)
    newest = files[0]["name"]
    code, body = rig.call("GET", f"/request-error-logs/{newest}")
    assert code == 200 and b"no-such-model-2" in body and b"Status: 4" in body
    assert rig.call("GET", "/request-error-logs/main.log")[0] == 404
    assert rig.call("GET", "/request-error-logs/..%5Cconfig.yaml")[0] == 400
    assert rig.call("GET", "/request-error-logs/error-nope.log")[0] == 404


def test_management_requests_are_not_request_logged(tmp_path):
    rig, _ = _rig(tmp_path)
    _turn_on(rig, "request-log", True)
    front = rig.settle(rig.front.get("http://127.0.0.1:8317/v0/management/nope",
                                     headers={"Authorization": "Bearer mgmt-secret-1"}))
    rig.settle(rig.front.content(front))
    rig.threads.drain()
    assert not rig.log_dir.exists() or os.listdir(rig.log_dir) == []


def test_read_logs_of_a_directory_that_does_not_exist(tmp_path):
    assert read_logs(str(tmp_path / "none"), 5, 0) == {"lines": [], "line-count": 0, "latest-timestamp": 5,
                                                      "next-cursor": ""}
