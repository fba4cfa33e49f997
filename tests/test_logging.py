"""The JSON observer for the journal, and fingerprints."""

import io
import json
import sys

from twisted.logger import Logger

from cliproxyd.logging import fingerprint, json_observer


def test_fingerprints_are_stable_short_and_do_not_contain_the_secret():
    fp = fingerprint("sk-very-secret-key")
    assert fp == fingerprint("sk-very-secret-key")
    assert fp != fingerprint("sk-very-secret-kez")
    assert fp.startswith("fp:") and len(fp) == 11
    assert "secret" not in fp


def test_json_observer_writes_one_json_object_per_line_with_the_rendered_text(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    observer = json_observer()
    log = Logger(observer=observer, namespace="cliproxyd.test")
    log.warn("{provider} key {key} failed ({status})", provider="sim", key="fp:1234abcd", status=429)
    log.info("second")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["text"] == "sim key fp:1234abcd failed (429)"
    assert (first["provider"], first["status"], first["log_namespace"]) == ("sim", 429, "cliproxyd.test")
    assert json.loads(lines[1])["text"] == "second"
