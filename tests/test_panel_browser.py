"""
CLIProxyAPI's Management Center, built, in a real headless chromium against
the real daemon (twistd, the simulated upstream, a credential file): log in
with the management key, open the dashboard, config, providers, auth files,
quota, OAuth login, OAuth exclusion and alias, logs and system pages, and
find no failed management call, no console error, and the daemon's data on
each page; then turn an account off and on again with its card's switch,
and find the file in auth-dir following.

The panel is not ours to ship: the test needs a built single-file
C{management.html} at C{$CLIPROXYD_PANEL_HTML} and skips without it (CI has
none: building it needs the internet). It also needs chromium and
chromedriver (Debian's C{chromium} and C{chromium-driver}), at
C{$CLIPROXYD_CHROMIUM} and C{$CLIPROXYD_CHROMEDRIVER} or in /usr/bin.

The daemon serves it at C{/management.html} from C{static/} beside its
config file, as a user installs it (its background update is off here).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import unused_port
from tests.management_support import claude_file
from tests.test_e2e import ENV, TWISTD, Proc, http_get, wait_until
from tests.webdriver import Driver

PANEL = os.environ.get("CLIPROXYD_PANEL_HTML", "")
CHROMIUM = os.environ.get("CLIPROXYD_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CLIPROXYD_CHROMEDRIVER", "/usr/bin/chromedriver")
KEY = "panel-walk-key"
#: The label of an auth file card's on/off switch (the panel's English text).
ENABLED = "Enabled"
CLIENT_KEY = "sk-client-panel"

#: The pages the walk opens (the panel's hash routes), and what each must show of the daemon's
#: data: the dashboard the three requests made below, the config page the client key (masked),
#: providers the compatible provider (one of one active), auth files the account's e-mail and the OAuth
#: exclusion and alias of config.yaml (GET /oauth-excluded-models, /oauth-model-alias), quota the
#: account, the OAuth page its login buttons (and GET /plugins answered), the logs page
#: main.log's lines of those requests (logging-to-file is on), the system page a model of GET /v1/models.
PAGES = (
    ("#/", ("Across 3 requests in the window",)),
    ("#/config", ("sk******el",)),
    ("#/ai-providers", ("1/1 active resources",)),
    ("#/auth-files", ("a@x.com", "1 models disabled", "1 aliases")),
    ("#/quota", ("claude-a.json",)),
    ("#/oauth", ("Start Codex Login", "Start Anthropic Login", "Start Antigravity Login")),
    ("#/auth-files/oauth-excluded", ("OAuth Model Disablement",)),
    ("#/logs", ("Clear Logs", "chat/completions")),
    ("#/auth-files/oauth-model-alias", ("OAuth Model Aliases",)),
    ("#/system", ("gpt-4o-mini",)),
)

#: What the update check can say: the first two need GET /latest-version to have answered.
VERDICTS = ("You are on the latest version", "Server version is unavailable; cannot compare", "Update check failed")

pytestmark = [
    pytest.mark.skipif(not PANEL or not Path(PANEL).is_file(),
                       reason="no built Management Center: set CLIPROXYD_PANEL_HTML to its management.html"),
    pytest.mark.skipif(not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
                       reason="chromium and chromedriver are needed (apt-get install chromium chromium-driver)"),
]

CONFIG = """\
port: {port}
host: 127.0.0.1
auth-dir: {auth_dir}
api-keys: [{client}]
remote-management:
  secret-key: {key}
  disable-auto-update-panel: true
logging-to-file: true
openai-compatibility:
  - name: sim
    base-url: {upstream}/v1
    api-key-entries:
      - api-key: sk-up-panel-1
      - api-key: sk-up-panel-2
    models:
      - name: sim-small
        alias: gpt-4o-mini
oauth-excluded-models:
  claude: [claude-opus-4-1]
oauth-model-alias:
  claude:
    - name: claude-sonnet-4-5
      alias: sonnet-walk
"""


@pytest.fixture
def running(tmp_path):
    """Upstream and daemon, as processes, the panel beside the config; yields the daemon's URL."""
    up_port, port = unused_port(), unused_port()
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "management.html").write_bytes(Path(PANEL).read_bytes())
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    (auth_dir / "claude-a.json").write_bytes(claude_file(base="http://127.0.0.1:9"))
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(port=port, auth_dir=auth_dir, client=CLIENT_KEY, key=KEY,
                                    upstream=f"http://127.0.0.1:{up_port}"))
    procs = [Proc([sys.executable, "-m", "cliproxyd.testing.upstream", "--port", str(up_port)],
                  tmp_path / "upstream.log")]
    try:
        procs.append(Proc([*TWISTD, "-n", "--pidfile=", "cliproxyd", "--config", str(config),
                           "--listen", f"tcp:{port}:interface=127.0.0.1"], tmp_path / "daemon.log"))
        wait_until(lambda: http_get(f"http://127.0.0.1:{up_port}/v1/models")[0] == 200, what="the upstream")
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="the daemon")
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/management.html")[0] == 200, what="the panel")
        for _ in range(3):  # some usage for the dashboard and the providers' status bars
            chat = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
                data=json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode(),
                headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"})
            with urllib.request.urlopen(chat, timeout=10) as resp:
                assert resp.status == 200
        yield f"http://127.0.0.1:{port}", procs
    finally:
        for p in reversed(procs):
            p.stop()


def management_failures(performance: list[dict]) -> list[str]:
    """Management calls the browser saw fail (an HTTP error status or no answer), from DevTools events."""
    urls: dict[str, str] = {}
    failures = []
    for entry in performance:
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = f"{params['request']['method']} {params['request']['url']}"
        elif message["method"] == "Network.responseReceived":
            response = params["response"]
            if "/v0/management" in response["url"] and response["status"] >= 400:
                failures.append(f"{urls.get(params['requestId'], response['url'])}: {response['status']}")
        elif message["method"] == "Network.loadingFailed":
            what = urls.get(params["requestId"], "")
            if "/v0/management" in what and not params.get("canceled"):
                failures.append(f"{what}: {params.get('errorText')}")
    return failures


def test_the_management_center_walks_through_its_pages_without_a_failed_call(running, tmp_path):
    url, procs = running
    driver = Driver(CHROMEDRIVER, CHROMIUM, unused_port(), str(tmp_path / "profile"), str(tmp_path / "driver.log"))
    try:
        driver.get(url + "/management.html")
        [key_input] = driver.wait_for(lambda: driver.find("input[type=password]"), what="the login form")
        driver.type(key_input, KEY)
        [submit] = driver.find("button.btn-full")  # the login form's one full-width button
        driver.click(submit)
        driver.wait_for(lambda: not driver.find("input[type=password]"), what="the login to succeed")
        seen = {}
        before: tuple[str, ...] = ()
        for page, wanted in PAGES:
            links = driver.find(f'a[href="{page}"]')
            if links:
                driver.click(links[0])  # as a user does: the sidebar's link
            else:
                driver.script("window.location.hash = arguments[0]", page)
            def shown() -> bool:
                # this page's data, and the last page gone (the panel animates between them)
                text = driver.text()
                return all(w in text for w in wanted) and not any(b in text for b in before)

            try:
                driver.wait_for(shown, what=f"{page} to show {wanted}")
            except AssertionError as e:
                raise AssertionError(f"{e}; it shows:\n{driver.text()[:3000]}") from None
            before = wanted
            wait_until(lambda: driver.script("return document.readyState") == "complete", what="the page")
            seen[page] = driver.text()
        # the system page's update check: GET /latest-version, compared with the server's version
        [check] = driver.find('button[aria-label="Check for updates"]')
        driver.click(check)
        verdict = driver.wait_for(lambda: next((v for v in VERDICTS if v in driver.text()), None),
                                  what="the update check's answer")
        # An action, as a user takes it: the account's "Enabled" switch off, then on again
        # (PATCH /auth-files/status), and the file in auth-dir follows each time.
        driver.script("window.location.hash = arguments[0]", "#/auth-files")
        driver.wait_for(lambda: driver.find(f'input[type=checkbox][aria-label="{ENABLED}"]'), what="the switch")
        account = tmp_path / "auth" / "claude-a.json"
        flip = ("const e = document.querySelector('input[type=checkbox][aria-label=\"%s\"]');"
                " if (e && !e.disabled && e.checked === arguments[0]) e.click();" % ENABLED)

        def switched(disabled: bool) -> bool:
            # Click while the switch still shows the old state (it is inert while the list loads).
            driver.script(flip, disabled)
            return json.loads(account.read_text()).get("disabled", False) is disabled

        for disabled in (True, False):
            wait_until(lambda: switched(disabled), what=f"the file to say disabled: {disabled}")
        failures = management_failures(driver.log("performance"))
        console = [e["message"] for e in driver.log("browser") if e.get("level") == "SEVERE"]
    finally:
        driver.quit()
    if os.environ.get("CLIPROXYD_PANEL_DUMP"):
        Path(os.environ["CLIPROXYD_PANEL_DUMP"]).write_text(json.dumps({"seen": seen, "failures": failures,
                                                                        "console": console}, indent=1))
    assert failures == [], failures
    assert console == [], console
    assert verdict != "Update check failed"
    for page, text in seen.items():
        assert "404" not in text and "501" not in text, (page, text[:2000])
