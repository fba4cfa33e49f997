"""
The upstream credential model.

A L{Credential} is one key at one provider, with everything an executor
needs precomputed at config load: the endpoint URL, the request headers and
the models it serves. Requests only read it.
"""

from __future__ import annotations

import hashlib

from attrs import field, frozen

from cliproxyd._version import __version__
from cliproxyd.config.model import Config, OpenAICompatProvider
from cliproxyd.logging import fingerprint

USER_AGENT = f"cliproxyd/{__version__}"


@frozen
class Credential:
    """One upstream key. C{api_key} is kept out of C{repr} so it never reaches a log."""

    id: str
    provider: str
    kind: str
    api_key: str = field(repr=False)
    base_url: str
    prefix: str = ""
    priority: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    #: route name (what clients ask for) -> upstream model names, in config order
    models: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.api_key)

    def request_headers(self) -> dict[bytes, list[bytes]]:
        """The headers every upstream request of this credential carries."""
        headers: dict[bytes, list[bytes]] = {
            b"user-agent": [USER_AGENT.encode()],
            b"content-type": [b"application/json"],
        }
        for name, value in self.headers:
            headers[name.lower().encode("latin-1")] = [value.encode("latin-1")]
        headers[b"authorization"] = [b"Bearer " + self.api_key.encode("latin-1")]
        return headers


def _stable_id(kind: str, name: str, *parts: str) -> str:
    digest = hashlib.sha256("\x00".join((kind, *parts)).encode()).hexdigest()[:12]
    return f"{kind}:{name}:{digest}"


def _route_table(provider: OpenAICompatProvider, force_prefix: bool) -> tuple[tuple[str, tuple[str, ...]], ...]:
    routes: dict[str, list[str]] = {}
    for entry in provider.models:
        names = []
        if provider.prefix:
            names.append(f"{provider.prefix}/{entry.route_name}")
        if not provider.prefix or not force_prefix:
            names.append(entry.route_name)
        for name in names:
            upstream = routes.setdefault(name, [])
            if entry.name not in upstream:
                upstream.append(entry.name)
    return tuple((name, tuple(upstream)) for name, upstream in routes.items())


def credentials_from_config(config: Config) -> tuple[Credential, ...]:
    """Every credential the config describes, in config order."""
    out = []
    for provider in config.openai_compatibility:
        models = _route_table(provider, config.force_model_prefix)
        for entry in provider.api_key_entries:
            out.append(
                Credential(
                    id=_stable_id("openai-compatibility", provider.name, entry.api_key, provider.base_url),
                    provider=provider.name,
                    kind="openai-compatibility",
                    api_key=entry.api_key,
                    base_url=provider.base_url,
                    prefix=provider.prefix,
                    priority=provider.priority,
                    headers=provider.headers,
                    models=models,
                )
            )
    return tuple(out)
