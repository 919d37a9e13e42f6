"""Operating the hub: health and readiness, Prometheus metrics, structured logs, optional
traces, graceful shutdown (docs/operations.md).

Modules: ``health`` (readiness: store, registry, shutting down), ``metrics`` (the app's
Prometheus registry; the audit events counted; store and upstream errors), ``logging``
(JSON or text lines with the request id), ``tracing`` (OpenTelemetry when installed and
enabled, else nothing), ``asgi`` (the middleware: probes, metrics endpoint, timing, spans),
``shutdown`` (uvicorn with a drain on SIGTERM).

This package imports nothing at its top: the Redis store imports :mod:`.metrics` alone.
"""
