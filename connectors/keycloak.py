"""Staff sign-in through a Keycloak realm: the ``keycloak`` connection type.

The protocol is OpenID Connect, spoken by :class:`~connectors.oidc.OidcConnector` (built
from the Keycloak settings: issuer ``{server_url}/realms/{realm}``); this module adds what
is Keycloak's own:

* roles: ``realm_access.roles`` stay plain (``isthmus-admin``); the client roles of the
  clients named in ``client_roles_from`` (``resource_access.<client>.roles``) become
  ``<client>:<role>``, so a client role never passes for a realm role of the same name;
* groups: Keycloak's full paths, as given (``/staff/engineering``);
* when the ID token and userinfo lack them (no mapper in the realm) and ``admin`` is
  configured, the same roles and groups read through Keycloak's admin API with
  python-keycloak (a service account, client credentials grant; its async methods) and
  kept per user for ``role_cache_seconds``. A failing admin API fails the login (closed)
  unless the token itself carried everything.

Connectors are stateless per login (the flow state lives in the hub's store); the admin
API answers cached here are a per-replica cache like the OIDC connector's JWKS.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import httpx
from keycloak import KeycloakAdmin, KeycloakOpenIDConnection
from keycloak.exceptions import KeycloakError

from connectors.base import CallbackRequest, LoginRedirect, LoginRequest, LogoutOutcome
from connectors.oidc import OidcConnector, claim
from connectors.registry import ConnectorContext
from federation.errors import UpstreamError
from federation.identity import FederatedIdentity
from federation.settings import (
    ConnectionSettings,
    KeycloakConnectionSettings,
    OidcConnectionSettings,
    PartnerKind,
    PartnerSettings,
)

# --- what Keycloak says about one user ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserAccess:
    """A user's realm roles, client roles (by client id) and group paths.

    From a token, a part the token did not carry is None (no mapper: unknown, not empty).
    """

    realm_roles: tuple[str, ...] | None = None
    client_roles: Mapping[str, tuple[str, ...]] | None = None
    groups: tuple[str, ...] | None = None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], clients: Sequence[str]) -> UserAccess:
        """What the ID token and userinfo carry: Keycloak's ``realm_access.roles``,
        ``resource_access.<client>.roles`` and ``groups`` claims."""
        realm = claim(claims, "realm_access.roles")
        resource_access = claims.get("resource_access")
        groups = claims.get("groups")
        client_roles: dict[str, tuple[str, ...]] | None = None
        if isinstance(resource_access, Mapping):  # client ids may hold dots: no dotted paths
            entries = {client: resource_access.get(client) for client in clients}
            client_roles = {
                client: _strings(entry.get("roles")) if isinstance(entry, Mapping) else ()
                for client, entry in entries.items()
            }
        return cls(
            realm_roles=_strings(realm) if isinstance(realm, list) else None,
            client_roles=client_roles,
            groups=_strings(groups) if isinstance(groups, list) else None,
        )

    def lacks(self, clients: Sequence[str]) -> bool:
        """Is any part the connection maps unknown? (Client roles only when it maps some.)"""
        needs_clients = bool(clients) and self.client_roles is None
        return self.realm_roles is None or self.groups is None or needs_clients

    def completed_by(self, other: UserAccess) -> UserAccess:
        """This, with every unknown part taken from ``other``."""
        return UserAccess(
            realm_roles=self.realm_roles if self.realm_roles is not None else other.realm_roles,
            client_roles=self.client_roles if self.client_roles is not None else other.client_roles,
            groups=self.groups if self.groups is not None else other.groups,
        )

    def roles(self, clients: Sequence[str]) -> tuple[str, ...]:
        """Realm roles as they are, then ``<client>:<role>`` for each mapped client."""
        found = list(self.realm_roles or ())
        for client in clients:
            found += [f"{client}:{role}" for role in (self.client_roles or {}).get(client, ())]
        return tuple(dict.fromkeys(found))


class Directory(Protocol):
    """Keycloak's admin API as the connector needs it: one user's roles and groups."""

    async def user_access(self, user_id: str) -> UserAccess:
        """Effective (composite) realm roles, effective client roles of ``clients``, and
        the paths of the groups the user is a member of. Raises UpstreamError."""
        ...

    async def aclose(self) -> None: ...


# --- the connector --------------------------------------------------------------------------


def oidc_settings(settings: KeycloakConnectionSettings) -> OidcConnectionSettings:
    """The OIDC connection a Keycloak connection is: the realm's issuer, the hub's
    confidential client (client_secret_basic), userinfo read."""
    return OidcConnectionSettings(
        type="oidc",
        id=settings.id,
        display_name=settings.display_name,
        issuer=settings.issuer,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        token_endpoint_auth_method="client_secret_basic",
        scopes=settings.scopes,
        algorithms=settings.algorithms,
        use_userinfo=True,
        trust_acr=settings.trust_acr,
        leeway_seconds=settings.leeway_seconds,
        timeout_seconds=settings.timeout_seconds,
        upstream_logout=settings.upstream_logout,
    )


class KeycloakConnector:
    """A Keycloak realm behind the ``CallbackConnector`` and ``LogoutConnector``
    capabilities (internal partners)."""

    def __init__(
        self,
        partner_id: str,
        settings: KeycloakConnectionSettings,
        context: ConnectorContext,
        directory: Directory | None = None,
    ) -> None:
        self.id = settings.id
        self.partner_id = partner_id
        self.settings = settings
        self._oidc = OidcConnector(partner_id, oidc_settings(settings), context)
        if directory is None and settings.admin is not None:
            directory = AdminApiDirectory(settings, context)
        self._directory = directory
        self._cache = AccessCache(
            settings.role_cache_seconds, settings.role_cache_size, clock=context.clock
        )

    @classmethod
    def from_settings(
        cls, partner: PartnerSettings, connection: ConnectionSettings, context: ConnectorContext
    ) -> KeycloakConnector:
        if not isinstance(connection, KeycloakConnectionSettings):
            raise TypeError(f"connection {connection.id} is not a Keycloak connection")
        if partner.kind is not PartnerKind.internal:  # the settings check says so first
            raise ValueError(
                f"connection {connection.id}: keycloak connections serve internal partners only"
            )
        return cls(partner.id, connection, context)

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    async def login_url(self, request: LoginRequest) -> LoginRedirect:
        return await self._oidc.login_url(request)

    async def handle_callback(
        self, request: CallbackRequest, flow_state: Mapping[str, Any] | None
    ) -> FederatedIdentity:
        """The OIDC login, then Keycloak's roles and groups on the identity."""
        identity = await self._oidc.handle_callback(request, flow_state)
        clients = self.settings.client_roles_from
        access = UserAccess.from_claims(identity.raw_claims, clients)
        if access.lacks(clients) and self._directory is not None:
            access = access.completed_by(await self._looked_up(identity.subject))
        return replace(identity, roles=access.roles(clients), groups=access.groups or ())

    async def logout_url(
        self,
        identity: FederatedIdentity,
        return_url: str,
        state: str,
        session_state: Mapping[str, Any] | None = None,
    ) -> LoginRedirect | None:
        """Keycloak's end-session endpoint (RP-Initiated Logout, as the OIDC connector)."""
        return await self._oidc.logout_url(identity, return_url, state, session_state)

    async def handle_logout(self, request: CallbackRequest) -> LogoutOutcome:
        return await self._oidc.handle_logout(request)

    async def aclose(self) -> None:
        await self._oidc.aclose()
        if self._directory is not None:
            await self._directory.aclose()

    async def _looked_up(self, subject: str) -> UserAccess:
        cached = self._cache.get(subject)
        if cached is not None:
            return cached
        assert self._directory is not None
        access = await self._directory.user_access(subject)
        self._cache.put(subject, access)
        return access


# --- the per-user cache ---------------------------------------------------------------------


@dataclass
class AccessCache:
    """Admin API answers by user id for ``ttl`` seconds of ``clock`` (monotonic), at most
    ``size`` users (the least recently stored are dropped first). ``ttl`` 0: no cache."""

    ttl: float
    size: int
    clock: Callable[[], float]
    _entries: OrderedDict[str, tuple[float, UserAccess]] = field(default_factory=OrderedDict)

    def get(self, subject: str) -> UserAccess | None:
        entry = self._entries.get(subject)
        if entry is None:
            return None
        stored_at, access = entry
        if self.clock() - stored_at >= self.ttl:
            del self._entries[subject]
            return None
        return access

    def put(self, subject: str, access: UserAccess) -> None:
        if self.ttl <= 0:
            return
        self._entries.pop(subject, None)
        self._entries[subject] = (self.clock(), access)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# --- the admin API through python-keycloak --------------------------------------------------


class AdminApiDirectory:
    """:class:`Directory` over python-keycloak's ``KeycloakAdmin`` (its ``a_*`` methods,
    on httpx): a service account's token (client credentials grant, renewed by
    python-keycloak), every request through the hub's HTTP plumbing.

    The service account needs the realm-management role ``view-users`` (which brings
    ``query-users`` and ``query-groups``); for ``client_roles_from`` it must also see those
    clients to learn their internal ids: ``view-clients``, which shows every client's
    secret too (docs/keycloak.md weighs it against a client-roles mapper).
    """

    def __init__(self, settings: KeycloakConnectionSettings, context: ConnectorContext) -> None:
        assert settings.admin is not None
        self._settings = settings
        self._context = context
        self._admin: KeycloakAdmin | None = None  # built on first use
        self._client_uuids: dict[str, str] = {}
        self._token_lock = asyncio.Lock()

    async def user_access(self, user_id: str) -> UserAccess:
        try:
            async with asyncio.timeout(self._settings.timeout_seconds * 3):
                admin = await self._connected()
                groups = _names(await admin.a_get_user_groups(user_id), "path")
                realm_roles = await admin.a_get_composite_realm_roles_of_user(user_id)
                client_roles = {
                    client: await self._client_roles(admin, user_id, client)
                    for client in self._settings.client_roles_from
                }
                return UserAccess(_names(realm_roles, "name"), client_roles, groups)
        except (KeycloakError, httpx.HTTPError, TimeoutError, TypeError, ValueError) as exc:
            raise self._failure(exc, user_id) from None

    async def aclose(self) -> None:
        if self._admin is not None:
            connection = self._admin.connection
            await connection.keycloak_openid.connection.aclose()
            await connection.aclose()
            self._admin = None

    async def _client_roles(
        self, admin: KeycloakAdmin, user_id: str, client: str
    ) -> tuple[str, ...]:
        uuid = self._client_uuids.get(client)
        if uuid is None:
            # Without view-clients: HTTP 403, or (with query-clients) an empty list.
            try:
                uuid = await admin.a_get_client_id(client)
            except KeycloakError as exc:
                if getattr(exc, "response_code", None) != 403:
                    raise
                uuid = None
            if uuid is None:
                raise self._invisible(client)
            self._client_uuids[client] = uuid
        return _names(await admin.a_get_composite_client_roles_of_user(user_id, uuid), "name")

    async def _connected(self) -> KeycloakAdmin:
        async with self._token_lock:  # one service-account token for concurrent logins
            if self._admin is None:
                self._admin = self._build()
            if self._admin.connection.token is None:
                await self._admin.connection.a_get_token()
            return self._admin

    def _build(self) -> KeycloakAdmin:
        admin_settings = self._settings.admin
        assert admin_settings is not None
        connection = KeycloakOpenIDConnection(
            server_url=self._settings.server_url.rstrip("/") + "/",
            realm_name=self._settings.realm,
            client_id=admin_settings.client_id,
            client_secret_key=admin_settings.client_secret,
            grant_type="client_credentials",
            timeout=math.ceil(self._settings.timeout_seconds),
        )
        # python-keycloak's two httpx clients (the admin API's, the token endpoint's) go
        # through the hub's transport, TLS context and mounts; the ones it built at
        # construction never connected and are dropped.
        for manager in (connection, connection.keycloak_openid.connection):
            manager.async_s = self._context.http_client(self._settings.timeout_seconds)
        return KeycloakAdmin(connection=connection)

    def _where(self) -> str:
        return f"connection {self._settings.id}: Keycloak admin API (realm {self._settings.realm})"

    def _invisible(self, client: str) -> UpstreamError:
        return UpstreamError(
            f"{self._where()}: client {client!r} of client_roles_from is not in the realm or "
            "not visible to the service account (view-clients); roles unknown, login refused"
        )

    def _failure(self, exc: Exception, user_id: str) -> UpstreamError:
        code = getattr(exc, "response_code", None)
        if code == 401:
            detail = (
                "refused the service account's credentials (HTTP 401): check admin.client_id, "
                "admin.client_secret and that the client has a service account"
            )
        elif code == 403:
            detail = (
                "refused the service account (HTTP 403): it needs the realm-management "
                "role view-users"
            )
        elif code == 404:
            detail = f"has no user {user_id!r} (HTTP 404)"
        elif code is not None:
            detail = f"answered HTTP {code}"
        else:
            cause = exc.__cause__ or exc
            detail = f"unreachable or unreadable ({type(cause).__name__}: {cause})"
        return UpstreamError(f"{self._where()} {detail}; roles unknown, login refused")


# --- helpers --------------------------------------------------------------------------------


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(v for v in value if isinstance(v, str) and v)
    return ()


def _names(items: Any, key: str) -> tuple[str, ...]:
    if not isinstance(items, list):
        raise TypeError(f"expected a list, got {type(items).__name__}")
    return tuple(i[key] for i in items if isinstance(i, Mapping) and isinstance(i.get(key), str))
