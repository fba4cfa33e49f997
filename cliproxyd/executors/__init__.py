"""Upstream executors: one class per upstream protocol over one shared HTTP client; L{Executors} picks among them."""

from cliproxyd.executors.dispatch import Executors

__all__ = ["Executors"]
