"""
Gemini CLI accounts whose file names no project: the project is found (and
the account onboarded) on Code Assist before the first request, polling the
onboarding operation on the clock, written back to the file, looked up once
however many requests wait; an account with none fails over.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from cliproxyd.executors import projects
from cliproxyd.testing.codeassist import CodeAssistAccounts
from tests.conftest import Harness
from tests.test_oauth_accounts import OAuthStack


def run(clock: Clock, accounts: CodeAssistAccounts, token: str = "t", step: float = 1.0, limit: int = 200):
    async def call(method, body):
        return accounts.load(token, body) if method == "loadCodeAssist" else accounts.onboard(token, body)

    results: list = []
    Deferred.fromCoroutine(projects.discover(call, clock)).addBoth(results.append)
    for _ in range(limit):
        if results:
            break
        clock.advance(step)
    return results[0]


def methods(accounts: CodeAssistAccounts) -> list[tuple[str, str]]:
    return [(m, b.get("cloudaicompanionProject", "")) for m, _, b in accounts.calls]


def test_an_account_already_set_up_is_onboarded_to_its_project():
    clock, accounts = Clock(), CodeAssistAccounts(projects={"t": "proj-1"}, pending_polls=1)
    assert run(clock, accounts) == "proj-1"
    assert methods(accounts) == [("loadCodeAssist", ""), ("onboardUser", "proj-1"), ("onboardUser", "proj-1")]
    onboard = accounts.calls[1][2]
    assert onboard["tierId"] == "free-tier" and onboard["metadata"]["pluginType"] == "GEMINI"
    assert clock.seconds() == projects.ONBOARD_POLL  # one wait of the onboarding poll


def test_a_new_account_gets_a_project_provisioned_then_onboarded():
    clock, accounts = Clock(), CodeAssistAccounts(provision={"t": "proj-new"}, pending_polls=2)
    assert run(clock, accounts) == "proj-new"
    assert methods(accounts) == [("loadCodeAssist", "")] + [("onboardUser", "")] * 3 + [("onboardUser", "proj-new")] * 3
    assert clock.seconds() == 2 * projects.AUTO_POLL + 2 * projects.ONBOARD_POLL


def test_no_project_provisioned_or_onboarding_that_never_ends_is_no_project():
    failure = run(Clock(), CodeAssistAccounts(pending_polls=0))
    assert failure.check(projects.NoProject) and "project_id" in str(failure.value)
    clock = Clock()
    failure = run(clock, CodeAssistAccounts(provision={"t": "p"}, pending_polls=10**6))
    assert failure.check(projects.NoProject) and "30s" in str(failure.value)
    assert clock.seconds() <= projects.AUTO_TIMEOUT + 1


@pytest.mark.parametrize("answer, project", [({"cloudaicompanionProject": "p"}, "p"),
                                             ({"cloudaicompanionProject": {"id": " p "}}, "p"),
                                             ({"cloudaicompanionProject": 5}, ""), ({}, ""), (None, "")])
def test_the_project_is_read_in_both_its_shapes(answer, project):
    assert projects.project_of(answer) == project


def test_the_default_tier_is_the_one_marked_default_else_legacy():
    assert projects.default_tier({"allowedTiers": [{"id": "a"}, {"id": "b", "isDefault": True}]}) == "b"
    assert projects.default_tier({}) == "legacy-tier"


# -- through the daemon ---------------------------------------------------------------------------


def gemini_file(tmp_path, name="gemini-a.json", token="ya29-a", **fields):
    data = {"type": "gemini", "email": "a@x.com", "base_url": "http://upstream.test",
            "token": {"access_token": token, "refresh_token": "r", "expiry": "2099-01-01T00:00:00Z"}, **fields}
    (tmp_path / name).write_text(json.dumps(data))


def test_a_file_without_project_id_discovers_it_serves_and_writes_it_back(tmp_path):
    gemini_file(tmp_path)
    h = Harness({"auth-dir": str(tmp_path)})
    h.upstream.code_assist_accounts.provision["ya29-a"] = "proj-new"
    code, _, raw = h.chat(model="gemini-2.5-pro", advance=1)
    assert code == 200, raw
    assert h.upstream.seen[-1].envelope["project"] == "proj-new"
    saved = json.loads((tmp_path / "gemini-a.json").read_text())
    assert saved["project_id"] == "proj-new" and saved["token"]["access_token"] == "ya29-a"
    calls = len(h.upstream.code_assist_accounts.calls)
    assert h.chat(model="gemini-2.5-pro")[0] == 200
    assert len(h.upstream.code_assist_accounts.calls) == calls  # found once
    # The write was ours: a reload keeps the account (and its project) as it is.
    h.runtime.reload()
    assert h.chat(model="gemini-2.5-pro")[0] == 200 and len(h.upstream.code_assist_accounts.calls) == calls


def test_requests_waiting_for_the_project_share_one_lookup(tmp_path):
    gemini_file(tmp_path)
    h = Harness({"auth-dir": str(tmp_path)})
    h.upstream.code_assist_accounts.provision["ya29-a"] = "proj-new"
    body = json.dumps({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]}).encode()
    waiting = [h.front.request("POST", "http://proxy.test/v1/chat/completions", data=body) for _ in range(3)]
    for d in waiting:
        assert h.settle(d, advance=1).code == 200
    assert [m for m, _, _ in h.upstream.code_assist_accounts.calls].count("loadCodeAssist") == 1


def test_an_account_with_no_project_cools_and_the_request_moves_on(tmp_path):
    gemini_file(tmp_path)  # nothing to provision for ya29-a
    gemini_file(tmp_path, "gemini-b.json", "ya29-b", project_id="proj-b")
    h = Harness({"auth-dir": str(tmp_path)})
    for _ in range(2):
        code, _, raw = h.chat(model="gemini-2.5-pro", advance=1)
        assert code == 200, raw
        assert h.upstream.seen[-1].envelope["project"] == "proj-b"
    assert "project_id" not in json.loads((tmp_path / "gemini-a.json").read_text())
    # Cooling: the account without a project was asked once, not on every request.
    assert [m for m, _, _ in h.upstream.code_assist_accounts.calls].count("loadCodeAssist") == 1


def test_alone_an_account_with_no_project_is_a_clear_error(tmp_path):
    gemini_file(tmp_path)
    h = Harness({"auth-dir": str(tmp_path)})
    code, _, raw = h.chat(model="gemini-2.5-pro", advance=1)
    assert code == 403
    assert "no project" in json.loads(raw)["error"]["message"]


def test_the_simulated_code_assist_refuses_a_request_without_a_project(tmp_path):
    # What cliproxyd did before discovery: the envelope's project empty.
    gemini_file(tmp_path, project_id="")
    h = Harness({"auth-dir": str(tmp_path)})
    h.upstream.code_assist_accounts.provision["ya29-a"] = "proj-new"
    assert h.chat(model="gemini-2.5-pro", advance=1)[0] == 200
    response = h.settle(h.up.post("http://upstream.test/v1internal:generateContent",
                                  data=json.dumps({"model": "gemini-2.5-pro", "project": "",
                                                   "request": {"contents": []}}).encode(),
                                  headers={"Authorization": "Bearer ya29-a"}))
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_discovery_on_loopback(tmp_path):
    from twisted.internet import reactor

    account = {"type": "gemini", "email": "a@x.com", "token": {"access_token": "ya29-loop", "refresh_token": "r"},
               "expired": "2099-01-01T00:00:00Z"}
    stack = OAuthStack(reactor, tmp_path, {"gemini-l.json": account})
    try:
        stack.upstream.code_assist_accounts.provision["ya29-loop"] = "proj-loop"
        stack.upstream.code_assist_accounts.pending_polls = 0
        code, body = await stack.chat("gemini-2.5-pro", stream=True)
        assert code == 200, body
        assert stack.upstream.seen[-1].envelope["project"] == "proj-loop"
        assert json.loads((tmp_path / "gemini-l.json").read_text())["project_id"] == "proj-loop"
    finally:
        await stack.close()


# -- several projects in one file ----------------------------------------------------------------


def test_each_project_of_a_split_file_is_listed_with_its_own_state(tmp_path):
    gemini_file(tmp_path, project_id="p1,p2")
    h = Harness({"auth-dir": str(tmp_path), "quota-exceeded": {"switch-project": True},
                 "remote-management": {"secret-key": "m"}})
    h.upstream.script("ya29-a", "status:429:30", "ok")
    assert h.chat(model="gemini-2.5-pro")[0] == 200
    assert [s.envelope["project"] for s in h.upstream.seen] == ["p1", "p2"]
    code, _, raw = h.request("GET", "/v0/management/auth-files", headers={"Authorization": "Bearer m"})
    assert code == 200
    first, second = json.loads(raw)["files"]
    assert (first["id"], first["project_id"], first["runtime_only"]) == ("gemini-cli:gemini-a.json", "p1,p2", False)
    assert (first["status"], first["failed"]) == ("cooling", 1)
    assert (second["id"], second["project_id"], second["runtime_only"]) == ("gemini-cli:gemini-a.json#p2", "p2", True)
    assert (second["status"], second["success"], second["label"]) == ("active", 1, "a@x.com [p2]")
    assert first["name"] == second["name"] == "gemini-a.json"
