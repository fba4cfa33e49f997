"""
C{--demo}: a config that points at simulated upstreams started in-process.

Three keys serve C{gpt-4o-mini}. The first answers 429 with a 30 s reset,
so the first request (and the first one after each 30 s cooldown) shows a
failover in the log while the client sees success.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service

from cliproxyd.config.model import (
    APIKeyEntry,
    Config,
    ModelEntry,
    OpenAICompatProvider,
    RemoteManagement,
)
from cliproxyd.frontend.site import QuietSite
from cliproxyd.testing.upstream import SimulatedUpstream

DEMO_LISTEN = "tcp:8317:interface=127.0.0.1"
DEMO_MANAGEMENT_KEY = "demo-management-key"
DEMO_KEYS = ("demo-key-rate-limited", "demo-key-a", "demo-key-b")


def demo_upstream(clock) -> SimulatedUpstream:
    upstream = SimulatedUpstream(clock)
    upstream.script("demo-key-rate-limited", "status:429:30")
    return upstream


def demo_config(base_url: str) -> Config:
    provider = OpenAICompatProvider(
        name="demo",
        base_url=base_url,
        api_key_entries=tuple(APIKeyEntry(k) for k in DEMO_KEYS),
        models=(ModelEntry("sim-small", "gpt-4o-mini"), ModelEntry("gpt-4o")),
    )
    return Config(
        host="127.0.0.1",
        openai_compatibility=(provider,),
        remote_management=RemoteManagement(secret_key=DEMO_MANAGEMENT_KEY),
    )


class DemoUpstream(Service):
    """The demo's simulated upstream, on a free loopback port bound when the service starts."""

    name = "demo-upstream"

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.upstream = demo_upstream(reactor)
        self.port: Any = None

    def startService(self) -> None:
        Service.startService(self)
        self.port = self._reactor.listenTCP(0, QuietSite(self.upstream.resource()), interface="127.0.0.1")

    def config(self) -> Config:
        """The demo's config, pointing at the bound port (once the service has started)."""
        assert self.port is not None, "the demo upstream is not listening yet"
        return demo_config(f"http://127.0.0.1:{self.port.getHost().port}/v1")

    def stopService(self) -> Any:
        Service.stopService(self)
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
