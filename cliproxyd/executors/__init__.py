"""Upstream executors: one class per upstream protocol over one shared HTTP client."""

from cliproxyd.replies import Reply, StreamReply, UpstreamError
from cliproxyd.executors.dispatch import Executors
from cliproxyd.executors.upstreams import OpenAICompatExecutor

__all__ = [
    "Executors",
    "OpenAICompatExecutor",
    "Reply",
    "StreamReply",
    "UpstreamError",
]
