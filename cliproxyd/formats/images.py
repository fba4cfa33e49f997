"""
OpenAI's Images API: C{POST /v1/images/generations} (JSON) and
C{POST /v1/images/edits} (multipart/form-data, or JSON with image URLs).

A client's image request is decoded once, here, into an L{ImageRequest}:
the model, the form's fields and its uploaded files. An upstream that
speaks the Images API itself (an OpenAI-compatible provider whose model
entry says C{image: true}, a Codex API key at api.openai.com) gets it back
as it came, the model renamed (L{passthrough_body}); the ChatGPT Codex
backend gets a Responses request whose one tool is C{image_generation}
(L{tool_request}), and its stream's image calls become the Images answer
(L{images_answer}). A client that asks for C{stream: true} gets OpenAI's
image events (L{event_stream}) once the upstream's answer is whole: the
upstream is asked for a whole answer, so failover works as for any other.
"""

from __future__ import annotations

import base64
import time
import uuid
from email.message import Message
from typing import Any, Iterable

from attrs import frozen

from cliproxyd.formats.canonical import BadRequest
from cliproxyd.jsontext import dumps, loads

#: The wire format an Images answer is read in for its usage (its usage fields are Responses').
NAME = "images"

#: The model a request that names none asks for (CLIProxyAPI's default).
DEFAULT_MODEL = "gpt-image-2"
#: The Codex model that runs the image tool unless C{gpt-image-2-base-model} says otherwise.
DEFAULT_BASE_MODEL = "gpt-5.4-mini"

#: The tool fields each endpoint passes on to the Codex image tool (strings, then numbers).
_TOOL_STRINGS = {
    "generations": ("size", "quality", "background", "output_format", "moderation"),
    "edits": ("size", "quality", "background", "output_format", "input_fidelity", "moderation"),
}
_TOOL_NUMBERS = ("output_compression", "partial_images")
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


@frozen
class Upload:
    """One file of a multipart form: its field name (C{image}, C{image[]}, C{mask}), file name, type and bytes."""

    field: str
    filename: str
    content_type: str
    data: bytes

    def data_url(self) -> str:
        return f"data:{self.content_type or sniff(self.data)};base64,{base64.b64encode(self.data).decode()}"


def sniff(data: bytes) -> str:
    """The image type of C{data} by its signature (PNG, JPEG, WebP, GIF); octet-stream when unknown."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"


class Wire:
    """What the frontend asks of a client's format, for the Images API (keep-alives and a late error)."""

    NAME = NAME

    @staticmethod
    def stream_error_event(message: str) -> bytes:
        """The error event that ends a stream of image events (the SDK raises it)."""
        return b"event: error\ndata: " + dumps({"type": "error", "error": {
            "message": message, "type": "server_error"}}) + b"\n\n"


class ImageRequest:
    """
    What the conductor and the image executors use of an Images request:
    C{model} (as the client asked), C{endpoint} (C{generations} or
    C{edits}), the fields (JSON values, or a form's text) and the uploads.
    It has no chat body for any other upstream.
    """

    fmt = Wire

    def __init__(self, endpoint: str, model: str, fields: dict[str, Any], uploads: tuple[Upload, ...] = (),
                 multipart: bool = False, headers: Any = None, stream: bool = False) -> None:
        self.endpoint = endpoint
        #: the client wants image events (L{event_stream}) rather than one JSON answer
        self.stream = stream
        self.model = model
        self.fields = fields
        #: what session affinity reads session ids from
        self.data = fields
        self.uploads = uploads
        #: the client sent a form (an upstream of the Images API gets a form back)
        self.multipart = multipart
        #: the client's request headers (for $NAME headers)
        self.headers = headers
        self.retry_budget: Any = None
        self._images: list[str] | None = None

    @property
    def response_format(self) -> str:
        return "url" if str(self.fields.get("response_format") or "").strip().lower() == "url" else "b64_json"

    @property
    def prompt(self) -> str:
        return str(self.fields.get("prompt") or "").strip()

    def images(self) -> list[str]:
        """
        The images to edit, as URLs (uploads as data URLs, encoded once):
        the form's files, or JSON's C{images[].image_url}.
        """
        if self._images is None:
            files = [u for u in self.uploads if u.field == "image[]"] or \
                [u for u in self.uploads if u.field == "image"]
            urls = [u.data_url() for u in files]
            listed = self.fields.get("images")
            for item in listed if isinstance(listed, list) else ():
                url = item.get("image_url") if isinstance(item, dict) else item
                if isinstance(url, str) and url.strip():
                    urls.append(url.strip())
            self._images = urls
        return self._images

    def mask(self) -> str:
        """The mask, as a URL ("" when there is none)."""
        for u in self.uploads:
            if u.field == "mask":
                return u.data_url()
        mask = self.fields.get("mask")
        url = mask.get("image_url") if isinstance(mask, dict) else None
        return url.strip() if isinstance(url, str) else ""

    # What a chat executor would ask of a request: an image request has none of it.

    @property
    def canonical(self) -> Any:
        raise BadRequest("an image request has no chat body")

    def body_for(self, upstream: str, target: Any) -> bytes:
        raise BadRequest("an image request has no chat body")

    def count_body_for(self, upstream: str, target: Any) -> bytes:
        raise BadRequest("an image request has no chat body")


# -- decoding the client's request ----------------------------------------------------


def _checked(endpoint: str, fields: dict[str, Any], uploads: tuple[Upload, ...], multipart: bool,
             headers: Any) -> ImageRequest:
    model = fields.get("model")
    if model is None or model == "":
        model = DEFAULT_MODEL
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model: must be a model name")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("prompt is required")
    stream = fields.get("stream")
    wants = stream is True or (isinstance(stream, str) and stream.strip().lower() in ("true", "1", "yes", "on"))
    req = ImageRequest(endpoint, model.strip(), fields, uploads, multipart, headers, wants)
    if endpoint == "edits" and not req.images():
        raise BadRequest("image is required (an image file, or images[].image_url)")
    return req


def decode_json(endpoint: str, raw: bytes, headers: Any = None) -> ImageRequest:
    """A JSON body (generations, or edits naming image URLs); raises L{BadRequest}."""
    try:
        data = loads(raw)
    except ValueError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return _checked(endpoint, data, (), False, headers)


def decode_form(endpoint: str, raw: bytes, content_type: bytes, headers: Any = None) -> ImageRequest:
    """A multipart/form-data body (edits); raises L{BadRequest}."""
    fields: dict[str, Any] = {}
    uploads = []
    for name, filename, part_type, data in parse_multipart(raw, content_type):
        if filename is None:
            try:
                fields[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"form field {name!r} is not UTF-8 text") from None
        else:
            uploads.append(Upload(name, filename, part_type, data))
    return _checked(endpoint, fields, tuple(uploads), True, headers)


def _header_params(value: str) -> Message:
    m = Message()
    m["content-disposition"] = value
    return m


def parse_multipart(raw: bytes, content_type: bytes) -> list[tuple[str, str | None, str, bytes]]:
    """
    The parts of a multipart/form-data body: C{(field name, file name or
    None, content type, bytes)}, the bytes exactly as sent. Raises
    L{BadRequest} for a body that is not such a form.
    """
    m = Message()
    m["content-type"] = content_type.decode("latin-1")
    boundary = m.get_param("boundary")
    if m.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        raise BadRequest("the body must be multipart/form-data with a boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + raw).split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise BadRequest("the multipart body is cut short (no closing boundary)")
    parts = []
    for chunk in chunks[1:-1]:
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise BadRequest("a multipart part has no headers")
        disposition, part_type = "", ""
        for line in head.split(b"\r\n")[1:]:  # the rest of the boundary line first
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value.strip()
            elif name.strip().lower() == "content-type":
                part_type = value.strip()
        params = _header_params(disposition)
        field = params.get_param("name", header="content-disposition")
        if not isinstance(field, str) or not field:
            raise BadRequest("a multipart part has no field name")
        filename = params.get_filename()
        parts.append((field, filename if filename is not None else None, part_type, data))
    return parts


# -- an upstream of the Images API -----------------------------------------------------


def passthrough_body(req: ImageRequest, model: str) -> tuple[bytes, bytes]:
    """C{(body, content type)} for an upstream of the Images API: the client's, naming C{model}."""
    fields = {k: v for k, v in req.fields.items() if k not in ("model", "stream")}
    if not req.multipart:
        return dumps({"model": model, **fields}), b"application/json"
    return form_body({"model": model, **fields}, req.uploads)


def form_body(fields: dict[str, Any], uploads: Iterable[Upload]) -> tuple[bytes, bytes]:
    """A multipart/form-data body of C{fields} (text) and C{uploads}, and its content type."""
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        text = value if isinstance(value, str) else dumps(value).decode()
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'.encode()
                   + text.encode() + b"\r\n")
    for u in uploads:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(u.field)}"; '
                   f'filename="{_quoted(u.filename)}"\r\nContent-Type: '
                   f'{u.content_type or "application/octet-stream"}\r\n\r\n'.encode() + u.data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}".encode()


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


# -- the Codex backend's image tool -----------------------------------------------------


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def tool_request(req: ImageRequest, image_model: str, base_model: str) -> dict[str, Any]:
    """The Responses request that has C{base_model} call the C{image_generation} tool with C{image_model}."""
    tool: dict[str, Any] = {"type": "image_generation", "action": "edit" if req.endpoint == "edits" else "generate",
                            "model": image_model}
    for name in _TOOL_STRINGS[req.endpoint]:
        value = req.fields.get(name)
        if isinstance(value, str) and value.strip():
            tool[name] = value.strip()
    for name in _TOOL_NUMBERS:
        number = _number(req.fields.get(name))
        if number is not None:
            tool[name] = number
    content: list[dict[str, Any]] = [{"type": "input_text", "text": req.prompt}]
    if req.endpoint == "edits":
        content.extend({"type": "input_image", "image_url": url} for url in req.images())
        mask = req.mask()
        if mask:
            tool["input_image_mask"] = {"image_url": mask}
    return {
        "model": base_model,
        "instructions": "",
        "input": [{"type": "message", "role": "user", "content": content}],
        "tools": [tool],
        "tool_choice": {"type": "image_generation"},
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "stream": True,
        "store": False,
    }


def _events(body: bytes) -> Iterable[dict[str, Any]]:
    for line in body.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        try:
            event = loads(line[5:].strip())
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


def images_answer(stream: bytes, response_format: str, now: float | None = None,
                  partials: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """
    The Images answer in a Codex backend stream: the image calls of its
    C{response.completed} (or of its C{response.output_item.done} events,
    when the completed response lists none), with the tool's usage; None
    when the stream has no C{response.completed}. C{partials}, when given,
    gets the stream's partial images (as L{event_stream} sends them).
    """
    done: list[dict[str, Any]] = []
    for event in _events(stream):
        kind = event.get("type")
        if kind == "response.image_generation_call.partial_image" and partials is not None:
            b64 = event.get("partial_image_b64")
            if isinstance(b64, str) and b64:
                index = event.get("partial_image_index")
                partials.append({**_image(b64, str(event.get("output_format") or "png"), response_format),
                                 "partial_image_index": index if isinstance(index, int) else len(partials)})
        elif kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            done.append(event["item"])
        elif kind == "response.completed" and isinstance(event.get("response"), dict):
            response = event["response"]
            output = response.get("output")
            items = output if isinstance(output, list) and output else done
            return _answer(response, [i for i in items if isinstance(i, dict)], response_format, now)
    return None


def _answer(response: dict[str, Any], items: list[dict[str, Any]], response_format: str,
            now: float | None) -> dict[str, Any]:
    created = response.get("created_at")
    out: dict[str, Any] = {"created": created if isinstance(created, int) and created > 0
                           else int(time.time() if now is None else now), "data": []}
    calls = [i for i in items if i.get("type") == "image_generation_call"
             and isinstance(i.get("result"), str) and i["result"].strip()]
    for n, call in enumerate(calls):
        if n == 0:
            for name in ("background", "output_format", "quality", "size"):
                if isinstance(call.get(name), str) and call[name]:
                    out[name] = call[name]
        image = _image(call["result"].strip(), str(call.get("output_format") or "png"), response_format)
        if isinstance(call.get("revised_prompt"), str) and call["revised_prompt"]:
            image["revised_prompt"] = call["revised_prompt"]
        out["data"].append(image)
    usage = (response.get("tool_usage") or {}).get("image_gen") if isinstance(response.get("tool_usage"), dict) \
        else None
    if isinstance(usage, dict):
        out["usage"] = usage
    return out


def _image(b64: str, output_format: str, response_format: str) -> dict[str, Any]:
    """One image as the client asked for it: C{b64_json}, or a C{data:} URL."""
    if response_format == "url":
        return {"url": f"data:{_MIME.get(output_format.lower(), 'image/png')};base64,{b64}"}
    return {"b64_json": b64}


def event_stream(answer: dict[str, Any], endpoint: str, partials: Iterable[dict[str, Any]] = ()) -> bytes:
    """
    An Images answer as OpenAI's image events: each partial image
    (C{image_generation.partial_image}, or C{image_edit.} for edits), then
    one C{.completed} event per image, with the answer's size, quality,
    background, output format and usage.
    """
    prefix = "image_edit" if endpoint == "edits" else "image_generation"
    meta = {"created_at": answer.get("created"),
            **{k: answer[k] for k in ("background", "output_format", "quality", "size") if k in answer}}
    out = []
    for partial in partials:
        out.append((f"{prefix}.partial_image", {"type": f"{prefix}.partial_image", **partial, **meta}))
    for item in answer.get("data") or ():
        event = {"type": f"{prefix}.completed", **item, **meta}
        if "usage" in answer:
            event["usage"] = answer["usage"]
        out.append((f"{prefix}.completed", event))
    return b"".join(b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n" for name, data in out)


# -- xAI's Images API --------------------------------------------------------------------

#: OpenAI sizes and xAI's own words -> xAI's aspect ratios
_XAI_RATIOS = {"1:1": "1:1", "square": "1:1", "16:9": "16:9", "landscape": "16:9", "9:16": "9:16",
               "portrait": "9:16", "4:3": "4:3", "3:4": "3:4", "3:2": "3:2", "2:3": "2:3"}
_XAI_SIZES = {"1024x1024": "1:1", "2048x2048": "1:1", "1792x1024": "16:9", "1024x1792": "9:16",
              "1536x1024": "3:2", "1024x1536": "2:3"}


def xai_body(req: ImageRequest, model: str) -> bytes:
    """
    The body of xAI's C{/images/generations} or C{/images/edits}: the prompt,
    C{aspect_ratio} and C{resolution} (from the client's own, or from an
    OpenAI C{size}), C{n}, and the images to edit as C{image_url} objects
    (uploads as data URLs), as CLIProxyAPI builds it.
    """
    size = str(req.fields.get("size") or "").strip().lower()
    ratio = _XAI_SIZES.get(size) or _XAI_RATIOS.get(str(req.fields.get("aspect_ratio") or "").strip().lower())
    resolution = str(req.fields.get("resolution") or "").strip().lower()
    if resolution not in ("1k", "2k"):
        resolution = "2k" if "2048" in size else ""
    generating = req.endpoint == "generations"
    body: dict[str, Any] = {"model": model, "prompt": req.prompt, "response_format": req.response_format}
    if ratio or generating:
        body["aspect_ratio"] = ratio or "1:1"
    if resolution or generating:
        body["resolution"] = resolution or "1k"
    n = _number(req.fields.get("n"))
    if n is not None and n > 0:
        body["n"] = n
    if not generating:
        refs = [{"type": "image_url", "url": url} for url in req.images()]
        if len(refs) == 1:
            body["image"] = refs[0]
        else:
            body["images"] = refs
    return dumps(body)


def xai_answer(data: dict[str, Any], response_format: str, now: float | None = None) -> dict[str, Any]:
    """xAI's images answer in OpenAI's shape: b64_json or url as the client asked, revised prompts, usage."""
    created = data.get("created")
    out: dict[str, Any] = {"created": created if isinstance(created, int) and created > 0
                           else int(time.time() if now is None else now), "data": []}
    for item in data.get("data") or ():
        if not isinstance(item, dict):
            continue
        b64 = item.get("b64_json") if isinstance(item.get("b64_json"), str) else ""
        url = item.get("url") if isinstance(item.get("url"), str) else ""
        if not (b64 or url):
            continue
        image: dict[str, Any] = {}
        if response_format == "url":
            mime = item.get("mime_type") if isinstance(item.get("mime_type"), str) else "image/png"
            image["url"] = url or f"data:{mime};base64,{b64}"
        elif b64:
            image["b64_json"] = b64
        else:
            image["url"] = url
        if isinstance(item.get("revised_prompt"), str) and item["revised_prompt"]:
            image["revised_prompt"] = item["revised_prompt"]
        out["data"].append(image)
    if isinstance(data.get("usage"), dict):
        out["usage"] = data["usage"]
    return out
