"""The one-time-code connector: codes, their refusals, rate limits and the identity."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.base import CallbackRequest, LoginRequest
from connectors.otp import VERIFIED_EMAIL, CodeRefused, OtpConnector, RateLimited, Sent
from connectors.registry import ConnectorContext
from federation.errors import InvalidState
from federation.settings import OtpConnectionSettings, PartnerKind, PartnerSettings
from federation.stores.memory import MemoryStore

CALLBACK = "https://hub.test/callback/acme-otp"


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Outbox:
    sent: list[tuple[str, str, str]] = field(default_factory=list)

    async def send(self, to: str, subject: str, body: str) -> None:
        self.sent.append((to, subject, body))

    def code(self) -> str:
        match = re.search(r"code is (\d+)", self.sent[-1][2])
        assert match
        return match.group(1)


@dataclass
class Rig:
    connector: OtpConnector
    store: MemoryStore
    outbox: Outbox
    clock: Clock


def make(**options: int | bool) -> Rig:
    clock = Clock()
    connection = OtpConnectionSettings(type="otp", id="acme-otp", **options)
    partner = PartnerSettings(
        id="acme",
        name="Acme",
        kind=PartnerKind.supplier,
        domains=("acme.test",),
        connections=(connection,),
    )
    context = ConnectorContext(hub_base_url="https://hub.test", wall_clock=clock, clock=clock)
    connector = OtpConnector.from_settings(partner, connection, context)
    return Rig(connector, MemoryStore(clock), Outbox(), clock)


async def send(
    rig: Rig, email: str = "Bob@Acme.test", flow: str = "flow-1", ip: str = "1.2.3.4"
) -> Sent:
    return await rig.connector.send_code(rig.store, rig.outbox, flow, email, ip)


async def test_a_mailed_code_proves_the_address_once() -> None:
    rig = make()
    sent = await send(rig)
    assert sent.sent and sent.email == "bob@acme.test"
    assert [to for to, _, _ in rig.outbox.sent] == ["bob@acme.test"]
    code = rig.outbox.code()
    assert len(code) == 6

    assert await rig.connector.verify_code(rig.store, "flow-1", code, "1.2.3.4") == "bob@acme.test"
    with pytest.raises(CodeRefused, match="already used"):
        await rig.connector.verify_code(rig.store, "flow-1", code, "1.2.3.4")


async def test_the_code_is_stored_hashed() -> None:
    rig = make(code_digits=8)
    await send(rig)
    code = rig.outbox.code()
    assert len(code) == 8
    record = await rig.store.get("otp:code:acme-otp:flow-1")
    assert record is not None and code not in str(record)


async def test_an_expired_code_is_refused() -> None:
    rig = make(code_ttl_seconds=120)
    await send(rig)
    rig.clock.now += 121
    with pytest.raises(CodeRefused, match="expired"):
        await rig.connector.verify_code(rig.store, "flow-1", rig.outbox.code(), "1.2.3.4")


async def test_a_code_from_another_flow_is_refused() -> None:
    rig = make()
    await send(rig, flow="flow-1")
    with pytest.raises(CodeRefused):
        await rig.connector.verify_code(rig.store, "flow-2", rig.outbox.code(), "1.2.3.4")


async def test_an_address_outside_the_partner_domains_gets_no_mail() -> None:
    rig = make()
    for email in ("bob@evil.test", "bob@sub.acme.test", "acme.test", "@acme.test"):
        sent = await send(rig, email=email)
        assert not sent.sent
    assert rig.outbox.sent == []
    with pytest.raises(CodeRefused):
        await rig.connector.verify_code(rig.store, "flow-1", "000000", "1.2.3.4")


async def test_wrong_codes_burn_the_code() -> None:
    rig = make(max_wrong_codes=3)
    await send(rig)
    code = rig.outbox.code()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(2):
        with pytest.raises(CodeRefused, match="wrong code"):
            await rig.connector.verify_code(rig.store, "flow-1", wrong, "1.2.3.4")
    with pytest.raises(CodeRefused, match="burnt"):
        await rig.connector.verify_code(rig.store, "flow-1", wrong, "1.2.3.4")
    with pytest.raises(CodeRefused, match="expired or was already used"):
        await rig.connector.verify_code(rig.store, "flow-1", code, "1.2.3.4")


async def test_sends_per_address_are_limited_in_a_window() -> None:
    rig = make(sends_per_address=2, rate_window_seconds=600)
    await send(rig, flow="f1", ip="10.0.0.1")
    await send(rig, email="BOB@acme.test", flow="f2", ip="10.0.0.2")
    with pytest.raises(RateLimited, match="this address"):
        await send(rig, flow="f3", ip="10.0.0.3")
    # A disallowed address is limited the same way: the limit says nothing about it.
    await send(rig, email="x@evil.test", flow="f4", ip="10.0.0.4")
    await send(rig, email="x@evil.test", flow="f5", ip="10.0.0.5")
    with pytest.raises(RateLimited, match="this address"):
        await send(rig, email="x@evil.test", flow="f6", ip="10.0.0.6")
    assert len(rig.outbox.sent) == 2
    rig.clock.now += 601
    assert (await send(rig, flow="f7", ip="10.0.0.7")).sent


async def test_guesses_per_source_ip_are_limited() -> None:
    rig = make(attempts_per_ip=5, max_wrong_codes=10)
    await send(rig, ip="9.9.9.9")
    code = rig.outbox.code()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(4):
        with pytest.raises(CodeRefused):
            await rig.connector.verify_code(rig.store, "flow-1", wrong, "9.9.9.9")
    with pytest.raises(RateLimited, match="network"):  # even the right code, from there
        await rig.connector.verify_code(rig.store, "flow-1", code, "9.9.9.9")
    assert await rig.connector.verify_code(rig.store, "flow-1", code, "8.8.8.8")


async def test_login_url_points_at_the_hub_page() -> None:
    rig = make()
    redirect = await rig.connector.login_url(LoginRequest(CALLBACK, "flow-1", "bob@acme.test"))
    url = urlsplit(redirect.url)
    assert url.netloc == "hub.test" and url.path == "/otp/acme-otp"
    assert parse_qs(url.query) == {"state": ["flow-1"], "email": ["bob@acme.test"]}


async def test_identity_of_a_proven_address() -> None:
    rig = make()
    request = CallbackRequest(CALLBACK, {"state": "flow-1"})
    identity = await rig.connector.handle_callback(request, {VERIFIED_EMAIL: "bob@acme.test"})
    assert identity.issuer == "otp:acme-otp"
    assert identity.email == "bob@acme.test" and identity.email_verified
    assert identity.partner_id == "acme" and identity.connection_id == "acme-otp"
    assert identity.subject == rig.connector.subject_of("BOB@acme.test")
    assert "bob" not in identity.subject and len(identity.subject) == 64


@pytest.mark.parametrize(
    "flow_state",
    [None, {}, {VERIFIED_EMAIL: "bob@evil.test"}, {VERIFIED_EMAIL: 3}],
    ids=["unsolicited", "unverified", "outside", "garbage"],
)
async def test_a_callback_without_a_proven_address_is_refused(
    flow_state: dict[str, object] | None,
) -> None:
    rig = make()
    with pytest.raises(InvalidState):
        await rig.connector.handle_callback(CallbackRequest(CALLBACK, {}), flow_state)


def mailed_link(outbox: Outbox) -> tuple[str, str]:
    """The (flow, token) of the link in the last mail."""
    match = re.search(r"https://hub\.test/otp/acme-otp/link\?\S+", outbox.sent[-1][2])
    assert match
    query = parse_qs(urlsplit(match.group(0)).query)
    return query["state"][0], query["t"][0]


async def test_the_mail_carries_a_single_use_link_stored_hashed() -> None:
    rig = make()
    await send(rig)
    flow, token = mailed_link(rig.outbox)
    assert flow == "flow-1" and len(token) >= 43  # 32 random bytes, urlsafe
    assert rig.outbox.code() in rig.outbox.sent[-1][1]  # the code is in the subject still
    record = await rig.store.get("otp:code:acme-otp:flow-1")
    assert record is not None and token not in str(record)

    assert await rig.connector.verify_link(rig.store, flow, token, "1.2.3.4") == "bob@acme.test"
    with pytest.raises(CodeRefused, match="already used") as refused:
        await rig.connector.verify_link(rig.store, flow, token, "1.2.3.4")
    assert refused.value.reason == "expired_or_used"


async def test_checking_a_link_does_not_use_it() -> None:
    rig = make()
    await send(rig)
    _, token = mailed_link(rig.outbox)
    for _ in range(3):  # a mail scanner, a preview, the person
        assert await rig.connector.check_link(rig.store, "flow-1", token, "1.2.3.4")
    assert await rig.connector.verify_link(rig.store, "flow-1", token, "1.2.3.4")


async def test_using_the_link_spends_the_code_and_the_code_spends_the_link() -> None:
    rig = make()
    await send(rig, flow="f1")
    _, token = mailed_link(rig.outbox)
    code = rig.outbox.code()
    assert await rig.connector.verify_link(rig.store, "f1", token, "1.2.3.4")
    with pytest.raises(CodeRefused, match="already used"):
        await rig.connector.verify_code(rig.store, "f1", code, "1.2.3.4")

    await send(rig, flow="f2")
    _, token = mailed_link(rig.outbox)
    assert await rig.connector.verify_code(rig.store, "f2", rig.outbox.code(), "1.2.3.4")
    with pytest.raises(CodeRefused, match="already used"):
        await rig.connector.check_link(rig.store, "f2", token, "1.2.3.4")


async def test_a_link_expires_with_the_code() -> None:
    rig = make(code_ttl_seconds=120)
    await send(rig)
    _, token = mailed_link(rig.outbox)
    rig.clock.now += 121
    with pytest.raises(CodeRefused, match="expired"):
        await rig.connector.check_link(rig.store, "flow-1", token, "1.2.3.4")


async def test_a_link_belongs_to_its_flow() -> None:
    rig = make()
    await send(rig, flow="flow-1")
    await send(rig, flow="flow-2")
    _, token_of_2 = mailed_link(rig.outbox)
    with pytest.raises(CodeRefused, match="not valid"):
        await rig.connector.verify_link(rig.store, "flow-1", token_of_2, "1.2.3.4")


async def test_wrong_tokens_and_codes_burn_together() -> None:
    rig = make(max_wrong_codes=3)
    await send(rig)
    _, token = mailed_link(rig.outbox)
    code = rig.outbox.code()
    wrong_code = f"{(int(code) + 1) % 1_000_000:06d}"
    reasons = []
    for attempt in (
        rig.connector.check_link(rig.store, "flow-1", "x" * 43, "1.2.3.4"),  # a GET counts too
        rig.connector.verify_code(rig.store, "flow-1", wrong_code, "1.2.3.4"),
        rig.connector.verify_link(rig.store, "flow-1", token[::-1], "1.2.3.4"),
    ):
        with pytest.raises(CodeRefused) as refused:
            await attempt
        reasons.append(refused.value.reason)
        assert refused.value.email == "bob@acme.test"
    assert reasons == ["wrong", "wrong", "burnt"]
    with pytest.raises(CodeRefused, match="already used"):
        await rig.connector.check_link(rig.store, "flow-1", token, "1.2.3.4")
    with pytest.raises(CodeRefused, match="already used"):
        await rig.connector.verify_code(rig.store, "flow-1", code, "1.2.3.4")


async def test_links_count_against_the_source_ip_limit() -> None:
    rig = make(attempts_per_ip=3)
    await send(rig, ip="9.9.9.9")
    _, token = mailed_link(rig.outbox)
    assert await rig.connector.check_link(rig.store, "flow-1", token, "9.9.9.9")
    with pytest.raises(CodeRefused):
        await rig.connector.verify_link(rig.store, "flow-1", "y" * 43, "9.9.9.9")
    with pytest.raises(RateLimited, match="network"):  # even the right link, from there
        await rig.connector.verify_link(rig.store, "flow-1", token, "9.9.9.9")
    assert await rig.connector.verify_link(rig.store, "flow-1", token, "8.8.8.8")


async def test_without_magic_links_the_mail_has_only_the_code() -> None:
    rig = make(magic_link=False)
    await send(rig)
    body = rig.outbox.sent[-1][2]
    assert "http" not in body and "/link" not in body
    with pytest.raises(CodeRefused, match="not valid"):
        await rig.connector.check_link(rig.store, "flow-1", "", "1.2.3.4")
    assert await rig.connector.verify_code(rig.store, "flow-1", rig.outbox.code(), "1.2.3.4")


@pytest.mark.parametrize(
    "email",
    [
        "eve@evil.test,bob@acme.test",  # a header list: the code would go to eve too
        "eve@evil.test, bob@acme.test",
        "eve@evil.test;bob@acme.test",
        "Eve <eve@evil.test>,bob@acme.test",
        '"eve@evil.test"@acme.test',
        "bob@acme.test\r\nBcc: eve@evil.test,x@acme.test",
        "bob\x00@acme.test",
    ],
)
async def test_an_address_list_in_the_partner_domain_gets_no_code(email: str) -> None:
    rig = make()
    sent = await send(rig, email)
    assert not sent.sent
    assert rig.outbox.sent == []
    assert await rig.store.get(rig.connector._code_key("flow-1")) is None
