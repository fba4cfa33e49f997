"""
C{--demo}: a config that points at simulated upstreams started in-process.

Three keys serve C{gpt-4o-mini}; the first is always rate limited, so every
other request shows a failover in the log while the client sees success.
"""

from __future__ import annotations

from cliproxyd.config.model import (
    APIKeyEntry,
    Config,
    ModelEntry,
    OpenAICompatProvider,
    RemoteManagement,
)
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
