"""
The identity Claude and Codex requests wear: Claude Code's system prompt,
user id and headers on Claude OAuth accounts (and on keys with a cloak
block), as Anthropic's OAuth endpoint wants them (the simulated one rejects
a bearer request without them), and Codex's User-Agent and Originator.
"""

from __future__ import annotations

import json
import re

import pytest
import pytest_twisted

from cliproxyd.config import parse_config
from cliproxyd.config.load import ConfigError
from cliproxyd.config.model import CloakConfig
from cliproxyd.credentials.authfiles import AuthFileError, credential_for, parse_account
from cliproxyd.executors import cloak
from tests.conftest import Harness
from tests.test_oauth_accounts import ACCOUNTS, OAuthStack

IDENTITY = cloak.CLAUDE_CODE_IDENTITY


def claude_file(tmp_path, **fields) -> None:
    data = {"type": "claude", "access_token": "at-claude", "refresh_token": "r", "base_url": "http://upstream.test",
            **fields}
    (tmp_path / "claude-a.json").write_text(json.dumps(data))


def claude_harness(tmp_path, file_fields=None, **top) -> Harness:
    claude_file(tmp_path, **(file_fields or {}))
    return Harness({"auth-dir": str(tmp_path), **top})


def sent(h: Harness) -> dict:
    return h.upstream.seen[-1].body


def oauth_cred(tmp_path, **fields):
    claude_file(tmp_path, **fields)
    account = parse_account(str(tmp_path / "claude-a.json"), (tmp_path / "claude-a.json").read_bytes())
    return credential_for(account, parse_config({})[0])


# -- who is cloaked --------------------------------------------------------------------------------


def key_cred(cloak_block=None):
    data = {"claude-api-key": [{"api-key": "sk-ant-1", **({"cloak": cloak_block} if cloak_block is not None else {})}]}
    from cliproxyd.credentials.model import credentials_from_config

    return credentials_from_config(parse_config(data)[0])[0]


def test_oauth_accounts_and_keys_with_a_cloak_block_cloak_by_default(tmp_path):
    assert cloak.policy_for(oauth_cred(tmp_path), False) is not None
    assert cloak.policy_for(key_cred(), False) is None
    assert cloak.policy_for(key_cred({}), False) is not None
    assert cloak.policy_for(key_cred({"mode": "never"}), False) is None


def test_disable_claude_cloak_mode_is_the_default_a_credentials_own_mode_overrides(tmp_path):
    assert cloak.policy_for(oauth_cred(tmp_path), True) is None
    assert cloak.policy_for(key_cred({"strict-mode": True}), True) is None
    assert cloak.policy_for(key_cred({"mode": "always"}), True) is not None
    assert cloak.policy_for(oauth_cred(tmp_path, cloak_mode="always"), True) is not None
    assert cloak.policy_for(oauth_cred(tmp_path, cloak_mode="never"), False) is None


def test_cloak_blocks_and_file_fields_are_parsed_and_checked(tmp_path):
    cred = key_cred({"mode": "Always", "strict-mode": True, "sensitive-words": ["acme", " "], "cache-user-id": False})
    assert cred.cloak == CloakConfig(mode="always", strict_mode=True, sensitive_words=("acme",), cache_user_id=False)
    with pytest.raises(ConfigError, match=r"claude-api-key\[0\]\.cloak\.mode"):
        key_cred({"mode": "sometimes"})
    _, warnings = parse_config({"gemini-api-key": [{"api-key": "k", "cloak": {}}]})
    assert any("gemini-api-key[0].cloak" in w for w in warnings)
    assert oauth_cred(tmp_path, cloak_sensitive_words="acme, widget", cloak_cache_user_id="true").cloak == \
        CloakConfig(sensitive_words=("acme", "widget"), cache_user_id=True)
    with pytest.raises(AuthFileError, match="cloak_mode"):
        oauth_cred(tmp_path, cloak_mode="often")


# -- the body -------------------------------------------------------------------------------------


def body(**extra):
    return {"model": "claude-haiku-4-5", "max_tokens": 10,
            "messages": [{"role": "user", "content": "Tell me about widgets please, at length."}], **extra}


def test_claude_codes_blocks_come_first_and_the_clients_system_is_kept_after():
    out = cloak.cloak(body(system="Be terse."), cloak.CloakPolicy(), "2.1.220", cloak.new_user_id)
    billing, identity, own = out["system"]
    assert re.fullmatch(r"x-anthropic-billing-header: cc_version=2\.1\.220\.[0-9a-f]{3}; cc_entrypoint=cli;",
                        billing["text"])
    assert identity == {"type": "text", "text": IDENTITY, "cache_control": {"type": "ephemeral"}}
    assert own == {"type": "text", "text": "Be terse."}
    assert cloak.is_user_id(out["metadata"]["user_id"])


def test_strict_mode_drops_the_clients_system_and_a_sent_identity_is_not_repeated():
    blocks = [{"type": "text", "text": IDENTITY}, {"type": "text", "text": "Mine."}]
    out = cloak.cloak(body(system=blocks), cloak.CloakPolicy(), "2.1.220", cloak.new_user_id)
    assert [b["text"] for b in out["system"][1:]] == [IDENTITY, "Mine."]
    strict = cloak.cloak(body(system="Mine."), cloak.CloakPolicy(strict=True), "2.1.220", cloak.new_user_id)
    assert len(strict["system"]) == 2


def test_the_billing_fingerprint_follows_the_last_user_text():
    one = cloak.billing_block(body(), "2.1.220")
    assert one == cloak.billing_block(body(), "2.1.220")
    texts = [f"{c * 25}" for c in "abcdefgh"]
    builds = {cloak.billing_block({"messages": [{"role": "user", "content": t}]}, "2.1.220") for t in texts}
    assert len(builds) > 1
    # The last user message counts, not an earlier one.
    two = {"messages": [{"role": "user", "content": texts[0]}, {"role": "assistant", "content": "ok"},
                        {"role": "user", "content": [{"type": "text", "text": texts[1]}]}]}
    assert cloak.billing_block(two, "v") == cloak.billing_block({"messages": two["messages"][2:]}, "v")
    # Every character the fingerprint reads is there or stands as "0": a short text still has one.
    assert cloak.billing_block({"messages": [{"role": "user", "content": "hi"}]}, "9.9.9").startswith(
        "x-anthropic-billing-header: cc_version=9.9.9.")


def test_a_valid_user_id_is_kept_an_invalid_one_replaced():
    valid = cloak.new_user_id()
    assert cloak.cloak(body(metadata={"user_id": valid}), cloak.CloakPolicy(), "v", lambda: "x")["metadata"] == \
        {"user_id": valid}
    assert cloak.cloak(body(metadata={"user_id": "me"}), cloak.CloakPolicy(), "v", lambda: "fresh")["metadata"] == \
        {"user_id": "fresh"}


def test_sensitive_words_are_broken_in_the_clients_text_only():
    policy = cloak.CloakPolicy(words=re.compile("widgets|acme", re.IGNORECASE))
    out = cloak.cloak(body(system="ACME rules"), policy, "v", cloak.new_user_id)
    assert out["system"][2]["text"] == "A\u200bCME rules"
    assert "w\u200bidgets" in out["messages"][0]["content"]
    assert out["system"][1]["text"] == IDENTITY


def test_no_fifth_cache_marker_is_added():
    marked = [{"type": "text", "text": f"s{i}", "cache_control": {"type": "ephemeral"}} for i in range(4)]
    out = cloak.cloak(body(system=marked), cloak.CloakPolicy(), "v", cloak.new_user_id)
    assert "cache_control" not in out["system"][1]


# -- on the wire ----------------------------------------------------------------------------------


def test_a_claude_oauth_request_goes_out_as_claude_code_and_is_served(tmp_path):
    h = claude_harness(tmp_path)
    code, _, raw = h.chat(model="claude-haiku-4-5", messages=[{"role": "system", "content": "Be terse."},
                                                              {"role": "user", "content": "hi"}])
    assert code == 200, raw
    out = sent(h)
    assert [b["text"] for b in out["system"][1:]] == [IDENTITY, "Be terse."]
    headers = h.upstream.seen[-1].headers
    assert headers["x-app"] == "cli" and headers["user-agent"].startswith("claude-cli/")
    assert headers["anthropic-beta"].split(",")[:2] == ["claude-code-20250219", "oauth-2025-04-20"]
    assert headers["anthropic-dangerous-direct-browser-access"] == "true"
    # One user id (and session) for all the account's requests.
    h.chat(model="claude-haiku-4-5")
    assert sent(h)["metadata"]["user_id"] == out["metadata"]["user_id"]
    assert json.loads(out["metadata"]["user_id"])["session_id"] == headers["x-claude-code-session-id"]


def test_without_the_identity_the_oauth_endpoint_refuses_and_the_client_hears_it(tmp_path):
    h = claude_harness(tmp_path, **{"disable-claude-cloak-mode": True})
    code, _, raw = h.chat(model="claude-haiku-4-5")
    assert code == 400
    assert "only authorized for use with Claude Code" in json.loads(raw)["error"]["message"]
    # A file that asks for cloaking anyway is served.
    (tmp_path / "b").mkdir()
    h2 = claude_harness(tmp_path / "b", {"cloak_mode": "always"}, **{"disable-claude-cloak-mode": True})
    assert h2.chat(model="claude-haiku-4-5")[0] == 200


def test_claude_code_itself_passes_as_sent(tmp_path):
    h = claude_harness(tmp_path)
    user_id = cloak.new_user_id()
    system = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.220.abc; cc_entrypoint=cli;"},
              {"type": "text", "text": IDENTITY}, {"type": "text", "text": "Its own long prompt."}]
    message = {"model": "claude-haiku-4-5", "max_tokens": 10, "system": system, "metadata": {"user_id": user_id},
               "messages": [{"role": "user", "content": "hi"}]}
    headers = {"User-Agent": "claude-cli/2.1.220 (external, cli)", "X-App": "cli",
               "Anthropic-Beta": "claude-code-20250219,oauth-2025-04-20", "anthropic-version": "2023-06-01"}
    code, _, raw = h.request("POST", "/v1/messages", message, headers)
    assert code == 200, raw
    assert sent(h)["system"] == system and sent(h)["metadata"] == {"user_id": user_id}
    # The same body from a client that only copied the user agent is cloaked.
    h.request("POST", "/v1/messages", {**message, "metadata": {}}, {"User-Agent": "claude-cli/2.1.220"})
    out = sent(h)
    assert [b["text"] for b in out["system"][1:]] == [IDENTITY, "Its own long prompt."]
    assert "cc_version=2.1.220.abc" not in out["system"][0]["text"] and cloak.is_user_id(out["metadata"]["user_id"])


def test_a_claude_key_with_a_cloak_block_cloaks_and_one_without_does_not():
    for block, cloaked in (({"sensitive-words": ["hi"]}, True), (None, False)):
        entry = {"api-key": "sk-ant-1", "base-url": "http://upstream.test"}
        if block is not None:
            entry["cloak"] = block
        h = Harness({"claude-api-key": [entry]})
        assert h.chat(model="claude-haiku-4-5")[0] == 200
        out, headers = sent(h), h.upstream.seen[-1].headers
        assert (out.get("system", [{}, {}])[1].get("text") == IDENTITY) is cloaked
        assert ("x-app" in headers) is cloaked and headers["x-api-key"] == "sk-ant-1"
        if cloaked:
            assert out["messages"][0]["content"] == [{"type": "text", "text": "h\u200bi"}]
            assert "oauth-2025-04-20" not in headers["anthropic-beta"]
            # Keys make a new user id for every request unless cache-user-id says otherwise.
            h.chat(model="claude-haiku-4-5")
            assert sent(h)["metadata"]["user_id"] != out["metadata"]["user_id"]


@pytest_twisted.ensureDeferred
async def test_an_anthropic_sdk_client_reaches_a_claude_account_on_loopback(tmp_path):
    import anthropic
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    stack = OAuthStack(reactor, tmp_path, {"claude-a.json": ACCOUNTS["claude-a.json"]})
    try:
        client = anthropic.Anthropic(base_url=stack.url, api_key="unused", max_retries=0)
        answer = await deferToThread(client.messages.create, model="claude-haiku-4-5", max_tokens=20,
                                     system="Answer in French.", messages=[{"role": "user", "content": "hi"}])
        assert answer.content[0].text.startswith("Hello from the simulated upstream")
        seen = stack.upstream.seen[-1]
        assert [b["text"] for b in seen.body["system"][1:]] == [IDENTITY, "Answer in French."]
    finally:
        await stack.close()


# -- Codex ----------------------------------------------------------------------------------------


def codex_harness(tmp_path, **top) -> Harness:
    (tmp_path / "codex-b.json").write_text(json.dumps({
        "type": "codex", "access_token": "at-codex", "refresh_token": "r", "account_id": "a-7",
        "base_url": "http://upstream.test/backend-api/codex"}))
    return Harness({"auth-dir": str(tmp_path), **top})


CLIENT = {"User-Agent": "my-agent/1.0", "Originator": "my-tool"}


def test_codex_requests_wear_codex_identity_whatever_the_client_sent(tmp_path):
    h = codex_harness(tmp_path)
    assert h.chat(model="gpt-5-codex", headers=CLIENT)[0] == 200
    seen = h.upstream.seen[-1].headers
    assert seen["user-agent"].startswith("codex-tui/") and seen["originator"] == "codex-tui"


def test_disable_codex_cloaking_passes_the_clients_own_identity(tmp_path):
    h = codex_harness(tmp_path, codex={"disable-codex-cloaking": True})
    assert h.chat(model="gpt-5-codex", headers=CLIENT)[0] == 200
    seen = h.upstream.seen[-1].headers
    assert (seen["user-agent"], seen["originator"]) == ("my-agent/1.0", "my-tool")
    # A client that sends none still gets Codex's.
    assert h.chat(model="gpt-5-codex")[0] == 200
    assert h.upstream.seen[-1].headers["originator"] == "codex-tui"


# -- Codex models by plan -------------------------------------------------------------------------


def codex_account(tmp_path, plan: str | None):
    from cliproxyd.testing.authserver import unsigned_jwt

    data = {"type": "codex", "access_token": "at", "refresh_token": "r"}
    if plan is not None:
        data["id_token"] = unsigned_jwt({"email": "c@x.com", "https://api.openai.com/auth": {
            "chatgpt_account_id": "a", "chatgpt_plan_type": plan}})
    (tmp_path / "codex.json").write_text(json.dumps(data))
    account = parse_account(str(tmp_path / "codex.json"), (tmp_path / "codex.json").read_bytes())
    return {r.name for r in credential_for(account, parse_config({})[0]).routes}


@pytest.mark.parametrize("plan, has, lacks", [
    ("free", "gpt-5.4-mini", "gpt-5.4"),
    ("Team", "gpt-5.6-sol", "gpt-5.3-codex-spark"),
    ("business", "gpt-5.4", "gpt-5.3-codex-spark"),
    ("go", "gpt-5.4", "gpt-5.3-codex-spark"),
    ("plus", "gpt-5.3-codex-spark", "gpt-5-codex"),
    ("pro", "gpt-5.3-codex-spark", "gpt-5-codex"),
])
def test_a_codex_account_serves_its_plans_models(tmp_path, plan, has, lacks):
    models = codex_account(tmp_path, plan)
    assert has in models and lacks not in models


def test_a_codex_account_of_no_known_plan_serves_the_built_in_list(tmp_path):
    from cliproxyd.credentials.authfiles import OAUTH_MODELS

    assert codex_account(tmp_path, None) == set(OAUTH_MODELS["codex"])
    assert codex_account(tmp_path, "enterprise-x") == set(OAUTH_MODELS["codex"])


def test_a_free_codex_account_is_not_offered_a_pro_model(tmp_path):
    from cliproxyd.testing.authserver import unsigned_jwt

    (tmp_path / "codex-b.json").write_text(json.dumps({
        "type": "codex", "access_token": "at-codex", "refresh_token": "r", "account_id": "a-7",
        "base_url": "http://upstream.test/backend-api/codex",
        "id_token": unsigned_jwt({"https://api.openai.com/auth": {"chatgpt_plan_type": "free"}})}))
    h = Harness({"auth-dir": str(tmp_path)})
    assert h.chat(model="gpt-5.5")[0] == 200
    assert h.chat(model="gpt-5.3-codex-spark")[0] == 404
    assert h.upstream.seen[-1].model == "gpt-5.5"


# -- model ids in Claude model lists --------------------------------------------------------------


def listed_ids(h: Harness) -> set[str]:
    code, _, raw = h.request("GET", "/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert code == 200
    return {m["id"] for m in json.loads(raw)["data"]}


def test_claude_lists_name_other_models_by_a_claude_id_and_requests_may_use_it():
    from tests.conftest import config_data

    h = Harness(config_data())
    ids = listed_ids(h)
    assert "claude-fable-5-dd-inim-o4-tpg" in ids and "claude-fable-5-dd-o4-tpg" in ids
    message = {"model": "claude-fable-5-dd-o4-tpg", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    code, _, raw = h.request("POST", "/v1/messages", message, {"anthropic-version": "2023-06-01"})
    assert code == 200, raw
    assert h.upstream.seen[-1].model == "gpt-4o"
    # The OpenAI list, and a Claude list with the switch on, name models as they are.
    assert "gpt-4o" in {m["id"] for m in json.loads(h.request("GET", "/v1/models")[2])["data"]}
    assert "gpt-4o" in listed_ids(Harness(config_data(**{"claude-code": {"disable-cloaking-model-list": True}})))


def test_claude_model_ids_stay_and_a_listed_id_keeps_its_thinking_suffix():
    from cliproxyd.modelnames import claude_listed_id, claude_listed_name

    assert claude_listed_id("claude-haiku-4-5") == "claude-haiku-4-5"
    assert claude_listed_name(claude_listed_id("team/kimi")) == "team/kimi"
    assert claude_listed_name("claude-fable-5-dd-o4-tpg(high)") == "gpt-4o(high)"
    assert claude_listed_name("claude-fable-5-dd-") == "claude-fable-5-dd-"
