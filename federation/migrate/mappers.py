"""Keycloak's identity-provider mappers as Isthmus claim and attribute mappings.

A user-attribute mapper feeding ``email``, the name, ``groups`` or ``roles`` becomes the
connection's ``claims`` (OIDC, :class:`~federation.settings.ClaimMapping`) or
``attributes`` (SAML, :class:`~federation.settings.SamlAttributeMapping`). Every other
mapper (roles or groups given on a condition, hardcoded values, usernames, other user
attributes) is a "not carried over" line saying what to do instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from federation.migrate.keycloak import Mapper
from federation.migrate.report import Notes

# Keycloak user attributes → the identity fields Isthmus reads from a claim/attribute.
IDENTITY_FIELDS = {
    "email": "email",
    "name": "name",
    "displayName": "name",
    "fullName": "name",
    "groups": "groups",
    "roles": "roles",
}

_ROLE_MAPPERS = frozenset(
    {
        "oidc-role-idp-mapper",
        "oidc-advanced-role-idp-mapper",
        "saml-role-idp-mapper",
        "saml-advanced-role-idp-mapper",
        "keycloak-oidc-role-to-role-idp-mapper",
    }
)


_GROUP_MAPPERS = frozenset({"oidc-advanced-group-idp-mapper", "saml-advanced-group-idp-mapper"})


_HARDCODED = frozenset(
    {
        "hardcoded-attribute-idp-mapper",
        "hardcoded-user-session-attribute-idp-mapper",
        "hardcoded-role-idp-mapper",
        "oidc-hardcoded-group-idp-mapper",
    }
)


_USERNAME_MAPPERS = frozenset({"oidc-username-idp-mapper", "saml-username-idp-mapper"})


def oidc_mappers(mappers: Sequence[Mapper]) -> tuple[dict[str, str], Notes]:
    claims: dict[str, str] = {}
    notes = Notes()
    for mapper in mappers:
        label = f"mapper {mapper.name!r} ({mapper.type})"
        if mapper.type != "oidc-user-attribute-idp-mapper":
            notes.not_carried.append(f"{label}: {_unmapped(mapper)}")
            continue
        source = mapper.config.get("claim", "")
        target = IDENTITY_FIELDS.get(mapper.config.get("user.attribute", ""))
        path = _claim_path(source)
        if target is None:
            notes.not_carried.append(f"{label}: {_not_identity(mapper, 'claim', source)}")
        elif path is None:
            notes.not_carried.append(f"{label}: claim {source!r} cannot be named in Isthmus")
        elif target in claims:
            notes.not_carried.append(f"{label}: {target} already comes from {claims[target]!r}")
        else:
            claims[target] = path
            notes.carried.append(f"{label}: {target} from the claim {path!r}")
    return claims, notes


def saml_mappers(mappers: Sequence[Mapper]) -> tuple[dict[str, list[str]], Notes]:
    attributes: dict[str, list[str]] = {}
    notes = Notes()
    for mapper in mappers:
        label = f"mapper {mapper.name!r} ({mapper.type})"
        if mapper.type != "saml-user-attribute-idp-mapper":
            notes.not_carried.append(f"{label}: {_unmapped(mapper)}")
            continue
        config = mapper.config
        names = [
            n for n in (config.get("attribute.name"), config.get("attribute.friendly.name")) if n
        ]
        target = IDENTITY_FIELDS.get(mapper.config.get("user.attribute", ""))
        if target is None:
            shown = names[0] if names else "?"
            notes.not_carried.append(f"{label}: {_not_identity(mapper, 'attribute', shown)}")
        elif not names:
            notes.not_carried.append(f"{label}: names no SAML attribute")
        elif target in attributes:
            notes.not_carried.append(f"{label}: {target} already comes from {attributes[target]}")
        else:
            attributes[target] = names
            notes.carried.append(f"{label}: {target} from the attribute {' or '.join(names)}")
    return attributes, notes


def _unmapped(mapper: Mapper) -> str:
    config = mapper.config
    if mapper.type in _ROLE_MAPPERS:
        return (
            f"gives the Keycloak role {config.get('role', '?')!r} on a condition: Isthmus "
            "assigns no roles; have the IdP send roles (claims.roles) or write a policy rule "
            "on the claim"
        )
    if mapper.type in _GROUP_MAPPERS:
        return (
            f"puts users in the Keycloak group {config.get('group', '?')!r} on a condition: "
            "write a policy rule on the claim instead"
        )
    if mapper.type in _HARDCODED:
        return (
            "sets a fixed value for every user of this IdP: in Isthmus a policy rule on the "
            "partner or the connection does the same"
        )
    if mapper.type in _USERNAME_MAPPERS:
        return "usernames: Isthmus keys identities on (issuer, subject), not on a username"
    return "this mapper type is not carried over"


def _not_identity(mapper: Mapper, what: str, source: str) -> str:
    attribute = mapper.config.get("user.attribute", "?")
    if attribute in ("firstName", "lastName"):
        return (
            f"user attribute {attribute}: Isthmus reads one full name (claims.name / "
            "attributes.name)"
        )
    if attribute in ("username", "email_verified", "emailVerified"):
        return f"user attribute {attribute}: not an identity field in Isthmus"
    return (
        f"user attribute {attribute!r}: Isthmus keeps email, name, groups and roles; the "
        f"raw {what} {source!r} stays available to policies (claim criterion)"
    )


def _claim_path(source: str) -> str | None:
    """Keycloak's claim name (``a.b`` nested, ``a\\.b`` a literal dot) as Isthmus's (exact
    name first, else a dotted path): a name mixing both cannot be expressed."""
    if not source:
        return None
    if "\\." not in source:
        return source
    literal = source.replace("\\.", ".")
    return None if "." in source.replace("\\.", "") else literal
