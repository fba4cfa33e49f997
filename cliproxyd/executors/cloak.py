"""
The Claude Code identity ("cloaking") of Claude requests, as CLIProxyAPI
sends it: Anthropic's OAuth endpoint serves a Claude Code account only to
requests that look like Claude Code's own, so a request of another client
(an OpenAI SDK, curl, a translated Gemini request) goes out wearing it.

What a cloaked request carries:

- a top-level C{system} that opens with Claude Code's two blocks, the
  billing header block (C{x-anthropic-billing-header: cc_version=...}) and
  the CLI's identity sentence (with an ephemeral cache marker), followed by
  the client's own system blocks, in order (dropped in strict mode);
- a C{metadata.user_id} in Claude Code's shape (a JSON string of
  C{device_id}, C{account_uuid}, C{session_id}) when the client sent no
  valid one: one per credential for OAuth accounts and for keys with
  C{cache-user-id: true}, a fresh one per request otherwise;
- the configured sensitive words broken up with a zero-width space, in the
  client's system blocks and message text;
- Claude Code's headers (L{identity_headers}).

Who is cloaked (L{policy_for}): C{mode: always} cloaks every request of
the credential, C{never} none, and C{auto} (the default) the requests of
Claude OAuth accounts and of keys that have a C{cloak} block.
C{disable-claude-cloak-mode: true} makes C{never} the default, which a
credential's own C{mode} still overrides. A request that Claude Code itself
sent (L{is_claude_code}) passes as it is, whatever the mode.

The policy is worked out per credential at config load; per request there
is one JSON parse and one write of the body, for cloaked credentials only.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from typing import Any, Callable

from attrs import frozen

from cliproxyd.config.model import ClaudeHeaderDefaults
from cliproxyd.credentials import Credential

#: The sentence Claude Code's system prompt opens with; the OAuth endpoint looks for it.
CLAUDE_CODE_IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
#: The Claude Code release whose identity is sent (its user agent, its billing block).
CLAUDE_CODE_VERSION = "2.1.220"
BILLING_PREFIX = "x-anthropic-billing-header:"
#: The salt of the three-character build fingerprint in the billing block's cc_version.
_FINGERPRINT_SALT = "59cf53e54c78"
CLAUDE_CODE_BETA = "claude-code-20250219"
OAUTH_BETA = "oauth-2025-04-20"
INTERLEAVED_THINKING_BETA = "interleaved-thinking-2025-05-14"
#: Anthropic accepts at most this many cache_control markers in one request.
MAX_CACHE_MARKERS = 4
ZERO_WIDTH_SPACE = "\u200b"

#: Claude Code's own identity headers, and what each C{claude-header-defaults} key replaces.
DEFAULT_HEADERS = {
    "user_agent": f"claude-cli/{CLAUDE_CODE_VERSION} (external, cli)",
    "package_version": "0.94.0",
    "runtime_version": "v26.3.0",
    "os": "MacOS",
    "arch": "arm64",
    "timeout": "600",
}
_HEADER_NAMES = {
    "user_agent": b"user-agent",
    "package_version": b"x-stainless-package-version",
    "runtime_version": b"x-stainless-runtime-version",
    "os": b"x-stainless-os",
    "arch": b"x-stainless-arch",
    "timeout": b"x-stainless-timeout",
}
_DEVICE_ID = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"claude-cli/([0-9][0-9A-Za-z.\-]*)")


@frozen
class CloakPolicy:
    """What cloaking one credential's requests means (None from L{policy_for}: no cloaking)."""

    strict: bool = False
    #: the sensitive words as one case-insensitive pattern, longest first; None for none
    words: re.Pattern[str] | None = None
    #: one metadata.user_id for all the credential's requests (else one per request)
    cache_user_id: bool = False


def policy_for(cred: Credential, disable_cloak_mode: bool) -> CloakPolicy | None:
    """The cloak policy of a Claude credential, or None when its requests go as sent."""
    own = cred.cloak
    mode = "never" if disable_cloak_mode else "auto"
    if own is not None and own.mode:
        mode = own.mode
    if mode == "never":
        return None
    oauth = cred.account is not None
    if mode == "auto" and not oauth and own is None:
        return None
    words = sorted({w for w in (own.sensitive_words if own else ()) if len(w) >= 2 and ZERO_WIDTH_SPACE not in w},
                   key=len, reverse=True)
    cache = own.cache_user_id if own is not None and own.cache_user_id is not None else oauth
    return CloakPolicy(
        strict=bool(own and own.strict_mode),
        words=re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE) if words else None,
        cache_user_id=cache,
    )


def identity_headers(defaults: ClaudeHeaderDefaults, oauth: bool) -> dict[bytes, list[bytes]]:
    """Claude Code's headers, with C{claude-header-defaults} over the built-in values."""
    headers = {
        b"anthropic-beta": [b",".join(b for b in (CLAUDE_CODE_BETA.encode(), OAUTH_BETA.encode() if oauth else b"",
                                                   INTERLEAVED_THINKING_BETA.encode()) if b)],
        b"anthropic-dangerous-direct-browser-access": [b"true"],
        b"x-app": [b"cli"],
        b"x-stainless-lang": [b"js"],
        b"x-stainless-runtime": [b"node"],
        b"x-stainless-retry-count": [b"0"],
    }
    for key, name in _HEADER_NAMES.items():
        value = getattr(defaults, key) or DEFAULT_HEADERS[key]
        headers[name] = [value.encode("latin-1")]
    return headers


def claude_code_version(defaults: ClaudeHeaderDefaults) -> str:
    """The Claude Code version the user agent names (the billing block carries the same)."""
    m = _VERSION.match(defaults.user_agent or DEFAULT_HEADERS["user_agent"])
    return m.group(1) if m else CLAUDE_CODE_VERSION


def _first(headers: Any, name: bytes) -> str:
    values = headers.getRawHeaders(name) if headers is not None else None
    return values[0].decode("latin-1") if values else ""


def is_claude_code(headers: Any, data: dict[str, Any]) -> bool:
    """
    Whether Claude Code itself sent the request: its user agent, C{x-app:
    cli}, its beta and a C{metadata.user_id} of its shape, all four (as
    CLIProxyAPI tells a real Claude Code from a client that copied its user
    agent).
    """
    if not _first(headers, b"user-agent").startswith("claude-cli/") or _first(headers, b"x-app") != "cli":
        return False
    if CLAUDE_CODE_BETA not in ",".join(v.decode("latin-1") for v in headers.getRawHeaders(b"anthropic-beta", [])):
        return False
    metadata = data.get("metadata")
    return isinstance(metadata, dict) and is_user_id(metadata.get("user_id"))


def is_user_id(value: Any) -> bool:
    """Whether C{value} is a C{metadata.user_id} in Claude Code's shape."""
    if not isinstance(value, str) or not value.startswith("{"):
        return False
    try:
        parsed = json.loads(value)
    except ValueError:
        return False
    if not isinstance(parsed, dict) or not _DEVICE_ID.fullmatch(str(parsed.get("device_id", ""))):
        return False
    for key, required in (("session_id", True), ("account_uuid", False)):
        text = parsed.get(key)
        if not text and not required:
            continue
        try:
            uuid.UUID(str(text))
        except ValueError:
            return False
    return True


def new_user_id(session_id: str | None = None) -> str:
    """A C{metadata.user_id} of Claude Code's shape, with a random device id."""
    return json.dumps({"device_id": secrets.token_hex(32), "account_uuid": "",
                       "session_id": session_id or str(uuid.uuid4())}, separators=(",", ":"))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    text = ""
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                text = part["text"]
    return text


def billing_block(data: dict[str, Any], version: str) -> str:
    """
    Claude Code's billing block for this request: the build fingerprint is
    the first three hex digits of SHA-256 over the salt, the 5th, 8th and
    21st characters of the last user text ("0" for each missing) and the
    version.
    """
    text = ""
    for message in data.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user":
            text = _text_of(message.get("content")) or text
    picked = "".join(text[i] if i < len(text) else "0" for i in (4, 7, 20))
    build = hashlib.sha256((_FINGERPRINT_SALT + picked + version).encode("utf-8")).hexdigest()[:3]
    return f"{BILLING_PREFIX} cc_version={version}.{build}; cc_entrypoint=cli;"


def _client_blocks(system: Any) -> list[Any]:
    """The client's own system blocks (Claude Code's two, when a client sent them, are not repeated)."""
    if isinstance(system, str):
        return [{"type": "text", "text": system}] if system.strip() else []
    if not isinstance(system, list):
        return []
    return [b for b in system if not (isinstance(b, dict) and isinstance(b.get("text"), str)
                                      and (b["text"].strip() == CLAUDE_CODE_IDENTITY
                                           or b["text"].startswith(BILLING_PREFIX)))]


def _markers(data: dict[str, Any]) -> int:
    """The cache_control markers the body has (system, message parts, tools)."""
    blocks: list[Any] = list(data["system"]) if isinstance(data.get("system"), list) else []
    for message in data.get("messages") or ():
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            blocks.extend(message["content"])
    if isinstance(data.get("tools"), list):
        blocks.extend(data["tools"])
    return sum(1 for b in blocks if isinstance(b, dict) and b.get("cache_control"))


def _obfuscate(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(lambda m: m.group(0)[0] + ZERO_WIDTH_SPACE + m.group(0)[1:], text)


def _obfuscate_blocks(pattern: re.Pattern[str], blocks: list[Any]) -> None:
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            block["text"] = _obfuscate(pattern, block["text"])


def cloak(data: dict[str, Any], policy: CloakPolicy, version: str, user_id: Callable[[], str]) -> dict[str, Any]:
    """C{data} (a Claude Messages body, changed in place) with the Claude Code identity; see the module."""
    own = [] if policy.strict else _client_blocks(data.get("system"))
    if policy.words is not None:
        _obfuscate_blocks(policy.words, own)
        for message in data.get("messages") or ():
            if not isinstance(message, dict):
                continue
            if isinstance(message.get("content"), str):
                message["content"] = _obfuscate(policy.words, message["content"])
            elif isinstance(message.get("content"), list):
                _obfuscate_blocks(policy.words, message["content"])
    identity: dict[str, Any] = {"type": "text", "text": CLAUDE_CODE_IDENTITY}
    data["system"] = own  # counted without Claude Code's blocks
    if _markers(data) < MAX_CACHE_MARKERS:
        identity["cache_control"] = {"type": "ephemeral"}
    data["system"] = [{"type": "text", "text": billing_block(data, version)}, identity, *own]
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        metadata = data["metadata"] = {}
    if not is_user_id(metadata.get("user_id")):
        metadata["user_id"] = user_id()
    return data
