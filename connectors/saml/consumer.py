"""The assertion consumer's own checks: what pysaml2 verifies is not enough on its own.

Specs: SAML 2.0 Core §3.2.2 (Response: Destination, InResponseTo, Issuer), §2.5.1
(Conditions: NotBefore, NotOnOrAfter, AudienceRestriction — every restriction must be
met), §2.4.1.2 (SubjectConfirmationData); SAML 2.0 Profiles §4.1.4.2-§4.1.4.3 (Web SSO
<Response> usage: a bearer SubjectConfirmation with Recipient = the ACS URL, NotOnOrAfter
and, when solicited, InResponseTo; one-time use of bearer assertions).

pysaml2 7.5.5 on its defaults (measured, see ARCHITECTURE.md): keeps no assertion-id cache,
checks Recipient only with ``conv_info``, accepts a missing Destination, a missing
AudienceRestriction or a missing NotOnOrAfter, and yields ``assertion=None`` for a wrong
Destination. Each is checked here on pysaml2's *verified* objects — never on the raw XML.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass
from typing import Any

from federation.errors import InvalidState, InvalidUpstreamResponse

BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"


@dataclass(frozen=True, slots=True)
class Expected:
    """What this response must say, from the connection and the login flow."""

    acs_url: str
    sp_entity_id: str
    idp_entity_id: str
    request_id: str | None  # None: unsolicited (IdP-initiated), allowed by the caller
    skew: float
    now: float  # wall-clock seconds
    want_assertions_signed: bool


@dataclass(frozen=True, slots=True)
class Checked:
    """The one verified assertion and until when it may be replayed (for the cache TTL)."""

    assertion: Any
    not_on_or_after: float


def check_response(response: Any, assertion: Any, expected: Expected) -> Checked:
    """``response`` is pysaml2's samlp.Response, ``assertion`` its verified (decrypted)
    assertion. Raises InvalidUpstreamResponse / InvalidState with the reason."""
    _check_destination(response, expected)
    _check_in_response_to(getattr(response, "in_response_to", None), expected, "Response")
    _check_issuer(response.issuer, expected, "Response", required=False)
    _check_issuer(assertion.issuer, expected, "Assertion", required=True)
    _check_signed(response, assertion, expected)
    conditions_end = _check_conditions(assertion.conditions, expected)
    confirmation_end = _check_subject_confirmation(assertion.subject, expected)
    return Checked(assertion, min(conditions_end, confirmation_end))


def _check_destination(response: Any, expected: Expected) -> None:
    destination = getattr(response, "destination", None)
    if not destination:
        raise InvalidUpstreamResponse("response has no Destination")
    if destination != expected.acs_url:
        raise InvalidUpstreamResponse(f"Destination {destination!r} is not our ACS URL")


def _check_in_response_to(value: str | None, expected: Expected, where: str) -> None:
    if expected.request_id is None:
        if value:
            raise InvalidState(f"unsolicited {where} carries InResponseTo {value!r}")
        return
    if not value:
        raise InvalidState(f"{where} has no InResponseTo for our AuthnRequest")
    if not hmac.compare_digest(value.encode(), expected.request_id.encode()):
        raise InvalidState(f"{where} InResponseTo {value!r} is not our AuthnRequest")


def _check_issuer(issuer: Any, expected: Expected, where: str, *, required: bool) -> None:
    text = (getattr(issuer, "text", None) or "").strip() if issuer is not None else ""
    if not text:
        if required:
            raise InvalidUpstreamResponse(f"{where} has no Issuer")
        return
    if text != expected.idp_entity_id:
        raise InvalidUpstreamResponse(f"{where} Issuer {text!r} is not the IdP's entityID")
    issuer_format = getattr(issuer, "format", None)
    if issuer_format and issuer_format != "urn:oasis:names:tc:SAML:2.0:nameid-format:entity":
        raise InvalidUpstreamResponse(f"{where} Issuer has format {issuer_format!r}")


def _check_signed(response: Any, assertion: Any, expected: Expected) -> None:
    # pysaml2 has verified every signature present; here: the right ones are present.
    if assertion.signature is not None:
        return
    if expected.want_assertions_signed:
        raise InvalidUpstreamResponse("assertion is not signed (want_assertions_signed)")
    if response.signature is None:
        raise InvalidUpstreamResponse("neither the response nor the assertion is signed")


def _check_conditions(conditions: Any, expected: Expected) -> float:
    if conditions is None:
        raise InvalidUpstreamResponse("assertion has no Conditions")
    not_before = _instant(conditions.not_before, "Conditions NotBefore")
    not_after = _instant(conditions.not_on_or_after, "Conditions NotOnOrAfter")
    if expected.now + expected.skew < not_before:
        raise InvalidUpstreamResponse("assertion is not yet valid (NotBefore)")
    if expected.now - expected.skew >= not_after:
        raise InvalidUpstreamResponse("assertion has expired (NotOnOrAfter)")
    restrictions = conditions.audience_restriction or []
    if not restrictions:
        raise InvalidUpstreamResponse("assertion has no AudienceRestriction")
    for restriction in restrictions:  # Core §2.5.1.4: every restriction must be met
        audiences = {(a.text or "").strip() for a in restriction.audience or []}
        if expected.sp_entity_id not in audiences:
            raise InvalidUpstreamResponse(f"audience {sorted(audiences)!r} is not our entityID")
    return not_after


def _check_subject_confirmation(subject: Any, expected: Expected) -> float:
    if subject is None:
        raise InvalidUpstreamResponse("assertion has no Subject")
    reasons: list[str] = []
    for confirmation in subject.subject_confirmation or []:
        if confirmation.method != BEARER:
            reasons.append(f"method {confirmation.method!r}")
            continue
        try:
            return _check_confirmation_data(confirmation.subject_confirmation_data, expected)
        except InvalidState:
            raise
        except InvalidUpstreamResponse as exc:
            reasons.append(exc.detail)
    raise InvalidUpstreamResponse(
        "no valid bearer SubjectConfirmation: " + ("; ".join(reasons) or "none present")
    )


def _check_confirmation_data(data: Any, expected: Expected) -> float:
    if data is None:
        raise InvalidUpstreamResponse("SubjectConfirmationData missing")
    if data.recipient != expected.acs_url:
        raise InvalidUpstreamResponse(f"Recipient {data.recipient!r} is not our ACS URL")
    not_after = _instant(data.not_on_or_after, "SubjectConfirmationData NotOnOrAfter")
    if expected.now - expected.skew >= not_after:
        raise InvalidUpstreamResponse("SubjectConfirmationData has expired (NotOnOrAfter)")
    if data.not_before and expected.now + expected.skew < _instant(data.not_before, "NotBefore"):
        raise InvalidUpstreamResponse("SubjectConfirmationData is not yet valid")
    _check_in_response_to(data.in_response_to, expected, "SubjectConfirmationData")
    return not_after


def _instant(value: str | None, what: str) -> float:
    """An xs:dateTime in UTC (Core §1.3.3) as epoch seconds."""
    if not value:
        raise InvalidUpstreamResponse(f"{what} is missing")
    return parse_instant(value, what)


def parse_instant(value: str, what: str) -> float:
    text = value.strip()
    if not text.endswith("Z"):
        raise InvalidUpstreamResponse(f"{what} {value!r} is not a UTC time")
    text = text[:-1]
    if "." in text:  # xs:dateTime allows any number of fraction digits; Python takes 6
        head, fraction = text.split(".", 1)
        text = f"{head}.{(fraction + '000000')[:6]}"
    try:
        moment = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    except ValueError:
        raise InvalidUpstreamResponse(f"{what} {value!r} is not a dateTime") from None
    return moment.timestamp()
