"""Client API keys and the management API's key."""

import json

import pytest

from tests.conftest import Harness, config_data


@pytest.fixture
def guarded():
    return Harness(config_data(**{"api-keys": ["client-key-1", "client-key-2"]}))


@pytest.mark.parametrize(
    "headers, path",
    [
        ({"Authorization": "Bearer client-key-1"}, "/v1/models"),
        ({"Authorization": "bearer client-key-2"}, "/v1/models"),
        ({"Authorization": "client-key-1"}, "/v1/models"),
        ({"x-api-key": "client-key-1"}, "/v1/models"),
        ({"x-goog-api-key": "client-key-2"}, "/v1/models"),
        ({}, "/v1/models?key=client-key-1"),
        # A wrong key in one place does not hide a right one in another.
        ({"Authorization": "Bearer wrong", "x-api-key": "client-key-1"}, "/v1/models"),
    ],
)
def test_keys_are_accepted_from_every_client_convention(guarded, headers, path):
    status, _, _ = guarded.request("GET", path, headers=headers)
    assert status == 200


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "Missing API key"),
        ({"Authorization": "Bearer client-key-3"}, "Invalid API key"),
        ({"x-api-key": "client-key"}, "Invalid API key"),
        ({"Authorization": "Bearer client-key-1x"}, "Invalid API key"),
    ],
)
def test_bad_or_missing_keys_get_an_openai_shaped_401(guarded, headers, message):
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
        status, _, body = guarded.request(method, path, {"model": "gpt-4o"}, headers=headers)
        assert status == 401
        err = json.loads(body)["error"]
        assert err == {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
    assert len(guarded.upstream.seen) == 0


def test_with_no_keys_configured_access_is_open(harness):
    assert harness.request("GET", "/v1/models")[0] == 200


MGMT = {"remote-management": {"secret-key": "mgmt-secret"}}


def test_management_is_404_when_no_secret_is_set(harness):
    status, _, _ = harness.request("GET", "/v0/management/status",
                                   headers={"Authorization": "Bearer anything"})
    assert status == 404


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-Management-Key": "mgmt-secretx"}, 401),
        ({"Authorization": "Bearer mgmt-secret"}, 200),
        ({"X-Management-Key": "mgmt-secret"}, 200),
    ],
)
def test_management_requires_its_key_even_from_localhost(headers, status):
    h = Harness(config_data(**MGMT))
    assert h.request("GET", "/v0/management/status", headers=headers)[0] == status


def test_management_status_shows_credentials_by_fingerprint_with_counters():
    h = Harness(config_data(**MGMT))
    h.upstream.script("sk-up-1", "status:503")
    h.chat()
    status, _, body = h.request("GET", "/v0/management/status",
                                headers={"Authorization": "Bearer mgmt-secret"})
    assert status == 200
    assert b"sk-up-" not in body  # keys appear only as fingerprints
    report = json.loads(body)
    first, second = report["credentials"]
    assert first["key"] == h.creds[0].fingerprint
    assert (first["failures"], first["last_status"]) == (1, 503)
    assert (second["successes"], second["last_status"]) == (1, 200)
    assert first["models"] == ["gpt-4o", "gpt-4o-mini"]


def test_management_refuses_remote_clients_unless_allowed():
    from twisted.python.failure import Failure

    from twisted.web.test.requesthelper import DummyRequest
    from twisted.internet.address import IPv4Address

    def attempt(allow_remote, host):
        h = Harness(config_data(**{"remote-management": {"secret-key": "mgmt-secret", "allow-remote": allow_remote}}))
        api = h.management
        request = DummyRequest([b"status"])
        request.client = IPv4Address("TCP", host, 5555)
        request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer mgmt-secret"])
        results = []
        api._authorize(request).addBoth(results.append)
        if isinstance(results[0], Failure):
            return results[0].value.status
        return 200

    assert attempt(False, "127.0.0.1") == 200
    assert attempt(False, "192.0.2.7") == 403
    assert attempt(True, "192.0.2.7") == 200


def test_unknown_management_route_is_404():
    h = Harness(config_data(**MGMT))
    status, _, _ = h.request("GET", "/v0/management/nope", headers={"Authorization": "Bearer mgmt-secret"})
    assert status == 404
