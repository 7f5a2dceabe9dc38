"""The client's address, as the per-IP rate limit should see it.

The peer of a connection is the client, unless the peer is one of the configured
trusted proxies (`HC_TRUSTED_PROXIES`). Then `X-Forwarded-For` is read from the right:
each trusted proxy appends the address it received the request from, so the first
address from the right that is not itself a trusted proxy is the client. Everything to
its left was written by the client, and anyone can write anything there.

From any other peer the header is ignored: a client that sends `X-Forwarded-For`
itself must not get a fresh per-IP budget with every made-up address (SPEC §4).

The servers' own proxy-header handling is off (uvicorn's trusts loopback by default),
so this is the one place the rule lives, for uvicorn and Granian alike. It is computed
only where an address is used (a refused token), not on every request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN = "unknown"


def _address(text: str) -> _Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddress:
    """`of(scope)`: the client's address, given the trusted proxies."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self.networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted
        )

    def trusts(self, address: _Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def of(self, scope: Any) -> str:
        client = scope.get("client")
        peer = str(client[0]) if client else UNKNOWN
        if not self.networks:
            return peer
        parsed = _address(peer)
        if parsed is None or not self.trusts(parsed):
            return peer
        hops: list[str] = []
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                hops.extend(value.decode("latin-1").split(","))
        # From the right: the nearest hop that is not one of our proxies is the client.
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                # Garbage where a proxy should have written an address: stop trusting
                # the chain here and count the request against the last proxy.
                return peer
            if not self.trusts(address):
                return str(address)
            peer = str(address)
        return peer
