"""
Which routes can make images (C{/v1/images/*}), worked out once per
generation from its config and credentials: an OpenAI-compatible
provider's models marked C{image: true}, the gpt-image models of Codex
accounts and keys, and the grok-imagine models of xAI accounts and keys. The frontend runs an image request through the
conductor restricted to these providers (L{RequestMeta.providers}), so
nothing in the conductor itself knows about images.
"""

from __future__ import annotations

from typing import Iterable

from cliproxyd.config.model import Config
from cliproxyd.credentials import Credential
from cliproxyd.credentials.authfiles import CODEX_IMAGE_MODELS
from cliproxyd.credentials.model import XAI_IMAGE_MODELS
from cliproxyd.modelnames import parse_model

#: The credential kinds whose routes of built-in image models make images, and those models.
BUILT_IN = {"codex": CODEX_IMAGE_MODELS, "codex-api-key": CODEX_IMAGE_MODELS,
            "xai": XAI_IMAGE_MODELS, "xai-api-key": XAI_IMAGE_MODELS}


def image_providers(config: Config, creds: Iterable[Credential]) -> dict[str, frozenset[str]]:
    """Each client-facing model name that can make images -> the providers whose credentials make them."""
    marked = {(p.name, m.route_name) for p in config.openai_compatibility for m in p.models if m.info.image}
    out: dict[str, set[str]] = {}
    for cred in creds:
        for route in cred.routes:
            if cred.kind == "openai-compatibility":
                ok = (cred.provider, route.state_key) in marked
            else:
                models = BUILT_IN.get(cred.kind)
                ok = models is not None and all(parse_model(u).base in models for u in route.upstream)
            if ok:
                out.setdefault(route.name, set()).add(cred.provider)
    return {name: frozenset(providers) for name, providers in out.items()}
