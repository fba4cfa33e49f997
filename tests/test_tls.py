"""
tls.enable / tls.cert / tls.key: the daemon listens with TLS, and a missing,
unreadable or mismatched certificate or key stops start-up with an error
naming the YAML path.
"""

from __future__ import annotations

import datetime
import ipaddress
import json

import pytest
import pytest_twisted
import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.internet.testing import MemoryReactorClock
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseNeverReceived,
)

from cliproxyd.config import ConfigError, parse_config
from cliproxyd.tap import Options, makeService, tls_options
from tests.conftest import unused_port


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(subject_key, subject, issuer_key, issuer, ca, sans=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def chained(directory):
    """
    A root CA, an intermediate it signed, and a localhost certificate the
    intermediate signed: the certificate file holds the leaf then the
    intermediate (a full chain); returns (root PEM, cert file, key file).
    """
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _issue(root_key, "test root", root_key, "test root", ca=True)
    mid = _issue(mid_key, "test intermediate", root_key, "test root", ca=True)
    leaf = _issue(leaf_key, "localhost", mid_key, "test intermediate", ca=False,
                  sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert_path, key_path = directory / "fullchain.pem", directory / "leaf.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + mid.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem_key(leaf_key))
    return root.public_bytes(serialization.Encoding.PEM), cert_path, key_path


def self_signed(directory, name="server"):
    """A self-signed certificate for localhost and 127.0.0.1, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(key, "localhost", key, "localhost", ca=True,
                  sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem_key(key))
    return cert_path, key_path


def options(*argv):
    o = Options()
    o.parseOptions(list(argv))
    return o


def write_config(tmp_path, port, cert, key):
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({
        "host": "127.0.0.1", "port": port,
        "tls": {"enable": True, "cert": str(cert), "key": str(key)},
        "openai-compatibility": [{"name": "p", "base-url": "http://127.0.0.1:9/v1",
                                  "api-key-entries": [{"api-key": "k"}], "models": [{"name": "m1"}]}],
    }))
    return str(path)


async def serve_https(reactor, tmp_path, cert, key):
    """makeService with the real reactor, listening with TLS on a free loopback port."""
    port = unused_port()
    service = makeService(options("--config", write_config(tmp_path, port, cert, key), "--watch-interval", "0"),
                          reactor=reactor)
    service.startService()
    return service, port


@pytest_twisted.ensureDeferred
async def test_the_daemon_serves_https_with_the_configured_certificate(reactor, tmp_path):
    cert, key = self_signed(tmp_path)
    service, port = await serve_https(reactor, tmp_path, cert, key)
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        trust = ssl.Certificate.loadPEM(cert.read_bytes())
        client = treq.client.HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust), pool=pool))
        response = await client.get(f"https://localhost:{port}/v1/models", timeout=10)
        assert response.code == 200
        assert [m["id"] for m in json.loads(await response.content())["data"]] == ["m1"]
        # A client that does not trust the certificate gets no answer at all.
        untrusting = treq.client.HTTPClient(Agent(reactor, pool=pool))
        with pytest.raises(ResponseNeverReceived):
            await untrusting.get(f"https://localhost:{port}/healthz", timeout=10)
    finally:
        await service.stopService()
        await pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_a_full_chain_file_sends_its_intermediate_so_clients_trusting_only_the_root_connect(reactor, tmp_path):
    root, cert, key = chained(tmp_path)
    service, port = await serve_https(reactor, tmp_path, cert, key)
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        trust = ssl.Certificate.loadPEM(root)
        client = treq.client.HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust), pool=pool))
        response = await client.get(f"https://localhost:{port}/healthz", timeout=10)
        assert response.code == 200
        await response.content()
    finally:
        await service.stopService()
        await pool.closeCachedConnections()


def test_tls_switched_on_listens_on_an_ssl_endpoint_with_the_files(tmp_path):
    cert, key = self_signed(tmp_path)
    config, _ = parse_config({"host": "127.0.0.1", "port": 8443,
                              "tls": {"enable": True, "cert": str(cert), "key": str(key)}})
    assert config.listen == f"ssl:8443:interface=127.0.0.1:certKey={cert}:privateKey={key}"
    off, _ = parse_config({"tls": {"enable": False, "cert": str(cert), "key": str(key)}})
    assert off.listen.startswith("tcp:")


def test_a_file_name_with_a_colon_is_escaped_in_the_endpoint():
    config, _ = parse_config({"tls": {"enable": True, "cert": "/etc/a:b.crt", "key": "/etc/k.key"}})
    assert r"certKey=/etc/a\:b.crt" in config.listen


@pytest.mark.parametrize("missing", ["cert", "key"])
def test_tls_enabled_without_a_file_names_the_key(missing):
    tls = {"enable": True, "cert": "/c.pem", "key": "/k.pem"}
    del tls[missing]
    with pytest.raises(ConfigError) as info:
        parse_config({"tls": tls}, "config.yaml")
    assert info.value.path == f"tls.{missing}"
    assert "required when tls.enable is true" in str(info.value)


def test_start_up_names_the_tls_key_of_an_unreadable_file(tmp_path):
    cert, key = self_signed(tmp_path)
    path = write_config(tmp_path, 8443, tmp_path / "absent.crt", key)
    with pytest.raises(SystemExit) as info:
        makeService(options("--config", path), reactor=MemoryReactorClock())
    assert f"tls.cert: cannot read {tmp_path / 'absent.crt'}" in str(info.value)
    path = write_config(tmp_path, 8443, cert, tmp_path / "absent.key")
    with pytest.raises(SystemExit) as info:
        makeService(options("--config", path), reactor=MemoryReactorClock())
    assert "tls.key: cannot read" in str(info.value)


def test_start_up_refuses_files_that_are_not_pem_or_do_not_belong_together(tmp_path):
    cert, key = self_signed(tmp_path)
    _, other_key = self_signed(tmp_path, "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [((junk, key), "tls.cert", "holds no PEM certificate"),
             ((cert, junk), "tls.key", "holds no PEM private key"),
             ((cert, other_key), "tls.key", "is not the key of the certificate in tls.cert")]
    for (c, k), where, problem in cases:
        config, _ = parse_config({"tls": {"enable": True, "cert": str(c), "key": str(k)}}, "config.yaml")
        with pytest.raises(ConfigError) as info:
            tls_options("config.yaml", config.tls)
        assert info.value.path == where and problem in info.value.problem
    tls_options("config.yaml", parse_config({"tls": {"enable": True, "cert": str(cert), "key": str(key)}})[0].tls)


def test_the_listen_option_overrides_tls(tmp_path):
    path = write_config(tmp_path, 8443, tmp_path / "absent.crt", tmp_path / "absent.key")
    reactor = MemoryReactorClock()
    service = makeService(options("--config", path, "--listen", "tcp:0:interface=127.0.0.1"), reactor=reactor)
    service.startService()
    assert len(reactor.tcpServers) == 1 and reactor.sslServers == []
    service.stopService()
