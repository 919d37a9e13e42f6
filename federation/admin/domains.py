"""Domain-ownership proofs: a DNS TXT record that only the domain's owner can publish.

A partner claiming ``acme.example`` gets a random token (:func:`new_token`, kept in
``PartnerSettings.pending_domains``) and publishes it as a TXT record::

    _isthmus-challenge.acme.example.  IN  TXT  "isthmus-domain-verification=<token>"

:func:`check_domain` looks the record up (the resolver of :class:`DnsSettings`: the
host's own when no nameservers are configured) and tells whether one of the TXT records
at that name holds exactly the expected value; only then may the domain move to
``PartnerSettings.domains``, which routes logins. Other TXT records at the name are
ignored, so several claimants (or a re-issued token) can coexist while the owner cleans
up. A TXT record made of several strings (values over 255 bytes must be split) is read as
their concatenation (RFC 7208 §3.3 does the same for SPF).

DNS failures never raise: the :class:`DomainCheck` carries ``verified=False`` and a
sentence an admin can act on (no record, a wrong value, NXDOMAIN, a timeout, servers that
refused). Nothing here imports starlette.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.resolver

from federation.settings import DnsSettings

CHALLENGE_LABEL = "_isthmus-challenge"
VALUE_PREFIX = "isthmus-domain-verification="
TOKEN_BYTES = 24  # 32 URL-safe characters, 192 bits


def challenge_name(domain: str) -> str:
    """The name of the TXT record proving ``domain``: ``_isthmus-challenge.<domain>``."""
    return f"{CHALLENGE_LABEL}.{domain.strip().rstrip('.').lower()}"


def challenge_value(token: str) -> str:
    """The TXT record's value: ``isthmus-domain-verification=<token>``."""
    return f"{VALUE_PREFIX}{token}"


def new_token() -> str:
    """A fresh random token (32 URL-safe characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class DomainCheck:
    """The outcome of one lookup. ``problem`` is None exactly when ``verified``."""

    domain: str
    record_name: str
    expected: str
    verified: bool
    found: tuple[str, ...]
    problem: str | None


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(repr(value) for value in values)


def _txt_text(rdata: dns.rdtypes.ANY.TXT.TXT) -> str:
    """One TXT record's value: its strings joined (a value over 255 bytes is split)."""
    return b"".join(rdata.strings).decode("utf-8", errors="replace")


def _matches(found: Sequence[str], expected: str) -> bool:
    wanted = expected.encode()
    matched = False
    for value in found:  # every value compared, in constant time each
        matched |= hmac.compare_digest(value.strip().encode(), wanted)
    return matched


def _address(server: str, port: int) -> str:
    """``127.0.0.1:5353`` from dnspython's ``Do53:127.0.0.1@5353`` (or a URL, as is)."""
    host = server.removeprefix("Do53:").partition("@")[0]
    if "/" in host:
        return server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _server_errors(error: dns.resolver.NoNameservers) -> str:
    """``127.0.0.1:5353 answered REFUSED; ...`` from dnspython's error trace."""
    texts: list[str] = []
    for server, _tcp, port, problem, _response in error.kwargs.get("errors", []):
        if isinstance(problem, OSError) and problem.strerror:
            what = problem.strerror.lower()
        elif isinstance(problem, str):
            what = f"answered {problem}"
        else:
            what = str(problem) or type(problem).__name__
        text = f"{_address(str(server), port)} {what}"
        if text not in texts:
            texts.append(text)
    return "; ".join(texts) or "no server to ask"


def _resolver(settings: DnsSettings) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=not settings.nameservers)
    if settings.nameservers:
        resolver.nameservers = list(settings.nameservers)
    resolver.port = settings.port
    resolver.timeout = settings.timeout_seconds  # one server, one attempt
    resolver.lifetime = settings.timeout_seconds  # the whole lookup
    resolver.cache = None  # a re-check after the owner fixed the record must see it
    return resolver


async def _domain_exists(
    resolver: dns.asyncresolver.Resolver, domain: dns.name.Name
) -> bool | None:
    """True/False when DNS says whether ``domain`` exists; None when it could not tell."""
    try:
        await resolver.resolve(domain, dns.rdatatype.SOA, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return False
    except dns.exception.DNSException:
        return None
    return True


async def _lookup(
    domain: str, record_name: str, expected: str, settings: DnsSettings
) -> tuple[tuple[str, ...], str | None]:
    """The TXT values at ``record_name`` and the problem (None when one matches)."""
    wait = _seconds(settings.timeout_seconds)
    try:
        resolver = _resolver(settings)
    except dns.resolver.NoResolverConfiguration:
        return (), "no DNS resolver is configured on this host (set dns.nameservers)"
    except ValueError as error:
        return (), f"the configured DNS nameservers are not usable: {error}"
    try:
        qname = dns.name.from_text(record_name)
    except dns.exception.DNSException as error:
        return (), f"{record_name} is not a valid DNS name: {error}"
    try:
        answer = await resolver.resolve(qname, dns.rdatatype.TXT, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        exists = await _domain_exists(resolver, qname.parent())
        if exists is False:
            return (), f"the domain {domain} does not exist (NXDOMAIN)"
        return (), f"no TXT record at {record_name}"
    except dns.exception.Timeout:
        return (), f"DNS did not answer within {wait}"
    except dns.resolver.NoNameservers as error:
        return (), f"no DNS server gave an answer for {record_name}: {_server_errors(error)}"
    except dns.exception.DNSException as error:
        return (), f"the DNS lookup of {record_name} failed: {error}"
    if answer.rrset is None:
        return (), f"no TXT record at {record_name}"
    found = tuple(
        _txt_text(rdata) for rdata in answer.rrset if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
    )
    if not found:
        return (), f"no TXT record at {record_name}"
    if _matches(found, expected):
        return found, None
    if len(found) == 1:
        return found, f"the TXT record at {record_name} holds {found[0]!r}, expected {expected!r}"
    return found, (
        f"none of the {len(found)} TXT records at {record_name} holds {expected!r} "
        f"(found {_quoted(found)})"
    )


async def check_domain(domain: str, token: str, dns: DnsSettings) -> DomainCheck:
    """Look up ``_isthmus-challenge.<domain>`` and compare its TXT records with the value
    of ``token``. Never raises for DNS failures: they are the check's ``problem``."""
    record_name = challenge_name(domain)
    expected = challenge_value(token)
    # dnspython's lifetime bounds the lookup; this bounds the whole (lookup and, on
    # NXDOMAIN, the parent's) against anything left waiting.
    try:
        async with asyncio.timeout(2 * dns.timeout_seconds + 1):
            found, problem = await _lookup(domain, record_name, expected, dns)
    except TimeoutError:
        found, problem = (), f"DNS did not answer within {_seconds(dns.timeout_seconds)}"
    return DomainCheck(
        domain=domain,
        record_name=record_name,
        expected=expected,
        verified=problem is None,
        found=found,
        problem=problem,
    )
