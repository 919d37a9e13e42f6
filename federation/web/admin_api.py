"""The admin REST API (``/admin/api/v1``): JSON over :class:`AdminService`, nothing more.

Every route is one :class:`Endpoint` of :data:`ENDPOINTS`: the Starlette routes *and* the
OpenAPI 3.1 document (``GET /admin/api/v1/openapi.json``) are generated from that one
table, so they cannot drift apart. Request and answer schemas are the pydantic models the
service validates with (``PartnerSettings`` ...) and the small view models below.

A call goes through :func:`_dispatch`:

1. a cross-site browser request (``Sec-Fetch-Site: cross-site``) is refused (403);
2. the caller becomes an :class:`Actor` (:func:`federation.admin.auth.authenticate`): an
   API token (``Authorization: Bearer isth_…``) or the hub session cookie (401 / 403);
3. a cookie-authenticated unsafe method must carry ``X-CSRF-Token`` equal to the CSRF
   cookie (double submit; ``GET /me`` hands the token out). Tokens need no such proof;
4. the endpoint's roles are checked (403), its JSON body parsed and validated (400 when
   it is not a JSON object, 422 with the fields otherwise);
5. the handler calls the service; documents come back with their secrets masked
   (:func:`redact`) and their version as an ``ETag``. Writes to an existing document name
   the version they were made against (``If-Match: "<version>"`` or ``version`` in the
   body): none is a 428, a stale one a 409 listing the conflicts.

Errors are :class:`IsthmusError` subclasses rendered by :mod:`federation.web.errors`,
always as JSON under ``/admin/api/`` (with ``errors``: kind, id, dotted field, message).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from federation.admin import review_service, signup_service
from federation.admin.auth import authenticate
from federation.admin.catalog import ID_FIELDS, GrantSpec, InvalidDocuments, Problem
from federation.admin.documents import Change, Document
from federation.admin.domains import challenge_name, challenge_value
from federation.admin.review_service import Review
from federation.admin.reviews import LapseSpec, ReviewSpec
from federation.admin.service import Actor, AdminService, DocumentNotFound, Forbidden, redact
from federation.admin.signups import SignupSpec, SignupStatus
from federation.admin.tokens import Role
from federation.audit import AuditQuery
from federation.errors import CsrfError, InvalidRequest, IsthmusError
from federation.hub import Hub
from federation.mail import SmtpMailer
from federation.sessions import SessionSummary
from federation.settings import AppSettings, ClientSettings, PartnerSettings, PartnerStatus
from federation.web import csrf

PREFIX = "/admin/api/v1"
CSRF_HEADER = "X-CSRF-Token"
AUDIT_LIMIT = 1000  # GET /audit answers at most this many events
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ETAG = re.compile(r'^\s*"?(\d{1,18})"?\s*$')

# Sponsors use the console, and of the API only /me, the grants, sign-up requests, access
# reviews and lapses of the partners they sponsor or the requests naming them (in their
# hub session: no token is a sponsor); everyone else, the API.
ALL_ROLES = frozenset(Role) - {Role.sponsor}
READERS = frozenset({Role.admin, Role.auditor})
ADMINS = frozenset({Role.admin})
GRANT_READERS = frozenset({Role.admin, Role.auditor, Role.sponsor})
GRANTORS = frozenset({Role.admin, Role.sponsor})
# Sign-up requests, reviews and lapses: read by admins, auditors and sponsors (the services
# scope a sponsor's reads), decided by admins and sponsors (the services' may_decide
# checks who exactly: the named sponsor, a partner's sponsor). Partner admins: none.
SPONSOR_READERS = GRANT_READERS
DECIDERS = GRANTORS
ME_ROLES = frozenset(Role)
PARTNER_WRITERS = frozenset({Role.admin, Role.partner_admin})


# ---------------------------------------------------------------------- errors


class PreconditionRequired(IsthmusError):
    error = "precondition_required"
    status = 428
    public_message = (
        'Send If-Match: "<version>" (the ETag of your GET) or "version" in the body: '
        "changes are made against the version you read."
    )


class InvalidInput(IsthmusError):
    """A request body or query that does not fit its schema: every field at once."""

    error = "invalid_request"
    status = 422
    public_message = "The request was refused: see the listed problems."

    def __init__(self, where: str, problems: list[tuple[str, str]], *, status: int = 422) -> None:
        self.where = where
        self.problems = problems
        super().__init__("; ".join(f"{where}.{f}: {m}" for f, m in problems), status=status)

    def public_fields(self) -> dict[str, Any]:
        return {
            "errors": [
                {"kind": self.where, "id": "", "field": f, "message": m} for f, m in self.problems
            ]
        }


class CrossSiteRequest(IsthmusError):
    error = "forbidden"
    status = 403
    public_message = "Cross-site requests to the admin API are refused."


_NO_CSRF = (
    f"Send the {CSRF_HEADER} header with the csrf_token of GET {PREFIX}/me: "
    "cookie-authenticated changes need it."
)


# ---------------------------------------------------------------------- request bodies


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentCreate(Body):
    """A new document: its id is the spec's (``id``, ``client_id``), or ``id`` for a policy."""

    spec: dict[str, Any]
    id: str | None = Field(default=None, description="policies only: the app's id")
    reason: str = Field(default="", max_length=500)


class DocumentUpdate(Body):
    """A whole document replaced; a GET answer can be sent back as it is (masked secrets
    stay unchanged; ``kind``, ``id``, ``updated_at`` and ``updated_by`` are ignored)."""

    spec: dict[str, Any]
    version: int | None = Field(default=None, ge=0, description="or If-Match")
    reason: str = Field(default="", max_length=500)
    kind: str | None = None
    id: str | None = None
    updated_at: float | None = None
    updated_by: str | None = None


class DocumentDelete(Body):
    version: int | None = Field(default=None, ge=0, description="or If-Match")
    reason: str = Field(default="", max_length=500)


class StatusChange(Body):
    status: PartnerStatus
    reason: str = Field(default="", max_length=500)
    version: int | None = Field(default=None, ge=0, description="or If-Match")


class DomainClaim(Body):
    domain: str = Field(min_length=1, max_length=253)


class TokenCreate(Body):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    partner_id: str | None = None
    ttl_days: int | None = Field(default=None, ge=1, le=3650)


class GrantCreate(Body):
    """A time-boxed grant: a person (``connection_id`` + ``subject``, or ``email``) or, with
    neither, every member of ``partner_id``; ``granted_by`` is the caller."""

    partner_id: str
    connection_id: str | None = None
    subject: str | None = None
    email: str | None = None
    apps: list[str] = Field(description="the app ids: one app, or a project's set")
    valid_from: datetime | None = None
    valid_until: datetime = Field(description="must be in the future; timezone required")
    reason: str = Field(default="", max_length=500)


class SignupApproval(Body):
    """The named sponsor approves: a subset of the apps asked for, until a date."""

    apps: list[str] = Field(description="the apps approved: a subset of those asked for")
    until: datetime = Field(
        description="the end of the access; timezone required, at most signup.max_grant_days ahead"
    )
    note: str = Field(default="", max_length=1000)


class SignupRefusal(Body):
    note: str = Field(default="", max_length=1000, description="told to the requester")


class ReviewConfirmation(Body):
    """Lines by their position in the review's ``spec.lines`` (from 0), or every pending
    line with ``all``."""

    lines: list[Annotated[StrictInt, Field(ge=0)]] | None = Field(
        default=None, description="positions in spec.lines (from 0)"
    )
    all: StrictBool = Field(default=False, description="every line still pending")

    def problems(self) -> list[tuple[str, str]]:
        if self.all and self.lines is not None:
            return [("lines", "give lines or all: true, not both")]
        if not self.all and not self.lines:
            return [("lines", "give the lines to confirm (their positions), or all: true")]
        return []


class LapseRestore(Body):
    apps: list[str] | None = Field(
        default=None, min_length=1, description="the apps to restore (default: all of them)"
    )


class Inspection(Body):
    """A partner IdP to look at before trusting it: OIDC discovery, or SAML metadata."""

    protocol: Literal["oidc", "saml"]
    connection_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    discovery_url: str | None = Field(default=None, description="oidc: issuer or discovery URL")
    client_id: str = ""
    client_secret: str | None = None
    metadata_url: str | None = Field(default=None, description="saml: this, or metadata_xml")
    metadata_xml: str | None = None
    signing_cert_pem: str | None = Field(
        default=None, description="saml: the certificate the metadata must be signed with"
    )
    idp_entity_id: str | None = None

    def problems(self) -> list[tuple[str, str]]:
        if self.protocol == "oidc" and not self.discovery_url:
            return [("discovery_url", "required for oidc")]
        if self.protocol == "saml" and (self.metadata_url is None) == (self.metadata_xml is None):
            return [("metadata_url", "give metadata_url or metadata_xml (one of them)")]
        return []


# ---------------------------------------------------------------------- answers


class DocumentView(BaseModel):
    kind: str
    id: str
    version: int
    updated_at: float
    updated_by: str
    spec: dict[str, Any] = Field(description="secrets masked as **********")


class ApiTokenView(BaseModel):
    """An API token's document as answered (its hash masked)."""

    name: str
    role: Role
    partner_id: str | None = None
    secret_sha256: str = Field(description="always masked")
    created_at: datetime
    expires_at: datetime | None = None
    created_by: str = ""


class SignupView(SignupSpec):
    """A sign-up request's document as answered (its link hash masked)."""

    secret_sha256: str | None = Field(default=None, description="always masked")


class ReviewView(BaseModel):
    """An access review: its lines are confirmed by position in ``spec.lines``."""

    kind: Literal["review"] = "review"
    id: str
    version: int
    state: Literal["open", "closing", "closed"] = Field(
        description="open: lines may be confirmed; closing: the window has ended and the "
        "lifecycle job has not closed it yet; closed: unconfirmed lines lapsed"
    )
    spec: ReviewSpec


class ApprovalView(BaseModel):
    signup: DocumentView = Field(description="the request, approved")
    partner_id: str
    grant_id: str
    partner_created: bool = Field(
        description="a partner was created for the company (or one waiting for its domain "
        "proof reused)"
    )
    domain_pending: bool = Field(
        description="the requester's domain waits for its DNS proof (they were mailed it)"
    )
    valid_until: datetime


class ChangeView(BaseModel):
    revision: int
    kind: str
    id: str
    action: Literal["create", "update", "delete"]
    version: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    actor: str
    at: float
    reason: str


class SessionView(BaseModel):
    sid: str
    subject: str
    email: str | None
    name: str | None
    connection_id: str
    groups: list[str]
    roles: list[str]
    created_at: int
    expires_at: int


class DomainClaimView(BaseModel):
    domain: str
    record_type: Literal["TXT"] = "TXT"
    record_name: str
    record_value: str
    document: DocumentView


class DomainCheckView(BaseModel):
    domain: str
    record_name: str
    expected: str
    verified: bool
    found: list[str]
    problem: str | None


class AuditEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    ts: float
    event: str
    outcome: str
    partner: str | None = None
    actor: str | None = None
    request_id: str | None = None


class MeView(BaseModel):
    name: str
    role: Role
    partner_id: str | None
    csrf_token: str | None = Field(
        default=None, description=f"cookie sessions: send it as {CSRF_HEADER} on changes"
    )


class TokenCreated(BaseModel):
    token: str = Field(description="the whole token: shown once, never stored")
    document: DocumentView


class CheckView(BaseModel):
    name: str
    status: Literal["ok", "warning", "error"]
    detail: str


class ReportView(BaseModel):
    ok: bool = Field(description="no error check (warnings allowed)")
    status: Literal["ok", "warning", "error"] = Field(description="the worst check")
    checks: list[CheckView]
    connection: dict[str, Any] | None = Field(
        default=None, description="inspections: suggested connection settings (secrets masked)"
    )
    test_login_url: str | None = None


class ProblemView(BaseModel):
    kind: str
    id: str
    field: str = Field(description="dotted path of the bad field ('' for the whole document)")
    message: str


class ConflictView(BaseModel):
    kind: str
    id: str
    expected_version: int | None
    current_version: int


class ErrorView(BaseModel):
    error: str
    error_description: str
    request_id: str
    errors: list[ProblemView] | None = None
    conflicts: list[ConflictView] | None = None


# ---------------------------------------------------------------------- the route table


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated call: the request, who makes it, the service, the parsed body."""

    request: Request
    actor: Actor
    service: AdminService
    body: BaseModel | None
    by_token: bool

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def parsed(self, model: type[B]) -> B:
        assert isinstance(self.body, model)
        return self.body


B = TypeVar("B", bound=BaseModel)
Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str  # under PREFIX; {name} parameters as in Starlette and OpenAPI
    name: str  # the OpenAPI operationId
    handler: Handler
    summary: str
    tag: str
    roles: frozenset[Role] = ALL_ROLES
    body: type[BaseModel] | None = None
    body_optional: bool = False
    answer: type[BaseModel] | None = None
    many: bool = False  # the answer is {"items": [answer, ...]}
    status: int = 200
    media: str = "application/json"
    query: tuple[Param, ...] = ()
    if_match: bool = False  # a write against a version: If-Match (or body version)
    spec_kind: str | None = None  # a document kind: its spec schema in body and answer
    public: bool = False  # no authentication (the OpenAPI document)
    conflicts: bool = False  # may answer 409 (besides If-Match writes and POSTs)


def _json(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(content, default=str, ensure_ascii=False, separators=(",", ":"))
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _empty(status: int = 204) -> Response:
    return Response(status_code=status, headers={"Cache-Control": "no-store"})


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _view(doc: Document) -> dict[str, Any]:
    return {
        "kind": doc.kind,
        "id": doc.id,
        "version": doc.version,
        "updated_at": doc.updated_at,
        "updated_by": doc.updated_by,
        "spec": redact(doc.spec),
    }


def _document(doc: Document, status: int = 200, location: str | None = None) -> Response:
    headers = {"ETag": f'"{doc.version}"'}
    if location is not None:
        headers["Location"] = location
    return _json(_view(doc), status, headers)


def _items(items: list[Any]) -> Response:
    return _json({"items": items})


def expected_version(request: Request, body_version: int | None) -> int:
    """The version a write was made against: ``If-Match`` or the body's ``version``."""
    header = request.headers.get("if-match")
    from_header: int | None = None
    if header is not None:
        match = _ETAG.match(header)
        if match is None:
            raise InvalidRequest(
                f"If-Match {header!r}",
                public_message='If-Match must be one version, as in the ETag: "3".',
            )
        from_header = int(match.group(1))
    if from_header is None and body_version is None:
        raise PreconditionRequired(f"{request.method} {request.url.path} without a version")
    if from_header is not None and body_version is not None and from_header != body_version:
        raise InvalidRequest(
            f"If-Match {from_header} and body version {body_version}",
            public_message="If-Match and the body's version differ: send one.",
        )
    return from_header if from_header is not None else int(body_version or 0)


# ---------------------------------------------------------------------- documents


_PLURAL = {"partner": "partners", "app": "apps", "client": "clients", "policy": "policies"}


@dataclass(frozen=True, slots=True)
class KindRoutes:
    """List, read, create, replace, delete and history of one document kind."""

    kind: str
    id_param: str  # the path parameter naming the document

    @property
    def base(self) -> str:
        return f"/{_PLURAL[self.kind]}"

    @property
    def one(self) -> str:
        return f"{self.base}/{{{self.id_param}}}"

    async def index(self, call: Call) -> Response:
        docs = await call.service.documents(call.actor, self.kind)
        query = call.request.query_params
        wanted = (query.get("q") or "").strip().lower()
        status = query.get("status") if self.kind == "partner" else None
        if status is not None and status not in PartnerStatus.__members__:
            known = ", ".join(PartnerStatus)
            raise InvalidInput("query", [("status", f"one of {known}")], status=400)
        found = [
            _view(d)
            for d in docs
            if (not wanted or _matches(d, wanted))
            and (status is None or d.spec.get("status", PartnerStatus.invited.value) == status)
        ]
        return _items(found)

    async def get(self, call: Call) -> Response:
        return _document(
            await call.service.document(call.actor, self.kind, call.param(self.id_param))
        )

    async def create(self, call: Call) -> Response:
        body = call.parsed(DocumentCreate)
        doc_id = self._new_id(body)
        doc = await call.service.put(
            call.actor, self.kind, doc_id, body.spec, 0, reason=body.reason
        )
        return _document(doc, 201, f"{PREFIX}{self.base}/{doc_id}")

    def _new_id(self, body: DocumentCreate) -> str:
        id_field = ID_FIELDS.get(self.kind)
        if id_field is None:  # a policy: named by its app
            if not body.id:
                raise InvalidInput("body", [("id", "the app's id is required for a policy")])
            return body.id
        doc_id = body.spec.get(id_field)
        if not isinstance(doc_id, str) or not doc_id:
            raise InvalidDocuments([Problem(self.kind, "", id_field, "Field required")])
        return doc_id

    async def put(self, call: Call) -> Response:
        body = call.parsed(DocumentUpdate)
        version = expected_version(call.request, body.version)
        doc = await call.service.put(
            call.actor, self.kind, call.param(self.id_param), body.spec, version, reason=body.reason
        )
        return _document(doc)

    async def delete(self, call: Call) -> Response:
        body = call.parsed(DocumentDelete)
        version = expected_version(call.request, body.version)
        await call.service.delete(
            call.actor, self.kind, call.param(self.id_param), version, reason=body.reason
        )
        return _empty()

    async def history(self, call: Call) -> Response:
        doc_id = call.param(self.id_param)
        # Reading the document first: a partner admin gets a 404 for another partner.
        await call.service.document(call.actor, self.kind, doc_id)
        changes = await call.service.history(
            call.actor, kind=self.kind, doc_id=doc_id, limit=_limit(call.request, 100, 1000)
        )
        return _items([_change(c) for c in changes])

    def endpoints(self, readers: frozenset[Role], writers: frozenset[Role]) -> list[Endpoint]:
        k, tag = self.kind, _PLURAL[self.kind]
        search: tuple[Param, ...] = (
            Param("q", "substring of the id, name or a domain (any case)"),
        )
        if k == "partner":
            search += (Param("status", "invited, active, suspended or offboarded"),)
        creators = writers & ADMINS  # a partner admin changes, never creates or deletes
        return [
            Endpoint("GET", self.base, f"list_{tag}", self.index, f"List the {tag}", tag,
                     readers, answer=DocumentView, many=True, query=search, spec_kind=k),
            Endpoint("POST", self.base, f"create_{k}", self.create, f"Create a {k} (version 1)",
                     tag, creators, body=DocumentCreate, answer=DocumentView, status=201,
                     spec_kind=k),
            Endpoint("GET", self.one, f"get_{k}", self.get, f"Read a {k} (ETag: its version)",
                     tag, readers, answer=DocumentView, spec_kind=k),
            Endpoint("PUT", self.one, f"replace_{k}", self.put, f"Replace a {k}", tag, writers,
                     body=DocumentUpdate, answer=DocumentView, if_match=True, spec_kind=k),
            Endpoint("DELETE", self.one, f"delete_{k}", self.delete, f"Delete a {k}", tag,
                     creators, body=DocumentDelete, body_optional=True, status=204,
                     if_match=True),
            Endpoint("GET", f"{self.one}/history", f"{k}_history", self.history,
                     f"The recorded changes of a {k}, newest first", tag, readers,
                     answer=ChangeView, many=True, query=(_LIMIT,)),
        ]  # fmt: skip


def _matches(doc: Document, wanted: str) -> bool:
    names = [doc.id, str(doc.spec.get("name") or "")]
    names += [str(d) for d in doc.spec.get("domains") or ()]
    return any(wanted in name.lower() for name in names)


def _change(change: Change) -> dict[str, Any]:
    return change.to_dict()


_LIMIT = Param("limit", "at most this many (newest first)", {"type": "integer", "minimum": 1})


def _limit(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidInput("query", [("limit", "a whole number of at least 1")], status=400)
    return min(int(raw), most)


# ---------------------------------------------------------------------- partners only


async def set_status(call: Call) -> Response:
    body = call.parsed(StatusChange)
    version = expected_version(call.request, body.version)
    doc = await call.service.set_status(
        call.actor, call.param("id"), body.status, version, reason=body.reason
    )
    return _document(doc)


async def claim_domain(call: Call) -> Response:
    partner_id, body = call.param("id"), call.parsed(DomainClaim)
    doc = await call.service.claim_domain(call.actor, partner_id, body.domain)
    name = body.domain.strip().lower().rstrip(".")
    pending = next(p for p in doc.spec.get("pending_domains", ()) if p.get("name") == name)
    claim = DomainClaimView(
        domain=name,
        record_name=challenge_name(name),
        record_value=challenge_value(str(pending["token"])),
        document=DocumentView.model_validate(_view(doc)),
    )
    return _json(claim.model_dump(mode="json"), 201, {"ETag": f'"{doc.version}"'})


async def verify_domain(call: Call) -> Response:
    check = await call.service.verify_domain(call.actor, call.param("id"), call.param("domain"))
    view = DomainCheckView.model_validate(dataclasses.asdict(check))
    return _json(view.model_dump(mode="json"))


async def remove_domain(call: Call) -> Response:
    doc = await call.service.remove_domain(call.actor, call.param("id"), call.param("domain"))
    return _document(doc)


async def list_sessions(call: Call) -> Response:
    sessions = await call.service.sessions(call.actor, call.param("id"))
    return _items([_session(s) for s in sessions])


def _session(summary: SessionSummary) -> dict[str, Any]:
    who = summary.identity
    view = SessionView(
        sid=summary.sid,
        subject=who.subject,
        email=who.email,
        name=who.name,
        connection_id=who.connection_id,
        groups=list(who.groups),
        roles=list(who.roles),
        created_at=summary.created_at,
        expires_at=summary.expires_at,
    )
    return view.model_dump(mode="json")


async def end_session(call: Call) -> Response:
    partner_id, sid = call.param("id"), call.param("sid")
    if not await call.service.end_session(call.actor, partner_id, sid):
        raise IsthmusError(
            f"no session {sid} of {partner_id}",
            error="not_found",
            status=404,
            public_message="There is no such session (it may have ended already).",
        )
    return _empty()


# ---------------------------------------------------------------------- registry-wide


async def registry_history(call: Call) -> Response:
    query = call.request.query_params
    changes = await call.service.history(
        call.actor,
        kind=query.get("kind") or None,
        doc_id=query.get("id") or None,
        limit=_limit(call.request, 100, 1000),
    )
    return _items([_change(c) for c in changes])


_AUDIT_PARAMS = (
    Param("partner", "the partner's id"),
    Param("user", "subject, hub subject or email (any case)"),
    Param("app", "the app's id"),
    Param("event", "an event name, or a prefix ending in '.' (admin.)"),
    Param("outcome", "success or failure"),
    Param("since", "ISO-8601 time or epoch seconds (inclusive)"),
    Param("until", "ISO-8601 time or epoch seconds (exclusive)"),
    _LIMIT,
)


def audit_query(request: Request, default_limit: int, most: int) -> AuditQuery:
    query = request.query_params
    problems: list[tuple[str, str]] = []
    times: dict[str, float | None] = {}
    for name in ("since", "until"):
        raw = query.get(name)
        times[name] = None
        if raw:
            try:
                times[name] = parse_time(raw)
            except ValueError:
                problems.append((name, "an ISO-8601 time (2025-01-31T08:00:00Z) or epoch seconds"))
    if problems:
        raise InvalidInput("query", problems, status=400)
    return AuditQuery(
        partner=query.get("partner") or None,
        user=query.get("user") or None,
        app=query.get("app") or None,
        event=query.get("event") or None,
        outcome=query.get("outcome") or None,
        since=times["since"],
        until=times["until"],
        limit=_limit(request, default_limit, most),
    )


def parse_time(raw: str) -> float:
    """Epoch seconds of an ISO-8601 time (UTC when it names no zone) or of a number."""
    try:
        return float(raw)
    except ValueError:
        pass
    when = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


async def audit(call: Call) -> Response:
    events = await call.service.audit(call.actor, audit_query(call.request, 100, AUDIT_LIMIT))
    return _items(events)


async def audit_export(call: Call) -> Response:
    most = hub_of(call.request).settings.registry.audit_max_events
    events = await call.service.audit(call.actor, audit_query(call.request, most, most))

    async def lines() -> AsyncIterator[bytes]:
        for event in events:
            yield (json.dumps(event, default=str, sort_keys=True) + "\n").encode()

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": 'attachment; filename="isthmus-audit.jsonl"',
        },
    )


# ---------------------------------------------------------------------- grants


async def list_grants(call: Call) -> Response:
    docs = await call.service.documents(call.actor, "grant")
    partner = call.request.query_params.get("partner")
    return _items([_view(d) for d in docs if partner is None or d.spec["partner_id"] == partner])


async def create_grant(call: Call) -> Response:
    body = call.parsed(GrantCreate)
    doc = await call.service.grant(call.actor, body.model_dump(mode="json", exclude_none=True))
    return _document(doc, 201, f"{PREFIX}/grants/{doc.id}")


async def get_grant(call: Call) -> Response:
    return _document(await call.service.document(call.actor, "grant", call.param("id")))


async def revoke_grant(call: Call) -> Response:
    """Revoking needs no version: the grant ends now (the history keeps it)."""
    await call.service.revoke_grant(call.actor, call.param("id"))
    return _empty()


# ---------------------------------------------------------------------- sign-up requests


def _one_of(name: str, raw: str | None, known: list[str]) -> str | None:
    """A query parameter that must be one of ``known`` (400 naming it otherwise)."""
    if raw is None:
        return None
    if raw not in known:
        raise InvalidInput("query", [(name, f"one of {', '.join(known)}")], status=400)
    return raw


def _signup(doc: Document) -> dict[str, Any]:
    """A request's document, its spec whole (``status`` even while pending), secrets masked."""
    spec = SignupSpec.model_validate(doc.spec).model_dump(mode="json", exclude_none=True)
    return {**_view(doc), "spec": redact(spec)}


async def list_signups(call: Call) -> Response:
    status = _one_of(
        "status", call.request.query_params.get("status"), [s.value for s in SignupStatus]
    )
    found = await signup_service.requests(call.service, call.actor)
    return _items([_signup(d) for d, spec in found if status is None or spec.status == status])


async def get_signup(call: Call) -> Response:
    doc, _ = await signup_service.request(call.service, call.actor, call.param("id"))
    return _json(_signup(doc), headers={"ETag": f'"{doc.version}"'})


async def approve_signup(call: Call) -> Response:
    body, signup_id = call.parsed(SignupApproval), call.param("id")
    hub = hub_of(call.request)
    approval = await signup_service.approve(
        call.service,
        call.actor,
        signup_id,
        apps=body.apps,
        until=body.until,
        note=body.note,
        mailer=SmtpMailer(hub.settings.smtp),
    )
    doc, _ = await signup_service.request(call.service, call.actor, signup_id)
    view = ApprovalView(
        signup=DocumentView.model_validate(_signup(doc)),
        partner_id=approval.partner_id,
        grant_id=approval.grant_id,
        partner_created=approval.created,
        domain_pending=approval.waiting,
        valid_until=approval.valid_until,
    )
    return _json(view.model_dump(mode="json"))


async def refuse_signup(call: Call) -> Response:
    body = call.parsed(SignupRefusal)
    hub = hub_of(call.request)
    doc = await signup_service.refuse(
        call.service, call.actor, call.param("id"), note=body.note,
        mailer=SmtpMailer(hub.settings.smtp),
    )  # fmt: skip
    return _json(_signup(doc), headers={"ETag": f'"{doc.version}"'})


# ---------------------------------------------------------------------- access reviews


def _review(item: Review, now: datetime) -> dict[str, Any]:
    spec = item.spec
    state = "closed" if spec.closed_at is not None else "open" if spec.is_open(now) else "closing"
    return {
        "kind": "review",
        "id": item.id,
        "version": item.version,
        "state": state,
        "spec": spec.model_dump(mode="json", exclude_none=True),
    }


def _now(call: Call) -> datetime:
    return datetime.fromtimestamp(hub_of(call.request).clock(), UTC)


async def list_reviews(call: Call) -> Response:
    query = call.request.query_params
    partner = query.get("partner")
    still_open = _one_of("open", query.get("open"), ["true", "false"])
    found = await review_service.reviews(call.service, call.actor)
    now = _now(call)
    return _items([
        _review(r, now)
        for r in found
        if (partner is None or r.spec.partner_id == partner)
        and (still_open is None or (r.spec.closed_at is None) == (still_open == "true"))
    ])  # fmt: skip


async def get_review(call: Call) -> Response:
    item = await review_service.review(call.service, call.actor, call.param("id"))
    return _json(_review(item, _now(call)), headers={"ETag": f'"{item.version}"'})


async def confirm_review(call: Call) -> Response:
    body, review_id = call.parsed(ReviewConfirmation), call.param("id")
    if body.problems():
        raise InvalidInput("body", body.problems())
    before = await review_service.review(call.service, call.actor, review_id)
    count = len(before.spec.lines)
    if body.all:
        lines = [i for i, line in enumerate(before.spec.lines) if line.decision == "pending"]
    else:
        lines = body.lines or []
        bad = [(f"lines.{n}", f"no line {i}: the review has {count} (from 0)")
               for n, i in enumerate(lines) if i >= count]  # fmt: skip
        if bad:
            raise InvalidInput("body", bad)
    after = await review_service.confirm(call.service, call.actor, review_id, lines)
    return _json(_review(after, _now(call)), headers={"ETag": f'"{after.version}"'})


async def list_lapses(call: Call) -> Response:
    partner = call.request.query_params.get("partner")
    found = await review_service.lapses(call.service, call.actor)
    return _items([_view(d) for d in found if partner is None or d.spec["partner_id"] == partner])


async def restore_lapse(call: Call) -> Response:
    """Lift a lapse (for some of its apps, or all): the policy decides again."""
    body, lapse_id = call.parsed(LapseRestore), call.param("id")
    hub = hub_of(call.request)
    current = await review_service.lapse(call.service, lapse_id)
    if current is None:
        raise DocumentNotFound(f"no lapse/{lapse_id}")
    if not review_service.may_decide(call.actor, hub.registry.partner(current.partner_id)):
        # Refused before the body is looked at: a 422 would tell which apps were lost.
        raise Forbidden(f"{call.actor.name} ({call.actor.role.value}) may not restore {lapse_id}")
    apps = body.apps if body.apps is not None else list(current.apps)
    bad = [(f"apps.{n}", f"{app!r} is not lapsed here (lapsed: {', '.join(current.apps)})")
           for n, app in enumerate(apps) if app not in current.apps]  # fmt: skip
    if bad:
        raise InvalidInput("body", bad)
    await review_service.restore(call.service, call.actor, lapse_id, apps)
    return _empty()


# ---------------------------------------------------------------------- tokens and me


async def create_token(call: Call) -> Response:
    body = call.parsed(TokenCreate)
    token, doc = await call.service.create_token(
        call.actor,
        name=body.name,
        role=body.role,
        partner_id=body.partner_id,
        ttl_days=body.ttl_days,
    )
    location = f"{PREFIX}/tokens/{doc.id}"
    return _json({"token": token, "document": _view(doc)}, 201, {"Location": location})


async def list_tokens(call: Call) -> Response:
    return _items([_view(d) for d in await call.service.documents(call.actor, "api_token")])


async def revoke_token(call: Call) -> Response:
    """Revoking needs no version: a token never changes, and revoking twice is harmless."""
    token_id = call.param("id")
    current = await call.service.document(call.actor, "api_token", token_id)
    await call.service.delete(call.actor, "api_token", token_id, current.version, reason="revoked")
    return _empty()


async def me(call: Call) -> Response:
    view = MeView(name=call.actor.name, role=call.actor.role, partner_id=call.actor.partner_id)
    if call.by_token:
        return _json(view.model_dump(mode="json"))
    token = csrf.token(call.request)
    response = _json(view.model_copy(update={"csrf_token": token}).model_dump(mode="json"))
    if call.request.cookies.get(csrf.CSRF_COOKIE) != token:
        csrf.remember(response, hub_of(call.request).settings, token)
    return response


# ---------------------------------------------------------------------- onboarding


async def inspect(call: Call) -> Response:
    """Look at an IdP (the hub fetches the URL given: admins only)."""
    from federation.admin import onboarding  # pysaml2 and friends: loaded on first use

    body = call.parsed(Inspection)
    if body.problems():
        raise InvalidInput("body", body.problems())
    context = hub_of(call.request).context
    if body.protocol == "oidc":
        assert body.discovery_url is not None
        report = await onboarding.inspect_oidc(
            body.discovery_url,
            context,
            connection_id=body.connection_id,
            client_id=body.client_id,
            client_secret=body.client_secret,
        )
    else:
        report = await onboarding.inspect_saml(
            context,
            connection_id=body.connection_id,
            metadata_url=body.metadata_url,
            metadata_xml=body.metadata_xml,
            signing_cert_pem=body.signing_cert_pem,
            idp_entity_id=body.idp_entity_id,
        )
    return _json(redact(report.to_dict()))


async def test_connection(call: Call) -> Response:
    """Check a connection the registry holds; answer the checks and the test login link."""
    from federation.admin import onboarding

    partner_id, connection_id = call.param("id"), call.param("cid")
    await call.service.document(call.actor, "partner", partner_id)  # 404 for other partners
    onboarding.require_tester(call.actor, partner_id)
    report = await onboarding.test_connection(hub_of(call.request), partner_id, connection_id)
    return _json(redact(report.to_dict()))


async def openapi(request: Request) -> Response:
    cookie = hub_of(request).settings.session.cookie_name
    return _json(openapi_document(cookie))


# ---------------------------------------------------------------------- the table

_PARTNERS = KindRoutes("partner", "id")
_ID = "/partners/{id}"

ENDPOINTS: tuple[Endpoint, ...] = (
    *_PARTNERS.endpoints(ALL_ROLES, PARTNER_WRITERS),
    Endpoint("POST", f"{_ID}/status", "set_partner_status", set_status,
             "Move a partner through its lifecycle (suspending or offboarding ends every "
             "session and refresh token of the partner)", "partners", ADMINS,
             body=StatusChange, answer=DocumentView, if_match=True, spec_kind="partner"),
    Endpoint("POST", f"{_ID}/domains", "claim_domain", claim_domain,
             "Claim a domain: the TXT record to publish to prove it", "partners",
             PARTNER_WRITERS, body=DomainClaim, answer=DomainClaimView, status=201),
    Endpoint("POST", f"{_ID}/domains/{{domain}}/verify", "verify_domain", verify_domain,
             "Look the domain's TXT record up; verified, it routes logins", "partners",
             PARTNER_WRITERS, answer=DomainCheckView),
    Endpoint("DELETE", f"{_ID}/domains/{{domain}}", "remove_domain", remove_domain,
             "Remove a verified or pending domain", "partners", PARTNER_WRITERS,
             answer=DocumentView, spec_kind="partner"),
    Endpoint("GET", f"{_ID}/sessions", "list_sessions", list_sessions,
             "The partner's live sessions, newest first", "partners", answer=SessionView,
             many=True),
    Endpoint("DELETE", f"{_ID}/sessions/{{sid}}", "end_session", end_session,
             "End one session (and its refresh tokens)", "partners", PARTNER_WRITERS,
             status=204),
    Endpoint("POST", f"{_ID}/connections/{{cid}}/test", "test_connection", test_connection,
             "Test a connection: discovery, JWKS, metadata signature, certificates, the "
             "partner's readiness, and the test login link", "onboarding", PARTNER_WRITERS,
             answer=ReportView),
    Endpoint("POST", "/onboarding/inspect", "inspect_idp", inspect,
             "Inspect an IdP from its OIDC discovery URL or SAML metadata (URL or XML): "
             "checks, and suggested connection settings", "onboarding", ADMINS,
             body=Inspection, answer=ReportView),
    *KindRoutes("app", "id").endpoints(READERS, ADMINS),
    *KindRoutes("client", "id").endpoints(READERS, ADMINS),
    *KindRoutes("policy", "app_id").endpoints(READERS, ADMINS),
    Endpoint("GET", "/history", "registry_history", registry_history,
             "Recorded changes of the registry, newest first (secrets masked)", "registry",
             answer=ChangeView, many=True,
             query=(Param("kind", "partner, app, client, policy, api_token, grant, "
                          "signup, review or lapse"),
                    Param("id", "a document id"), _LIMIT)),
    Endpoint("GET", "/audit", "audit", audit, "Search the audit trail, newest first", "audit",
             answer=AuditEvent, many=True, query=_AUDIT_PARAMS),
    Endpoint("GET", "/audit/export", "audit_export", audit_export,
             "Export the audit trail as JSON lines (the same filters)", "audit",
             media="application/x-ndjson", query=_AUDIT_PARAMS),
    Endpoint("GET", "/grants", "list_grants", list_grants,
             "List the time-boxed grants (expired ones too; a sponsor: the grants of the "
             "partners they sponsor)", "grants", GRANT_READERS,
             answer=DocumentView, many=True, spec_kind="grant",
             query=(Param("partner", "the grants of one partner"),)),
    Endpoint("POST", "/grants", "create_grant", create_grant,
             "Grant a person or a whole partner apps until a date (a sponsor: for a partner "
             "they sponsor, at most signup.max_grant_days ahead)", "grants", GRANTORS,
             body=GrantCreate, answer=DocumentView, status=201, spec_kind="grant"),
    Endpoint("GET", "/grants/{id}", "get_grant", get_grant, "Read a grant", "grants",
             GRANT_READERS, answer=DocumentView, spec_kind="grant"),
    Endpoint("DELETE", "/grants/{id}", "revoke_grant", revoke_grant,
             "Revoke a grant (it ends now)", "grants", GRANTORS, status=204),
    Endpoint("GET", "/signups", "list_signups", list_signups,
             "List the sign-up requests, newest first (a sponsor: those naming them)",
             "signups", SPONSOR_READERS, answer=DocumentView, many=True, spec_kind="signup",
             query=(Param("status", "pending, approved, refused or expired",
                          {"type": "string", "enum": [s.value for s in SignupStatus]}),)),
    Endpoint("GET", "/signups/{id}", "get_signup", get_signup,
             "Read a sign-up request (a sponsor: one naming them)", "signups",
             SPONSOR_READERS, answer=DocumentView, spec_kind="signup"),
    Endpoint("POST", "/signups/{id}/approve", "approve_signup", approve_signup,
             "Approve a pending request: only the sponsor it names (a person's session, "
             "never a token). Grants the apps until the date; extends or creates the "
             "partner", "signups", DECIDERS, body=SignupApproval, answer=ApprovalView),
    Endpoint("POST", "/signups/{id}/refuse", "refuse_signup", refuse_signup,
             "Refuse a pending request: only the sponsor it names", "signups", DECIDERS,
             body=SignupRefusal, body_optional=True, answer=DocumentView, spec_kind="signup"),
    Endpoint("GET", "/reviews", "list_reviews", list_reviews,
             "List the access reviews, newest first (a sponsor: of the partners they "
             "sponsor)", "reviews", SPONSOR_READERS, answer=ReviewView, many=True,
             query=(Param("partner", "the reviews of one partner"),
                    Param("open", "true: not closed yet; false: closed",
                          {"type": "string", "enum": ["true", "false"]}))),
    Endpoint("GET", "/reviews/{id}", "get_review", get_review, "Read an access review",
             "reviews", SPONSOR_READERS, answer=ReviewView),
    Endpoint("POST", "/reviews/{id}/confirm", "confirm_review", confirm_review,
             "Confirm lines of an open review (by position), or all pending ones: the "
             "partner's sponsors and admins", "reviews", DECIDERS,
             body=ReviewConfirmation, answer=ReviewView),
    Endpoint("GET", "/lapses", "list_lapses", list_lapses,
             "List the lapses: who is kept out of which apps after a review (a sponsor: "
             "of the partners they sponsor)", "reviews", SPONSOR_READERS,
             answer=DocumentView, many=True, spec_kind="lapse",
             query=(Param("partner", "the lapses of one partner"),)),
    Endpoint("DELETE", "/lapses/{id}", "restore_lapse", restore_lapse,
             "Restore access: lift a lapse for some of its apps, or all (the partner's "
             "sponsors and admins)", "reviews", DECIDERS, body=LapseRestore,
             body_optional=True, status=204, conflicts=True),
    Endpoint("POST", "/tokens", "create_token", create_token,
             "Create an API token (the token is answered once)", "tokens", ADMINS,
             body=TokenCreate, answer=TokenCreated, status=201),
    Endpoint("GET", "/tokens", "list_tokens", list_tokens, "List the API tokens", "tokens",
             ADMINS, answer=DocumentView, many=True, spec_kind="api_token"),
    Endpoint("DELETE", "/tokens/{id}", "revoke_token", revoke_token,
             "Revoke an API token (every replica within registry.poll_seconds)", "tokens",
             ADMINS, status=204),
    Endpoint("GET", "/me", "me", me, "Who am I (and, for a session, the CSRF token)", "me",
             ME_ROLES, answer=MeView),
)  # fmt: skip


# ---------------------------------------------------------------------- dispatch


def _parse_body(request_body: bytes, endpoint: Endpoint) -> BaseModel | None:
    model = endpoint.body
    if model is None:
        return None
    if not request_body.strip():
        if endpoint.body_optional:
            return model()
        raise InvalidRequest("empty body", public_message="The request body must be a JSON object.")
    try:
        data = json.loads(request_body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"body is not JSON: {exc}", public_message="The request body is not valid JSON."
        ) from exc
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"body is a JSON {type(data).__name__}",
            public_message="The request body must be a JSON object.",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise InvalidInput("body", problems) from exc


def _check_csrf(request: Request) -> None:
    cookie = request.cookies.get(csrf.CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER, "")
    if not (cookie and sent and hmac.compare_digest(cookie.encode(), sent.encode())):
        raise CsrfError(f"{request.method} {request.url.path}: no matching {CSRF_HEADER}",
                        public_message=_NO_CSRF)  # fmt: skip


def _route(endpoint: Endpoint) -> Route:
    async def dispatch(request: Request) -> Response:
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise CrossSiteRequest(f"{request.method} {request.url.path} from another site")
        hub = hub_of(request)
        await hub.ready()
        authorization = request.headers.get("authorization")
        session_id = request.cookies.get(hub.settings.session.cookie_name)
        actor = await authenticate(hub, authorization, session_id)
        by_token = bool(authorization)
        if not by_token and request.method in _UNSAFE:
            _check_csrf(request)
        if actor.role not in endpoint.roles:
            raise Forbidden(f"{actor.name} ({actor.role.value}) may not {endpoint.name}")
        body = _parse_body(await request.body(), endpoint)
        return await endpoint.handler(Call(request, actor, AdminService(hub), body, by_token))

    return Route(PREFIX + endpoint.path, dispatch, methods=[endpoint.method], name=endpoint.name)


OPENAPI_PATH = "/openapi.json"

routes: list[BaseRoute] = [
    Route(PREFIX + OPENAPI_PATH, openapi, methods=["GET"], name="openapi"),
    *(_route(e) for e in ENDPOINTS),
]


# ---------------------------------------------------------------------- OpenAPI


_SCHEMA_REF = "#/components/schemas/{model}"
_SPEC_MODELS: dict[str, tuple[str, type[BaseModel] | None]] = {
    "partner": ("PartnerSettings", PartnerSettings),
    "app": ("AppSettings", AppSettings),
    "client": ("ClientSettings", ClientSettings),
    "api_token": ("ApiTokenView", ApiTokenView),
    "grant": ("GrantSpec", GrantSpec),
    "signup": ("SignupView", SignupView),
    "lapse": ("LapseSpec", LapseSpec),
    "policy": ("Policy", None),  # policies/schema.json
}
_ERRORS = {
    400: "Malformed request: the body is not a JSON object, or a query parameter is wrong",
    401: "No session and no API token, or an unknown, expired or revoked token",
    403: "The role does not allow this, no CSRF proof, or a cross-site request",
    404: "No such document (a partner admin sees only their own partner)",
    409: "Stale version: someone changed the document since (conflicts listed); a "
    "sign-up request already decided or expired; a review whose window has ended",
    422: "The change was refused: every problem with its dotted field (errors)",
    428: "A write without If-Match (or body version)",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _SCHEMA_REF.format(model=name)}


def _policy_schema() -> dict[str, Any]:
    """policies/schema.json as components: its ``$defs`` hoisted as ``Policy<Name>``."""
    raw = json.loads(resources.files("policies").joinpath("schema.json").read_text("utf-8"))
    names = {name: f"Policy{name[:1].upper()}{name[1:]}" for name in raw.get("$defs", {})}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v) for k, v in node.items() if k not in ("$schema", "$id", "$defs")}
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                out["$ref"] = _SCHEMA_REF.format(model=names[ref.removeprefix("#/$defs/")])
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    schemas = {"Policy": rewrite(raw)}
    for name, schema in raw.get("$defs", {}).items():
        schemas[names[name]] = rewrite(schema)
    return schemas


def _with_spec(base: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (a schema with a ``spec`` property) with that property's schema replaced."""
    properties = {**base["properties"], "spec": dict(spec)}
    return {**base, "properties": properties}


@cache
def _components() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        PartnerSettings, AppSettings, ClientSettings, ApiTokenView, GrantSpec, SignupView,
        LapseSpec,
        *{m for e in ENDPOINTS for m in (e.body, e.answer) if m is not None},
        ErrorView,
    ]  # fmt: skip
    _, top = models_json_schema(
        [(m, "validation") for m in dict.fromkeys(models)], ref_template=_SCHEMA_REF
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas.update(_policy_schema())
    for kind, (spec_name, _) in _SPEC_MODELS.items():
        prefix = spec_name.removesuffix("Settings").removesuffix("View")
        written = (DocumentCreate, DocumentUpdate) if kind in _PLURAL else ()
        for model in (DocumentView, *written):
            schemas[f"{prefix}{model.__name__}"] = _with_spec(
                schemas[model.__name__], _ref(spec_name)
            )
    return schemas


def _schema_name(model: type[BaseModel], spec_kind: str | None) -> str:
    if spec_kind is not None and model in (DocumentView, DocumentCreate, DocumentUpdate):
        spec_name = _SPEC_MODELS[spec_kind][0]
        return spec_name.removesuffix("Settings").removesuffix("View") + model.__name__
    return model.__name__


def _answer_schema(endpoint: Endpoint) -> dict[str, Any]:
    if endpoint.answer is None:
        return {"type": "object"}
    one = _ref(_schema_name(endpoint.answer, endpoint.spec_kind))
    if not endpoint.many:
        return one
    return {"type": "object", "properties": {"items": {"type": "array", "items": one}},
            "required": ["items"]}  # fmt: skip


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", endpoint.path)
    ]
    parameters += [
        {"name": p.name, "in": "query", "required": False, "description": p.description,
         "schema": dict(p.schema)}
        for p in endpoint.query
    ]  # fmt: skip
    if endpoint.if_match:
        parameters.append({
            "name": "If-Match", "in": "header", "required": False,
            "description": 'The version read, as its ETag ("3"); or "version" in the body',
            "schema": {"type": "string", "pattern": r'^"?\d+"?$'},
        })  # fmt: skip
    roles = ", ".join(sorted(r.value for r in endpoint.roles))
    operation: dict[str, Any] = {
        "operationId": endpoint.name,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "description": f"Roles: {roles}.",
        "x-roles": sorted(r.value for r in endpoint.roles),
    }
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": not endpoint.body_optional,
            "content": {
                "application/json": {
                    "schema": _ref(_schema_name(endpoint.body, endpoint.spec_kind))
                }
            },
        }
    success: dict[str, Any] = {"description": endpoint.summary}
    if endpoint.status != 204:
        if endpoint.media == "application/json":
            content = {"schema": _answer_schema(endpoint)}
        else:
            content = {"schema": {"type": "string", "description": "one JSON event per line"}}
        success["content"] = {endpoint.media: content}
    if endpoint.answer in (DocumentView, ReviewView) and not endpoint.many:
        success["headers"] = {"ETag": {"description": "the version", "schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(endpoint.status): success}
    for status in _ERRORS:
        written = endpoint.if_match or endpoint.method == "POST"
        if status == 428 and not written:
            continue
        if status == 409 and not (written or endpoint.conflicts):
            continue
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    operation["responses"] = responses
    unsafe = endpoint.method in _UNSAFE
    operation["security"] = [{"bearerToken": []}, _cookie_security(unsafe)]
    return operation


def _cookie_security(unsafe: bool) -> dict[str, list[str]]:
    return {"sessionCookie": [], "csrfHeader": []} if unsafe else {"sessionCookie": []}


@cache
def openapi_document(cookie_name: str = "isthmus_session") -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`ENDPOINTS` (plus itself)."""
    paths: dict[str, dict[str, Any]] = {
        PREFIX + OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This OpenAPI document",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        }
    }
    for endpoint in ENDPOINTS:
        paths.setdefault(PREFIX + endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    error = {"application/json": {"schema": _ref("ErrorView")}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Isthmus admin API",
            "version": "1",
            "description": (
                "Partners, apps, OIDC clients, policies, domains, sessions, grants, sign-up "
                "requests, access reviews and lapses, API tokens and the audit trail. See "
                "docs/admin-api.md."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _components(),
            "responses": {
                f"E{status}": {"description": text, "content": error}
                for status, text in _ERRORS.items()
            },
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "isth_<id>_<secret>",
                    "description": "An API token (POST /tokens, or `isthmus tokens create`)",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": cookie_name,
                    "description": "The hub's own sign-in, with an admin, auditor or "
                    "partner-admin role (or a sponsor's: /me, grants, sign-ups, reviews, "
                    "lapses)",
                },
                "csrfHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": CSRF_HEADER,
                    "description": f"With a session cookie, changes carry the csrf_token of "
                    f"GET {PREFIX}/me (equal to the {csrf.CSRF_COOKIE} cookie)",
                },
            },
        },
    }
