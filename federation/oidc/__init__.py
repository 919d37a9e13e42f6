"""The hub as an OpenID Connect provider for the apps that log users in through it.

One module per spec, named after it; none of them imports the web framework (the thin
Starlette handlers live in ``federation.web.provider``). Built async on authlib's
primitives (PKCE, scope helpers, client-auth header parsing) because authlib 1.9's
server side is synchronous while the store is async; JWTs go through
``federation.jose``. See docs/oidc-provider.md.
"""
