"""
Logging helpers: secret fingerprints and the JSON observer for systemd.

Log events carry structured fields (C{cred}, C{provider}, C{model},
C{status}); no field ever holds a key or a token, only its fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
from contextlib import suppress
from typing import Any, Callable, Mapping

from twisted.logger import ILogObserver, LogLevel, formatEvent, jsonFileLogObserver
from twisted.python.logfile import LogFile
from zope.interface import implementer, provider

from cliproxyd.fileio import daemon_dir


def fingerprint(secret: str) -> str:
    """
    A short stable name for a secret, safe to log and to show over the
    management API: C{fp:} and 8 hex digits of its SHA-256.
    """
    return "fp:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:8]


def json_observer() -> ILogObserver:
    """
    One JSON object per line on standard output, for journald.

    Use with C{twistd --logger=cliproxyd.logging.json_observer}. Unlike
    C{twist --log-format=json} there is no RS byte before each record, so
    C{journalctl -o cat} prints plain JSON lines. Each record carries the
    rendered message as C{text}.
    """
    write = jsonFileLogObserver(sys.stdout, recordSeparator="")

    @provider(ILogObserver)
    def observe(event: dict) -> None:
        # The rendered message, so `journalctl -o cat` reads well; the
        # structured fields stay beside it for machines.
        write({**event, "text": formatEvent(event)})

    return observe


# -- log files (logging-to-file, request-log) ----------------------------------------------------
#
# The names and the line format are CLIProxyAPI's, so the Management
# Center reads them as it reads CLIProxyAPI's: main.log, rotated to
# main.log.1 (newest) .. main.log.N (oldest); "[2006-01-02 15:04:05]
# [request id or --------] [level] [source] message" lines in local time;
# one file a request, "<path>-<2006-01-02T150405>-<id>.log", "error-"
# before it for an error logged while request-log is off.

#: The active log file's name.
MAIN_LOG = "main.log"
#: main.log is rotated past this size (CLIProxyAPI's: 10 MB).
ROTATE_BYTES = 10 * 1024 * 1024
#: The timestamp that starts each main.log line (local time, as CLIProxyAPI writes it).
LINE_TIME = "%Y-%m-%d %H:%M:%S"
#: What stands for a request id on a line that belongs to no request.
NO_REQUEST = "--------"

_LEVELS = {"debug": "debug", "info": "info ", "warn": "warn ", "error": "error", "critical": "fatal"}


def log_directory(config_path: str | None, environ: Mapping[str, str]) -> str:
    """
    Where the log files go: C{$WRITABLE_PATH/logs} when that is set, else
    C{logs} beside the config file (CLIProxyAPI's C{logs}, which its
    request logs resolve against the config's directory); "" with neither.
    """
    return daemon_dir("logs", config_path, environ)


def rotation_number(name: str) -> int | None:
    """N for a rotated C{main.log.N}, None for any other name."""
    prefix = MAIN_LOG + "."
    if not name.startswith(prefix) or not name[len(prefix):].isdigit():
        return None
    n = int(name[len(prefix):])
    return n if n > 0 else None


def format_line(event: Mapping[str, Any], request_id: str = NO_REQUEST) -> str:
    """One event as a main.log line (more lines for a traceback), newline-terminated."""
    stamp = time.strftime(LINE_TIME, time.localtime(event.get("log_time") or time.time()))
    level = event.get("log_level")
    name = _LEVELS.get(getattr(level, "name", ""), "info ")
    source = event.get("log_namespace") or "-"
    text = formatEvent(dict(event)).rstrip("\r\n")
    failure = event.get("log_failure")
    if failure is not None:
        try:
            text += "\n" + failure.getTraceback().rstrip("\n")
        except Exception:
            pass
    return f"[{stamp}] [{event.get('request_id') or request_id}] [{name}] [{source}] {text}\n"


class _AppendingLogFile(LogFile):
    """
    A C{LogFile} opened for appending: removing lines from the file (the
    management API's C{DELETE /logs}, in a thread) never leaves the next
    write at the old end of it.
    """

    def _openFile(self) -> None:
        self.closed = False
        os.makedirs(self.directory, exist_ok=True)
        self._file = open(self.path, "ab", 0)
        if self.defaultMode is not None:
            with suppress(OSError):
                os.chmod(self.path, self.defaultMode)
        self.size = self._file.tell()


@implementer(ILogObserver)
class MainLog:
    """
    An observer writing each event at C{min_level} or above as a main.log
    line in C{directory}, rotated past C{rotate_bytes} (Twisted's
    C{LogFile}: unbuffered writes of a line each). C{on_rotate} runs after
    each rotation (the size limit is enforced then). Opening it creates the
    directory and the file: do that off the reactor thread.
    """

    def __init__(self, directory: str, rotate_bytes: int = ROTATE_BYTES,
                 on_rotate: Callable[[], Any] | None = None, min_level: LogLevel = LogLevel.info) -> None:
        self.directory = directory
        self.min_level = min_level
        self._file = _AppendingLogFile(MAIN_LOG, directory, rotateLength=rotate_bytes, defaultMode=0o640)
        self._on_rotate = on_rotate

    @property
    def path(self) -> str:
        return self._file.path

    def __call__(self, event: Mapping[str, Any]) -> None:
        level = event.get("log_level", LogLevel.info)
        if level < self.min_level or self._file.closed:
            return
        rotating = self._file.shouldRotate()
        try:
            self._file.write(format_line(event).encode("utf-8", "replace"))
        except Exception:
            return  # an observer that raises is removed from the publisher: keep logging elsewhere
        if rotating and self._on_rotate is not None:
            self._on_rotate()

    def cleared(self) -> None:
        """main.log was emptied (in a thread): count its size again from nothing."""
        self._file.size = 0

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def enforce_total_size(directory: str, max_bytes: int, keep: str = MAIN_LOG) -> list[str]:
    """
    Remove the oldest log files of C{directory} (rotated main logs and
    request logs, by modification time) until they total C{max_bytes} or
    less; C{keep} (the active main.log) is never removed. Blocking.

    @return: the names removed.
    """
    if max_bytes <= 0:
        return []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    files = []
    total = 0
    for entry in entries:
        if not entry.name.endswith(".log") and rotation_number(entry.name) is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        total += st.st_size
        files.append((st.st_mtime_ns, -(rotation_number(entry.name) or 0), entry.name, st.st_size))
    removed = []
    for _, _, name, size in sorted(files):
        if total <= max_bytes:
            break
        if name == keep:
            continue
        with suppress(OSError):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
            total -= size
    return removed
