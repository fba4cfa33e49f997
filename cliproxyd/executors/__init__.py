"""Upstream executors: one class per upstream protocol over one shared HTTP client."""

from cliproxyd.executors.base import Reply, StreamReply, UpstreamError
from cliproxyd.executors.http import HTTPPoolService, make_http_client
from cliproxyd.executors.oauth import Executors
from cliproxyd.executors.upstreams import OpenAICompatExecutor

__all__ = [
    "Executors",
    "HTTPPoolService",
    "OpenAICompatExecutor",
    "Reply",
    "StreamReply",
    "UpstreamError",
    "make_http_client",
]
