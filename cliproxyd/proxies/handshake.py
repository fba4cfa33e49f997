"""
The two proxy handshakes, without I/O: SOCKS5 (RFC 1928, with RFC 1929
user/password) and HTTP C{CONNECT} (RFC 9110 9.3.6).

Each is a small state machine: L{Handshake.start} gives the first bytes to
send, L{Handshake.feed} takes what the proxy sent (in pieces of any size)
and gives what to send next. When L{Handshake.done} is true the tunnel is
open and L{Handshake.rest} holds the bytes that came after the proxy's last
reply (they belong to the upstream). Any refusal raises L{ProxyError},
whose message says what the proxy said.
"""

from __future__ import annotations

import base64
import ipaddress

from twisted.internet.error import ConnectError

from cliproxyd.proxies import ProxyURL


class ProxyError(ConnectError):
    """
    The proxy did not open the tunnel (it refused, failed, timed out or
    spoke nonsense). It is a C{ConnectError}: no connection to the upstream
    was made, so the credential cools as for an upstream that is down.
    """

    def __init__(self, proxy: ProxyURL, problem: str) -> None:
        super().__init__(string=problem)
        self.proxy = proxy
        self.problem = problem

    def __str__(self) -> str:
        return f"proxy {self.proxy.redacted()}: {self.problem}"


#: RFC 1928's reply codes.
SOCKS5_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}

#: The longest CONNECT answer head we read before calling it nonsense.
MAX_CONNECT_HEAD = 16 * 1024


class Handshake:
    """What both handshakes share: a buffer, the state, the bytes left over."""

    def __init__(self, proxy: ProxyURL, host: str, port: int) -> None:
        self.proxy = proxy
        self.host = host
        self.port = port
        self.done = False
        self.rest = b""
        self._buffer = bytearray()

    def start(self) -> bytes:
        raise NotImplementedError

    def feed(self, data: bytes) -> bytes:
        """Take the proxy's bytes; return what to send it next (maybe nothing)."""
        if self.done:
            raise RuntimeError("the handshake is over")
        self._buffer += data
        return self._step()

    def _step(self) -> bytes:
        raise NotImplementedError

    def error(self, problem: str) -> ProxyError:
        return ProxyError(self.proxy, problem)

    def _take(self, n: int) -> bytes | None:
        """The next C{n} bytes, if they are all here."""
        if len(self._buffer) < n:
            return None
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def _finish(self) -> bytes:
        self.done = True
        self.rest = bytes(self._buffer)
        self._buffer.clear()
        return b""


def ascii_host(host: str) -> bytes:
    """A host name as it goes on the wire: ASCII as is, anything else IDNA-encoded."""
    try:
        return host.encode("ascii")
    except UnicodeEncodeError:
        return host.encode("idna")


def _address(host: str) -> bytes:
    """SOCKS5's DST.ADDR: an IPv4 or IPv6 address, or a domain name the proxy resolves."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        name = ascii_host(host)
        if not 0 < len(name) < 256:
            raise ValueError(f"host name {host!r} cannot be sent over SOCKS5") from None
        return b"\x03" + bytes([len(name)]) + name
    return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed


class Socks5Handshake(Handshake):
    """
    SOCKS5 C{CONNECT} to C{host:port}. C{host} is sent as given: the caller
    resolves it first for C{socks5://} and passes the name for C{socks5h://}.
    """

    def __init__(self, proxy: ProxyURL, host: str, port: int) -> None:
        super().__init__(proxy, host, port)
        self._state = "method"
        self._auth = bool(proxy.username or proxy.password)

    def start(self) -> bytes:
        # No authentication, and user/password when we have them.
        return b"\x05\x02\x00\x02" if self._auth else b"\x05\x01\x00"

    def _request(self) -> bytes:
        self._state = "reply"
        try:
            address = _address(self.host)
        except ValueError as e:
            raise self.error(str(e)) from None
        return b"\x05\x01\x00" + address + self.port.to_bytes(2, "big")

    def _step(self) -> bytes:
        out = b""
        while not self.done:
            if self._state == "method":
                reply = self._take(2)
                if reply is None:
                    return out
                if reply[0] != 5:
                    raise self.error("not a SOCKS5 proxy (bad version in its greeting reply)")
                if reply[1] == 0:
                    out += self._request()
                elif reply[1] == 2 and self._auth:
                    user = self.proxy.username.encode("utf-8")
                    password = self.proxy.password.encode("utf-8")
                    out += b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password
                    self._state = "auth"
                elif reply[1] == 0xFF:
                    raise self.error(
                        "no acceptable authentication method (the proxy wants a user name and password)"
                        if not self._auth else "no acceptable authentication method")
                else:
                    raise self.error(f"chose authentication method {reply[1]}, which was not offered")
            elif self._state == "auth":
                reply = self._take(2)
                if reply is None:
                    return out
                if reply[0] != 1:
                    raise self.error("bad version in its user/password reply")
                if reply[1] != 0:
                    raise self.error("authentication failed (user name or password refused)")
                out += self._request()
            else:
                if len(self._buffer) < 5:
                    return out
                if self._buffer[0] != 5:
                    raise self.error("bad version in its CONNECT reply")
                code, atyp = self._buffer[1], self._buffer[3]
                if code != 0:
                    what = SOCKS5_REPLIES.get(code, f"unknown reply code {code}")
                    raise self.error(f"CONNECT to {self.host}:{self.port} failed: {what}")
                size = {1: 4, 4: 16, 3: 1 + self._buffer[4]}.get(atyp)
                if size is None:
                    raise self.error(f"bad address type {atyp} in its CONNECT reply")
                if self._take(4 + size + 2) is None:
                    return out
                self._finish()
        return out


class ConnectHandshake(Handshake):
    """HTTP C{CONNECT host:port}, with C{Proxy-Authorization: Basic} when the URL has a user."""

    def start(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        target = ascii_host(host) + b":%d" % self.port
        lines = [b"CONNECT " + target + b" HTTP/1.1", b"Host: " + target]
        if self.proxy.username or self.proxy.password:
            token = f"{self.proxy.username}:{self.proxy.password}".encode("utf-8")
            lines.append(b"Proxy-Authorization: Basic " + base64.b64encode(token))
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _step(self) -> bytes:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_CONNECT_HEAD:
                raise self.error(f"its CONNECT answer has no end of headers in {MAX_CONNECT_HEAD} bytes")
            return b""
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[:end + 4]
        status_line = head.split("\r\n", 1)[0]
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise self.error(f"not an HTTP proxy (its answer to CONNECT begins {status_line[:60]!r})")
        status = int(parts[1])
        reason = parts[2].strip() if len(parts) > 2 else ""
        said = f"{status} {reason}".strip()
        if 200 <= status < 300:
            return self._finish()
        if status in (401, 407):
            # 407 is the standard answer; some proxies (tinyproxy) answer 401 to a wrong password.
            problem = (f"authentication failed ({said})" if self.proxy.username or self.proxy.password
                       else f"wants a user name and password ({said})")
            raise self.error(problem)
        if status == 403:
            raise self.error(f"refused to CONNECT to {self.host}:{self.port} ({said})")
        raise self.error(f"answered CONNECT to {self.host}:{self.port} with {said}")
