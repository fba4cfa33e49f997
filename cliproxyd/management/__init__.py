"""The management API, mounted at /v0/management."""

from cliproxyd.management.api import ManagementAPI

__all__ = ["ManagementAPI"]
