"""
The one factory of generations and the one source of the running one: what
production builds is what the tests build, a config key reaches the object
that uses it, reloads swap everything a consumer reads, and reload threads
never touch an account.
"""

from __future__ import annotations

import json

from attrs import fields
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock

from cliproxyd.assembly import Assembly, Generation
from cliproxyd.conductor.conductor import ConductorSettings
from cliproxyd.conductor.quota import DEFAULT_GROUPS, compile_groups
from cliproxyd.config import parse_config
from cliproxyd.credentials.authfiles import OAuthAccount, read_auth_dir, scan_auth_dir
from cliproxyd.daemon import build_daemon
from cliproxyd.state import MemoryStateStore
from tests.conftest import Harness, config_data


def test_the_harness_runs_the_default_quota_groups_as_production_does():
    h = Harness()
    assert h.conductor.quota_groups == compile_groups(DEFAULT_GROUPS)
    off = Harness(config_data(**{"oauth-quota-groups": []}))
    assert off.conductor.quota_groups == ()


def test_every_conductor_setting_comes_from_the_config():
    """Each field of ConductorSettings is read from its key: a value other than the default gets through."""
    config, _ = parse_config({
        "routing": {"strategy": "fill-first", "warmup": {"enabled": True, "providers": ["x"], "ttl-seconds": 7,
                                                         "timeout-seconds": 3},
                    "session-affinity": True, "session-affinity-ttl": "5m",
                    "headroom": False, "slow-start-seconds": 5,
                    "reset-probe": {"enabled": False, "after-seconds": 60, "interval-seconds": 30}},
        "max-retry-credentials": 3, "request-retry": 2, "max-retry-interval": 9,
        "disable-cooling": True, "debug": True, "transient-error-cooldown-seconds": 7,
        "disable-cooling": True, "debug": True,
        "streaming": {"bootstrap-retries": 2},
    })
    settings = ConductorSettings.from_config(config)
    default = ConductorSettings()
    unchanged = [f.name for f in fields(ConductorSettings) if getattr(settings, f.name) == getattr(default, f.name)]
    assert unchanged == []
    assert Assembly(None, Clock(), MemoryStateStore()).build(config).conductor.settings == settings


def test_a_generation_is_whole_and_immutable():
    config, _ = parse_config(config_data())
    gen = Assembly(None, Clock(), MemoryStateStore()).build(config)
    assert isinstance(gen, Generation)
    assert [c.id for c in gen.conductor.creds] == [c.id for c in gen.creds]
    assert gen.max_body == 8 << 20
    try:
        gen.config = config  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("a generation must not be changed after it is built")


def _daemon(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(data))
    clock = Clock()
    d = build_daemon(clock, None, config_path=str(path), poll=0, run_in_thread=maybeDeferred)
    d.runtime.start()
    return d, path


def _warm(strategy="fill-first", enabled=True):
    return {"strategy": strategy, "warmup": {"enabled": enabled, "providers": ["warm"], "ttl-seconds": 60,
                                              "timeout-seconds": 10}}


def test_a_reload_applies_new_warmup_settings(tmp_path):
    """Warmup settings belong to the generation, so a reload changes them (they were fixed at start-up)."""
    d, path = _daemon(tmp_path, config_data(routing=_warm(enabled=False)))
    assert d.management.context.warmup_status() == {"enabled": False}
    path.write_text(json.dumps(config_data(routing=_warm(enabled=True))))
    assert d.runtime.reload("test").result is True
    status = d.management.context.warmup_status()
    assert status["enabled"] is True and status["providers"] == ["warm"]
    assert d.runtime.current.conductor._warmups is d.warmups


def test_the_frontend_and_management_follow_every_reload(tmp_path):
    d, path = _daemon(tmp_path, config_data(**{"remote-management": {"secret-key": "old"}}))
    served = d.frontend.served()
    assert d.management.enabled and served.model_ids == {"gpt-4o-mini", "gpt-4o"}
    path.write_text(json.dumps(config_data(models=[{"name": "only-this"}], **{"api-keys": ["k"]})))
    assert d.runtime.reload("test").result is True
    now = d.frontend.served()
    assert now is not served and now.conductor is d.runtime.current.conductor
    assert now.model_ids == {"only-this"} and now.access.enabled
    assert not d.management.enabled  # remote-management is gone from the new config


def test_reload_threads_get_plain_values_never_accounts(tmp_path):
    """Accounts have one owner (the reactor thread): what runs in a thread sees file names and digests only."""
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / "a.json").write_text(json.dumps({"type": "claude", "access_token": "t", "refresh_token": "r"}))
    seen = []

    def thread(f, *args):
        seen.append(args)
        return maybeDeferred(f, *args)

    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"auth-dir": str(auth)}))
    d = build_daemon(Clock(), None, config_path=str(path), poll=0, run_in_thread=thread)
    d.runtime.start()
    account = d.runtime.current.accounts["a.json"]
    account.access_token = "refreshed"  # what the refresher does, on the reactor thread
    (auth / "b.json").write_text(json.dumps({"type": "codex", "access_token": "t2"}))
    assert d.runtime.reload("test").result is True
    assert d.runtime.current.accounts["a.json"] is account  # unchanged bytes: the same account, tokens and all

    def accounts_in(value):
        if isinstance(value, OAuthAccount):
            return True
        if isinstance(value, dict):
            return any(accounts_in(v) for v in value.values())
        if isinstance(value, (list, tuple, set)):
            return any(accounts_in(v) for v in value)
        return False

    assert seen and not any(accounts_in(args) for args in seen)


def test_reading_the_auth_dir_with_known_digests_parses_only_what_changed(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"type": "claude", "access_token": "t", "refresh_token": "r"}))
    first = scan_auth_dir(str(tmp_path))
    known = {name: a.digest for name, a in first.accounts.items()}
    again = read_auth_dir(str(tmp_path), known)
    assert again.unchanged == {"a.json"} and again.accounts == {}
    (tmp_path / "a.json").write_text(json.dumps({"type": "claude", "access_token": "t2", "refresh_token": "r"}))
    edited = read_auth_dir(str(tmp_path), known)
    assert edited.unchanged == set() and edited.accounts["a.json"].access_token == "t2"
