"""The one mailer (federation/mail.py) through a real SMTP server: what people typed
(company and partner names in subjects, addresses) never adds a header or a recipient."""

from __future__ import annotations

import pytest

from federation.errors import UpstreamError
from federation.mail import SmtpMailer, one_line
from federation.settings import SmtpSettings
from tests.peers.smtp import SmtpSink


def mailer(sink: SmtpSink) -> SmtpMailer:
    return SmtpMailer(SmtpSettings(host=sink.host, port=sink.port, from_address="hub@corp.test"))


async def test_a_subject_with_line_breaks_is_one_line_and_adds_no_header(
    smtp_sink: SmtpSink,
) -> None:
    subject = "Access request from Acme\r\nBcc: eve@evil.test\u2028X-Evil: 1\x00"
    await mailer(smtp_sink).send("carl@corp.test", subject, "body\nwith lines\n")
    [message] = smtp_sink.messages
    assert message["Subject"] == "Access request from Acme Bcc: eve@evil.test X-Evil: 1"
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert message["To"] == "carl@corp.test"
    assert message.get_content().splitlines() == ["body", "with lines"]


@pytest.mark.parametrize(
    "to",
    [
        "eve@evil.test,carl@corp.test",
        "eve@evil.test, carl@corp.test",
        "Eve <eve@evil.test>",
        "carl@corp.test\r\nBcc: eve@evil.test",
        "carl",
    ],
)
async def test_a_recipient_that_is_not_one_address_gets_nothing(
    smtp_sink: SmtpSink, to: str
) -> None:
    with pytest.raises(UpstreamError, match="not one plain address"):
        await mailer(smtp_sink).send(to, "Your sign-in code: 123456", "123456")
    assert smtp_sink.messages == []


def test_one_line_keeps_ordinary_text_and_caps_its_length() -> None:
    assert one_line("Müller & Söhne GmbH") == "Müller & Söhne GmbH"
    assert one_line("a\n\n\tb  c") == "a b c"
    assert len(one_line("x" * 500)) == 200
