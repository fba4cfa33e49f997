"""proxy-url over the management API: checked as the loader checks it, and shown per credential with its password masked."""

from __future__ import annotations

import pytest

from tests.management_support import ManagementRig


@pytest.fixture
def rig(tmp_path) -> ManagementRig:
    return ManagementRig(tmp_path)


def test_a_bad_proxy_url_is_a_400_naming_the_key_and_nothing_is_written(rig):
    before = rig.config.read_bytes()
    code, answer = rig.call("PUT", "/proxy-url", {"value": "socks5://u:hunter2@p.test:99999"})
    assert code == 400
    assert "proxy-url: bad port in socks5://p.test:99999" in answer["error"]
    assert "hunter2" not in answer["error"]
    assert rig.config.read_bytes() == before


def test_a_global_proxy_reaches_every_credential_and_is_shown_masked(rig):
    assert rig.call("PUT", "/proxy-url", {"value": "socks5h://u:hunter2@p.test:1080"}) == (200, {"status": "ok"})
    # As in CLIProxyAPI, the setting reads back as written (the management key guards it, as it guards api keys).
    assert rig.call("GET", "/proxy-url") == (200, {"proxy-url": "socks5h://u:hunter2@p.test:1080"})
    for path in ("/status", "/credentials"):
        code, answer = rig.call("GET", path)
        assert code == 200 and answer["credentials"]
        assert {c["proxy"] for c in answer["credentials"]} == {"socks5h://u:***@p.test:1080"}
        assert "hunter2" not in repr(answer)
    assert rig.call("PUT", "/proxy-url", {"value": "direct"})[0] == 200
    assert {c["proxy"] for c in rig.call("GET", "/status")[1]["credentials"]} == {"direct"}
    assert rig.call("DELETE", "/proxy-url")[0] == 200
    assert {c["proxy"] for c in rig.call("GET", "/status")[1]["credentials"]} == {"environment"}
