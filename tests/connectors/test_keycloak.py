"""The ``keycloak`` connector: Keycloak's roles and groups on the OIDC identity, the admin
API fallback (python-keycloak) with its per-user cache, and its settings.

The realm is the in-process fake OIDC provider at ``{server_url}/realms/corp``; the admin
API is a fake Keycloak admin API on the same origin, reached through the connector
context's transport like the real one would be.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
import yaml

from connectors.base import CallbackConnector, CallbackRequest, LoginRequest
from connectors.keycloak import (
    AccessCache,
    AdminApiDirectory,
    KeycloakConnector,
    UserAccess,
    oidc_settings,
)
from connectors.registry import ConnectorContext, default_registry
from federation.errors import ConfigError, UpstreamError
from federation.identity import FederatedIdentity
from federation.settings import (
    KeycloakConnectionSettings,
    PartnerKind,
    PartnerSettings,
    load_settings,
)
from tests.fakes.clock import FakeClock
from tests.fakes.oidc_idp import FakeOidcProvider, FakeUser

SERVER = "https://sso.corp.test"
ISSUER = f"{SERVER}/realms/corp"
CALLBACK = "https://hub.test/callback/corp-staff"
ADMIN = {"client_id": "isthmus-directory", "client_secret": "directory-secret"}
ALICE_ID = "7b30fb5f-alice"
BOB_ID = "7c7e4802-bob"

MAPPED = {  # what the realm's mappers put in the ID token
    "realm_access": {"roles": ["isthmus-admin", "staff", "offline_access"]},
    "resource_access": {
        "orders-app": {"roles": ["approver", "viewer"]},
        "billing": {"roles": ["isthmus-admin"]},  # a client role, never a realm role
        "account": {"roles": ["view-profile"]},
    },
    "groups": ["/staff/engineering", "/projects/apollo"],
}
ALICE = FakeUser(ALICE_ID, email="alice@corp.example", name="Alice Martin", extra=MAPPED)
BARE_ALICE = FakeUser(ALICE_ID, email="alice@corp.example", name="Alice Martin")
BARE_BOB = FakeUser(BOB_ID, email="bob@corp.example", name="Bob Durand")


# --- a fake Keycloak admin API --------------------------------------------------------------


class FakeKeycloakAdmin:
    """Keycloak's admin REST API as python-keycloak calls it, for the realm ``corp``: the
    token endpoint (client credentials only), a user's groups, composite realm roles,
    the clients list (only the ``visible`` ones) and composite client roles."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {
            ALICE_ID: {
                "groups": ["/staff/engineering", "/projects/apollo"],
                "realm": ["isthmus-admin", "staff", "offline_access"],
                "clients": {"orders-app": ["approver", "viewer"], "billing": ["isthmus-admin"]},
            },
            BOB_ID: {"groups": ["/staff/sales"], "realm": ["staff"], "clients": {}},
        }
        self.visible = {"orders-app": "uuid-orders", "billing": "uuid-billing"}
        self.status: int | None = None  # answer every admin call with this status
        self.clients_forbidden = False
        self.network_error: httpx.TransportError | None = None
        self.token_requests: list[dict[str, str]] = []
        self.calls: list[str] = []
        self.tokens: set[str] = set()

    def handles(self, request: httpx.Request) -> bool:
        path = request.url.path
        return path.startswith("/admin/") or path.endswith("/protocol/openid-connect/token")

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.network_error is not None:
            raise self.network_error
        path = request.url.path
        if path == "/realms/corp/protocol/openid-connect/token":
            return self._token(request)
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.tokens:
            return httpx.Response(401, json={"error": "HTTP 401 Unauthorized"})
        self.calls.append(path)
        if self.status is not None:
            return httpx.Response(self.status, json={"error": "refused by the fake"})
        parts = path.removeprefix("/admin/realms/corp/").split("/")
        if parts == ["clients"]:
            if self.clients_forbidden:  # no view-clients nor query-clients
                return httpx.Response(403, json={"error": "HTTP 403 Forbidden"})
            client_id = request.url.params.get("clientId")
            found = [
                {"id": uuid, "clientId": cid}
                for cid, uuid in self.visible.items()
                if cid == client_id
            ]
            return httpx.Response(200, json=found)
        user = self.users.get(parts[1]) if parts[0] == "users" else None
        if user is None:
            return httpx.Response(404, json={"error": "User not found"})
        return httpx.Response(200, json=self._user_answer(user, parts[2:], request))

    def _user_answer(
        self, user: dict[str, Any], rest: list[str], request: httpx.Request
    ) -> list[dict[str, Any]]:
        if rest == ["groups"]:
            first = int(request.url.params.get("first", "0"))
            groups = user["groups"][first:]
            return [
                {"id": f"g{i}", "name": p.rsplit("/", 1)[1], "path": p}
                for i, p in enumerate(groups)
            ]
        if rest == ["role-mappings", "realm", "composite"]:
            return [{"id": f"r-{n}", "name": n, "clientRole": False} for n in user["realm"]]
        if rest[:2] == ["role-mappings", "clients"] and rest[3:] == ["composite"]:
            client = next(c for c, uuid in self.visible.items() if uuid == rest[2])
            names = user["clients"].get(client, [])
            return [{"id": f"c-{n}", "name": n, "clientRole": True} for n in names]
        raise AssertionError(f"unexpected admin API call {rest}")

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.token_requests.append(form)
        credentials = (form.get("client_id"), form.get("client_secret"))
        if form.get("grant_type") != "client_credentials" or credentials != (
            ADMIN["client_id"],
            ADMIN["client_secret"],
        ):
            return httpx.Response(401, json={"error": "unauthorized_client"})
        token = f"sa-token-{len(self.tokens)}"
        self.tokens.add(token)
        return httpx.Response(
            200, json={"access_token": token, "token_type": "Bearer", "expires_in": 300}
        )


class Realm(httpx.AsyncBaseTransport):
    """One origin: the realm's OIDC endpoints (fake IdP) and its admin API (fake)."""

    def __init__(self, idp: FakeOidcProvider, admin: FakeKeycloakAdmin) -> None:
        self.idp, self.admin = idp, admin

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.admin.handles(request):
            return await self.admin(request)
        return await self.idp.transport.handle_async_request(request)


# --- a connector on the fakes ---------------------------------------------------------------


class CountingDirectory:
    """A Directory that says what it is told and counts the questions."""

    def __init__(self, access: UserAccess | None = None, error: bool = False) -> None:
        self.access = access or UserAccess(("staff",), {"orders-app": ("viewer",)}, ("/staff",))
        self.error = error
        self.asked: list[str] = []
        self.closed = False

    async def user_access(self, user_id: str) -> UserAccess:
        self.asked.append(user_id)
        if self.error:
            raise UpstreamError("connection corp-staff: Keycloak admin API unreachable")
        return self.access

    async def aclose(self) -> None:
        self.closed = True


def settings(**overrides: Any) -> KeycloakConnectionSettings:
    values: dict[str, Any] = {
        "type": "keycloak",
        "id": "corp-staff",
        "server_url": SERVER,
        "realm": "corp",
        "client_id": "isthmus",
        "client_secret": "s3cret",
        "client_roles_from": ("orders-app", "billing"),
    }
    return KeycloakConnectionSettings(**(values | overrides))


def internal_partner(connection: KeycloakConnectionSettings) -> PartnerSettings:
    return PartnerSettings(
        id="corp",
        name="Corp",
        kind=PartnerKind.internal,
        domains=("corp.example",),
        connections=(connection,),
    )


class Rig:
    def __init__(
        self,
        *users: FakeUser,
        directory: CountingDirectory | None = None,
        profile_in_id_token: bool = True,
        **overrides: Any,
    ) -> None:
        self.idp = FakeOidcProvider(
            ISSUER, users=users or [ALICE], profile_in_id_token=profile_in_id_token
        )
        self.admin = FakeKeycloakAdmin()
        self.clock = FakeClock()
        self.context = ConnectorContext(
            hub_base_url="https://hub.test", transport=Realm(self.idp, self.admin), clock=self.clock
        )
        self.settings = settings(**overrides)
        self.directory = directory
        self.connector = KeycloakConnector("corp", self.settings, self.context, directory)

    async def sign_in(self, hint: str | None = None) -> FederatedIdentity:
        redirect = await self.connector.login_url(LoginRequest(CALLBACK, "flow-1", hint))
        params = await self.idp.authorize(redirect.url)
        return await self.connector.handle_callback(
            CallbackRequest(CALLBACK, params), redirect.flow_state
        )


# --- settings -------------------------------------------------------------------------------


def test_the_issuer_is_the_realm_under_the_server_url() -> None:
    assert settings(server_url="https://sso.corp.test/").issuer == ISSUER
    assert (
        settings(server_url="https://corp.test/auth").issuer == "https://corp.test/auth/realms/corp"
    )
    oidc = oidc_settings(settings(trust_acr=True, timeout_seconds=3))
    assert (oidc.type, oidc.issuer, oidc.client_id, oidc.client_secret) == (
        "oidc",
        ISSUER,
        "isthmus",
        "s3cret",
    )
    assert oidc.token_endpoint_auth_method == "client_secret_basic" and oidc.use_userinfo
    assert oidc.trust_acr and oidc.timeout_seconds == 3


def config_file(tmp_path: Path, connection: dict[str, Any], kind: str = "internal") -> Path:
    partner = {
        "id": "corp",
        "name": "Corp",
        "kind": kind,
        "domains": ["corp.example"],
        "connections": [connection],
    }
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump({"partners": [partner]}))
    return path


def connection_dict(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "keycloak",
        "id": "corp-staff",
        "server_url": SERVER,
        "realm": "corp",
        "client_id": "isthmus",
        "client_secret": "s3cret",
        "admin": dict(ADMIN),
    } | overrides


def problems(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    return dict(caught.value.problems)


def test_a_keycloak_connection_of_an_internal_partner_loads(tmp_path: Path) -> None:
    loaded = load_settings(config_file(tmp_path, connection_dict()), env={})
    connection = loaded.partners[0].connections[0]
    assert isinstance(connection, KeycloakConnectionSettings)
    assert connection.admin is not None and connection.admin.client_id == "isthmus-directory"
    assert connection.role_cache_seconds == 300 and connection.client_roles_from == ()


@pytest.mark.parametrize("key", ["username", "password"])
def test_the_admin_api_never_takes_a_user_password(tmp_path: Path, key: str) -> None:
    admin = {"client_id": "admin-cli", key: "admin"}
    found = problems(config_file(tmp_path, connection_dict(admin=admin)))

    message = found["partners.0.connections.0.admin"]
    assert "never accepted" in message and "service-account client" in message


@pytest.mark.parametrize("kind", ["supplier", "subcontractor", "distributor", "customer"])
def test_only_internal_partners_sign_in_through_a_keycloak_connection(
    tmp_path: Path, kind: str
) -> None:
    found = problems(config_file(tmp_path, connection_dict(), kind))

    message = found["partners.0.connections.0.type"]
    assert f"not '{kind}'" in message and "'oidc' or 'saml'" in message


def test_keycloak_settings_problems_are_reported_together(tmp_path: Path) -> None:
    connection = connection_dict(
        server_url="https://sso.corp.test/realms/corp", scopes=["email"], algorithms=[]
    )
    found = problems(config_file(tmp_path, connection))

    assert "without /realms/" in found["partners.0.connections.0.server_url"]
    assert "openid" in found["partners.0.connections.0.scopes"]
    assert "algorithm" in found["partners.0.connections.0.algorithms"]
    plain = problems(config_file(tmp_path, connection_dict(server_url="http://sso.corp.test")))
    assert "allow_insecure_http" in plain["partners.0.connections.0.server_url"]
    realm = problems(config_file(tmp_path, connection_dict(realm="a/b")))
    assert "partners.0.connections.0.realm" in realm


def test_the_default_registry_builds_it_for_internal_partners_only() -> None:
    connection = settings()
    built = default_registry().build(internal_partner(connection), connection, ConnectorContext())
    assert isinstance(built, KeycloakConnector) and isinstance(built, CallbackConnector)
    supplier = internal_partner(connection).model_copy(update={"kind": PartnerKind.supplier})
    with pytest.raises(ValueError, match="internal partners only"):
        default_registry().build(supplier, connection, ConnectorContext())


# --- claims → roles and groups --------------------------------------------------------------


async def test_realm_roles_plain_client_roles_prefixed_groups_as_full_paths() -> None:
    rig = Rig(ALICE, directory=CountingDirectory())

    identity = await rig.sign_in()

    assert identity.key == ("corp", "corp-staff", ISSUER, ALICE_ID)
    assert identity.email == "alice@corp.example" and identity.email_verified
    assert identity.roles == (
        "isthmus-admin",
        "staff",
        "offline_access",
        "orders-app:approver",
        "orders-app:viewer",
        "billing:isthmus-admin",
    )
    assert identity.groups == ("/staff/engineering", "/projects/apollo")
    assert rig.directory is not None and rig.directory.asked == []  # the token said it all


async def test_a_client_role_never_reads_as_the_realm_role_of_the_same_name() -> None:
    only_client = {**MAPPED, "realm_access": {"roles": ["staff"]}}
    rig = Rig(FakeUser(ALICE_ID, email="alice@corp.example", extra=only_client))

    identity = await rig.sign_in()

    assert "isthmus-admin" not in identity.roles
    assert "billing:isthmus-admin" in identity.roles


async def test_only_the_clients_named_in_client_roles_from_are_mapped() -> None:
    rig = Rig(ALICE, client_roles_from=())

    identity = await rig.sign_in()

    assert identity.roles == ("isthmus-admin", "staff", "offline_access")


async def test_client_ids_with_dots_are_read_whole() -> None:
    claims = {
        **MAPPED,
        "resource_access": {"https://orders.corp.example": {"roles": ["approver"]}},
    }
    rig = Rig(FakeUser(ALICE_ID, extra=claims), client_roles_from=("https://orders.corp.example",))

    identity = await rig.sign_in()

    assert identity.roles[-1] == "https://orders.corp.example:approver"


async def test_roles_and_groups_from_userinfo_count_as_the_token_s() -> None:
    # Mappers set to "add to userinfo" only: the ID token has sub, userinfo the rest.
    rig = Rig(ALICE, directory=CountingDirectory(), profile_in_id_token=False)

    identity = await rig.sign_in()

    assert "orders-app:viewer" in identity.roles and "/staff/engineering" in identity.groups
    assert rig.directory is not None and rig.directory.asked == []


async def test_without_admin_settings_missing_claims_mean_no_roles_and_no_groups() -> None:
    rig = Rig(BARE_ALICE)
    assert rig.settings.admin is None

    identity = await rig.sign_in()

    assert identity.roles == () and identity.groups == ()
    assert rig.admin.calls == [] and rig.admin.token_requests == []


# --- the admin API fallback -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "expected_roles", "expected_groups"),
    [
        # No groups mapper: roles from the token, groups from the admin API.
        ("groups", ("isthmus-admin", "orders-app:approver"), ("/staff",)),
        # No realm roles mapper: realm roles from the admin API, the rest from the token.
        ("realm_access", ("staff", "orders-app:approver"), ("/staff/engineering",)),
        # No client roles mapper (and client roles are mapped): from the admin API.
        ("resource_access", ("isthmus-admin", "orders-app:viewer"), ("/staff/engineering",)),
    ],
)
async def test_the_admin_api_fills_in_only_what_the_token_lacks(
    drop: str, expected_roles: tuple[str, ...], expected_groups: tuple[str, ...]
) -> None:
    claims = {
        "realm_access": {"roles": ["isthmus-admin"]},
        "resource_access": {"orders-app": {"roles": ["approver"]}},
        "groups": ["/staff/engineering"],
    }
    del claims[drop]
    user = FakeUser(ALICE_ID, email="alice@corp.example", extra=claims)
    directory = CountingDirectory()
    rig = Rig(user, directory=directory, client_roles_from=("orders-app",))

    identity = await rig.sign_in()

    assert directory.asked == [ALICE_ID]  # asked by Keycloak user id: the token's sub
    assert identity.roles == expected_roles and identity.groups == expected_groups


async def test_client_roles_missing_from_the_token_do_not_matter_when_none_are_mapped() -> None:
    claims = {"realm_access": {"roles": ["staff"]}, "groups": []}
    directory = CountingDirectory()
    rig = Rig(FakeUser(ALICE_ID, extra=claims), directory=directory, client_roles_from=())

    identity = await rig.sign_in()

    assert directory.asked == [] and identity.roles == ("staff",) and identity.groups == ()


async def test_admin_answers_are_cached_per_user_until_they_expire() -> None:
    directory = CountingDirectory()
    rig = Rig(BARE_ALICE, BARE_BOB, directory=directory, role_cache_seconds=300)

    await rig.sign_in(ALICE_ID)
    await rig.sign_in(ALICE_ID)
    rig.clock.advance(299)
    await rig.sign_in(ALICE_ID)
    assert directory.asked == [ALICE_ID]

    await rig.sign_in(BOB_ID)  # another user: another question
    assert directory.asked == [ALICE_ID, BOB_ID]

    rig.clock.advance(1)  # alice's answer is 300 s old now
    await rig.sign_in(ALICE_ID)
    assert directory.asked == [ALICE_ID, BOB_ID, ALICE_ID]


async def test_a_zero_cache_asks_the_admin_api_at_every_login() -> None:
    directory = CountingDirectory()
    rig = Rig(BARE_ALICE, directory=directory, role_cache_seconds=0)

    await rig.sign_in()
    await rig.sign_in()

    assert directory.asked == [ALICE_ID, ALICE_ID]


def test_the_cache_holds_at_most_its_size_dropping_the_oldest_first() -> None:
    clock = FakeClock()
    cache = AccessCache(ttl=300, size=2, clock=clock)
    first, second, third = (UserAccess((name,), {}, ()) for name in ("a", "b", "c"))

    cache.put("u1", first)
    cache.put("u2", second)
    cache.put("u1", first)  # stored again: now the newest
    cache.put("u3", third)

    assert len(cache) == 2
    assert cache.get("u2") is None
    assert cache.get("u1") == first and cache.get("u3") == third


async def test_an_admin_api_failure_fails_the_login_closed() -> None:
    rig = Rig(BARE_ALICE, directory=CountingDirectory(error=True))

    with pytest.raises(UpstreamError, match="admin API"):
        await rig.sign_in()


async def test_a_failing_admin_api_is_not_consulted_when_the_token_carries_everything() -> None:
    rig = Rig(ALICE, directory=CountingDirectory(error=True))

    identity = await rig.sign_in()

    assert "isthmus-admin" in identity.roles and rig.directory is not None
    assert rig.directory.asked == []


async def test_a_failure_is_not_cached() -> None:
    directory = CountingDirectory(error=True)
    rig = Rig(BARE_ALICE, directory=directory)
    with pytest.raises(UpstreamError):
        await rig.sign_in()

    directory.error = False
    identity = await rig.sign_in()

    assert identity.roles == ("staff", "orders-app:viewer") and len(directory.asked) == 2


async def test_aclose_closes_the_directory_too() -> None:
    directory = CountingDirectory()
    rig = Rig(ALICE, directory=directory)
    await rig.sign_in()

    await rig.connector.aclose()

    assert directory.closed


# --- the admin API through python-keycloak ---------------------------------------------------


@pytest.fixture
def no_blocking_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-keycloak's synchronous methods use requests: none may run (event loop)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a blocking requests call")

    monkeypatch.setattr(requests.Session, "send", refuse)


@pytest.mark.usefixtures("no_blocking_http")
async def test_python_keycloak_reads_roles_and_groups_with_a_service_account() -> None:
    rig = Rig(BARE_ALICE, BARE_BOB, admin=ADMIN)

    alice = await rig.sign_in(ALICE_ID)
    bob = await rig.sign_in(BOB_ID)

    assert alice.roles == (
        "isthmus-admin",
        "staff",
        "offline_access",
        "orders-app:approver",
        "orders-app:viewer",
        "billing:isthmus-admin",
    )
    assert alice.groups == ("/staff/engineering", "/projects/apollo")
    assert bob.roles == ("staff",) and bob.groups == ("/staff/sales",)
    # One client-credentials token for both lookups; never a password grant.
    assert [r["grant_type"] for r in rig.admin.token_requests] == ["client_credentials"]
    # Each client's internal id looked up once, then kept.
    assert rig.admin.calls.count("/admin/realms/corp/clients") == 2
    await rig.connector.aclose()


@pytest.mark.usefixtures("no_blocking_http")
async def test_the_admin_api_answers_are_cached_by_the_connector() -> None:
    rig = Rig(BARE_ALICE, admin=ADMIN)

    await rig.sign_in()
    asked = len(rig.admin.calls)
    await rig.sign_in()

    assert len(rig.admin.calls) == asked
    await rig.connector.aclose()


def directory_on(admin: FakeKeycloakAdmin, **overrides: Any) -> AdminApiDirectory:
    idp = FakeOidcProvider(ISSUER)
    context = ConnectorContext(transport=Realm(idp, admin))
    return AdminApiDirectory(settings(admin=ADMIN, **overrides), context)


Failure = Callable[[FakeKeycloakAdmin], None]


def refuse_403(admin: FakeKeycloakAdmin) -> None:
    admin.status = 403


def answer_500(admin: FakeKeycloakAdmin) -> None:
    admin.status = 500


def unreachable(admin: FakeKeycloakAdmin) -> None:
    admin.network_error = httpx.ConnectError("connection refused")


def hide_clients(admin: FakeKeycloakAdmin) -> None:
    admin.visible = {}  # query-clients without view-clients: an empty list


def forbid_clients(admin: FakeKeycloakAdmin) -> None:
    admin.clients_forbidden = True


@pytest.mark.parametrize(
    ("break_it", "user", "says"),
    [
        (refuse_403, ALICE_ID, "HTTP 403): it needs the realm-management role view-users"),
        (answer_500, ALICE_ID, "answered HTTP 500"),
        (unreachable, ALICE_ID, "unreachable"),
        (hide_clients, ALICE_ID, "not visible to the service account (view-clients)"),
        (forbid_clients, ALICE_ID, "not visible to the service account (view-clients)"),
        (lambda admin: None, "no-such-user", "has no user 'no-such-user' (HTTP 404)"),
    ],
    ids=[
        "forbidden",
        "server-error",
        "unreachable",
        "client-not-listed",
        "clients-forbidden",
        "unknown-user",
    ],
)
async def test_admin_api_failures_are_upstream_errors_that_say_why(
    break_it: Failure, user: str, says: str
) -> None:
    admin = FakeKeycloakAdmin()
    break_it(admin)
    directory = directory_on(admin)

    with pytest.raises(UpstreamError) as caught:
        await directory.user_access(user)

    assert says in caught.value.detail and "login refused" in caught.value.detail
    assert "directory-secret" not in caught.value.detail
    await directory.aclose()


async def test_a_wrong_service_account_secret_is_refused_clearly() -> None:
    admin = FakeKeycloakAdmin()
    directory = AdminApiDirectory(
        settings(admin={"client_id": "isthmus-directory", "client_secret": "wrong"}),
        ConnectorContext(transport=Realm(FakeOidcProvider(ISSUER), admin)),
    )

    with pytest.raises(UpstreamError, match="credentials \\(HTTP 401\\)"):
        await directory.user_access(ALICE_ID)
    await directory.aclose()


async def test_without_mapped_clients_only_groups_and_realm_roles_are_asked() -> None:
    admin = FakeKeycloakAdmin()
    directory = directory_on(admin, client_roles_from=())

    access = await directory.user_access(BOB_ID)

    assert access == UserAccess(("staff",), {}, ("/staff/sales",))
    assert admin.calls == [
        f"/admin/realms/corp/users/{BOB_ID}/groups",
        f"/admin/realms/corp/users/{BOB_ID}/role-mappings/realm/composite",
    ]
    assert [r["client_id"] for r in admin.token_requests] == ["isthmus-directory"]
    await directory.aclose()


async def test_the_login_goes_to_the_realm_with_pkce_and_a_nonce() -> None:
    rig = Rig(ALICE)

    redirect = await rig.connector.login_url(LoginRequest(CALLBACK, "flow-7", "alice@corp.example"))

    url = urlsplit(redirect.url)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{ISSUER}/authorize"
    assert query["client_id"] == "isthmus" and query["state"] == "flow-7"
    assert query["code_challenge_method"] == "S256" and query["nonce"]
    assert query["login_hint"] == "alice@corp.example"
