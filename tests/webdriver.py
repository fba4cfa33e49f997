"""
A very small W3C WebDriver client (the JSON-over-HTTP protocol chromedriver
speaks), enough to drive Debian's chromium from a test without a browser
automation package: a session, navigation, elements, scripts, and
chromedriver's browser and performance logs.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

#: The key under which WebDriver names an element.
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

#: Chromium's flags for a test: no sandbox (containers), no network of its own.
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--window-size=1400,1000",
)


class WebDriverError(Exception):
    pass


class Driver:
    """chromedriver on C{port} (started by L{start}) and one browser session."""

    def __init__(self, driver_path: str, binary: str, port: int, profile: str, log_path: str) -> None:
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([driver_path, f"--port={port}"], stdout=self._log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except (OSError, WebDriverError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.quit()
                    raise WebDriverError("chromedriver did not start")
                time.sleep(0.1)
        caps = {"browserName": "chrome",
                "goog:chromeOptions": {"binary": binary, "args": [*CHROMIUM_ARGS, f"--user-data-dir={profile}"]},
                "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"}}
        try:
            value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        except Exception:
            self.quit()
            raise
        self.session = f"/session/{value['sessionId']}"

    def _call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as e:
            raise WebDriverError(f"{method} {path}: {e.code} {e.read()[:500]!r}") from None

    def cmd(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, self.session + path, body)

    # -- what tests use -------------------------------------------------------------------

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        return self.cmd("POST", "/execute/sync", {"script": source, "args": list(args)})

    def find(self, css: str) -> list[str]:
        return [e[ELEMENT] for e in self.cmd("POST", "/elements", {"using": "css selector", "value": css})]

    def type(self, element: str, text: str) -> None:
        self.cmd("POST", f"/element/{element}/value", {"text": text})

    def click(self, element: str) -> None:
        self.cmd("POST", f"/element/{element}/click", {})

    def text(self) -> str:
        return self.script("return document.body ? document.body.innerText : ''")

    def wait_for(self, check, timeout: float = 20, what: str = "the page") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def log(self, kind: str) -> list[dict[str, Any]]:
        """chromedriver's C{browser} (console) or C{performance} (DevTools events) log since the last call."""
        return self.cmd("POST", "/se/log", {"type": kind})

    def quit(self) -> None:
        try:
            if getattr(self, "session", None):
                self._call("DELETE", self.session, timeout=10)
        except (OSError, WebDriverError):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            self._log.close()
