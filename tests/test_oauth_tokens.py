"""
The token endpoint client (refresh, code exchange) against the simulated
authorization server over loopback HTTP.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from cliproxyd.logging import fingerprint
from cliproxyd.credentials.login import authorization_url, make_pkce, redirect_uri
from cliproxyd.credentials import tokens
from cliproxyd.credentials.tokens import TokenError, TokenGrant
from cliproxyd.testing.authserver import s256
from tests.conftest import unused_port


def refresh(*args, **kw):
    """The token refresh, timed on the reactor that runs these loopback tests unless a test names a clock."""
    from twisted.internet import reactor

    kw.setdefault("clock", reactor)
    return tokens.refresh(*args, **kw)


def exchange_code(*args, **kw):
    from twisted.internet import reactor

    kw.setdefault("clock", reactor)
    return tokens.exchange_code(*args, **kw)


async def failure_of(coro) -> TokenError:
    try:
        await coro
    except TokenError as e:
        return e
    raise AssertionError("expected a TokenError")


def assert_no_secret(texts, secrets) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text


async def authorize(auth) -> tuple[str, str, str, str]:
    """A login's first half, as a browser would do it: (code, verifier, redirect_uri, state)."""
    verifier, challenge = make_pkce()
    redirect = redirect_uri(auth.provider, 4242)
    url = authorization_url(auth.provider, redirect, challenge, "st-123")
    response = await auth.client.get(url, allow_redirects=False)
    assert response.code == 302, await response.content()
    location = response.headers.getRawHeaders("location")[0]
    code = location.split("code=")[1].split("&")[0]
    return code, verifier, redirect, "st-123"


# -- refresh ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_claude_refresh_sends_json_gets_a_new_access_token_and_the_refresh_token_rotates(auth_server):
    auth = auth_server("claude", expires_in=28800)
    old = auth.sim.issue_refresh_token()

    grant = await refresh(auth.client, auth.provider, old)

    assert auth.sim.last_format == "json"
    assert auth.sim.last_body == {"grant_type": "refresh_token", "refresh_token": old,
                                  "client_id": auth.provider.client_id}
    assert grant.access_token in auth.sim.access_tokens
    assert grant.refresh_token != old and grant.refresh_token in auth.sim.refresh_tokens
    assert grant.expires_in == 28800.0
    assert grant.raw["account"]["email_address"] == "user@example.com"
    # The old refresh token is dead now: using it again is a permanent failure.
    error = await failure_of(refresh(auth.client, auth.provider, old))
    assert (error.status, error.permanent) == (400, True)
    # The new one works.
    again = await refresh(auth.client, auth.provider, grant.refresh_token)
    assert again.access_token != grant.access_token
    assert auth.sim.calls["refresh_token"] == 3


@pytest.mark.parametrize("provider, secret", [("codex", False), ("gemini-cli", True), ("antigravity", True)])
@pytest_twisted.ensureDeferred
async def test_codex_and_google_refresh_send_a_form_with_the_client_secret_only_when_there_is_one(
        auth_server, provider, secret):
    auth = auth_server(provider)
    old = auth.sim.issue_refresh_token()

    grant = await refresh(auth.client, auth.provider, old)

    assert auth.sim.last_format == "form"
    body = auth.sim.last_body
    assert (body["grant_type"], body["refresh_token"], body["client_id"]) == ("refresh_token", old,
                                                                              auth.provider.client_id)
    assert ("client_secret" in body) is secret
    if secret:
        assert body["client_secret"] == auth.provider.client_secret
    assert grant.access_token in auth.sim.access_tokens
    if provider == "codex":
        assert grant.id_token.count(".") == 2


@pytest_twisted.ensureDeferred
async def test_a_refresh_answer_without_a_refresh_token_keeps_the_one_sent(auth_server):
    auth = auth_server("gemini-cli", rotate=False)
    old = auth.sim.issue_refresh_token()

    grant = await refresh(auth.client, auth.provider, old)

    assert "refresh_token" not in grant.raw
    assert grant.refresh_token == old


@pytest_twisted.ensureDeferred
async def test_overrides_name_another_client_and_token_url(auth_server):
    auth = auth_server("gemini-cli")
    stranger = auth_server("gemini-cli")
    old = stranger.sim.issue_refresh_token()

    # The provider points at `auth`; the override sends it to `stranger`, with
    # another client, which the server refuses as a client it does not know.
    error = await failure_of(refresh(auth.client, auth.provider, old, client_id="other-client",
                                     client_secret="other-secret", token_url=stranger.provider.token_url))

    assert auth.sim.calls["refresh_token"] == 0
    assert stranger.sim.last_body["client_id"] == "other-client"
    assert stranger.sim.last_body["client_secret"] == "other-secret"
    assert (error.status, error.permanent) == (401, True)
    assert "invalid_client" in error.message


@pytest.mark.parametrize("status, body, permanent", [
    (400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, True),
    (401, {"error": {"type": "authentication_error", "message": "Invalid refresh token"}}, True),
    (403, {"error": "invalid_grant"}, True),
    (403, "<html>Forbidden by the edge</html>", False),
    (429, {"error": {"type": "rate_limit_error", "message": "slow down"}}, False),
    (500, {"error": "server_error"}, False),
    (503, "upstream unavailable", False),
])
@pytest_twisted.ensureDeferred
async def test_dead_grants_are_permanent_and_everything_else_is_transient(auth_server, status, body, permanent):
    auth = auth_server("claude")
    token = auth.sim.issue_refresh_token()
    auth.sim.fail_next(1, status, body)

    error = await failure_of(refresh(auth.client, auth.provider, token))

    assert error.status == status
    assert error.permanent is permanent
    expected = body if isinstance(body, str) else json.dumps(body)
    for word in ("invalid_grant", "rate_limit_error", "server_error", "Forbidden", "unavailable"):
        if word in expected:
            assert word in error.message
    assert str(status) in error.message
    # The refresh token survived the failure: the next try works.
    assert (await refresh(auth.client, auth.provider, token)).access_token


@pytest_twisted.ensureDeferred
async def test_no_token_reaches_an_error_message_even_when_the_server_echoes_it(auth_server):
    auth = auth_server("codex")
    token = auth.sim.issue_refresh_token()
    auth.sim.fail_next(1, 400, {"error": "invalid_grant", "error_description": f"refresh token {token} was revoked"})
    auth.sim.fail_next(1, 502, f"bad gateway while handling refresh_token={token}")

    with capturedLogs() as events:
        first = await failure_of(refresh(auth.client, auth.provider, token))
        second = await failure_of(refresh(auth.client, auth.provider, token))

    texts = [first.message, str(first), repr(first), second.message, str(second), repr(second),
             *(formatEvent(e) + repr(e) for e in events)]
    assert_no_secret(texts, [token])
    assert fingerprint(token) in first.message and fingerprint(token) in second.message
    grant = await refresh(auth.client, auth.provider, token)
    assert_no_secret([repr(grant)], [grant.access_token, grant.refresh_token, grant.id_token])


@pytest_twisted.ensureDeferred
async def test_a_token_endpoint_that_never_answers_is_a_transient_failure_after_the_timeout(auth_server):
    auth = auth_server("claude")
    token = auth.sim.issue_refresh_token()
    clock = Clock()
    arrived = auth.sim.hang_next()

    d = Deferred.fromCoroutine(refresh(auth.client, auth.provider, token, clock=clock, timeout=30))
    await arrived
    clock.advance(29)
    assert not d.called
    clock.advance(1)
    assert d.called, "the timeout did not end the request"
    error = await failure_of(d)

    assert (error.status, error.permanent) == (0, False)
    assert "30 s" in error.message


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_is_a_transient_failure(auth_server):
    auth = auth_server("claude")

    error = await failure_of(refresh(auth.client, auth.provider, "rt-x",
                                     token_url=f"http://127.0.0.1:{unused_port()}/token"))

    assert (error.status, error.permanent) == (0, False)
    assert "cannot reach the token endpoint" in error.message


@pytest.mark.parametrize("answer, complaint", [
    (b"<html>ok</html>", "not a JSON object"),
    ({"token_type": "Bearer"}, "without an access_token"),
])
@pytest_twisted.ensureDeferred
async def test_a_200_without_an_access_token_is_a_transient_failure(auth_server, answer, complaint):
    auth = auth_server("claude")
    auth.sim.fail_next(1, 200, answer)

    error = await failure_of(refresh(auth.client, auth.provider, auth.sim.issue_refresh_token()))

    assert (error.status, error.permanent) == (200, False)
    assert complaint in error.message


def test_a_grant_and_an_error_never_show_tokens_in_their_repr():
    grant = TokenGrant("at-secret", "rt-secret", 10.0, "id-secret", {"access_token": "at-secret"})
    assert_no_secret([repr(grant), str(grant)], ["at-secret", "rt-secret", "id-secret"])


# -- code exchange ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_claude_code_exchange_sends_json_with_the_state(auth_server):
    auth = auth_server("claude")
    code, verifier, redirect, state = await authorize(auth)

    grant = await exchange_code(auth.client, auth.provider, code, verifier, redirect, state)

    assert auth.sim.last_format == "json"
    assert auth.sim.last_body == {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                                  "client_id": auth.provider.client_id, "code_verifier": verifier,
                                  "state": state}
    assert grant.refresh_token in auth.sim.refresh_tokens
    assert grant.raw["account"] == {"uuid": "acct-sim-0001", "email_address": "user@example.com"}


@pytest.mark.parametrize("provider", ["codex", "gemini-cli"])
@pytest_twisted.ensureDeferred
async def test_form_code_exchange_has_no_state_and_the_secret_when_there_is_one(auth_server, provider):
    auth = auth_server(provider)
    code, verifier, redirect, state = await authorize(auth)

    grant = await exchange_code(auth.client, auth.provider, code, verifier, redirect, state)

    body = auth.sim.last_body
    assert auth.sim.last_format == "form"
    assert "state" not in body
    assert (body["code"], body["code_verifier"], body["redirect_uri"]) == (code, verifier, redirect)
    assert ("client_secret" in body) is bool(auth.provider.client_secret)
    assert grant.access_token in auth.sim.access_tokens


@pytest_twisted.ensureDeferred
async def test_the_pkce_verifier_is_checked_and_a_code_is_good_once(auth_server):
    auth = auth_server("codex")
    code, verifier, redirect, state = await authorize(auth)
    other, _ = make_pkce()
    assert s256(other) != s256(verifier)

    wrong = await failure_of(exchange_code(auth.client, auth.provider, code, other, redirect, state))
    assert (wrong.status, wrong.permanent) == (400, True)
    assert "code_verifier" in wrong.message
    assert_no_secret([wrong.message], [code, other, verifier])
    # The attempt burnt the code: the right verifier cannot use it any more.
    burnt = await failure_of(exchange_code(auth.client, auth.provider, code, verifier, redirect, state))
    assert burnt.permanent and "invalid_grant" in burnt.message

    code, verifier, redirect, state = await authorize(auth)
    await exchange_code(auth.client, auth.provider, code, verifier, redirect, state)
    again = await failure_of(exchange_code(auth.client, auth.provider, code, verifier, redirect, state))
    assert again.status == 400


@pytest_twisted.ensureDeferred
async def test_the_redirect_uri_of_the_exchange_must_be_the_authorizations(auth_server):
    auth = auth_server("gemini-cli")
    code, verifier, redirect, state = await authorize(auth)

    error = await failure_of(exchange_code(auth.client, auth.provider, code, verifier,
                                           redirect.replace("4242", "4243"), state))

    assert error.status == 400 and "redirect_uri" in error.message
