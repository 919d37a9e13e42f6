"""No personal data in the logs: pysaml2 writes whole documents when it refuses one."""

from __future__ import annotations

import logging

import pytest

from connectors.saml._pysaml2 import MAX_LOG_CHARS, NoMessageContents
from federation.errors import IsthmusError
from tests.connectors.test_saml import connection, connector, consume, login, login_and_respond
from tests.fakes.saml_idp import FakeSamlIdP, SamlKeyPair, SamlUser
from tests.saml.corpus import BY_NAME, Solicitation

NAME_ID = "nameid-7f3a9c"
EMAIL = "jane.secret@acme.test"
VICTIM = "ceo@acme.test"
PERSONAL = (NAME_ID, EMAIL, VICTIM, "Jane Secret", "payroll", "<saml", "<ns0:", "<?xml")


@pytest.fixture
def idp() -> FakeSamlIdP:
    user = SamlUser(NAME_ID, email=EMAIL, name="Jane Secret", groups=("payroll",))
    return FakeSamlIdP(users=[user], sign_response=False)


@pytest.mark.parametrize(
    "variant",
    ["tampered_after_signing", "another_key", "signature_removed", "wrong_audience"],
)
async def test_a_refused_response_leaves_no_personal_data_in_the_log(
    idp: FakeSamlIdP, caplog: pytest.LogCaptureFixture, variant: str
) -> None:
    sp = connector(connection(idp))
    caplog.set_level(logging.DEBUG)
    if variant == "wrong_audience":
        xml, flow_state = await login_and_respond(idp, sp, audience="https://other-sp.test")
    else:
        redirect = await login(sp)
        flow_state = redirect.flow_state
        s = Solicitation(
            idp=idp,
            acs_url=sp.endpoints.acs_url,
            sp_entity_id=sp.endpoints.entity_id,
            in_response_to=flow_state["request_id"],
            user=NAME_ID,
            victim_email=VICTIM,
            other_key=SamlKeyPair.generate(),
        )
        xml = BY_NAME[variant].build(s)
    assert b"Jane Secret" in xml and b"payroll" in xml

    with pytest.raises(IsthmusError) as refused:
        await consume(sp, xml, flow_state)

    assert refused.value.detail  # the hub's own reason stays (logged by the web layer)
    saml2_records = [r for r in caplog.records if r.name.startswith("saml2")]
    assert saml2_records, "pysaml2 logged nothing: the test proves nothing"
    assert all(r.levelno >= logging.WARNING for r in saml2_records)
    for record in caplog.records:
        text = record.getMessage()
        assert not any(p in text for p in PERSONAL), (record.name, text)
        assert record.exc_info is None or not record.name.startswith("saml2")
    assert not any(p in caplog.text for p in PERSONAL)


def _record(message: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("saml2.response", level, __file__, 1, message, args, None)


def test_the_filter_keeps_the_first_line_before_any_markup_and_caps_it() -> None:
    keep = NoMessageContents()
    record = _record(
        "Failed to verify signature on '%s'", f"<saml:Assertion>{EMAIL}</saml:Assertion>"
    )
    assert keep.filter(record) and record.getMessage() == "Failed to verify signature on"
    record = _record("first line\nsecond " + EMAIL)
    assert keep.filter(record) and record.getMessage() == "first line"
    record = _record("x" * 1000)
    assert keep.filter(record) and len(record.getMessage()) <= MAX_LOG_CHARS + 3
    assert not keep.filter(_record("%s", EMAIL, level=logging.INFO))
    assert not keep.filter(_record("%s", EMAIL, level=logging.DEBUG))
