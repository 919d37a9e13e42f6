"""Reading a Keycloak realm for the import: what ``isthmus keycloak import`` starts from.

:func:`read_realm` reads, through the admin API with python-keycloak (its async methods),
signed in as a service-account client (client credentials grant; never a user's
password): the realm (``organizationsEnabled``), every identity provider and its mappers,
every organization (attributes and domains, from its full representation: the list gives
no attributes) and the identity providers linked to it. The answers become the typed
:class:`RealmSnapshot` the mapping (:mod:`federation.migrate.partners`) works from.

Anything that cannot be read is a :class:`KeycloakImportError` naming the step and the
likely cause (credentials, a missing role, an unknown realm, an unreachable server); the
command then writes nothing. Keycloak 26.5 requires the realm-management role
``manage-realm`` even to *read* organizations (its OrganizationsResource checks it on
every request), besides ``view-realm`` and ``view-identity-providers``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from federation.errors import IsthmusError

if TYPE_CHECKING:
    from keycloak import KeycloakAdmin

T = TypeVar("T")


class KeycloakImportError(IsthmusError):
    """The realm could not be read (or the output directory used): nothing was written."""

    error = "keycloak_import_failed"
    status = 502
    public_message = "The Keycloak realm could not be imported."


# --- what was read --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mapper:
    name: str
    type: str
    config: Mapping[str, str]

    @classmethod
    def from_api(cls, rep: Mapping[str, Any]) -> Mapper:
        return cls(
            name=str(rep.get("name") or rep.get("id") or "?"),
            type=str(rep.get("identityProviderMapper") or "?"),
            config=_strings(rep.get("config")),
        )


@dataclass(frozen=True, slots=True)
class IdentityProvider:
    alias: str
    provider_id: str
    enabled: bool
    display_name: str | None
    trust_email: bool
    first_broker_flow: str | None
    post_broker_flow: str | None
    organization_id: str | None
    config: Mapping[str, str]
    mappers: tuple[Mapper, ...] = ()

    @classmethod
    def from_api(
        cls, rep: Mapping[str, Any], mappers: Iterable[Mapping[str, Any]] = ()
    ) -> IdentityProvider:
        parsed = sorted((Mapper.from_api(m) for m in mappers), key=lambda m: (m.name, m.type))
        return cls(
            alias=str(rep["alias"]),
            provider_id=str(rep.get("providerId") or "?"),
            enabled=bool(rep.get("enabled", True)),
            display_name=_text(rep.get("displayName")),
            trust_email=bool(rep.get("trustEmail", False)),
            first_broker_flow=_text(rep.get("firstBrokerLoginFlowAlias")),
            post_broker_flow=_text(rep.get("postBrokerLoginFlowAlias")),
            organization_id=_text(rep.get("organizationId")),
            config=_strings(rep.get("config")),
            mappers=tuple(parsed),
        )

    def flag(self, key: str) -> bool:
        return self.config.get(key, "").strip().lower() == "true"

    def setting(self, key: str) -> str | None:
        return _text(self.config.get(key))


@dataclass(frozen=True, slots=True)
class Organization:
    id: str
    alias: str
    name: str
    enabled: bool
    description: str | None
    redirect_url: str | None
    attributes: Mapping[str, tuple[str, ...]]
    domains: tuple[tuple[str, bool], ...]  # (name, verified in Keycloak)
    identity_providers: tuple[str, ...]  # aliases of the linked IdPs

    @classmethod
    def from_api(cls, rep: Mapping[str, Any], linked: Iterable[Mapping[str, Any]]) -> Organization:
        attributes = rep.get("attributes") or {}
        domains = rep.get("domains") or []
        return cls(
            id=str(rep["id"]),
            alias=str(rep.get("alias") or rep.get("name") or rep["id"]),
            name=str(rep.get("name") or rep.get("alias") or rep["id"]),
            enabled=bool(rep.get("enabled", True)),
            description=_text(rep.get("description")),
            redirect_url=_text(rep.get("redirectUrl")),
            attributes={
                str(k): tuple(str(v) for v in (vs if isinstance(vs, list) else [vs]))
                for k, vs in sorted(attributes.items())
            },
            domains=tuple(
                sorted((str(d["name"]), bool(d.get("verified"))) for d in domains if d.get("name"))
            ),
            identity_providers=tuple(sorted(str(i["alias"]) for i in linked if i.get("alias"))),
        )


@dataclass(frozen=True, slots=True)
class RealmSnapshot:
    """Everything the import needs from one realm, read once."""

    server: str
    realm: str
    organizations: tuple[Organization, ...]
    identity_providers: tuple[IdentityProvider, ...]


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in sorted(value.items()) if v is not None}


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None


# --- reading the realm ----------------------------------------------------------------------


def connect(
    server: str,
    realm: str,
    client_id: str,
    client_secret: str,
    *,
    auth_realm: str | None = None,
    timeout: int = 30,
) -> KeycloakAdmin:
    """An admin client for ``realm`` signed in as the service account of ``client_id``
    (client credentials grant; the client lives in ``auth_realm``, default ``realm``)."""
    from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

    connection = KeycloakOpenIDConnection(
        server_url=server.rstrip("/"),
        realm_name=realm,
        user_realm_name=auth_realm or realm,
        client_id=client_id,
        client_secret_key=client_secret,
        grant_type="client_credentials",
        timeout=timeout,
    )
    return KeycloakAdmin(connection=connection)


async def close(admin: KeycloakAdmin) -> None:
    """Close the HTTP clients python-keycloak opened (the admin API's and the token's)."""
    connection = admin.connection
    await connection.keycloak_openid.connection.aclose()
    await connection.aclose()


async def read_realm(admin: KeycloakAdmin, server: str, realm: str) -> RealmSnapshot:
    """The realm's organizations and identity providers, or :class:`KeycloakImportError`.

    Reads need the realm-management roles ``view-realm`` and ``view-identity-providers``;
    Keycloak 26.5 also requires ``manage-realm`` to *read* organizations (its
    OrganizationsResource checks it on every request)."""
    client = admin.connection.client_id
    where = f"realm {realm!r} at {server}"
    await _step(
        f"sign in as the service account of client {client!r} in {where}",
        admin.connection.a_get_token(),
        client,
    )
    rep = await _step(f"read {where} (role view-realm)", admin.a_get_realm(realm), client)
    if not rep.get("organizationsEnabled"):
        raise KeycloakImportError(
            f"Organizations are not enabled in {where}: Isthmus partners are imported from "
            "Keycloak Organizations. Enable them (Realm settings, Organizations), link each "
            "partner's identity provider to its organization, and import again."
        )
    idps = []
    listed = await _step(
        f"list the identity providers of {where} (role view-identity-providers)",
        admin.a_get_idps(),
        client,
    )
    for idp in sorted(listed, key=lambda i: str(i.get("alias"))):
        alias = str(idp["alias"])
        mappers = await _step(
            f"read the mappers of identity provider {alias!r}",
            admin.a_get_idp_mappers(alias),
            client,
        )
        idps.append(IdentityProvider.from_api(idp, mappers))
    organizations = []
    found = await _step(
        f"list the organizations of {where} (role manage-realm: Keycloak requires it to read "
        "organizations)",
        admin.a_get_organizations(),
        client,
    )
    for brief in sorted(found, key=lambda o: str(o.get("alias") or o.get("name"))):
        org_id = str(brief["id"])
        label = f"organization {brief.get('alias') or org_id!r}"
        full = await _step(f"read {label}", admin.a_get_organization(org_id), client)
        linked = await _step(
            f"list the identity providers of {label}",
            admin.a_get_organization_idps(org_id),
            client,
        )
        organizations.append(Organization.from_api(full, linked))
    return RealmSnapshot(server.rstrip("/"), realm, tuple(organizations), tuple(idps))


async def _step(what: str, pending: Awaitable[T], client_id: str | None) -> T:
    from keycloak.exceptions import (
        KeycloakAuthenticationError,
        KeycloakConnectionError,
        KeycloakError,
    )

    try:
        return await pending
    except KeycloakConnectionError as exc:
        reason = exc.__cause__ or exc
        raise KeycloakImportError(f"cannot {what}: Keycloak unreachable ({reason})") from None
    except KeycloakAuthenticationError as exc:
        raise KeycloakImportError(
            f"cannot {what}: Keycloak refused the credentials of client {client_id!r} "
            f"(HTTP {exc.response_code}: {_body(exc.response_body)})"
        ) from None
    except KeycloakError as exc:
        code = exc.response_code
        hint = ""
        if code == 403:
            hint = f": the service account of client {client_id!r} lacks the role"
        elif code == 404:
            hint = ": not found (check the server URL and the realm name)"
        raise KeycloakImportError(
            f"cannot {what}: HTTP {code}{hint} ({_body(exc.response_body)})"
        ) from None
    except (TypeError, KeyError) as exc:  # python-keycloak's check of the answer's shape
        raise KeycloakImportError(f"cannot {what}: unexpected answer ({exc})") from None


def _body(body: bytes | None) -> str:
    text = (body or b"").decode("utf-8", errors="replace").strip()
    return " ".join(text.split())[:200] or "no body"
