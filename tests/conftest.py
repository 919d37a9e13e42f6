"""Shared fixtures. Peer fixtures (real Redis, node oidc-provider) live in tests/peers/."""

pytest_plugins: list[str] = [
    "tests.peers.redis",
    "tests.peers.oidc_provider",
    "tests.peers.asgi",
]
