"""Shared fixtures. Peer fixtures (Redis, node oidc-provider, SimpleSAMLphp): tests/peers/."""

pytest_plugins: list[str] = [
    "tests.peers.redis",
    "tests.peers.oidc_provider",
    "tests.peers.asgi",
    "tests.peers.simplesamlphp",
    "tests.peers.nginx",
    "tests.peers.dns",
]
