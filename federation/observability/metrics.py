"""Prometheus metrics of one hub app, in the app's own registry (never the global one, so
several hubs in one process keep apart).

=========================================  ==================================================
``isthmus_logins_total``                   partner, outcome (started, succeeded, failed)
``isthmus_decisions_total``                app, outcome (allow, deny, login; refusals of the
                                           forward-auth endpoint: app ``none``, outcome its
                                           code: no_app, untrusted_edge, ...)
``isthmus_request_duration_seconds``       route (login, oidc, proxy, forward_auth, admin,
                                           other), method, status (2xx...5xx)
``isthmus_upstream_errors_total``          app, kind (unreachable, timeout, interrupted,
                                           websocket)
``isthmus_store_errors_total``             operation (the Redis command or script)
``isthmus_sessions_ended_total``           reason (logout, upstream_logout, admin,
                                           partner_cut_off)
``isthmus_build_info``                     version, python
=========================================  ==================================================

plus the process (CPU, memory, file descriptors), platform and garbage-collector metrics
of ``prometheus_client``.

Logins, decisions and ended sessions are counted from the audit events (the metrics are
the audit trail's counts: :meth:`Metrics.audit` is a sink of ``hub.audit``). Upstream and
store errors have no audit event: the proxy and the Redis store call :func:`upstream_error`
and :func:`store_error`, which count in the metrics of the app serving the current request
(:data:`current`, set by the app's middleware and lifespan), and do nothing elsewhere.

Labels are bounded: no path, no user, no request id. Partners are the registry's (anything
else is ``unknown``), apps and connections the configuration's; every label family stops
at :data:`MAX_SERIES` series (any further label set is counted as ``other``).

The hot path's counters and histogram are plain numbers (:class:`Counts`,
:class:`Timings`) that become samples when scraped: counting costs a dict update, where
``prometheus_client``'s own metrics take a lock per increment and per bucket.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from importlib import metadata
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from federation.registry import Registry

__all__ = [
    "CONTENT_TYPE",
    "ROUTE_GROUP",
    "Metrics",
    "current",
    "route_group",
    "store_error",
    "upstream_error",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Where a dispatcher records the route group of a request it takes (scope["state"]): the
# reverse proxy writes "proxy" there; everything else is grouped by its path.
ROUTE_GROUP = "isthmus.route_group"
MAX_SERIES = 5000
# Seconds: forward-auth answers in about a millisecond, logins wait for partner IdPs.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_LOGIN_OUTCOMES = {
    "login.started": "started",
    "login.succeeded": "succeeded",
    "login.failed": "failed",
}

current: ContextVar[Metrics | None] = ContextVar("isthmus_metrics", default=None)

Labels = tuple[str, ...]


class Counts(Collector):
    """A labelled counter kept as plain numbers and turned into samples when scraped.

    ``prometheus_client``'s own counters take a lock per increment; here counting is one
    dict update (every count happens on the event loop's thread). At most
    :data:`MAX_SERIES` label sets: any further one is counted as all ``other``.
    """

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        if labels in values:
            values[labels] += amount
        elif len(values) < MAX_SERIES:
            values[labels] = amount
        else:
            other = ("other",) * len(labels)
            values[other] = values.get(other, 0.0) + amount

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in list(self.values.items()):
            family.add_metric(labels, value)
        return [family]


class Timings(Collector):
    """A labelled histogram kept as plain numbers: per label set, the count in each
    bucket (not cumulative) and the sum last. One observation is a bisection and two
    additions; the cumulative buckets are made when scraped."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.bounds = tuple(sorted(buckets))
        self._les = [repr(float(b)) for b in self.bounds] + ["+Inf"]  # le="0.005"
        self.series: dict[Labels, list[float]] = {}

    def child(self, labels: Labels) -> list[float]:
        """The numbers of one label set (bounded as :class:`Counts` is)."""
        found = self.series.get(labels)
        if found is None:
            if len(self.series) >= MAX_SERIES:
                labels = ("other",) * len(labels)
                found = self.series.get(labels)
            if found is None:
                found = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        return found

    def observe(self, series: list[float], value: float) -> None:
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, series in list(self.series.items()):
            cumulative = accumulate(series[:-1])
            family.add_metric(labels, list(zip(self._les, cumulative, strict=True)), series[-1])
        return [family]


class _BuildInfo(Collector):
    def __init__(self) -> None:
        self.labels = {"version": _version(), "python": platform.python_version()}

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "isthmus_build_info", "The running build.", labels=list(self.labels)
        )
        family.add_metric(list(self.labels.values()), 1)
        return [family]


class Metrics:
    """The metrics of one app; :meth:`audit` is its sink of audit events."""

    def __init__(self, registry: Registry) -> None:
        self._partners = registry
        self.registry = CollectorRegistry()
        self.logins = Counts(
            "isthmus_logins",
            "Logins through partner IdPs, by partner and outcome (started, succeeded, failed).",
            ["partner", "outcome"],
        )
        self.decisions = Counts(
            "isthmus_decisions",
            "Access decisions of the proxy and forward-auth, by app and outcome.",
            ["app", "outcome"],
        )
        self.durations = Timings(
            "isthmus_request_duration_seconds",
            "Time to answer a request, by route group, method and status class.",
            ["route", "method", "status"],
            BUCKETS,
        )
        self.upstream_errors = Counts(
            "isthmus_upstream_errors",
            "Proxied requests whose app failed: unreachable, timeout, interrupted, websocket.",
            ["app", "kind"],
        )
        self.store_errors = Counts(
            "isthmus_store_errors",
            "Failed operations on the store, the registry or the audit stream (Redis).",
            ["operation"],
        )
        self.sessions_ended = Counts(
            "isthmus_sessions_ended",
            "Sessions ended before their expiry, by reason.",
            ["reason"],
        )
        for collector in (
            self.logins,
            self.decisions,
            self.durations,
            self.upstream_errors,
            self.store_errors,
            self.sessions_ended,
            _BuildInfo(),
        ):
            self.registry.register(collector)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        # What each request had → its histogram numbers: the hot path's one lookup.
        self._timings: dict[tuple[str, str, int], list[float]] = {}
        self._on_event: dict[str, Callable[[dict[str, Any]], None]] = {
            "proxy.decision": self._decision,
            "forward_auth.refused": self._refusal,
            "login.started": self._login,
            "login.succeeded": self._login,
            "login.failed": self._login,
            "logout": self._ended("logout"),
            "logout.upstream": self._ended("upstream_logout"),
            "admin.session.end": self._ended("admin"),
            "admin.partner.sessions_revoked": self._ended("partner_cut_off"),
        }

    # ------------------------------------------------------------------ counting
    def audit(self, record: dict[str, Any]) -> None:
        """The audit sink: count the events that are logins, decisions, ended sessions."""
        handler = self._on_event.get(record["event"])
        if handler is not None:
            handler(record)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        series = self._timings.get((route, method, status))
        if series is None:
            series = self._timing(route, method, status)
        self.durations.observe(series, seconds)

    def _timing(self, route: str, method: str, status: int) -> list[float]:
        labels = (
            route,
            method if method in _METHODS else "other",
            _STATUS.get(status // 100, "other"),
        )
        series = self.durations.child(labels)
        if len(self._timings) < MAX_SERIES:
            self._timings[(route, method, status)] = series
        return series

    def upstream_error(self, app_id: str, kind: str) -> None:
        self.upstream_errors.inc((app_id, kind))

    def store_error(self, operation: str) -> None:
        self.store_errors.inc((operation,))

    def render(self) -> bytes:
        """The text exposition format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample's value (0 when absent): for tests and the CLI."""
        found = self.registry.get_sample_value(name, labels or {})
        return found if found is not None else 0.0

    # ------------------------------------------------------------------ audit events
    def _decision(self, record: dict[str, Any]) -> None:
        self.decisions.inc((str(record["app"]), str(record["decision"])))

    def _refusal(self, record: dict[str, Any]) -> None:
        self.decisions.inc(("none", str(record.get("reason", "refused"))))

    def _login(self, record: dict[str, Any]) -> None:
        outcome = _LOGIN_OUTCOMES[record["event"]]
        self.logins.inc((self._partner_of(record), outcome))

    def _partner_of(self, record: dict[str, Any]) -> str:
        """The partner of a login event, when the registry knows it (a callback URL can
        name any connection: its text never becomes a label)."""
        partner = record.get("partner")
        if isinstance(partner, str) and self._partners.partner(partner) is not None:
            return partner
        connection = record.get("connection")
        entry = self._partners.connection(connection) if isinstance(connection, str) else None
        return entry[0].id if entry is not None else "unknown"

    def _ended(self, reason: str) -> Callable[[dict[str, Any]], None]:
        def count(record: dict[str, Any]) -> None:
            if record.get("outcome") != "success":
                return
            sessions = record.get("sessions", 1)
            if isinstance(sessions, int) and sessions > 0:
                self.sessions_ended.inc((reason,), sessions)

        return count


def store_error(operation: str) -> None:
    """Count a failed store operation in the metrics of the request (or lifespan) under
    way; a no-op outside one."""
    metrics = current.get()
    if metrics is not None:
        metrics.store_error(operation)


def upstream_error(app_id: str, kind: str) -> None:
    """Count a failed request to a proxied app, as :func:`store_error` does."""
    metrics = current.get()
    if metrics is not None:
        metrics.upstream_error(app_id, kind)


def route_group(path: str) -> str:
    """The route group of a request the hub answers itself, by its path."""
    if path.startswith("/forward-auth"):
        return "forward_auth"
    if path.startswith(("/login", "/logout", "/callback/", "/mock/", "/saml/")):
        return "login"
    if path.startswith(("/oauth2/", "/.well-known/")):
        return "oidc"
    if path == "/admin" or path.startswith("/admin/"):
        return "admin"
    return "other"


def _version() -> str:
    try:
        return metadata.version("isthmus")
    except metadata.PackageNotFoundError:
        return "unknown"
