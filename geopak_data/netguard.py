"""The download guard: only http(s), and never private, loopback or link-local addresses.

Why: a crawl fetches URLs that third parties wrote (metadata files, API responses, redirect
``Location`` headers). Without a guard such a URL can point the crawler at the machine's own
services or a cloud metadata endpoint (``http://169.254.169.254/``). The contract refuses
those unless ``--allow-private-hosts`` is given (tests, local mirrors).

Two checks work together:

* ``Guard.check_url`` runs before every request and every redirect hop: scheme, host present,
  and IP-literal hosts (aiohttp does not consult a resolver for those).
* ``GuardedResolver`` is the resolver the aiohttp connector uses for host names, so the
  address that is checked is the address that is connected to (no DNS-rebinding gap).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

ALLOWED_SCHEMES = ("http", "https")


class Blocked(OSError):
    """A URL or address the guard refuses; ``reason`` is a stable reject code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def is_public_address(ip: str) -> bool:
    """True for a globally routable unicast address (not private, loopback, link-local,
    multicast, reserved or unspecified; IPv4-mapped IPv6 is judged by its IPv4 address)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or not addr.is_global
    )


def _ip_literal(host: str) -> str | None:
    h = host.strip("[]")
    try:
        ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return None
    return h


class Guard:
    """Decides whether a URL may be fetched.

    ``allow_private`` lifts the address check (never the scheme check). ``allow_hosts`` names
    individual hosts (exact host strings) exempt from the address check, e.g. one local mirror.
    """

    def __init__(self, allow_private: bool = False, allow_hosts: tuple[str, ...] | list[str] = ()):
        self.allow_private = allow_private
        self.allow_hosts = {h.lower().strip("[]") for h in allow_hosts}

    def host_exempt(self, host: str) -> bool:
        return self.allow_private or host.lower().strip("[]") in self.allow_hosts

    def check_url(self, url: str) -> None:
        """Raise ``Blocked`` (bad_scheme, bad_url, blocked_private_address) or return."""
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise Blocked("bad_url", f"unparsable URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise Blocked("bad_scheme", f"scheme {scheme or '(none)'!r} is not http/https")
        host = parts.hostname
        if not host:
            raise Blocked("bad_url", "URL has no host")
        if self.host_exempt(host):
            return
        ip = _ip_literal(host)
        if ip is not None and not is_public_address(ip):
            raise Blocked(
                "blocked_private_address", f"{ip} is a private/loopback/link-local address"
            )
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            raise Blocked("blocked_private_address", f"{host} is a loopback name")

    def check_addresses(self, host: str, addresses: list[str]) -> None:
        if self.host_exempt(host):
            return
        bad = [a for a in addresses if not is_public_address(a)]
        if bad:
            raise Blocked(
                "blocked_private_address", f"{host} resolves to non-public address {bad[0]}"
            )


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses host names resolving to non-public addresses."""

    def __init__(self, guard: Guard, inner: AbstractResolver | None = None):
        self.guard = guard
        self.inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        self.guard.check_addresses(host, [r["host"] for r in results])
        return results

    async def close(self) -> None:
        await self.inner.close()
