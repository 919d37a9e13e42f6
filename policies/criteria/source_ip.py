"""``source_ip``: the client's address (as the hub trusts it: forwarded-for headers are
believed only from configured proxies, invariant 6) is in one of these networks. A bare
address is a /32 (or /128). A request without a known address never matches.

    when:
      source_ip: [203.0.113.0/24, "2001:db8::/32"]
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from policies.criteria.base import CompileContext, Criterion, CriterionValueError, string_list
from policies.model import AccessRequest, Subject

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=4096)
def parse_address(value: str) -> Address | None:
    try:
        address = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:203.0.113.7 is 203.0.113.7
    return address


class SourceIp(Criterion):
    __slots__ = ("networks",)
    key = "source_ip"
    code = "source_ip_not_allowed"

    def __init__(self, networks: tuple[Network, ...]) -> None:
        self.networks = networks

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        if request.source_ip is None:
            return False
        address = parse_address(request.source_ip)
        if address is None:
            return False
        return any(address in network for network in self.networks)

    def describe(self) -> str:
        return f"source address in {', '.join(str(n) for n in self.networks)}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        return f"source address is {request.source_ip or 'unknown'}"


def compile(value: Any, ctx: CompileContext) -> SourceIp:
    networks: list[Network] = []
    for i, item in enumerate(string_list(value, what="address or CIDR")):
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            field = str(i) if isinstance(value, list) else ""
            raise CriterionValueError(f"{item!r} is not an IP network: {exc}", field) from None
    return SourceIp(tuple(networks))
