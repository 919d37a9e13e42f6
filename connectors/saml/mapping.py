"""NameID and attributes of a verified assertion → the hub's FederatedIdentity.

Specs: SAML 2.0 Core §2.2.3 (NameID and its Format), §2.7.2 (AuthnStatement:
AuthnInstant, SessionIndex, AuthnContextClassRef), §2.7.3.1 (Attribute: Name, NameFormat,
FriendlyName); SAML V2.0 X.500/LDAP Attribute Profile (``urn:oid:`` names).

Attribute names in :class:`~federation.settings.SamlAttributeMapping` match an attribute's
Name (a URI, an OID as ``urn:oid:…``, or a bare name) or its FriendlyName; the first one
present wins. Several values become tuples for groups and roles; an attribute present with
no value is simply empty. SAML has no AMR: ``amr`` stays empty and ``acr`` carries the
AuthnContextClassRef, only when the connection trusts it. The email domain is *not*
checked here: the broker binds identities to partners (invariant 1).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from connectors.saml.consumer import parse_instant
from federation.errors import InvalidUpstreamResponse
from federation.identity import FederatedIdentity
from federation.settings import SamlConnectionSettings

MAX_SUBJECT_LENGTH = 1024


def attributes_of(assertion: Any) -> dict[str, list[str]]:
    """Every attribute by Name, with its string values (untyped values are dropped)."""
    found: dict[str, list[str]] = {}
    for statement in assertion.attribute_statement or []:
        for attribute in statement.attribute or []:
            values = [
                v.text.strip()
                for v in attribute.attribute_value or []
                if isinstance(v.text, str) and v.text.strip()
            ]
            found.setdefault(attribute.name, []).extend(values)
            if attribute.friendly_name and attribute.friendly_name != attribute.name:
                found.setdefault(f"friendly:{attribute.friendly_name}", []).extend(values)
    return found


def _values(attributes: Mapping[str, list[str]], names: tuple[str, ...]) -> list[str] | None:
    for name in names:
        for key in (name, f"friendly:{name}"):
            if key in attributes:
                return attributes[key]
    return None


def _first(attributes: Mapping[str, list[str]], names: tuple[str, ...]) -> str | None:
    values = _values(attributes, names)
    return values[0] if values else None


def identity_from(
    assertion: Any,
    name_id: Any,
    *,
    partner_id: str,
    settings: SamlConnectionSettings,
    idp_entity_id: str,
) -> FederatedIdentity:
    """The identity of a verified assertion (``name_id``: pysaml2's decrypted NameID)."""
    attributes = attributes_of(assertion)
    mapping = settings.attributes
    name_id_text = (getattr(name_id, "text", None) or "").strip() or None
    subject = _first(attributes, mapping.subject) if mapping.subject else name_id_text
    if not subject or len(subject) > MAX_SUBJECT_LENGTH:
        where = f"attribute {mapping.subject!r}" if mapping.subject else "NameID"
        raise InvalidUpstreamResponse(f"no usable subject in {where}")
    statement = (assertion.authn_statement or [None])[0]
    class_ref = _class_ref(statement)
    email = _first(attributes, mapping.email) if settings.email_verified else None
    raw: dict[str, Any] = {
        "name_id": name_id_text,
        "name_id_format": getattr(name_id, "format", None),
        "name_id_name_qualifier": getattr(name_id, "name_qualifier", None),
        "name_id_sp_name_qualifier": getattr(name_id, "sp_name_qualifier", None),
        "session_index": getattr(statement, "session_index", None),
        "assertion_id": assertion.id,
        "authn_context_class_ref": class_ref,
        "attributes": {k: v for k, v in attributes.items() if not k.startswith("friendly:")},
    }
    return FederatedIdentity(
        partner_id=partner_id,
        connection_id=settings.id,
        issuer=idp_entity_id,
        subject=subject,
        email=email,
        email_verified=email is not None,
        name=_first(attributes, mapping.name),
        groups=tuple(_values(attributes, mapping.groups) or ()),
        roles=tuple(_values(attributes, mapping.roles) or ()),
        acr=class_ref if settings.trust_acr else None,
        amr=(),
        auth_time=_auth_time(statement),
        raw_claims=raw,
    )


def _class_ref(statement: Any) -> str | None:
    context = getattr(statement, "authn_context", None)
    ref = getattr(context, "authn_context_class_ref", None)
    text = getattr(ref, "text", None)
    return text.strip() if isinstance(text, str) and text.strip() else None


def _auth_time(statement: Any) -> int | None:
    instant = getattr(statement, "authn_instant", None)
    if not instant:
        return None
    return int(parse_instant(instant, "AuthnInstant"))


def utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
