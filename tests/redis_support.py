"""
A real redis-server for the tests that share state through Redis: started
on a free loopback port in the test's tmp_path with nothing saved to disk
(C{--save '' --appendonly no}), stoppable and restartable on the same port
(Redis killed mid-load); the C{redis_server} fixture in conftest starts one. Tests skip only when /usr/bin/redis-server is
missing; CI installs it (C{.ci/run}), so CI never skips.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import socket
import subprocess
import time
from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
#: How long a start may take before the test fails (the server says it is ready on its stdout).
START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.directory, "--daemonize", "no", "--loglevel", "notice"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        # Read its log until it is ready (bounded; no sleeping).
        deadline = time.monotonic() + START_TIMEOUT
        seen = b""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"Ready to accept connections" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start: {seen[-2000:].decode(errors='replace')}")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    continue
                seen += chunk

    def stop(self) -> None:
        """Kill it (SIGKILL: nothing is flushed; it comes back empty)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def command(self, *args: str) -> str:
        """One command through redis-cli (for checks from outside the daemon)."""
        out = subprocess.run([shutil.which("redis-cli") or "/usr/bin/redis-cli", "-p", str(self.port), *args],
                             capture_output=True, check=True, timeout=10)
        return out.stdout.decode().strip()


def start_redis(tmp_path) -> RedisServer:
    """A started L{RedisServer} in C{tmp_path}, or the test skipped when redis-server is missing."""
    if not os.path.exists(REDIS_SERVER):
        pytest.skip(f"{REDIS_SERVER} is not installed (apt-get install redis-server; CI installs it)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(str(directory))
    server.start()
    return server


def connector(reactor: Any, server: RedisServer) -> Any:
    """How a store reaches C{server} (L{cliproxyd.state.redisstore.tcp_connect} on the reactor)."""
    from cliproxyd.config.load import parse_redis_url
    from cliproxyd.state.redisstore import tcp_connect

    where = parse_redis_url(server.url)
    return tcp_connect(reactor, reactor, where.host, where.port, where.db)


async def until(reactor: Any, predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.005) -> float:
    """
    Wait (on the reactor, bounded) until C{predicate()} holds; returns the
    seconds it took. Fails the test at C{timeout}.
    """
    started = reactor.seconds()
    while not predicate():
        if reactor.seconds() - started > timeout:
            raise AssertionError(f"not true within {timeout}s")
        await deferLater(reactor, step, lambda: None)
    return reactor.seconds() - started


_fences = itertools.count()


async def settled(reactor: Any, server: RedisServer, stores: list) -> None:
    """
    Every change sent (nothing pending, no flush in flight) and delivered.
    Nothing pending is not enough: the last flush's change message may still
    be on its way to the other instances. Redis hands each subscriber its
    messages in publish order, so once every store has applied a fence
    published after that, every change before it has been applied too. The
    fence counts one request on a credential no test uses, dropped once seen.
    """
    await until(reactor, lambda: all(s.pending_writes == 0 and not s._flushing for s in stores))
    name = f"fence-{next(_fences)}"
    fence = json.dumps({"src": "fence", "incr": [["stats", f"{name}\x1frequests", 1]]})
    for channel in {s._channel for s in stores}:
        server.command("PUBLISH", channel, fence)
    await until(reactor, lambda: all(name in s._stats for s in stores))
    for s in stores:
        del s._stats[name]


def wait(reactor: Any, d: Deferred, timeout: float = 10.0) -> Deferred:
    """C{d}, failing with a timeout instead of hanging the test."""
    return d.addTimeout(timeout, reactor)
