"""
The client routes' werkzeug map keeps its bindings and matches
(L{cliproxyd.frontend.routing}): a path is matched once, what a path
matches never changes, failures are werkzeug's own every time, and the
cache is bounded.
"""

from __future__ import annotations

import pytest
from klein import Klein
from treq.testing import StubTreq
from werkzeug.exceptions import MethodNotAllowed, NotFound

from cliproxyd.frontend import routing
from cliproxyd.frontend.app import Frontend
from cliproxyd.frontend.routing import KeptRoutes, keep_routes
from tests.conftest import Harness


def test_the_frontend_routes_through_kept_bindings():
    assert isinstance(Frontend.app.url_map, KeptRoutes)


def test_a_path_is_matched_once_and_answers_the_same_after(monkeypatch):
    h = Harness()
    matches = []
    real = routing.MapAdapter.match

    def counting(self, *args, **kwargs):
        if self.map is Frontend.app.url_map:  # (the panel's and management's apps have maps of their own)
            matches.append(self.path_info)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(routing.MapAdapter, "match", counting)
    Frontend.app.url_map._kept.clear()
    for _ in range(3):
        assert h.chat()[0] == 200
    assert matches.count("/v1/chat/completions") == 1
    # Gemini's route with its model in the path, and a path no route has: the 404 is matched each time.
    for _ in range(2):
        assert h.request("POST", "/v1beta/models/gpt-4o:generateContent",
                         {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})[0] == 200
        assert h.request("GET", "/no/such/route")[0] == 404
    assert matches.count("/v1beta/models/gpt-4o:generateContent") == 1
    assert matches.count("/no/such/route") == 2


def test_failures_and_methods_are_werkzeugs_own():
    app = keep_routes(Klein())

    @app.route("/a/<path:rest>", methods=["POST"])
    def a(request, rest):
        return rest.encode()

    adapter = app.url_map.bind("h", "/", default_method="POST", path_info="/a/x:y")
    assert app.url_map.bind("h", "/", default_method="POST", path_info="/a/x:y") is adapter
    rule, kwargs = adapter.match(return_rule=True)
    assert kwargs == {"rest": "x:y"} and adapter.match(return_rule=True) == (rule, kwargs)
    with pytest.raises(MethodNotAllowed):
        app.url_map.bind("h", "/", default_method="GET", path_info="/a/x:y").match(return_rule=True)
    with pytest.raises(NotFound):
        app.url_map.bind("h", "/", default_method="POST", path_info="/b").match(return_rule=True)
    stub = StubTreq(app.resource())
    assert stub.post("http://h/a/one").result.code == 200


def test_the_cache_is_bounded_and_a_new_rule_starts_it_over(monkeypatch):
    monkeypatch.setattr(routing, "MAX_BINDINGS", 3)
    routes = KeptRoutes()
    for i in range(5):
        routes.bind("h", "/", path_info=f"/p{i}")
    assert len(routes._kept) <= 3
    app = keep_routes(Klein())

    @app.route("/x")
    def x(request):
        return b"x"

    app.url_map.bind("h", "/", path_info="/y")
    assert app.url_map._kept

    @app.route("/y")
    def y(request):
        return b"y"

    assert not app.url_map._kept


def test_routes_must_be_kept_before_they_are_declared():
    app = Klein()

    @app.route("/x")
    def x(request):
        return b"x"

    with pytest.raises(ValueError):
        keep_routes(app)
