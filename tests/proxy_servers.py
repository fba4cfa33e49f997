"""
Real proxy servers from Debian's packages, started on free loopback ports:
microsocks (SOCKS5, with user/password) and tinyproxy (HTTP CONNECT, with
Basic auth). Both bind their outgoing connections to L{OUTGOING}, so an
upstream on 127.0.0.1 can tell a proxied connection (from 127.0.0.2) from
a direct one (from 127.0.0.1). `.ci/run` installs them; a test that needs
one fails under CI=true when it is missing, and skips elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import unused_port

#: The source address the proxies connect from (any 127/8 address is loopback on Linux).
OUTGOING = "127.0.0.2"

PACKAGES = {"microsocks": "microsocks", "tinyproxy": "tinyproxy"}


def need(binary: str) -> str:
    """The binary's path; a failure under CI=true when it is not installed, a skip elsewhere."""
    path = shutil.which(binary) or (f"/usr/bin/{binary}" if os.access(f"/usr/bin/{binary}", os.X_OK) else None)
    if path is None:
        why = f"{binary} is not installed (apt-get install {PACKAGES[binary]})"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return path


def _wait_listening(port: int, proc: subprocess.Popen, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on port {port} within {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Running:
    """A proxy server process: its port, its log file."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def microsocks(tmp: Path, user: str = "", password: str = "") -> Iterator[Running]:
    """microsocks on 127.0.0.1 (user/password required when given), connecting out from L{OUTGOING}."""
    binary = need("microsocks")
    port = unused_port()
    args = [binary, "-i", "127.0.0.1", "-p", str(port), "-b", OUTGOING]
    if user:
        args += ["-u", user, "-P", password]
    log = tmp / f"microsocks-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc, "microsocks")
        yield Running(port, log)
    finally:
        _stop(proc)


@contextmanager
def tinyproxy(tmp: Path, user: str = "", password: str = "") -> Iterator[Running]:
    """tinyproxy on 127.0.0.1 (Basic auth when given), CONNECT to any port, connecting out from L{OUTGOING}."""
    binary = need("tinyproxy")
    port = unused_port()
    log = tmp / f"tinyproxy-{port}.log"
    conf = tmp / f"tinyproxy-{port}.conf"
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        f"Bind {OUTGOING}",
        "Timeout 60",
        f'LogFile "{log}"',
        "LogLevel Connect",
        "MaxClients 50",
        "Allow 127.0.0.1",
        "DisableViaHeader Yes",
    ]
    if user:
        lines.append(f"BasicAuth {user} {password}")
    conf.write_text("\n".join(lines) + "\n")
    with open(tmp / f"tinyproxy-{port}.out", "wb") as out:
        proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc, "tinyproxy")
        yield Running(port, log)
    finally:
        _stop(proc)


def self_signed(tmp: Path, name: str = "localhost") -> tuple[bytes, bytes]:
    """A self-signed certificate (its own CA) for C{name} and 127.0.0.1: C{(certificate PEM, key PEM)}."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (tmp / "ca.pem").write_bytes(cert_pem)
    return cert_pem, key_pem
