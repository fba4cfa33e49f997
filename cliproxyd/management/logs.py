"""
The daemon's log files and the management routes that read them, as
CLIProxyAPI has them (names and line format in L{cliproxyd.logging}):

  - C{logging-to-file: true}: every log event at C{info} or above (C{debug}
    with C{debug: true}) also goes to C{main.log} in the log directory
    (L{log_directory}), rotated past 10 MB to C{main.log.1} ..;
    C{logs-max-total-size-mb} (0: no limit) removes the oldest log files
    once the directory holds more (checked after each rotation and every
    minute; the active C{main.log} stays). Each request also gets a line
    there (status, latency, client address, method and path) with its
    request id.
  - C{request-log: true}: each request is written to its own file
    (L{RequestLogs}); while it is false, requests answered with an error
    (status 400 or more) are, as C{error-*.log}, the newest
    C{error-logs-max-files} of them kept (0: all).

Routes: C{GET /logs} (C{?after=} unix seconds: only lines after it;
C{?limit=}: the last so many), C{DELETE /logs}, C{GET /request-error-logs},
C{GET /request-error-logs/<name>}, C{GET /request-log-by-id/<id>}. The
settings themselves are scalar settings (L{cliproxyd.management.settings}).

Every file is opened, read, written and removed in C{run_in_thread}; the
only writes on the reactor thread are main.log's lines, through Twisted's
C{LogFile} (one unbuffered append each, as twistd's own log file).
"""

from __future__ import annotations

import datetime
import os
import re
from random import getrandbits
import stat
import time
from collections import deque
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel, LogPublisher, globalLogPublisher
from twisted.web.iweb import IRequest

from cliproxyd.config.model import Config, LoggingConfig
from cliproxyd.logging import (
    LINE_TIME,
    MAIN_LOG,
    ROTATE_BYTES,
    MainLog,
    enforce_total_size,
    fingerprint,
    rotation_number,
)
from cliproxyd.management.access import Refused
from cliproxyd.management.http import Resource, arg, respond, route
from cliproxyd.service import Periodic, ServiceTree

#: How often the log files follow a changed config (a management change also applies at once).
FOLLOW_INTERVAL = 1.0
#: How often C{logs-max-total-size-mb} is enforced besides after each rotation (CLIProxyAPI: a minute).
CLEAN_INTERVAL = 60.0
_MIB = 1024 * 1024
_log = Logger()

RunInThread = Callable[..., "Deferred[Any]"]


class LogFiles:
    """
    The log files as the running config wants them: L{follow} opens or
    closes main.log when C{logging-to-file} changes; L{service} runs the
    following and the size limit.

    @param settings: the running config (None before the first generation).
    @param publisher: where log events are observed (the global one in the daemon).
    """

    def __init__(
        self,
        directory: str,
        settings: Callable[[], Config | None],
        clock: IReactorTime,
        *,
        run_in_thread: RunInThread,
        publisher: LogPublisher = globalLogPublisher,
        rotate_bytes: int = ROTATE_BYTES,
    ) -> None:
        self.directory = directory
        self._settings = settings
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._publisher = publisher
        self._rotate_bytes = rotate_bytes
        self._applied: tuple[bool, LogLevel] | None = None
        self.main: MainLog | None = None
        self._running = False
        self.service = ServiceTree()
        self.service.setName("log-files")
        Periodic("log-follow", FOLLOW_INTERVAL, self.follow, clock, now=True,
                 on_stop=self.stop).setServiceParent(self.service)
        Periodic("log-cleaner", CLEAN_INTERVAL, self.clean, clock).setServiceParent(self.service)

    @property
    def config(self) -> LoggingConfig:
        """The running logging settings (the defaults before the first generation)."""
        config = self._settings()
        return config.logging if config is not None else LoggingConfig()

    def follow(self) -> "Deferred[None]":
        """Open or close main.log as the running config says; fires when that is done."""
        self._running = True
        config = self._settings()
        if config is None or not self.directory:
            return succeed(None)
        wanted = (config.logging.to_file, LogLevel.debug if config.debug else LogLevel.info)
        if wanted == self._applied:
            return succeed(None)
        self._applied = wanted
        if not wanted[0]:
            self._close()
            return succeed(None)
        if self.main is not None:
            self.main.min_level = wanted[1]
            return succeed(None)
        return self._run_in_thread(MainLog, self.directory, self._rotate_bytes, self.clean,
                                   wanted[1]).addCallback(self._opened)

    def _opened(self, main: MainLog) -> None:
        if self.main is not None or not self._running or not (self._applied and self._applied[0]):
            main.close()
            return
        self.main = main
        main.min_level = self._applied[1]
        self._publisher.addObserver(main)

    def _close(self) -> None:
        main, self.main = self.main, None
        if main is not None:
            self._publisher.removeObserver(main)
            main.close()

    def stop(self) -> None:
        """Close main.log for good (the service is stopping)."""
        self._running = False
        self._applied = None
        self._close()

    def clean(self) -> "Deferred[list[str]]":
        """Enforce C{logs-max-total-size-mb}; fires with the names removed."""
        limit = self.config.max_total_size_mb * _MIB
        if limit <= 0 or not self.directory:
            return succeed([])
        return self._run_in_thread(enforce_total_size, self.directory, limit)

    def write_file(self, name: str, data: bytes, keep_errors: int = 0) -> "Deferred[None]":
        """Write the request log C{name} in a thread; then keep only the newest C{keep_errors} error logs."""
        return self._run_in_thread(_write_request_log, self.directory, name, data, keep_errors)


def _write_request_log(directory: str, name: str, data: bytes, keep_errors: int) -> None:
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if keep_errors > 0 and name.startswith("error-"):
        errors = sorted(_error_logs(directory), key=lambda e: e["modified_ns"], reverse=True)
        for old in errors[keep_errors:]:
            try:
                os.unlink(os.path.join(directory, old["name"]))
            except OSError:
                pass


# -- reading -----------------------------------------------------------------------------------


class _Stamps:
    """Line timestamps in unix seconds, the last one remembered (a second's lines share it)."""

    def __init__(self) -> None:
        self._text = ""
        self._value = 0

    def of(self, line: str) -> int:
        text = line[1:20] if line.startswith("[") else line[:19]
        if len(text) < 19:
            return 0
        if text != self._text:
            try:
                self._value = int(time.mktime(time.strptime(text, LINE_TIME)))
            except (ValueError, OverflowError):
                return 0
            self._text = text
        return self._value


def _main_logs(directory: str) -> list[str]:
    """main.log and its rotations, oldest first."""
    names = os.listdir(directory)
    rotated = sorted((n for n in names if rotation_number(n) is not None), key=rotation_number, reverse=True)
    return rotated + ([MAIN_LOG] if MAIN_LOG in names else [])


def read_logs(directory: str, after: int, limit: int) -> dict[str, Any]:
    """
    The lines of the main logs after C{after} (every line for 0; a line
    without a timestamp goes with the one before it), the last C{limit}
    of them (all for 0), in CLIProxyAPI's answer shape. Blocking.
    """
    try:
        names = _main_logs(directory)
    except FileNotFoundError:
        names = []
    lines: deque[str] = deque(maxlen=limit or None)
    total = latest = 0
    include = False
    stamps = _Stamps()
    for name in names:
        path = os.path.join(directory, name)
        try:
            if after and os.stat(path).st_mtime < after:
                continue  # every line in it is older
            with open(path, "rb") as f:
                content = f.read()
        except FileNotFoundError:
            continue
        for raw in content.decode("utf-8", "replace").splitlines():
            line = raw.rstrip("\r")
            total += 1
            ts = stamps.of(line)
            if ts > latest:
                latest = ts
            if ts:
                include = not after or ts > after
            if not after or include:
                lines.append(line)
    return {"lines": list(lines), "line-count": total, "latest-timestamp": max(latest, after),
            "next-cursor": ""}


def clear_logs(directory: str) -> int:
    """Empty main.log and remove its rotations; how many were removed. Blocking."""
    removed = 0
    for name in _main_logs(directory):
        path = os.path.join(directory, name)
        if name == MAIN_LOG:
            os.truncate(path, 0)
            continue
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def _error_logs(directory: str) -> list[dict[str, Any]]:
    out = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not (entry.name.startswith("error-") and entry.name.endswith(".log")):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out.append({"name": entry.name, "size": st.st_size, "modified": int(st.st_mtime),
                        "modified_ns": st.st_mtime_ns})
    return out


def list_error_logs(directory: str) -> list[dict[str, Any]]:
    """The error request logs, newest first, as C{{name, size, modified}}. Blocking."""
    logs = sorted(_error_logs(directory), key=lambda e: e["modified_ns"], reverse=True)
    return [{k: e[k] for k in ("name", "size", "modified")} for e in logs]


def read_named(directory: str, name: str) -> bytes | None:
    """The log file C{name} of C{directory} (a plain name, a regular file), or None. Blocking."""
    path = os.path.join(directory, name)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def find_by_id(directory: str, request_id: str) -> str | None:
    """The name of the request log whose name ends in C{-<request_id>.log}, or None. Blocking."""
    suffix = f"-{request_id}.log"
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return None
    return next((n for n in names if n.endswith(suffix)), None)


def _plain_name(value: str, what: str) -> str:
    value = value.strip()
    if not value or "/" in value or "\\" in value or value in (".", "..") or "\0" in value:
        raise Refused(400, f"invalid {what}")
    return value


class Logs(Resource):
    """C{/logs}, C{/request-error-logs}, C{/request-error-logs/<name>} and C{/request-log-by-id/<id>}."""

    def _files(self) -> LogFiles:
        files = self.context.log_files
        if files is None or not files.directory:
            raise Refused(500, "log directory not configured")
        return files

    @route("/logs", "GET")
    async def logs(self, request: IRequest) -> bytes:
        files = self._files()
        if not files.config.to_file:
            raise Refused(400, "logging to file disabled")
        after = arg(request, "after") or ""
        after_n = int(after) if after.strip().isdigit() else 0
        raw_limit = (arg(request, "limit") or "").strip()
        limit = 0
        if raw_limit:
            if not raw_limit.isdigit() or int(raw_limit) <= 0:
                raise Refused(400, "invalid limit: must be a whole number above 0")
            limit = int(raw_limit)
        return respond(request, await self.context.run_in_thread(read_logs, files.directory, after_n, limit))

    @route("/logs", "DELETE")
    async def delete_logs(self, request: IRequest) -> bytes:
        files = self._files()
        if not files.config.to_file:
            raise Refused(400, "logging to file disabled")
        try:
            removed = await self.context.run_in_thread(clear_logs, files.directory)
        except FileNotFoundError:
            raise Refused(404, "log directory not found") from None
        if files.main is not None:
            files.main.cleared()
        return respond(request, {"success": True, "message": "Logs cleared successfully", "removed": removed})

    @route("/request-error-logs", "GET")
    async def error_logs(self, request: IRequest) -> bytes:
        files = self._files()
        if files.config.request_log:
            return respond(request, {"files": []})
        return respond(request, {"files": await self.context.run_in_thread(list_error_logs, files.directory)})

    @route("/request-error-logs/<name>", "GET")
    async def error_log(self, request: IRequest, name: str) -> bytes:
        files = self._files()
        name = _plain_name(name, "log file name")
        if not (name.startswith("error-") and name.endswith(".log")):
            raise Refused(404, "log file not found")
        return await self._download(request, files, name)

    @route("/request-log-by-id/<request_id>", "GET")
    async def by_id(self, request: IRequest, request_id: str) -> bytes:
        files = self._files()
        request_id = _plain_name(request_id, "request ID")
        name = await self.context.run_in_thread(find_by_id, files.directory, request_id)
        if name is None:
            raise Refused(404, "log file not found for the given request ID")
        return await self._download(request, files, name)

    async def _download(self, request: IRequest, files: LogFiles, name: str) -> bytes:
        data = await self.context.run_in_thread(read_named, files.directory, name)
        if data is None:
            raise Refused(404, "log file not found")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"content-disposition", f'attachment; filename="{name}"'.encode())
        return data


# -- one file a request (request-log, error logs), and main.log's access lines -------------------

#: The most of a request body an error log keeps when request-log is off (CLIProxyAPI: 1 MiB).
ERROR_BODY_BYTES = 1024 * 1024
#: The most of a request or response body a request log keeps.
REQUEST_LOG_BODY_BYTES = 8 * 1024 * 1024
#: Header names whose values are secrets: logged as fingerprints.
_SECRET_HEADER_PARTS = ("authorization", "api-key", "apikey", "token", "secret", "cookie")
_SECRET_QUERY = re.compile(r"(?i)((?:^|[?&])(?:key|api[-_]?key|access[-_]?token|auth[-_]?token|token)=)([^&]*)")
_UNSAFE = re.compile(r'[<>:"|?*\s/\\]')
_DASHES = re.compile(r"-+")


def _mask_header(name: str, value: str) -> str:
    lower = name.lower()
    if not any(part in lower for part in _SECRET_HEADER_PARTS):
        return value
    scheme, sep, rest = value.partition(" ")
    if sep and lower.endswith("authorization") and scheme.isalpha():
        return f"{scheme} {fingerprint(rest.strip())}"
    return fingerprint(value)


def mask_url(uri: str) -> str:
    """C{uri} with the values of key and token query arguments as fingerprints."""
    return _SECRET_QUERY.sub(lambda m: m.group(1) + (fingerprint(m.group(2)) if m.group(2) else ""), uri)


def request_log_name(path: str, stamp: float, request_id: str, error: bool) -> str:
    """CLIProxyAPI's name of a request's log file: C{v1-chat-completions-2006-01-02T150405-<id>.log}."""
    cleaned = _DASHES.sub("-", _UNSAFE.sub("-", path.split("?", 1)[0].lstrip("/"))).strip("-") or "root"
    name = f"{cleaned}-{time.strftime('%Y-%m-%dT%H%M%S', time.localtime(stamp))}-{request_id}.log"
    return "error-" + name if error else name


def _headers_text(headers: Any) -> str:
    return "".join(f"{name.decode('latin-1')}: {_mask_header(name.decode('latin-1'), v.decode('latin-1'))}\n"
                   for name, values in headers.getAllRawHeaders() for v in values)


class _Recording:
    """What one request's log needs, gathered while it is served."""

    __slots__ = ("recorder", "request", "started", "full", "write", "finish",
                 "response", "size", "deciding", "keep", "request_body", "notified")

    def __init__(self, recorder: "RequestRecorder", request: IRequest, full: bool, notified: bool) -> None:
        self.recorder = recorder
        self.request = request
        self.started = recorder.clock.seconds()
        self.full = full
        #: the request's end is awaited with notifyFinish (else: seen in its finish, for an error only)
        self.notified = notified
        self.response: list[bytes] = []
        self.size = 0
        self.deciding = True
        #: whether this request is logged (known once its status is)
        self.keep = False
        self.request_body = b""
        # Shadow the request's own write and finish while the answer starts.
        self.write = request.write
        self.finish = request.finish
        request.write = self._write  # type: ignore[method-assign]
        request.finish = self._finish  # type: ignore[method-assign]

    def _decide(self) -> None:
        self.deciding = False
        request = self.request
        if not (self.full or request.code >= 400):
            # Nothing to keep: the request's own methods from here on.
            del request.write, request.finish
            return
        self.keep = True
        limit = REQUEST_LOG_BODY_BYTES if self.full else ERROR_BODY_BYTES
        content = getattr(request, "content", None)
        if content is not None and not getattr(content, "closed", True):
            position = content.tell()
            content.seek(0)
            self.request_body = content.read(limit)
            content.seek(position)

    def _write(self, data: bytes) -> None:
        if self.deciding:
            self._decide()
        if self.keep:
            limit = REQUEST_LOG_BODY_BYTES if self.full else ERROR_BODY_BYTES
            if self.size < limit:
                self.response.append(data[: limit - self.size])
            self.size += len(data)
        self.write(data)

    def _finish(self) -> Any:
        if self.deciding:
            self._decide()
        result = self.finish()
        if not self.notified:
            self.done(None)
        return result

    def done(self, _: object) -> None:
        self.recorder.finished(self, self.request)


class RequestRecorder:
    """
    Records the client requests L{LogFiles} wants: C{request-log: true},
    each one; else those answered with an error (as C{error-*.log}); and,
    with C{logging-to-file}, a line a request in main.log. Started by the
    site's root for every client request (not the management API or the
    panel, as in CLIProxyAPI); costs two attribute swaps until the
    status is known, and nothing more for a request nobody logs.
    """

    def __init__(self, files: LogFiles, clock: IReactorTime, version: str) -> None:
        self.files = files
        self.clock = clock
        self.version = version

    def start(self, request: IRequest) -> None:
        if not self.files.directory:
            return
        full = self.files.config.request_log
        # Only a request with something to write at its end, whatever the
        # end, waits for it; one that may become an error log is seen in
        # its own finish (no Deferred for the answers nobody logs).
        notified = full or self.files.main is not None
        recording = _Recording(self, request, full, notified)
        if notified:
            request.notifyFinish().addBoth(recording.done)

    def finished(self, recording: _Recording, request: IRequest) -> None:
        main = self.files.main
        if main is None and not recording.keep:
            return  # the common case: nothing to write
        now = self.clock.seconds()
        request_id = f"{getrandbits(32):08x}"
        uri = mask_url(request.uri.decode("latin-1"))
        if main is not None:
            client = request.getClientAddress()
            main({
                "log_time": time.time(), "log_level": LogLevel.info, "log_namespace": "access",
                "log_format": '{status} | {latency} | {client} | {method} "{path}"',
                "status": request.code, "latency": f"{(now - recording.started) * 1000:.3f}ms",
                "client": getattr(client, "host", "-"), "method": request.method.decode("latin-1"),
                "path": uri.split("?", 1)[0], "request_id": request_id,
            })
        if not recording.keep:
            return
        error = not recording.full
        name = request_log_name(uri, recording.started, request_id, error)
        text = "".join([
            "=== REQUEST INFO ===\n",
            f"Version: {self.version}\n",
            f"URL: {uri}\n",
            f"Method: {request.method.decode('latin-1')}\n",
            f"Timestamp: {_rfc3339(recording.started)}\n\n",
            "=== HEADERS ===\n",
            _headers_text(request.requestHeaders),
            "\n=== REQUEST BODY ===\n",
        ]).encode("utf-8") + recording.request_body + "".join([
            "\n\n=== RESPONSE ===\n",
            f"Status: {request.code}\n",
            _headers_text(request.responseHeaders),
            "\n",
        ]).encode("utf-8") + b"".join(recording.response) + b"\n"
        keep = self.files.config.error_logs_max_files if error else 0
        self.files.write_file(name, text, keep).addErrback(
            lambda f: _log.failure("could not write the request log {name}", f, name=name))


def _rfc3339(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp).astimezone().isoformat()
