"""Upstream executors: one module per upstream protocol over one shared HTTP client."""

from cliproxyd.executors.base import Reply, StreamReply, UpstreamError
from cliproxyd.executors.http import HTTPPoolService, make_http_client
from cliproxyd.executors.openai_compat import OpenAICompatExecutor

__all__ = [
    "HTTPPoolService",
    "OpenAICompatExecutor",
    "Reply",
    "StreamReply",
    "UpstreamError",
    "make_http_client",
]
