"""Who may use the management API: keys, loopback, remote bans, bcrypt off the reactor, hashing the key on disk."""

from __future__ import annotations

import os

import bcrypt
import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from cliproxyd.config import ConfigError, load_config
from cliproxyd.config.edit import ConfigFile
from cliproxyd.management.access import (
    BAN_SECONDS,
    MAX_FAILURES,
    ManagementAccess,
    Refused,
    ensure_hashed,
    hash_secret,
)

LOOPBACK = IPv4Address("TCP", "127.0.0.1", 50000)
REMOTE = IPv4Address("TCP", "203.0.113.7", 50000)
OTHER_REMOTE = IPv4Address("TCP", "198.51.100.9", 50000)
RIGHT = "right-key"
# Cost 4 keeps the tests fast; the daemon's own hashes use the default cost.
HASH_2B = bcrypt.hashpw(RIGHT.encode(), bcrypt.gensalt(4)).decode()
HASH_2A = "$2a$" + HASH_2B[4:]
HASH_2Y = "$2y$" + HASH_2B[4:]
OK = "ok"


class Threads:
    """A run_in_thread that runs each job at once (or, held, when told) and counts them."""

    def __init__(self, hold: bool = False):
        self.hold = hold
        self.calls = []
        self.waiting = []

    def __call__(self, f, *args):
        self.calls.append(f.__name__)
        if not self.hold:
            return maybeDeferred(f, *args)
        d = Deferred()
        self.waiting.append((d, f, args))
        return d

    def drain(self):
        while self.waiting:
            batch, self.waiting = self.waiting, []
            for d, f, args in batch:
                maybeDeferred(f, *args).chainDeferred(d)


def make(secret=HASH_2B, allow_remote=True, threads=None, clock=None):
    clock = clock or Clock()
    threads = threads if threads is not None else Threads()
    return ManagementAccess(secret, allow_remote, clock, run_in_thread=threads), clock, threads


def request(client=LOOPBACK, key=None, header=b"authorization", raw=None):
    r = DummyRequest([b""])
    r.client = client  # DummyRequest's own client argument is not kept
    if raw is not None:
        r.requestHeaders.setRawHeaders(header, [raw])
    elif key is not None:
        value = key.encode() if isinstance(key, str) else key
        r.requestHeaders.setRawHeaders(header, [b"Bearer " + value if header == b"authorization" else value])
    return r


def pending(access, req) -> Deferred:
    d = access.check(req)
    assert isinstance(d, Deferred)
    return d


def settled(d):
    results = []
    d.addBoth(results.append)
    assert results, "the check has not finished"
    return results[0]


def outcome(access, req):
    """OK, or (status, message) of the refusal; a check still running is an error."""
    try:
        d = access.check(req)
    except Refused as e:
        return e.status, e.message
    if d is None:
        return OK
    return _as_outcome(settled(d))


def _as_outcome(result):
    if isinstance(result, Failure):
        result.trap(Refused)
        return result.value.status, result.value.message
    assert result is None
    return OK


MISSING = (401, "missing management key")
INVALID = (401, "invalid management key")
NO_REMOTE = (403, "remote management disabled")


def banned(minutes):
    return 403, f"IP banned due to too many failed attempts. Try again in {minutes} minute{'s' * (minutes != 1)}"


# -- on or off, key forms --------------------------------------------------------------


def test_no_secret_means_every_request_is_404():
    access, _, threads = make(secret="")
    assert not access.enabled
    for client in (LOOPBACK, REMOTE):
        assert outcome(access, request(client, RIGHT)) == (404, "not found")
    assert threads.calls == []


@pytest.mark.parametrize("secret", [RIGHT, HASH_2B], ids=["plaintext", "bcrypt"])
def test_loopback_needs_the_key_too(secret):
    access, _, _ = make(secret=secret)
    assert access.enabled
    assert outcome(access, request()) == MISSING
    assert outcome(access, request(key="wrong")) == INVALID
    assert outcome(access, request(key=RIGHT)) == OK


@pytest.mark.parametrize("secret", [RIGHT, HASH_2B], ids=["plaintext", "bcrypt"])
def test_the_key_forms(secret):
    access, _, _ = make(secret=secret)
    assert outcome(access, request(key=RIGHT)) == OK
    assert outcome(access, request(raw=b"bearer " + RIGHT.encode())) == OK
    assert outcome(access, request(key=RIGHT, header=b"x-management-key")) == OK
    assert outcome(access, request(raw=RIGHT.encode())) == OK  # a non-Bearer Authorization is the key itself
    assert outcome(access, request(raw=b"Basic " + RIGHT.encode())) == INVALID
    assert outcome(access, request(raw=b"Bearer ")) == MISSING


def test_a_plaintext_secret_is_a_prefix_of_nothing():
    access, _, threads = make(secret=RIGHT)
    assert outcome(access, request(key=RIGHT[:-1])) == INVALID
    assert outcome(access, request(key=RIGHT + "x")) == INVALID
    assert threads.calls == []  # plaintext needs no thread


@pytest.mark.parametrize("secret", [HASH_2A, HASH_2B, HASH_2Y], ids=["2a", "2b", "2y"])
def test_every_bcrypt_prefix_is_accepted(secret):
    access, _, _ = make(secret=secret)
    assert outcome(access, request(key="wrong")) == INVALID
    assert outcome(access, request(key=RIGHT)) == OK


def test_a_malformed_hash_is_refused_at_once():
    with pytest.raises(ValueError, match="starts like a bcrypt hash"):
        make(secret="$2a$10$tooshort")


def test_a_key_longer_than_bcrypt_reads_is_wrong_without_a_bcrypt_run():
    long_secret = "k" * 72
    access, _, threads = make(secret=bcrypt.hashpw(long_secret.encode(), bcrypt.gensalt(4)).decode())
    assert outcome(access, request(key=long_secret + "extra")) == INVALID
    assert threads.calls == []
    assert outcome(access, request(key=long_secret)) == OK


# -- remote clients and bans ---------------------------------------------------------


def test_a_remote_client_without_allow_remote_is_refused_even_with_the_right_key():
    access, _, threads = make(allow_remote=False)
    assert outcome(access, request(REMOTE, RIGHT)) == NO_REMOTE
    assert outcome(access, request(REMOTE)) == NO_REMOTE
    assert outcome(access, request(LOOPBACK, RIGHT)) == OK
    assert threads.calls == ["_checkpw"]  # only the loopback request's key was checked


@pytest.mark.parametrize("client", [
    IPv6Address("TCP", "::1", 1), IPv6Address("TCP", "::ffff:127.0.0.1", 1), IPv4Address("TCP", "127.0.0.2", 1),
], ids=["::1", "v4-mapped", "127.0.0.2"])
def test_loopback_in_any_spelling_is_local(client):
    access, _, _ = make(allow_remote=False)
    assert outcome(access, request(client, RIGHT)) == OK


@pytest.mark.parametrize("client", [UNIXAddress(None), UNIXAddress(b""), UNIXAddress(b"/run/cliproxyd.sock")],
                         ids=["unnamed", "empty", "named"])
def test_a_unix_socket_client_is_local(client):
    """The socket's permissions decide who may connect: only this machine's processes, as with loopback."""
    access, _, _ = make(allow_remote=False)
    assert outcome(access, request(client, RIGHT)) == OK


def test_wrong_keys_on_the_unix_socket_ban_no_one():
    """
    Every unix socket client has one address: were they banned as remote
    clients are, five wrong keys from any local process would lock the
    operator out.
    """
    access, _, _ = make(allow_remote=True)
    for _ in range(MAX_FAILURES * 3):
        assert outcome(access, request(UNIXAddress(None), "wrong")) == INVALID
        assert outcome(access, request(UNIXAddress(None))) == MISSING
    assert outcome(access, request(UNIXAddress(None), RIGHT)) == OK
    assert outcome(access, request(LOOPBACK, RIGHT)) == OK


def test_a_client_with_no_address_is_not_local():
    """An address of a kind the daemon does not listen on is no evidence of a local client."""
    access, _, _ = make(allow_remote=False)
    assert outcome(access, request(object(), RIGHT)) == NO_REMOTE


def test_five_failures_ban_a_remote_address_for_thirty_minutes_even_with_the_right_key():
    access, clock, _ = make()
    for _ in range(4):
        assert outcome(access, request(REMOTE, "wrong")) == INVALID
    assert outcome(access, request(REMOTE)) == MISSING  # a missing key is a failure too
    try:
        access.check(request(REMOTE, RIGHT))
    except Refused as e:
        assert (e.status, e.message, e.retry_after) == (*banned(30), 1800)
    else:
        raise AssertionError("not banned")
    assert outcome(access, request(OTHER_REMOTE, RIGHT)) == OK  # only that address
    assert outcome(access, request(LOOPBACK, RIGHT)) == OK
    clock.advance(BAN_SECONDS - 61)
    assert outcome(access, request(REMOTE, RIGHT)) == banned(2)
    clock.advance(60)
    assert outcome(access, request(REMOTE, RIGHT)) == banned(1)
    clock.advance(1)
    assert outcome(access, request(REMOTE, RIGHT)) == OK


def test_the_ban_ends_with_a_fresh_count():
    access, clock, _ = make()
    for _ in range(5):
        outcome(access, request(REMOTE, "wrong"))
    clock.advance(BAN_SECONDS)
    for _ in range(4):
        assert outcome(access, request(REMOTE, "wrong")) == INVALID
    assert outcome(access, request(REMOTE, "wrong")) == INVALID
    assert outcome(access, request(REMOTE, RIGHT)) == banned(30)


def test_a_success_resets_the_count():
    access, _, _ = make()
    for _ in range(4):
        outcome(access, request(REMOTE, "wrong"))
    assert outcome(access, request(REMOTE, RIGHT)) == OK
    for _ in range(4):
        assert outcome(access, request(REMOTE, "wrong")) == INVALID
    assert outcome(access, request(REMOTE, RIGHT)) == OK


def test_loopback_is_never_banned():
    access, _, _ = make(allow_remote=False)
    for _ in range(20):
        assert outcome(access, request(LOOPBACK, "wrong")) == INVALID
    assert outcome(access, request(LOOPBACK, RIGHT)) == OK


def test_failures_of_an_address_idle_for_two_hours_are_forgotten():
    access, clock, _ = make()
    for _ in range(3):
        outcome(access, request(REMOTE, "wrong"))
    clock.advance(2 * 3600 + 1)
    for _ in range(4):
        assert outcome(access, request(REMOTE, "wrong")) == INVALID
    # Without the purge 3 + 2 would have banned it.
    assert outcome(access, request(REMOTE, "wrong")) == INVALID
    assert outcome(access, request(REMOTE, "wrong")) == banned(30)
    assert len(access._attempts) == 1


# -- bcrypt off the reactor, and the cache ---------------------------------------------


def test_bcrypt_runs_in_the_thread_and_a_good_key_is_remembered():
    threads = Threads(hold=True)
    access, _, _ = make(threads=threads)
    d = pending(access, request(key=RIGHT))
    assert threads.calls == ["_checkpw"] and not d.called
    threads.drain()
    assert _as_outcome(settled(d)) == OK
    assert access.check(request(key=RIGHT)) is None  # known at once: no thread
    assert access.check(request(REMOTE, RIGHT, header=b"x-management-key")) is None
    assert threads.calls == ["_checkpw"]


def test_a_wrong_key_is_never_remembered():
    threads = Threads(hold=True)
    access, _, _ = make(threads=threads)
    for _ in range(2):
        d = pending(access, request(key="wrong"))
        threads.drain()
        assert _as_outcome(settled(d)) == INVALID
    d = pending(access, request(key=RIGHT))
    threads.drain()
    assert _as_outcome(settled(d)) == OK
    d = pending(access, request(key="wrong"))
    threads.drain()
    assert _as_outcome(settled(d)) == INVALID
    assert threads.calls == ["_checkpw"] * 4


def test_requests_with_the_same_key_at_once_share_one_bcrypt_run():
    threads = Threads(hold=True)
    access, _, _ = make(threads=threads)
    ds = [pending(access, request(client, RIGHT)) for client in (LOOPBACK, REMOTE, OTHER_REMOTE)]
    threads.drain()
    assert [_as_outcome(settled(d)) for d in ds] == [OK, OK, OK]
    assert threads.calls == ["_checkpw"]


def test_queued_checks_of_an_address_banned_meanwhile_do_not_run_bcrypt():
    threads = Threads(hold=True)
    access, _, _ = make(threads=threads)
    ds = [pending(access, request(REMOTE, f"wrong-{i}")) for i in range(8)]
    assert len(threads.calls) == 2  # at most two at a time
    threads.drain()
    outcomes = [_as_outcome(settled(d)) for d in ds]
    assert outcomes[:5] == [INVALID] * 5
    assert outcomes[5:] == [banned(30)] * 3
    assert len(threads.calls) < 8


def test_a_new_secret_forgets_the_keys_that_matched_the_old_one():
    access, _, threads = make()
    assert outcome(access, request(key=RIGHT)) == OK
    other = bcrypt.hashpw(b"new-key", bcrypt.gensalt(4)).decode()
    access.reconfigure(other, allow_remote=True)
    assert outcome(access, request(key=RIGHT)) == INVALID
    assert outcome(access, request(key="new-key")) == OK
    access.reconfigure("", allow_remote=True)
    assert outcome(access, request(key="new-key")) == (404, "not found")


def test_a_key_checked_while_the_secret_changed_is_judged_by_the_new_one():
    threads = Threads(hold=True)
    access, _, _ = make(threads=threads)
    d = pending(access, request(key=RIGHT))
    access.reconfigure(bcrypt.hashpw(b"new-key", bcrypt.gensalt(4)).decode(), allow_remote=True)
    threads.drain()
    assert _as_outcome(settled(d)) == INVALID
    assert access.check(request(key=RIGHT)) is not None  # and it was not remembered


def test_a_verification_that_breaks_is_a_500_and_not_a_failed_attempt():
    access = ManagementAccess(HASH_2B, True, Clock(), run_in_thread=lambda f, *a: fail(RuntimeError("no threads")))
    with capturedLogs() as events:
        for _ in range(6):
            assert outcome(access, request(REMOTE, RIGHT)) == (500, "could not verify the management key")
    assert [e["log_format"] for e in events if "log_failure" in e] == ["could not verify a management key"] * 6


@pytest_twisted.ensureDeferred
async def test_bcrypt_in_a_real_thread(reactor):
    access = ManagementAccess(HASH_2B, False, reactor)
    assert await access.check(request(key=RIGHT)) is None
    with pytest.raises(Refused) as info:
        await access.check(request(key="wrong"))
    assert info.value.status == 401


# -- the secret in config.yaml ----------------------------------------------------------


CONFIG = b"""\
# Management.
remote-management:
  # Only from this host.
  allow-remote: false
  secret-key: "%s"   # rotate yearly

# Clients.
api-keys:
  - sk-a
"""


def sync(f, *args):
    return maybeDeferred(f, *args)


def test_hash_secret_makes_a_bcrypt_hash_of_the_key():
    hashed = hash_secret("s3cret")
    assert hashed.startswith("$2b$12$")
    assert bcrypt.checkpw(b"s3cret", hashed.encode())
    with pytest.raises(ValueError, match="at most 72 bytes"):
        hash_secret("k" * 73)


def test_a_plaintext_key_in_the_file_is_replaced_by_its_hash_and_comments_survive(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(CONFIG % b"plain-key")
    os.chmod(path, 0o640)
    config, _ = load_config(str(path))
    cf = ConfigFile(str(path), sync)
    hashed = settled(ensure_hashed(cf, config.remote_management.secret_key))
    assert hashed.startswith("$2b$")
    # Every comment stays; the one after the longer value moves out of its way.
    written = CONFIG.replace(b'"   #', b'" #') % hashed.encode()
    assert path.read_bytes() == written
    assert os.stat(path).st_mode & 0o777 == 0o640
    access, _, _ = make(secret=hashed)
    assert outcome(access, request(key="plain-key")) == OK

    # The next start finds the hash and leaves the file alone.
    config, _ = load_config(str(path))
    assert config.remote_management.secret_key == hashed
    inode = os.stat(path).st_ino
    assert settled(ensure_hashed(cf, config.remote_management.secret_key)) == hashed
    assert os.stat(path).st_ino == inode
    assert path.read_bytes() == written


@pytest.mark.parametrize("secret", ["", HASH_2A], ids=["none", "hash"])
def test_no_key_or_a_hash_is_left_alone(tmp_path, secret):
    path = tmp_path / "config.yaml"
    path.write_bytes(CONFIG % secret.encode())
    threads = Threads(hold=True)
    assert settled(ensure_hashed(ConfigFile(str(path), threads), secret)) == secret
    assert threads.calls == []
    assert path.read_bytes() == CONFIG % secret.encode()


def test_a_key_changed_in_the_file_since_it_was_loaded_is_not_overwritten(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(CONFIG % b"newer-key")
    hashed = settled(ensure_hashed(ConfigFile(str(path), sync), "plain-key"))
    assert bcrypt.checkpw(b"plain-key", hashed.encode())
    assert path.read_bytes() == CONFIG % b"newer-key"


def test_a_key_too_long_for_bcrypt_is_a_config_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(CONFIG % (b"k" * 80))
    result = settled(ensure_hashed(ConfigFile(str(path), sync), "k" * 80))
    assert isinstance(result, Failure) and result.check(ConfigError)
    assert str(result.value).startswith(f"{path}: remote-management.secret-key: is longer than the 72 bytes")
    assert path.read_bytes() == CONFIG % (b"k" * 80)
