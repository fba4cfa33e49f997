"""
Session ids for routing.session-affinity: which conversation a request belongs to.

L{session_ids} is pure and runs once per request (the frontend calls it when
session-affinity is on) on the headers and the decoded body. The sources and
their order are CLIProxyAPI's (its C{extractSessionIDs}); the first that
gives an id wins:

 1. header C{X-Claude-Code-Session-Id}                    C{claude:<id>}
 2. Claude Code's C{metadata.user_id}: its JSON C{session_id},
    or the C{..._session_<uuid>} suffix of the older form  C{claude:<id>}
 3. header C{Session-Id}, then C{Session_id} (Codex)       C{codex:<id>}
 4. header C{X-Session-ID}                                 C{header:<id>}
 5. header C{X-Session-Affinity} (OpenCode)                C{affinity:<id>}
 6. header C{X-Client-Request-Id} (pi)                     C{clientreq:<id>}
 7. body C{session_id}, then C{sessionId}                  C{session:<id>}
 8. body C{prompt_cache_key}                               C{pck:<id>} (with the
    conversation below as its second id, when there is one)
 9. body C{conversation} (Responses: an id, or an object's C{id})  C{conv:<id>}
10. body C{metadata.user_id}                               C{user:<id>}
11. body C{conversation_id}                                C{conv:<id>}
    the Responses websocket connection the request came on  C{execution:<id>}
12. a hash (BLAKE2b, 64 bits) of the system prompt, the first user message
    and the first assistant message (their first 100 bytes each), in any of
    the four formats: C{msg:<hex>}; with an assistant message, the hash without it
    is the second id, so that a conversation's first turn (bound before
    there was an answer) and its later turns find the same binding.

An explicit id is used as it is (trimmed) when it is at most 256 characters
and has no control character; otherwise that source gives nothing.
CLIProxyAPI's identity derived from the caller's key has no counterpart
here: source 12 covers what it does.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Callable

#: The header sources, in order, with the prefix of the ids they give.
HEADER_SOURCES = (
    (b"x-claude-code-session-id", "claude:"),
    (b"session-id", "codex:"),
    (b"session_id", "codex:"),
    (b"x-session-id", "header:"),
    (b"x-session-affinity", "affinity:"),
    (b"x-client-request-id", "clientreq:"),
)
MAX_ID = 256
TRUNCATE = 100
_LEGACY_CLAUDE = re.compile(r"_session_([a-f0-9-]+)$")

SessionIds = tuple[str, ...]


def explicit_id(raw: Any) -> str:
    """A client-given id as routing uses it, or "" when it is unusable."""
    if isinstance(raw, bool) or raw is None:
        return ""
    if isinstance(raw, (int, float)):
        raw = str(raw)
    if not isinstance(raw, str) or any(c < " " or "\x7f" <= c <= "\x9f" for c in raw):
        return ""
    raw = raw.strip()
    return raw if 0 < len(raw) <= MAX_ID else ""


def _claude_session(data: dict[str, Any]) -> str:
    metadata = data.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str) or not (user_id := user_id.strip()):
        return ""
    if user_id.startswith("{"):
        try:
            inner = json.loads(user_id)
        except ValueError:
            return ""
        return explicit_id(inner.get("session_id")) if isinstance(inner, dict) else ""
    found = _LEGACY_CLAUDE.search(user_id)
    return explicit_id(found.group(1)) if found else ""


def session_ids(header: Callable[[bytes], bytes | None], data: dict[str, Any], execution: str = "") -> SessionIds:
    """
    The session ids of a request: C{()} when it has none, else its primary
    id and, for some sources, a second one bound alongside it.

    @param header: the request's header by lower-case name (C{request.getHeader}).
    @param data: the decoded JSON body.
    @param execution: the id of the websocket connection the request came on, if any.
    """
    for name, prefix in HEADER_SOURCES[:1]:
        if (value := header(name)) is not None and (sid := explicit_id(_text(value))):
            return (prefix + sid,)
    if "metadata" in data and (sid := _claude_session(data)):
        return ("claude:" + sid,)
    for name, prefix in HEADER_SOURCES[1:]:
        if (value := header(name)) is not None and (sid := explicit_id(_text(value))):
            return (prefix + sid,)
    get = data.get
    for key in ("session_id", "sessionId"):
        if (value := get(key)) is not None and (sid := explicit_id(value)):
            return ("session:" + sid,)
    conversation = get("conversation")
    conv = ""
    if conversation is not None:
        conv = explicit_id(conversation.get("id") if isinstance(conversation, dict) else conversation)
    if (value := get("prompt_cache_key")) is not None and (sid := explicit_id(value)):
        return ("pck:" + sid, "conv:" + conv) if conv else ("pck:" + sid,)
    if conv:
        return ("conv:" + conv,)
    metadata = get("metadata")
    if isinstance(metadata, dict) and (sid := explicit_id(metadata.get("user_id"))):
        return ("user:" + sid,)
    if (value := get("conversation_id")) is not None and (sid := explicit_id(value)):
        return ("conv:" + sid,)
    if execution:
        return ("execution:" + execution,)
    return message_hash_ids(data)


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None


def _cut(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")[:TRUNCATE]


def _hash(system: bytes, user: bytes, assistant: bytes) -> str:
    # CLIProxyAPI hashes the same text with FNV-1a in Go; a byte loop of
    # that in Python costs a hundred microseconds, BLAKE2 (in C) one or two.
    # The ids only ever meet ids of this process, so any stable hash does.
    text = b"".join((b"sys:" + system + b"\n" if system else b"", b"usr:" + user + b"\n" if user else b"",
                     b"ast:" + assistant + b"\n" if assistant else b""))
    return "msg:" + hashlib.blake2b(text, digest_size=8).hexdigest()


def _joined(content: Any, kinds: tuple[str, ...]) -> str:
    """A message's text: a string, or its text parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content
                 if isinstance(p, dict) and p.get("type") in kinds and isinstance(p.get("text"), str) and p["text"]]
        return " ".join(texts)
    return ""


def _first_text(parts: Any) -> str:
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
                return part["text"]
    return ""


def message_hash_ids(data: dict[str, Any]) -> SessionIds:
    """Source 12: the hash of the conversation's opening (see the module's docstring)."""
    found = {"system": "", "user": "", "assistant": ""}
    messages = data.get("messages")
    if isinstance(messages, list):  # OpenAI chat, Claude
        for msg in messages:
            if not isinstance(msg, dict):
                continue
            role = msg.get("role")
            if role in found and not found[role]:
                found[role] = _joined(msg.get("content"), ("text",))
            if all(found.values()):
                break
    if not found["system"]:
        system = data.get("system")  # Claude's top level
        found["system"] = system if isinstance(system, str) else _first_text(system)
    if not found["system"] and not found["user"]:
        instruction = data.get("systemInstruction")  # Gemini
        if isinstance(instruction, dict):
            found["system"] = _first_text(instruction.get("parts"))
        contents = data.get("contents")
        if isinstance(contents, list):
            for msg in contents:
                if not isinstance(msg, dict):
                    continue
                role = {"user": "user", "model": "assistant"}.get(msg.get("role"))
                text = _first_text(msg.get("parts"))
                if role and text and not found[role]:
                    found[role] = text
                if found["user"] and found["assistant"]:
                    break
    if not found["system"] and not found["user"]:
        instructions = data.get("instructions")  # Responses
        if isinstance(instructions, str):
            found["system"] = instructions
        items = data.get("input")
        if isinstance(items, list):
            for item in items:
                if not isinstance(item, dict) or item.get("type") not in (None, "message"):
                    continue
                role = {"developer": "system", "system": "system"}.get(item.get("role"), item.get("role"))
                if role not in found or found[role]:
                    continue
                found[role] = _joined(item.get("content"), ("input_text", "output_text", "text"))
                if found["user"] and found["assistant"]:
                    break
    system, user, assistant = (_cut(found[k]) for k in ("system", "user", "assistant"))
    if not system and not user:
        return ()
    short = _hash(system, user, b"")
    if not assistant:
        return (short,)
    return (_hash(system, user, assistant), short)
