"""cliproxyd: a Twisted daemon that pools upstream LLM credentials."""

from cliproxyd._version import __version__

__all__ = ["__version__"]
