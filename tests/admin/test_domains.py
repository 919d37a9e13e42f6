"""Domain-ownership proofs (federation.admin.domains) against a real DNS server (dnsmasq)."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from federation.admin.domains import (
    DomainCheck,
    challenge_name,
    challenge_value,
    check_domain,
    new_token,
)
from federation.settings import DnsSettings, PendingDomain
from tests.peers.dns import DnsServer, dnsmasq_binary, txt_query, txt_values

DOMAIN = "acme.example"
RECORD = "_isthmus-challenge.acme.example"
TOKEN = "tok_0123456789abcdefABCDEF-xyz"
EXPECTED = f"isthmus-domain-verification={TOKEN}"


# --- the scheme (no DNS) ----------------------------------------------------------------


def test_challenge_name() -> None:
    assert challenge_name("acme.example") == RECORD
    assert challenge_name("Acme.Example.") == RECORD


def test_challenge_value() -> None:
    assert challenge_value(TOKEN) == EXPECTED


def test_new_token_is_random_urlsafe_and_fits_a_pending_domain() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert len(token) == 32
        assert token.replace("-", "").replace("_", "").isalnum()
    pending = PendingDomain(name=DOMAIN, token=new_token(), requested_at=datetime.now(UTC))
    assert pending.token


def test_domain_check_is_frozen() -> None:
    check = DomainCheck(DOMAIN, RECORD, EXPECTED, True, (EXPECTED,), None)
    with pytest.raises(AttributeError):
        check.verified = False  # type: ignore[misc]


# --- against dnsmasq ----------------------------------------------------------------------


@pytest.mark.integration
async def test_verified(dns_server: DnsServer) -> None:
    dns_server.set_records({RECORD: [EXPECTED]})
    check = await check_domain(DOMAIN, TOKEN, dns_server.settings())
    assert check == DomainCheck(
        domain=DOMAIN,
        record_name=RECORD,
        expected=EXPECTED,
        verified=True,
        found=(EXPECTED,),
        problem=None,
    )


@pytest.mark.integration
async def test_no_record_on_an_existing_domain(dns_server: DnsServer) -> None:
    dns_server.set_records({DOMAIN: ["v=spf1 -all"]})  # the domain exists, the proof not
    check = await check_domain(DOMAIN, TOKEN, dns_server.settings())
    assert not check.verified
    assert check.found == ()
    assert check.problem == f"no TXT record at {RECORD}"


@pytest.mark.integration
async def test_name_without_txt_data(dns_server: DnsServer) -> None:
    # Only a record below the challenge name: it exists (NOERROR) but holds no TXT.
    dns_server.set_records({f"deeper.{RECORD}": ["x"]})
    check = await check_domain(DOMAIN, TOKEN, dns_server.settings())
    assert not check.verified
    assert check.problem == f"no TXT record at {RECORD}"


@pytest.mark.integration
async def test_wrong_token(dns_server: DnsServer) -> None:
    dns_server.set_records({RECORD: [challenge_value("an-older-token-0123456789")]})
    check = await check_domain(DOMAIN, TOKEN, dns_server.settings())
    assert not check.verified
    assert check.found == ("isthmus-domain-verification=an-older-token-0123456789",)
    assert check.problem == (
        f"the TXT record at {RECORD} holds "
        "'isthmus-domain-verification=an-older-token-0123456789', "
        f"expected {EXPECTED!r}"
    )


@pytest.mark.integration
async def test_several_wrong_values_are_all_named(dns_server: DnsServer) -> None:
    dns_server.set_records({RECORD: ["one", "two"]})
    check = await check_domain(DOMAIN, TOKEN, dns_server.settings())
    assert not check.verified
    assert sorted(check.found) == ["one", "two"]
    assert check.problem is not None
    assert check.problem.startswith(f"none of the 2 TXT records at {RECORD} holds {EXPECTED!r}")
    assert "'one'" in check.problem and "'two'" in check.problem


@pytest.mark.integration
async def test_record_among_several_txt_values(dns_server: DnsServer) -> None:
    others = ["google-site-verification=abc", challenge_value("someone-elses-token-000"), "x y"]
    dns_server.set_records({RECORD: [*others[:2], EXPECTED, others[2]]})
    check = await check_domain(DOMAIN, TOKEN, dns_server.settings())
    assert check.verified
    assert check.problem is None
    assert sorted(check.found) == sorted([*others, EXPECTED])


@pytest.mark.integration
async def test_multi_string_txt_record_is_joined(dns_server: DnsServer) -> None:
    # One TXT record of three strings, as some DNS consoles publish it.
    parts = (EXPECTED[:10], EXPECTED[10:20], EXPECTED[20:])
    dns_server.set_records({RECORD: [parts]})
    response = txt_query(dns_server.port or 0, RECORD)
    assert [len(rdata.strings) for rrset in response.answer for rdata in rrset] == [3]
    check = await check_domain(DOMAIN, TOKEN, dns_server.settings())
    assert check.verified
    assert check.found == (EXPECTED,)


@pytest.mark.integration
async def test_value_longer_than_255_bytes_split_into_strings(dns_server: DnsServer) -> None:
    token = "L" * 128  # the longest token a PendingDomain accepts
    long_value = challenge_value(token) + "-" + "p" * 200  # not the expected value
    dns_server.set_records({RECORD: [challenge_value(token), long_value]})
    response = txt_query(dns_server.port or 0, RECORD)
    lengths = sorted(
        tuple(len(s) for s in rdata.strings) for rrset in response.answer for rdata in rrset
    )
    assert lengths == [(156,), (255, 102)]  # dnsmasq split the long one
    check = await check_domain(DOMAIN, token, dns_server.settings())
    assert check.verified
    assert long_value in check.found  # joined back whole


@pytest.mark.integration
async def test_nonexistent_domain_is_nxdomain(dns_server: DnsServer) -> None:
    dns_server.set_records({"_isthmus-challenge.other.example": [EXPECTED]})
    check = await check_domain("nowhere.example", TOKEN, dns_server.settings())
    assert not check.verified
    assert check.found == ()
    assert check.problem == "the domain nowhere.example does not exist (NXDOMAIN)"


@pytest.mark.integration
async def test_server_refusing_unknown_names(tmp_path: Path) -> None:
    # dnsmasq's own default without upstreams (--no-resolv): unknown names are REFUSED.
    server = DnsServer(dnsmasq_binary(), tmp_path / "dnsmasq", refuse_unknown=True)
    try:
        server.start({})
        check = await check_domain(DOMAIN, TOKEN, server.settings())
    finally:
        server.stop()
    assert not check.verified
    assert check.problem == (
        f"no DNS server gave an answer for {RECORD}: 127.0.0.1:{server.port} answered REFUSED"
    )


@pytest.mark.integration
async def test_server_that_never_answers_times_out(silent_dns: DnsSettings) -> None:
    started = time.monotonic()
    check = await check_domain(DOMAIN, TOKEN, silent_dns)
    elapsed = time.monotonic() - started
    assert not check.verified
    assert check.problem == "DNS did not answer within 0.5 s"
    assert 0.4 < elapsed < 1.5


async def test_nothing_listening_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    # Closed: the ICMP "port unreachable" does not reach an unconnected UDP socket.
    settings = DnsSettings(nameservers=("127.0.0.1",), port=port, timeout_seconds=0.5)
    check = await check_domain(DOMAIN, TOKEN, settings)
    assert not check.verified
    assert check.problem == "DNS did not answer within 0.5 s"


@pytest.mark.integration
async def test_set_records_restarts_on_the_same_port(dns_server: DnsServer) -> None:
    port = dns_server.port
    dns_server.set_records({RECORD: ["first"]})
    assert txt_values(txt_query(port or 0, RECORD)) == ["first"]
    dns_server.set_records({RECORD: [EXPECTED]})
    assert dns_server.port == port
    assert txt_values(txt_query(port or 0, RECORD)) == [EXPECTED]
    assert (await check_domain(DOMAIN, TOKEN, dns_server.settings())).verified
    dns_server.set_records({})
    check = await check_domain(DOMAIN, TOKEN, dns_server.settings())
    assert check.problem == f"the domain {DOMAIN} does not exist (NXDOMAIN)"


@pytest.mark.integration
def test_values_are_served_verbatim(dns_server: DnsServer) -> None:
    tricky = 'a, "quoted" # not a comment \\ back'
    dns_server.set_records({"tricky.example": [tricky, ("x,", "y")]})
    assert sorted(txt_values(txt_query(dns_server.port or 0, "tricky.example"))) == sorted(
        [tricky, "x,y"]
    )
