"""Shared fixtures. Peer fixtures (real Redis, IdPs, Keycloak, nginx, DNS): tests/peers/."""

pytest_plugins: list[str] = [
    "tests.peers.redis",
    "tests.peers.oidc_provider",
    "tests.peers.asgi",
    "tests.peers.simplesamlphp",
    "tests.peers.nginx",
    "tests.peers.dns",
    "tests.peers.keycloak",
    "tests.peers.smtp",
]
