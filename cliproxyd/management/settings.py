"""
The config as a whole (C{/config}, C{/config.yaml}) and its scalar settings
(C{/<name>}, see L{SCALARS}): a scalar answers C{GET} with
C{{"<name>": value}} (its default when unset), takes C{{"value": ...}} with
C{PUT} or C{PATCH}, and C{DELETE} removes it from the file.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.web.iweb import IRequest

from cliproxyd.config import ConfigError
from cliproxyd.config.edit import delete_path, set_path
from cliproxyd.config.model import STRATEGIES
from cliproxyd.management.access import Refused
from cliproxyd.management.configview import with_defaults
from cliproxyd.management.http import Resource, is_read, read_body, read_json, respond, route


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Refused(400, "value must be true or false")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Refused(400, "value must be a whole number, 0 or more")
    return value


def _positive(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise Refused(400, "value must be a number above 0")
    return value


def _strategy(value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in STRATEGIES:
        raise Refused(400, "value must be round-robin (rr), weighted-round-robin (wrr) or fill-first (ff)")
    return STRATEGIES[value.strip().lower()]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise Refused(400, "value must be a string")
    return value.strip()


#: Scalar settings: route -> (YAML path, value check, default shown when unset).
SCALARS: dict[str, tuple[tuple[str, ...], Callable[[Any], Any], Any]] = {
    "debug": (("debug",), _bool, False),
    "request-retry": (("request-retry",), _count, 0),
    "max-retry-interval": (("max-retry-interval",), _count, 0),
    "max-retry-credentials": (("max-retry-credentials",), _count, 0),
    "force-model-prefix": (("force-model-prefix",), _bool, False),
    "disable-cooling": (("disable-cooling",), _bool, False),
    "max-body-mb": (("max-body-mb",), _positive, 8),
    "routing/strategy": (("routing", "strategy"), _strategy, "round-robin"),
    "routing/session-affinity": (("routing", "session-affinity"), _bool, False),
    "proxy-url": (("proxy-url",), _text, ""),
    "logging-to-file": (("logging-to-file",), _bool, False),
    "logs-max-total-size-mb": (("logs-max-total-size-mb",), _count, 0),
    "request-log": (("request-log",), _bool, False),
    "error-logs-max-files": (("error-logs-max-files",), _count, 10),
    "usage-statistics-enabled": (("usage-statistics-enabled",), _bool, False),
    # CLIProxyAPI's switches cliproxyd keeps in the file for it (its defaults when unset).
    "ws-auth": (("ws-auth",), _bool, True),
    "quota-exceeded/switch-project": (("quota-exceeded", "switch-project"), _bool, False),
    "quota-exceeded/switch-preview-model": (("quota-exceeded", "switch-preview-model"), _bool, False),
}

#: Top-level keys C{GET /config} leaves out: the listener, the management settings, auth-dir.
HIDDEN = ("host", "port", "remote-management", "auth-dir")


class Settings(Resource):
    """C{/config}, C{/config.yaml} and the scalar settings of L{SCALARS}."""

    names = SCALARS

    @route("/config", "GET")
    async def config_json(self, request: IRequest) -> bytes:
        """
        The config as JSON, CLIProxyAPI's defaults filled in (L{with_defaults});
        the listener, the management settings and auth-dir are left out.
        """
        data = await self.context.read_yaml()
        for hidden in HIDDEN:
            data.pop(hidden, None)
        return respond(request, with_defaults(data))

    @route("/config.yaml", "GET")
    async def config_yaml(self, request: IRequest) -> bytes:
        """The config file as it is, comments and all."""
        request.setHeader(b"content-type", b"application/yaml; charset=utf-8")
        return await self.context.config().read()

    @route("/config.yaml", "PUT")
    async def replace_config_yaml(self, request: IRequest) -> bytes:
        """Replace the file, if the new text loads; 422 with the reason if it does not."""
        data = read_body(request)
        try:
            await self.context.config().replace(data)
        except ConfigError as e:
            return respond(request, {"error": "invalid_config", "message": str(e)}, 422)
        await self.context.reload()
        return respond(request, {"ok": True, "changed": ["config"]})

    async def named(self, request: IRequest, name: str) -> bytes:
        path, check, default = SCALARS[name]
        if is_read(request):
            node: Any = await self.context.read_yaml()
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            return respond(request, {name.rsplit("/", 1)[-1]: default if node is None else node})
        if request.method == b"DELETE":
            await self.context.edit(lambda doc: delete_path(doc, path))
        else:
            value = check(_value(request))
            await self.context.edit(lambda doc: set_path(doc, path, value))
        return respond(request, {"status": "ok"})


def _value(request: IRequest) -> Any:
    data = read_json(request, fields=("value",))
    if not isinstance(data, dict) or "value" not in data:
        raise Refused(400, 'the body must be {"value": ...}')
    return data["value"]
