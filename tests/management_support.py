"""
The management API in memory, for route tests: a L{ManagementAPI} over a
real L{Runtime} whose config file and auth directory are in C{tmp_path}, so
writes go to a real file and reloads apply; the frontend beside it (to see a
change take effect) and the simulated upstream behind it, all three driven
through L{StubTreq}s (whose client is 127.0.0.1, so the loopback rules of
L{cliproxyd.management.access} apply). Time is a L{Clock}; "threads" are
jobs queued by L{Threads} and run when the stubs are pumped, so requests
still interleave at every file read and write.
"""

from __future__ import annotations

import json
import os
from typing import Any

import bcrypt
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from cliproxyd.daemon import build_daemon
from cliproxyd.management import ManagementAPI
from cliproxyd.testing.upstream import SimulatedUpstream

SECRET = "mgmt-secret-1"
AUTH = {"Authorization": f"Bearer {SECRET}"}
#: The secret as the daemon keeps it after start-up (cost 4 keeps the tests fast).
SECRET_HASH = bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(4)).decode()
#: Where the simulated upstream answers (any host reaches it through the stub).
UPSTREAM = "http://upstream.test"

CONFIG_TEXT = """\
# cliproxyd test config
port: {port}
host: 127.0.0.1
auth-dir: {auth_dir}
# retry settings
request-retry: 0   # no extra rounds
remote-management:
  secret-key: {secret}   # hashed at start-up
openai-compatibility:
  # the simulated upstream
  - name: sim
    base-url: {base}/v1
    api-key-entries:
      - api-key: sk-up-1
      - api-key: sk-up-2
    models:
      - name: sim-small
        alias: gpt-4o-mini
"""


class Threads:
    """A run_in_thread whose jobs wait in a queue until L{drain} runs them, in order."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

    def __call__(self, f: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append((d, f, args))
        return d

    def drain(self) -> bool:
        """Run the jobs waiting now; whether there were any."""
        batch, self.waiting = self.waiting, []
        for d, f, args in batch:
            maybeDeferred(f, *args).chainDeferred(d)
        return bool(batch)


class ManagementRig:
    """
    The management API of a daemon built from L{CONFIG_TEXT} (mode 0640) in
    C{tmp_path}, built by L{build_daemon} as the twistd plugin builds it:
    reloads swap the generation the frontend and the API read, every
    conductor reports to the usage counters and its 401s to the refresher.
    Without C{config_file} the API is given none, as with C{--demo}.
    """

    def __init__(self, tmp_path: Any, secret: str = SECRET_HASH, config_file: bool = True,
                 client: Any = None, **daemon: Any) -> None:
        """
        @param client: the daemon's outbound client (the simulated upstream's stub by default).
        @param daemon: more arguments of L{build_daemon} (C{oauth_providers}, C{refresh}, ...).
        """
        self.clock = Clock()
        self.threads = Threads()
        self.upstream = SimulatedUpstream(self.clock)
        self.up = StubTreq(self.upstream.resource())
        self.base = UPSTREAM
        self.auth_dir = tmp_path / "auth"
        self.auth_dir.mkdir()
        self.config = tmp_path / "config.yaml"
        self.config.write_text(CONFIG_TEXT.format(port=8317, auth_dir=self.auth_dir, secret=secret, base=self.base))
        os.chmod(self.config, 0o640)
        self.daemon = build_daemon(self.clock, client if client is not None else self.up,
                                   config_path=str(self.config), poll=0, run_in_thread=self.threads, **daemon)
        self.state, self.usage, self.refresher = self.daemon.state, self.daemon.usage, self.daemon.refresher
        self.runtime = self.daemon.runtime
        self.runtime.start()
        if not config_file:
            # As with --demo: an API that has no config file to change.
            self.api = ManagementAPI(self.runtime, self.state, self.clock, lambda: 0, refresher=self.refresher,
                                     usage=self.usage, run_in_thread=self.threads)
        else:
            self.api = self.daemon.management
        self.management = StubTreq(self.api.app.resource())
        self.front = StubTreq(self.daemon.resource())
        #: every stub L{settle} pumps (a test adds the ones it makes)
        self.stubs = [self.management, self.front, self.up]
        if client is not None and hasattr(client, "flush"):
            self.stubs.append(client)

    # -- driving ----------------------------------------------------------------------

    def settle(self, d: Deferred[Any]) -> Any:
        """Pump the stubs and run the queued thread jobs until C{d} fires; its result."""
        results: list[Any] = []
        d.addBoth(results.append)
        for _ in range(1000):
            if results:
                break
            for stub in self.stubs:
                stub.flush()
            self.threads.drain()
        assert results, "the request never finished"
        return self._result(results)

    def pump(self) -> None:
        """Run what is under way in the background (the stubs and the thread jobs) until it is done."""
        for _ in range(100):
            for stub in self.stubs:
                stub.flush()
            self.threads.drain()

    @staticmethod
    def _result(results: list[Any]) -> Any:
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]

    def send(self, method: str, path: str, body: Any = None, headers: dict | None = None,
             raw: bytes | None = None) -> Deferred[tuple[int, Any]]:
        """A management request, not yet pumped: fires with the status and the JSON (or bytes) answer."""
        kw: dict[str, Any] = {"headers": AUTH if headers is None else headers}
        if raw is not None:
            kw["data"] = raw
        elif body is not None:
            kw["json"] = body

        async def go() -> tuple[int, Any]:
            response = await self.management.request(method, "http://127.0.0.1:8317" + path, **kw)
            content = await self.management.content(response)
            try:
                return response.code, json.loads(content)
            except ValueError:
                return response.code, content

        return Deferred.fromCoroutine(go())

    def call(self, method: str, path: str, body: Any = None, headers: dict | None = None,
             raw: bytes | None = None) -> tuple[int, Any]:
        """A management request (the path below C{/v0/management}): its status and JSON (or bytes) answer."""
        return self.settle(self.send(method, path, body, headers, raw))

    def response(self, method: str, path: str, **kw: Any) -> Any:
        """The raw response to a management request, for its headers."""
        response = self.settle(self.management.request(method, "http://127.0.0.1:8317" + path, **kw))
        response.body = self.settle(self.management.content(response))
        return response

    def chat(self, model: str = "gpt-4o-mini", headers: dict | None = None) -> tuple[int, bytes]:
        d = self.front.post("http://127.0.0.1:8317/v1/chat/completions", headers=headers or {},
                            json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        response = self.settle(d)
        return response.code, self.settle(self.front.content(response))

    def models(self) -> set[str]:
        response = self.settle(self.front.get("http://127.0.0.1:8317/v1/models"))
        return {m["id"] for m in json.loads(self.settle(self.front.content(response)))["data"]}


def claude_file(base: str = UPSTREAM, token: str = "tok-a", **extra: Any) -> bytes:
    """An OAuth credential file for Claude whose calls go to C{base}."""
    return json.dumps({"type": "claude", "access_token": token, "refresh_token": "r",
                       "expired": "2099-01-01T00:00:00Z", "base_url": base, "email": "a@x.com",
                       **extra}).encode()
