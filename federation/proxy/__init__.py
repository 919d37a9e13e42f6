"""The identity-aware reverse proxy (flow 1 of the map), framework-free where it decides.

- :mod:`federation.proxy.routing` finds the app for a host and a path (normalized once);
- :mod:`federation.proxy.decide` turns a session into a policy decision and an audit event;
- :mod:`federation.proxy.headers` strips and injects headers and signs the assertion JWT;
- :mod:`federation.proxy.forward` is the ASGI data path on aiohttp's client (HTTP and
  WebSockets), the only module here that speaks ASGI.

Forward-auth reuses routing, decide and headers as they are.
"""
