"""
The C{auth_index} of a credential: the short, stable name CLIProxyAPI's
management API and its Management Center use to point at one credential
(the auth-file list, the quota page's C{/api-call}, usage by key).

It is the first 8 bytes of SHA-256, in hex, of a seed made as CLIProxyAPI
makes it: C{<file type>:<absolute path>} for a credential file,
C{<config list>:<base-url>+<api key>} for a key of the config. The same
file or key has the same index across restarts and reloads, and the index
says nothing of the key.
"""

from __future__ import annotations

import hashlib
import os

from cliproxyd.credentials.model import Credential


def _digest(seed: str) -> str:
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:16]


def auth_index(cred: Credential) -> str:
    """C{cred}'s auth_index (16 hex digits)."""
    account = cred.account
    if account is not None:
        kind = str(account.data.get("type") or account.type).strip().lower()
        return _digest(f"{kind}:{os.path.normpath(os.path.abspath(account.path))}")
    return _digest(f"{cred.kind}:{cred.base_url.strip()}+{cred.api_key.strip()}")
