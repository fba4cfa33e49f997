"""
C{POST /v1/images/generations} and C{POST /v1/images/edits}: OpenAI's
Images API, served by the credentials whose routes can make images.

Which routes those are is worked out once per generation
(L{cliproxyd.conductor.images.image_providers}): an OpenAI-compatible
provider's models marked C{image: true}, the gpt-image models of Codex
accounts and keys, and the grok-imagine models of xAI's. A request names
its model (C{gpt-image-2} when it names none); it runs
through the same conductor as every other request, restricted to the
providers that can make images of that model (L{RequestMeta.providers},
as a client key's scope restricts it), so picks, failover, cooldowns and
quota groups are the chat routes' own. C{disable-image-generation: true}
answers both routes with a 404, as CLIProxyAPI does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cliproxyd.conductor.keylimits import KeyLimited, estimate_tokens
from cliproxyd.config.model import ClientKey
from cliproxyd.formats import images as I
from cliproxyd.formats.canonical import BadRequest
from cliproxyd.frontend.keys import Metering
from cliproxyd.frontend.wire import pass_headers
from cliproxyd.modelnames import parse_model

if TYPE_CHECKING:
    from twisted.web.iweb import IRequest

    from cliproxyd.frontend.app import Frontend


class ImageRoutes:
    """The two routes' work, for one L{Frontend} (the image models: its generation's view, made once each)."""

    def __init__(self, frontend: "Frontend") -> None:
        self._frontend = frontend

    async def serve(self, request: "IRequest", endpoint: str) -> bytes:
        from cliproxyd.frontend.app import ClientError, Problem, render_openai

        front = self._frontend
        served = front.served()
        render = render_openai
        grant = await front._check_access(served, request, render)
        if served.gen.config.disable_image_generation == "true":
            raise render(Problem(404, "Image generation is turned off on this server (disable-image-generation)",
                                 "not_found"))
        req = self._decode(served, request, endpoint)
        measure = front._measures.get(request)
        if measure is not None:
            measure.model = served.model_label(req.model)
        table = served.image_providers
        providers = table.get(parse_model(req.model).base)
        if providers is None:
            raise render(self._no_model(served, req.model, endpoint, table))
        metering = None
        if isinstance(grant, ClientKey):
            allowed = front._scope(served, grant, req, render)  # type: ignore[arg-type]
            if allowed:
                providers = providers & allowed
                if not providers:
                    raise render(Problem(403, f"client key {grant.name!r} may use none of the providers that make "
                                              f"images of {req.model!r}", "provider_not_allowed"))
            try:
                ticket = front.keys.admit(grant, estimate_tokens(len(req.prompt.encode())))
            except KeyLimited as e:
                from cliproxyd.frontend.app import limit_problem

                raise render(limit_problem(e.refusal)) from None
            metering = Metering(front.keys, ticket)
        try:
            early = front._early_answer(served, request, I.Wire, req, True)  # type: ignore[arg-type]
            try:
                result = await front._conduct(request, served, served.conductor.execute, req,  # type: ignore[arg-type]
                                              render, providers)
            except ClientError as e:
                if early is None or not early.committed:
                    raise
                return front._late_error(request, I.Wire, req, e)  # type: ignore[arg-type]
            finally:
                if early is not None:
                    early.stop()
                    del front._early[request]
            if metering is not None:
                metering.answer(result)
            committed = early is not None and early.committed
            if not committed:
                request.setResponseCode(result.status)
                request.setHeader(b"content-type", result.content_type)
                if req.stream:
                    request.setHeader(b"cache-control", b"no-cache")
                if served.passthrough_headers:
                    pass_headers(request, result.headers)
            return result.body
        finally:
            if metering is not None:
                metering.settle()

    def _decode(self, served: Any, request: "IRequest", endpoint: str) -> I.ImageRequest:
        from cliproxyd.frontend.app import Problem, render_openai

        raw = request.content.read()
        if getattr(request, "body_too_large", False) or len(raw) > served.max_body:
            raise render_openai(Problem(413, f"The request body is larger than {served.max_body} bytes "
                                             f"(max-body-mb)", "request_too_large"))
        content_type = (request.getHeader(b"content-type") or b"").strip()
        try:
            if endpoint == "edits" and content_type.lower().startswith(b"multipart/"):
                return I.decode_form(endpoint, raw, content_type, request.requestHeaders)
            if content_type and not content_type.lower().startswith(b"application/json"):
                raise BadRequest(f"unsupported Content-Type {content_type.decode('latin-1')!r} (send "
                                 + ("application/json or multipart/form-data)" if endpoint == "edits"
                                    else "application/json)"))
            return I.decode_json(endpoint, raw, request.requestHeaders)
        except BadRequest as e:
            raise self._frontend._refused(render_openai, e, request.path.decode("utf-8", "replace")) from None

    @staticmethod
    def _no_model(served: Any, model: str, endpoint: str, table: dict[str, frozenset[str]]) -> Any:
        from cliproxyd.frontend.app import Problem

        offered = ", ".join(sorted(table)) or "none are configured"
        if parse_model(model).base in served.model_ids:
            return Problem(400, f"The model {model!r} makes no images on /v1/images/{endpoint}; image models "
                                f"here: {offered}", "model_not_supported")
        return Problem(404, f"The model {model!r} does not exist or no credential makes images of it; image "
                            f"models here: {offered}", "model_not_found")

