"""The import's report: per partner and connection, what was carried over from Keycloak,
what was not and why, and what the admin must do — as JSON (``--json``) and as the
``IMPORT-REPORT.md`` written beside the partner files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Notes:
    """What was carried over, what was not (and why), what the admin must do."""

    carried: list[str] = field(default_factory=list)
    not_carried: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {"carried": self.carried, "not_carried": self.not_carried, "todo": self.todo}

    def merge(self, other: Notes) -> None:
        self.carried += other.carried
        self.not_carried += other.not_carried
        self.todo += other.todo


@dataclass
class ConnectionReport:
    id: str
    type: str
    identity_provider: str
    provider_id: str
    notes: Notes = field(default_factory=Notes)
    secret_missing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "identity_provider": self.identity_provider,
            "provider_id": self.provider_id,
            "secret_missing": self.secret_missing,
            **self.notes.to_dict(),
        }


@dataclass
class PartnerReport:
    id: str
    name: str
    kind: str
    organization: str
    organization_id: str
    file: str
    domains: list[str] = field(default_factory=list)
    pending_domains: list[dict[str, str]] = field(default_factory=list)
    connections: list[ConnectionReport] = field(default_factory=list)
    notes: Notes = field(default_factory=Notes)
    written: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "organization": self.organization,
            "organization_id": self.organization_id,
            "file": self.file if self.written else None,
            "written": self.written,
            "domains": self.domains,
            "pending_domains": self.pending_domains,
            "connections": [c.to_dict() for c in self.connections],
            **self.notes.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """An identity provider (or organization) that produced no document, and why."""

    what: str  # "identity provider" | "organization"
    name: str
    provider_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "name": self.name,
            "provider_id": self.provider_id,
            "reason": self.reason,
        }


@dataclass
class ImportReport:
    server: str
    realm: str
    organizations: int
    identity_providers: int
    partners: list[PartnerReport] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "realm": self.realm,
            "read": {
                "organizations": self.organizations,
                "identity_providers": self.identity_providers,
            },
            "partners": [p.to_dict() for p in self.partners],
            "skipped": [s.to_dict() for s in self.skipped],
            "todo": self.todo,
        }

    def markdown(self) -> str:
        return "\n".join(markdown_lines(self)) + "\n"


# --- report text ----------------------------------------------------------------------------


def markdown_lines(report: ImportReport) -> Iterable[str]:
    written = [p for p in report.partners if p.written]
    connections = sum(len(p.connections) for p in written)
    yield f"# Keycloak import: realm `{report.realm}` at {report.server}"
    yield ""
    yield (
        f"Read {_plural(report.organizations, 'organization')} and "
        f"{_plural(report.identity_providers, 'identity provider')}; wrote "
        f"{_plural(len(written), 'partner')} with {_plural(connections, 'connection')}. "
        "Every partner is `invited`: none routes a login until it is activated."
    )
    yield ""
    yield "## What to do"
    yield ""
    for index, step in enumerate(report.todo, start=1):
        yield f"{index}. {step}"
    for partner in report.partners:
        yield ""
        state = "" if partner.written else " — NOT WRITTEN"
        yield f"## Partner `{partner.id}`: {partner.name} ({partner.kind}){state}"
        yield ""
        yield f"From organization `{partner.organization}` ({partner.organization_id})."
        if partner.written:
            yield f"File: `{partner.file}`."
        yield from _notes(partner.notes)
        for connection in partner.connections:
            yield ""
            yield (
                f"### Connection `{connection.id}` ({connection.type}), from identity "
                f"provider `{connection.identity_provider}` ({connection.provider_id})"
            )
            yield from _notes(connection.notes)
    if report.skipped:
        yield ""
        yield "## Not imported"
        yield ""
        yield "| what | name | provider | why |"
        yield "|---|---|---|---|"
        for item in report.skipped:
            cells = (item.what, f"`{item.name}`", item.provider_id or "-", item.reason)
            yield "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _notes(notes: Notes) -> Iterable[str]:
    for title, items in (
        ("Carried over", notes.carried),
        ("Not carried over", notes.not_carried),
        ("To do", notes.todo),
    ):
        if items:
            yield ""
            yield f"{title}:"
            yield ""
            for item in items:
                yield f"- {item}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
