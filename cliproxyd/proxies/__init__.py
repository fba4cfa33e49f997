"""
Outbound proxy settings: what a C{proxy-url} (config) or C{proxy_url} (auth
file) says, and which proxy the environment names for an origin.

A setting is one of three things, as in CLIProxyAPI: I{inherit} (empty: the
next level decides, and at the bottom the environment), I{direct} (C{direct}
or C{none}: no proxy at all, the environment ignored) or a proxy URL
(C{http://}, C{https://}, C{socks5://}, C{socks5h://}, with an optional
C{user:password@}, percent-decoded). The password never appears in C{repr},
C{str} or an error message: L{ProxyURL.redacted} shows it as C{***}.

Parsing is done once, at config load; the endpoints that speak to a proxy
are in L{cliproxyd.proxies.endpoints}, the handshakes (no I/O) in
L{cliproxyd.proxies.handshake}.
"""

from __future__ import annotations

import ipaddress
from typing import Mapping
from urllib.parse import unquote, urlsplit

from attrs import field, frozen

#: Proxy schemes and their default ports.
SCHEMES = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}

#: The values that mean "no proxy, whatever the environment says".
DIRECT_WORDS = ("direct", "none")


class ProxyURLError(ValueError):
    """A proxy URL that cannot be used; the message never holds its password."""


@frozen
class ProxyURL:
    """One proxy: where it is, how to speak to it, and who to be there."""

    scheme: str  # http, https, socks5 or socks5h
    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def is_socks(self) -> bool:
        return self.scheme in ("socks5", "socks5h")

    @property
    def remote_dns(self) -> bool:
        """Whether the proxy resolves the upstream's name (socks5h, and HTTP CONNECT always)."""
        return self.scheme != "socks5"

    def redacted(self) -> str:
        """The URL as logs and errors show it: the password as C{***}."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = ""
        if self.username or self.password:
            user = f"{self.username}:***@" if self.password else f"{self.username}@"
        return f"{self.scheme}://{user}{host}:{self.port}"

    def __str__(self) -> str:
        return self.redacted()


@frozen
class ProxySetting:
    """
    A C{proxy-url} value: L{INHERIT}, L{DIRECT}, or a L{ProxyURL}.

    @ivar mode: C{inherit}, C{direct} or C{proxy}.
    """

    mode: str = "inherit"
    proxy: ProxyURL | None = None

    @property
    def inherits(self) -> bool:
        return self.mode == "inherit"

    def over(self, fallback: "ProxySetting") -> "ProxySetting":
        """This setting, unless it inherits: then C{fallback}."""
        return fallback if self.inherits else self

    def describe(self) -> str:
        """What logs say: C{direct}, C{environment} or the redacted URL."""
        if self.proxy is not None:
            return self.proxy.redacted()
        return "direct" if self.mode == "direct" else "environment"


INHERIT = ProxySetting()
DIRECT = ProxySetting("direct")


def parse_proxy_url(text: str, schemes: Mapping[str, int] = SCHEMES) -> ProxyURL:
    """
    The proxy a URL names.

    @raise ProxyURLError: an unknown scheme, no host, a bad port, or a user
        name or password over 255 bytes (SOCKS5's limit); the message shows
        no password.
    """
    text = text.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ProxyURLError("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if not scheme or "://" not in text:
        raise ProxyURLError("must be a URL such as http://host:3128 or socks5://host:1080, or direct")
    if scheme not in schemes:
        raise ProxyURLError(f"unsupported proxy scheme {scheme!r}; use http, https, socks5 or socks5h (or direct)")
    host = parts.hostname or ""
    if not host:
        raise ProxyURLError(f"a {scheme}:// proxy URL needs a host")
    try:
        port = parts.port
    except ValueError:
        netloc = parts.netloc.rpartition("@")[2]
        raise ProxyURLError(f"bad port in {scheme}://{netloc}; use a number from 1 to 65535") from None
    if port == 0:
        raise ProxyURLError(f"bad port 0 in {scheme}://{host}; use a number from 1 to 65535")
    username = unquote(parts.username or "")
    password = unquote(parts.password or "")
    for what, value in (("user name", username), ("password", password)):
        if len(value.encode("utf-8")) > 255:
            raise ProxyURLError(f"the proxy {what} is longer than 255 bytes")
    return ProxyURL(scheme, host, port or schemes[scheme], username, password)


def parse_proxy_setting(text: str) -> ProxySetting:
    """A C{proxy-url} value: empty inherits, C{direct}/C{none} go direct, else a proxy URL (L{parse_proxy_url})."""
    text = text.strip()
    if not text:
        return INHERIT
    if text.lower() in DIRECT_WORDS:
        return DIRECT
    return ProxySetting("proxy", parse_proxy_url(text))


# -- the environment, as Go's net/http reads it -------------------------------------------


def _getenv(environ: Mapping[str, str], name: str) -> str:
    """Go's getEnvAny: the upper-case name first, then the lower-case one; the first set wins."""
    for key in (name, name.lower()):
        value = environ.get(key)
        if value:
            return value
    return ""


@frozen
class _NoProxyRule:
    host: str = ""  # a domain, with a leading "." (see matches)
    exact_too: bool = False  # "foo.com" matches foo.com itself as well as its subdomains
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: str = ""

    def matches(self, host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, port: str) -> bool:
        if self.port and self.port != port:
            return False
        if self.network is not None:
            return ip is not None and ip.version == self.network.version and ip in self.network
        return host.endswith(self.host) or (self.exact_too and host == self.host[1:])


def _no_proxy_rules(value: str) -> tuple[bool, tuple[_NoProxyRule, ...]]:
    """C{NO_PROXY} as Go reads it: C{(everything, rules)}."""
    rules = []
    for item in value.split(","):
        item = item.strip().lower()
        if not item:
            continue
        if item == "*":
            return True, ()
        try:
            rules.append(_NoProxyRule(network=ipaddress.ip_network(item, strict=False)))
            continue
        except ValueError:
            pass
        host, port = item, ""
        if item.startswith("["):
            inner, sep, rest = item[1:].partition("]")
            if sep and rest.startswith(":"):
                host, port = inner, rest[1:]
            elif sep and not rest:
                host = inner
        elif item.count(":") == 1:
            host, port = item.split(":")
        if not host:
            continue
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            bits = 32 if address.version == 4 else 128
            rules.append(_NoProxyRule(network=ipaddress.ip_network(f"{address}/{bits}"), port=port))
            continue
        if host.startswith("*."):
            host = host[1:]
        exact_too = not host.startswith(".")
        rules.append(_NoProxyRule(host=host if not exact_too else "." + host, exact_too=exact_too, port=port))
    return False, tuple(rules)


def _env_proxy(value: str, name: str) -> ProxyURL | None:
    """An environment proxy value; as in Go, a bare C{host:port} means C{http://host:port}."""
    value = value.strip()
    if not value:
        return None
    try:
        return parse_proxy_url(value if "://" in value else "http://" + value)
    except ProxyURLError as e:
        raise ProxyURLError(f"{name}: {e}") from None


@frozen
class EnvironmentProxies:
    """
    The proxies the environment names, read once at start-up, as Go's
    net/http reads them (CLIProxyAPI's rule when no C{proxy-url} applies):
    C{HTTPS_PROXY} for C{https://} upstreams, C{HTTP_PROXY} for C{http://}
    ones (each upper-case first, then lower-case), C{NO_PROXY} for the
    exceptions. C{localhost} and loopback addresses always go direct.
    C{ALL_PROXY} is not read (Go does not read it either).
    """

    https: ProxyURL | None = None
    http: ProxyURL | None = None
    no_proxy_all: bool = False
    no_proxy: tuple[_NoProxyRule, ...] = ()
    #: CGI: with REQUEST_METHOD set, HTTP_PROXY is a client's header, never trusted (Go's rule)
    cgi: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "EnvironmentProxies":
        """@raise ProxyURLError: a proxy variable that is not a usable proxy URL (named in the message)."""
        everything, rules = _no_proxy_rules(_getenv(environ, "NO_PROXY"))
        cgi = bool(environ.get("REQUEST_METHOD"))
        return cls(
            https=_env_proxy(_getenv(environ, "HTTPS_PROXY"), "HTTPS_PROXY"),
            http=None if cgi else _env_proxy(_getenv(environ, "HTTP_PROXY"), "HTTP_PROXY"),
            no_proxy_all=everything,
            no_proxy=rules,
            cgi=cgi,
        )

    @property
    def empty(self) -> bool:
        return self.https is None and self.http is None

    def proxy_for(self, scheme: str, host: str, port: int) -> ProxyURL | None:
        """The proxy for an upstream origin, or None to go direct."""
        proxy = self.https if scheme == "https" else self.http if scheme == "http" else None
        if proxy is None or self.no_proxy_all:
            return None
        host = host.lower().strip("[]")
        if host == "localhost":
            return None
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and ip.is_loopback:
            return None
        if any(rule.matches(host, ip, str(port)) for rule in self.no_proxy):
            return None
        return proxy
