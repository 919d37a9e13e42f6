"""The registry as the hub reads it: one immutable snapshot compiled from the documents.

:func:`compile_catalog` turns the stored documents into a :class:`Catalog` — the settings
with the registry's partners, clients and apps in them, the lookup registry, and every
app's compiled policy — or refuses with :class:`InvalidDocuments` listing every problem
(kind, id, dotted field, message). The admin service compiles the registry *as it would
be* before writing anything, so a write that would break a rule across documents (a
domain claimed twice, a policy for a missing app) is refused and nothing is half-written.

Document kinds and their models:

========== ================================ ===================================
kind       spec                             id
========== ================================ ===================================
partner    :class:`PartnerSettings`         ``id``
app        :class:`AppSettings`             ``id`` (no inline ``policy``: see policy)
client     :class:`ClientSettings`          ``client_id``
policy     the policy language (policies/)  the app's id
api_token  :class:`ApiTokenSpec`            the token's public id
grant      :class:`GrantSpec`               ``g-`` and a random suffix
signup     :class:`~.signups.SignupSpec`    ``s-`` and a random suffix
review     :class:`~.reviews.ReviewSpec`    ``r-<partner>-<YYYYMMDD>``
lapse      :class:`~.reviews.LapseSpec`     ``l-`` and a digest of the person
========== ================================ ===================================

Grants (issue 9) are operational data, like tokens: made and revoked day to day by
admins (API, console, CLI), they are not exported, and ``isthmus apply --prune`` leaves
them alone — a registry managed in Git does not wipe the project access granted since.
Sign-up requests, access reviews and lapses are operational data in the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import policies
from federation.admin.documents import Document, Spec
from federation.admin.reviews import LapseIndex, LapseSpec, ReviewSpec
from federation.admin.signups import SignupSpec
from federation.admin.tokens import ApiTokenSpec
from federation.errors import IsthmusError
from federation.identity import FederatedIdentity
from federation.proxy.policyset import PolicySet
from federation.registry import StaticRegistry
from federation.settings import (
    AppSettings,
    ClientSettings,
    PartnerSettings,
    Settings,
    semantic_problems,
)


class GrantSpec(BaseModel):
    """Time-boxed access to a set of apps (a project's) for one person or a whole partner.

    The person is ``connection_id`` + ``subject``, or an ``email`` (in one of the partner's
    verified domains); neither: every member of ``partner_id``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    partner_id: str = Field(min_length=1)
    connection_id: str | None = None
    subject: str | None = None
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    apps: tuple[str, ...] = Field(min_length=1)
    valid_from: datetime | None = None
    valid_until: datetime
    granted_by: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _one_subject(self) -> GrantSpec:
        if (self.connection_id is None) != (self.subject is None):
            raise ValueError("give connection_id and subject together")
        if self.email is not None and self.subject is not None:
            raise ValueError("give a person by connection_id + subject or by email, not both")
        for moment in (self.valid_from, self.valid_until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("times must carry a timezone")
        if self.valid_from is not None and self.valid_from >= self.valid_until:
            raise ValueError("valid_from must come before valid_until")
        return self

    @property
    def whole_partner(self) -> bool:
        return self.subject is None and self.email is None


@dataclass(frozen=True, slots=True)
class GrantIndex:
    """Grants by partner, by (partner, connection, subject) and by (partner, email): a
    decision looks up three dicts, whatever the number of grants."""

    by_partner: Mapping[str, tuple[GrantSpec, ...]] = field(default_factory=dict)
    by_subject: Mapping[tuple[str, str, str], tuple[GrantSpec, ...]] = field(default_factory=dict)
    by_email: Mapping[tuple[str, str], tuple[GrantSpec, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, grants: Iterable[GrantSpec]) -> GrantIndex:
        by_partner: dict[str, list[GrantSpec]] = {}
        by_subject: dict[tuple[str, str, str], list[GrantSpec]] = {}
        by_email: dict[tuple[str, str], list[GrantSpec]] = {}
        for grant in grants:
            if grant.email is not None:
                by_email.setdefault((grant.partner_id, grant.email.lower()), []).append(grant)
            elif grant.connection_id is not None and grant.subject is not None:
                key = (grant.partner_id, grant.connection_id, grant.subject)
                by_subject.setdefault(key, []).append(grant)
            else:
                by_partner.setdefault(grant.partner_id, []).append(grant)
        return cls(
            {k: tuple(v) for k, v in by_partner.items()},
            {k: tuple(v) for k, v in by_subject.items()},
            {k: tuple(v) for k, v in by_email.items()},
        )

    def specs_for(self, identity: FederatedIdentity) -> tuple[GrantSpec, ...]:
        """Every grant naming ``identity`` or its partner (expired ones too); a grant by
        email names only an identity whose email its IdP verified."""
        pid = identity.partner_id
        found = self.by_partner.get(pid, ())
        found += self.by_subject.get((pid, identity.connection_id, identity.subject), ())
        if identity.email and identity.email_verified and self.by_email:
            found += self.by_email.get((pid, identity.email.lower()), ())
        return found

    def for_identity(
        self, identity: FederatedIdentity, now: datetime
    ) -> tuple[policies.Grant, ...]:
        """The policy's view: one :class:`policies.Grant` per app, not-yet-valid left out."""
        if not (self.by_partner or self.by_subject or self.by_email):
            return ()  # no grants at all: the common case costs nothing
        specs = self.specs_for(identity)
        if not specs:
            return ()
        return tuple(
            policies.Grant(app_id, spec.valid_until, spec.granted_by)
            for spec in specs
            if spec.valid_from is None or spec.valid_from <= now
            for app_id in spec.apps
        )


MODELS: dict[str, type[BaseModel]] = {
    "partner": PartnerSettings,
    "app": AppSettings,
    "client": ClientSettings,
    "api_token": ApiTokenSpec,
    "grant": GrantSpec,
    "signup": SignupSpec,
    "review": ReviewSpec,
    "lapse": LapseSpec,
}
ID_FIELDS = {"partner": "id", "app": "id", "client": "client_id"}
# Ids that name pages of the console (/admin/partners/new is the onboarding wizard).
RESERVED_IDS = {"partner": frozenset({"new"}), "app": frozenset({"new"})}
KINDS = ("partner", "app", "client", "policy", "api_token", "grant", "signup", "review", "lapse")
# Kinds written to files by `isthmus export` (tokens are secrets' hashes: never exported;
# grants are day-to-day operations: not exported, never pruned by `apply --prune`).
EXPORTED_KINDS = ("partner", "app", "client", "policy")
_log = logging.getLogger("isthmus.registry")
_LISTS = {"partners": "partner", "clients": "client", "apps": "app"}


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    id: str
    field: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        return f"{self.kind}/{self.id}: {self.field or '<document>'}: {self.message}"


class InvalidDocuments(IsthmusError):
    """Documents that cannot be taken: every problem, each with its field."""

    error = "invalid_document"
    status = 422
    public_message = "The change was refused: see the listed problems."

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    def public_fields(self) -> dict[str, Any]:
        return {"errors": [p.to_dict() for p in self.problems]}


@dataclass(frozen=True)
class Catalog:
    settings: Settings
    registry: StaticRegistry
    policies: PolicySet
    revision: int = 0
    documents: Mapping[tuple[str, str], Document] = field(default_factory=dict)
    tokens: Mapping[str, ApiTokenSpec] = field(default_factory=dict)
    grants: GrantIndex = GrantIndex()
    lapses: LapseIndex = field(default_factory=LapseIndex)

    def spec(self, kind: str, doc_id: str) -> Spec | None:
        found = self.documents.get((kind, doc_id))
        return found.spec if found else None


def static_catalog(settings: Settings) -> Catalog:
    """The catalog of a settings file alone (before the registry is loaded)."""
    return Catalog(
        settings, StaticRegistry.from_settings(settings), PolicySet(settings.apps), revision=0
    )


def dump(model: BaseModel) -> Spec:
    """A model as a document spec: JSON types, defaults left out (small, diffable files)."""
    return model.model_dump(mode="json", exclude_defaults=True)


def documents_of_settings(settings: Settings) -> Iterator[tuple[str, str, Spec]]:
    """The settings file's partners, clients, apps and policies as documents (the seed)."""
    for partner in settings.partners:
        yield "partner", partner.id, dump(partner)
    for client in settings.clients:
        yield "client", client.client_id, dump(client)
    for app in settings.apps:
        yield "app", app.id, dump(app.model_copy(update={"policy": None, "policy_file": None}))
        if app.policy is not None:
            yield "policy", app.id, dict(app.policy)
        elif app.policy_file is not None:
            loaded = yaml.safe_load(Path(app.policy_file).read_text(encoding="utf-8"))
            yield "policy", app.id, loaded if isinstance(loaded, dict) else {}


def validate_spec(kind: str, doc_id: str, spec: Spec) -> tuple[BaseModel | None, list[Problem]]:
    """One document on its own: its model, and its id matching the document's."""
    if kind == "policy":
        return None, []  # checked against its app in compile_catalog
    model_type = MODELS.get(kind)
    if model_type is None:
        return None, [Problem(kind, doc_id, "kind", f"unknown kind (one of {', '.join(KINDS)})")]
    try:
        model = model_type.model_validate(spec)
    except ValidationError as exc:
        return None, [Problem(kind, doc_id, _dotted(e["loc"]), e["msg"]) for e in exc.errors()]
    if isinstance(model, AppSettings) and (model.policy or model.policy_file):
        field_name = "policy" if model.policy else "policy_file"
        message = f"an app's policy is its own document (kind: policy, id: {doc_id})"
        return None, [Problem(kind, doc_id, field_name, message)]
    if kind in RESERVED_IDS and doc_id in RESERVED_IDS[kind]:
        return None, [Problem(kind, doc_id, "id", f"{doc_id!r} is reserved: choose another id")]
    id_field = ID_FIELDS.get(kind)
    if id_field is not None and getattr(model, id_field) != doc_id:
        return None, [Problem(kind, doc_id, id_field, f"must be {doc_id!r}, the document's id")]
    return model, []


def compile_catalog(
    base: Settings, documents: Iterable[Document], revision: int, *, strict: bool = True
) -> Catalog:
    """The catalog of ``documents``; :class:`InvalidDocuments` lists every problem.

    Writes are checked ``strict``-ly before they are made. Loading what is stored is not:
    a document that no longer passes (after an upgrade, say) is left out and logged, and
    an app whose policy does not compile denies everything — fail closed, but the rest of
    the registry keeps working.
    """
    docs = {d.key: d for d in documents}
    problems: list[Problem] = []
    models: dict[str, dict[str, Any]] = {kind: {} for kind in MODELS}
    for (kind, doc_id), doc in sorted(docs.items()):
        model, found = validate_spec(kind, doc_id, doc.spec)
        problems += found
        if model is not None:
            models[kind][doc_id] = model
    policy_specs = {doc_id: d.spec for (kind, doc_id), d in docs.items() if kind == "policy"}
    apps = {app_id: app for app_id, app in models["app"].items()}
    for app_id in sorted(set(policy_specs) - set(apps)):
        problems.append(Problem("policy", app_id, "", f"there is no app {app_id!r}"))
    merged = base.model_copy(
        update={
            "partners": tuple(models["partner"].values()),
            "clients": tuple(models["client"].values()),
            "apps": tuple(apps.values()),
        }
    )
    if strict:
        problems += _cross_problems(merged)
    grants = dict(models["grant"])
    for grant_id, grant_problem in _grant_problems(grants, models["partner"], apps):
        problems.append(grant_problem)
        grants.pop(grant_id, None)
    compiled, policy_problems = _compile_policies(apps, policy_specs)
    problems += policy_problems
    if problems and strict:
        raise InvalidDocuments(problems)
    for problem in problems:
        _log.error("registry document left out or denying all: %s", problem)
    with_policies = merged.model_copy(
        update={
            "apps": tuple(
                app.model_copy(update={"policy": policy_specs.get(app.id), "policy_file": None})
                for app in apps.values()
            )
        }
    )
    return Catalog(
        with_policies,
        StaticRegistry.from_settings(with_policies),
        PolicySet.of(compiled),
        revision,
        docs,
        dict(models["api_token"]),
        GrantIndex.of(grants.values()),
        LapseIndex.of(models["lapse"].values()),
    )


def _grant_problems(
    grants: Mapping[str, GrantSpec],
    partners: Mapping[str, PartnerSettings],
    apps: Mapping[str, AppSettings],
) -> Iterator[tuple[str, Problem]]:
    """Grants naming a missing partner or app (a partner or app with grants is deleted
    after its grants are revoked)."""
    for grant_id, grant in sorted(grants.items()):
        partner = partners.get(grant.partner_id)
        if partner is None:
            yield grant_id, Problem("grant", grant_id, "partner_id", "no such partner")
            continue
        for index, app_id in enumerate(grant.apps):
            if app_id not in apps:
                yield grant_id, Problem("grant", grant_id, f"apps.{index}", f"no app {app_id!r}")


def person_problems(grant_id: str, grant: GrantSpec, partner: PartnerSettings) -> list[Problem]:
    """A new grant's person: a connection of the partner, an email in its verified domains.
    Checked when the grant is made only: a partner may later drop a connection or a domain
    (the grant then matches no one) without being blocked by grants it cannot see."""
    problems = []
    if grant.connection_id is not None and grant.connection_id not in {
        c.id for c in partner.connections
    }:
        message = f"partner {partner.id} has no connection {grant.connection_id!r}"
        problems.append(Problem("grant", grant_id, "connection_id", message))
    if grant.email is not None:
        domain = grant.email.rpartition("@")[2].lower()
        if domain not in partner.domains:
            message = f"{domain} is not a verified domain of partner {partner.id}"
            problems.append(Problem("grant", grant_id, "email", message))
    return problems


def _cross_problems(merged: Settings) -> Iterator[Problem]:
    """The settings file's cross-checks (domains owned once, ids unique, cookie reach...),
    their ``partners.3.domains`` paths mapped back to ``partner/<id>`` and ``domains``."""
    for path, message in semantic_problems(merged):
        head, _, rest = path.partition(".")
        index, _, tail = rest.partition(".")
        kind = _LISTS.get(head)
        if kind is None or not index.isdigit():
            continue  # a problem of the settings file itself, reported at start-up
        items: tuple[Any, ...] = getattr(merged, head)
        item = items[int(index)]
        yield Problem(kind, getattr(item, ID_FIELDS[kind]), tail, message)


def _compile_policies(
    apps: Mapping[str, AppSettings], specs: Mapping[str, Spec]
) -> tuple[dict[str, policies.Policy], list[Problem]]:
    compiled: dict[str, policies.Policy] = {}
    problems: list[Problem] = []
    for app_id, app in apps.items():
        spec = specs.get(app_id)
        if spec is None:
            compiled[app_id] = policies.DENY_ALL
            continue
        try:
            compiled[app_id] = policies.load_policy(
                spec,
                name=f"policy/{app_id}",
                app_id=app_id,
                case_insensitive_paths=app.case_insensitive_paths,
            )
        except policies.PolicyError as exc:
            problems += [Problem("policy", app_id, p.field, p.message) for p in exc.problems]
    return compiled, problems


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)
