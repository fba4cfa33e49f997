"""Upstream credentials: the model and how config entries become credentials."""

from cliproxyd.credentials.model import Credential, Route, credentials_from_config

__all__ = ["Credential", "Route", "credentials_from_config"]
