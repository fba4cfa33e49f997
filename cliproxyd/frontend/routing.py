"""
klein's routing, matched once per path: a werkzeug L{Map} whose bindings
and matches are kept.

klein binds its werkzeug map and matches the path on every request; for
the client routes that was 6-8 % of the reactor thread under load (a py-spy
profile at c=32), more than the conductor's pick. The requests of a running
daemon name a handful of paths, so the adapter of each (host, path, method,
scheme) and its successful match are kept, at most L{MAX_BINDINGS} of them
(Gemini paths carry a model name, so a client could send many: past the
limit it starts over). A match that fails (404, 405, a redirect) is
werkzeug's own every time.
"""

from __future__ import annotations

from typing import Any

from werkzeug.routing import Map, MapAdapter

#: Bindings kept; past this many the cache starts over.
MAX_BINDINGS = 1024


class _KeptAdapter(MapAdapter):
    """A binding whose plain C{match(return_rule=True)} (what klein asks) is worked out once."""

    _matched: Any = None

    def match(self, path_info: str | None = None, method: str | None = None, return_rule: bool = False,
              query_args: Any = None, websocket: bool | None = None) -> Any:
        plain = path_info is None and method is None and query_args is None and websocket is None
        if plain and return_rule and self._matched is not None:
            return self._matched
        matched = super().match(path_info, method, return_rule, query_args, websocket)
        if plain and return_rule:
            self._matched = matched
        return matched


class KeptRoutes(Map):
    """A werkzeug map that keeps its bindings (see the module's docstring); install it with L{keep_routes}."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: dict[tuple[Any, ...], _KeptAdapter] = {}

    def bind(self, server_name: str, script_name: str | None = None, subdomain: str | None = None,
             url_scheme: str = "http", default_method: str = "GET", path_info: str | None = None,
             query_args: Any = None) -> MapAdapter:
        if query_args is not None or subdomain is not None:
            return super().bind(server_name, script_name, subdomain, url_scheme, default_method, path_info,
                                query_args)
        key = (server_name, script_name, url_scheme, default_method, path_info)
        adapter = self._kept.get(key)
        if adapter is None:
            plain = super().bind(server_name, script_name, None, url_scheme, default_method, path_info)
            adapter = _KeptAdapter(self, plain.server_name, plain.script_name, plain.subdomain, plain.url_scheme,
                                   plain.path_info, plain.default_method)
            if len(self._kept) >= MAX_BINDINGS:
                self._kept.clear()
            self._kept[key] = adapter
        return adapter

    def add(self, rulefactory: Any) -> None:
        super().add(rulefactory)
        self._kept.clear()  # a new rule may change what a path matches


def keep_routes(app: Any) -> Any:
    """Give the Klein C{app} a L{KeptRoutes} map (before its routes are declared); returns C{app}."""
    if app.url_map._rules:
        raise ValueError("keep_routes must come before the app's routes")
    app._url_map = KeptRoutes()
    return app
