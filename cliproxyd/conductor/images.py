"""
Which routes can make images (C{/v1/images/*}), worked out once per
generation from its config and credentials: an OpenAI-compatible
provider's models marked C{image: true}, and the gpt-image models of Codex
accounts and keys. The frontend runs an image request through the
conductor restricted to these providers (L{RequestMeta.providers}), so
nothing in the conductor itself knows about images.
"""

from __future__ import annotations

from typing import Iterable

from cliproxyd.config.model import Config
from cliproxyd.credentials import Credential
from cliproxyd.credentials.authfiles import CODEX_IMAGE_MODELS
from cliproxyd.modelnames import parse_model

#: The credential kinds whose gpt-image routes make images.
CODEX_KINDS = frozenset({"codex", "codex-api-key"})


def image_providers(config: Config, creds: Iterable[Credential]) -> dict[str, frozenset[str]]:
    """Each client-facing model name that can make images -> the providers whose credentials make them."""
    marked = {(p.name, m.route_name) for p in config.openai_compatibility for m in p.models if m.info.image}
    out: dict[str, set[str]] = {}
    for cred in creds:
        for route in cred.routes:
            if cred.kind == "openai-compatibility":
                ok = (cred.provider, route.state_key) in marked
            elif cred.kind in CODEX_KINDS:
                ok = all(parse_model(u).base in CODEX_IMAGE_MODELS for u in route.upstream)
            else:
                ok = False
            if ok:
                out.setdefault(route.name, set()).add(cred.provider)
    return {name: frozenset(providers) for name, providers in out.items()}
