"""
The simulated upstream's image models (L{cliproxyd.testing.upstream}):

- the Images API, C{POST /v1/images/generations} (JSON) and
  C{/v1/images/edits} (multipart/form-data or JSON), answering
  C{{created, data: [{b64_json | url}], usage}} with a real PNG;
- the ChatGPT Codex backend's C{image_generation} tool: a C{/responses}
  stream whose image call's result is that PNG, as the backend sends it
  (C{response.output_item.done}, then C{response.completed} with the
  tool's usage under C{tool_usage.image_gen}).

Each request is recorded (C{seen}) with its fields and, for uploads, each
file's field, name, type, size and SHA-256, so tests can check that the
client's bytes arrived unchanged. The key's script applies as on the chat
routes: C{status:CODE[:S]}, C{unsupported}, C{hang}, C{garbage:empty}
(a 200 with no image) and C{error-first} (a backend stream opening with an
error event).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from typing import Any

from cliproxyd.formats import images as I
from cliproxyd.formats.canonical import BadRequest


def png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    """A real PNG of one colour (a file any image library opens)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


#: The picture every simulated image model draws.
PICTURE = png()
PICTURE_B64 = base64.b64encode(PICTURE).decode()
#: The usage every simulated image answer reports.
USAGE = {"input_tokens": 12, "output_tokens": 1056, "total_tokens": 1068,
         "input_tokens_details": {"text_tokens": 12, "image_tokens": 0}}


def read_images_request(endpoint: str, raw: bytes, content_type: bytes) -> dict[str, Any]:
    """What an Images API request asked: its fields, and its uploads described (never their bytes)."""
    if content_type.lower().startswith(b"multipart/"):
        fields: dict[str, Any] = {}
        files = []
        for name, filename, part_type, data in I.parse_multipart(raw, content_type):
            if filename is None:
                fields[name] = data.decode("utf-8")
            else:
                files.append({"field": name, "filename": filename, "content_type": part_type, "size": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()})
        return {**fields, "_files": files, "_form": True}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def images_answer(body: dict[str, Any], created: int) -> dict[str, Any]:
    """The Images answer for C{body}: C{n} pictures, as b64_json or (response_format url) a data URL."""
    n = int(body.get("n") or 1)
    url = body.get("response_format") == "url"
    item = {"url": "data:image/png;base64," + PICTURE_B64} if url else {"b64_json": PICTURE_B64}
    return {"created": created, "data": [dict(item, revised_prompt=f"a picture of {body.get('prompt', '')}")
                                         for _ in range(n)], "usage": USAGE}


def image_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The image_generation tool of a Responses request, if it has one."""
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and tool.get("type") == "image_generation":
            return tool
    return None


def tool_stream(body: dict[str, Any], tool: dict[str, Any], created: int, reply_id: str) -> bytes:
    """The backend's stream for a request that calls the image tool."""
    output_format = tool.get("output_format") or "png"
    call = {"type": "image_generation_call", "id": "ig_" + reply_id, "status": "completed",
            "result": PICTURE_B64, "revised_prompt": "a picture of " + _prompt(body),
            "output_format": output_format, "size": tool.get("size") or "1024x1024",
            "background": tool.get("background") or "opaque", "quality": tool.get("quality") or "high"}
    response = {"id": reply_id, "object": "response", "created_at": created, "model": body.get("model"),
                "status": "completed", "output": [call],
                "usage": {"input_tokens": 40, "output_tokens": 12, "total_tokens": 52},
                "tool_usage": {"image_gen": USAGE}}
    events = [
        {"type": "response.created", "response": {**response, "status": "in_progress", "output": []}},
        {"type": "response.image_generation_call.partial_image", "partial_image_index": 0,
         "partial_image_b64": PICTURE_B64, "output_format": output_format},
        {"type": "response.output_item.done", "output_index": 0, "item": call},
        {"type": "response.completed", "response": response},
    ]
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def _prompt(body: dict[str, Any]) -> str:
    for item in body.get("input") or ():
        for part in (item.get("content") or ()) if isinstance(item, dict) else ():
            if isinstance(part, dict) and part.get("type") == "input_text":
                return str(part.get("text", ""))
    return ""
