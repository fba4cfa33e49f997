"""
Logging helpers: secret fingerprints and the JSON observer for systemd.

Log events carry structured fields (C{cred}, C{provider}, C{model},
C{status}); no field ever holds a key or a token, only its fingerprint.
"""

from __future__ import annotations

import hashlib
import sys

from twisted.logger import ILogObserver, formatEvent, jsonFileLogObserver
from zope.interface import provider


def fingerprint(secret: str) -> str:
    """
    A short stable name for a secret, safe to log and to show over the
    management API: C{fp:} and 8 hex digits of its SHA-256.
    """
    return "fp:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:8]


def json_observer() -> ILogObserver:
    """
    One JSON object per line on standard output, for journald.

    Use with C{twistd --logger=cliproxyd.logging.json_observer}. Unlike
    C{twist --log-format=json} there is no RS byte before each record, so
    C{journalctl -o cat} prints plain JSON lines. Each record carries the
    rendered message as C{text}.
    """
    write = jsonFileLogObserver(sys.stdout, recordSeparator="")

    @provider(ILogObserver)
    def observe(event: dict) -> None:
        # The rendered message, so `journalctl -o cat` reads well; the
        # structured fields stay beside it for machines.
        write({**event, "text": formatEvent(event)})

    return observe
