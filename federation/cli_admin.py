"""The admin commands of the ``isthmus`` CLI: apply/export, partners, apps, audit, tokens,
grants.

Every command works on the registry the configuration file points at (``--config``/``-c``
or ``ISTHMUS_CONFIG``): it builds a hub on that file, loads the registry and calls
:class:`~federation.admin.service.AdminService` as ``cli:<login name>`` with the admin
role, like the admin API would, so the same rules hold (whole-registry validation,
versioned writes, session revocation, audit). Output is an aligned table, or JSON with
``--json``. Refusals print each problem on its own line and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from federation.admin.bundle import BundleError, read_bundle, write_bundle
from federation.admin.catalog import InvalidDocuments, Problem
from federation.admin.documents import Change, Document, Spec, VersionConflict
from federation.admin.domains import challenge_name, challenge_value, new_token
from federation.admin.service import (
    Actor,
    AdminService,
    DocumentNotFound,
    Forbidden,
    Plan,
    PlanEntry,
    redact,
)
from federation.admin.tokens import Role
from federation.audit import AuditQuery
from federation.errors import ConfigError, IsthmusError, StoreUnavailable
from federation.settings import PartnerKind, PartnerStatus, Settings, load_settings

if TYPE_CHECKING:
    from federation.hub import Hub

T = TypeVar("T")

ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar="ISTHMUS_CONFIG",
        show_envvar=True,
        help="The YAML configuration file: its registry is the one worked on.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output: one JSON document.")]
ReasonOpt = Annotated[
    str, typer.Option("--reason", "-r", help="Why: recorded with the change in the audit trail.")
]

partners_app = typer.Typer(
    help="Partners: list, show, create, lifecycle, domains, sessions, history.",
    no_args_is_help=True,
)
domains_app = typer.Typer(
    help="A partner's email domains, proven by a DNS TXT record.", no_args_is_help=True
)
partners_app.add_typer(domains_app, name="domains")
apps_app = typer.Typer(help="Extranet apps: routes, upstreams, policies.", no_args_is_help=True)
tokens_app = typer.Typer(
    help="API tokens for automation (shown once at creation).", no_args_is_help=True
)
grants_app = typer.Typer(
    help="Time-boxed grants: a person or a whole partner, apps, until a date.",
    no_args_is_help=True,
)

lifecycle_app = typer.Typer(
    help="Housekeeping: access reviews, inactive accounts' grants, stale sign-up requests.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the admin commands to the ``isthmus`` app."""
    app.command("apply")(apply)
    app.command("export")(export)
    app.command("audit")(audit)
    app.add_typer(partners_app, name="partners")
    app.add_typer(apps_app, name="apps")
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(grants_app, name="grants")
    app.add_typer(lifecycle_app, name="lifecycle")


# --- running a command against the registry ----------------------------------------------


@dataclass(frozen=True)
class Admin:
    """What a command works with: the hub on the configuration, its service, the actor."""

    hub: Hub
    service: AdminService
    actor: Actor


def cli_actor() -> Actor:
    """``cli:<login name>``, an admin: the audit trail records who ran the command."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        user = "unknown"
    return Actor(f"cli:{user}", Role.admin)


def run(config: Path, work: Callable[[Admin], Awaitable[T]], *, as_json: bool = False) -> T:
    """Build a hub on ``config``, load its registry, run ``work``, close the hub.

    Refusals (invalid documents, a stale version, a bad bundle, a missing document) are
    reported (as JSON with ``as_json``) and exit 1.
    """
    settings = _settings_or_exit(config)
    try:
        return asyncio.run(_with_hub(settings, work))
    except (BundleError, IsthmusError, OSError) as exc:
        _refused(exc, as_json)


async def _with_hub(settings: Settings, work: Callable[[Admin], Awaitable[T]]) -> T:
    from federation import hub as hubs  # here: the other commands start without it

    hub = hubs.build_hub(settings)
    try:
        with _quiet_seed_warnings():
            await hub.ready()
        return await work(Admin(hub, AdminService(hub), cli_actor()))
    finally:
        await hub.aclose()


@contextmanager
def _quiet_seed_warnings() -> Iterator[None]:
    """The registry differing from the settings file is the normal state once admins made
    changes: the hub warns at start-up, a CLI command would warn on every run."""
    logger = logging.getLogger("isthmus.registry")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _settings_or_exit(config: Path) -> Settings:
    from federation.cli import problem_report

    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(problem_report(str(config), exc), err=True)
        raise typer.Exit(1) from None


def _refused(exc: BaseException, as_json: bool) -> NoReturn:
    headline, lines, code = _describe(exc)
    if as_json:
        body = {"error": code, "message": headline, "problems": lines}
        typer.echo(json.dumps(body, indent=2, sort_keys=True))
    else:
        typer.echo(f"error: {headline}", err=True)
        for line in lines:
            typer.echo(f"  {line}", err=True)
    raise typer.Exit(1)


def _describe(exc: BaseException) -> tuple[str, list[str], str]:
    """(headline, one line per problem, error code) of a refusal."""
    if isinstance(exc, BundleError):
        count = _plural(len(exc.problems), "problem")
        return (
            f"{count} in the files; nothing was applied:",
            [_one_line(str(p)) for p in exc.problems],
            "invalid_bundle",
        )
    if isinstance(exc, InvalidDocuments):
        count = _plural(len(exc.problems), "problem")
        return (
            f"refused, nothing was written ({count}):",
            [str(p) for p in exc.problems],
            exc.error,
        )
    if isinstance(exc, VersionConflict):
        lines = [
            f"{kind}/{doc_id}: read at version {expected}, now at version {found}"
            for kind, doc_id, expected, found in exc.conflicts
        ]
        headline = (
            "someone else changed this since it was read; nothing was written. "
            "Run the command again to work from the current version:"
        )
        return headline, lines, exc.error
    if isinstance(exc, DocumentNotFound):
        return exc.detail or str(exc), [], exc.error
    if isinstance(exc, Forbidden):
        return f"forbidden: {exc.detail}", [], exc.error
    if isinstance(exc, StoreUnavailable):
        return f"the registry or the session store is unreachable: {exc}", [], exc.error
    if isinstance(exc, IsthmusError):
        return str(exc), [], exc.error
    assert isinstance(exc, OSError)  # writing an export, reading a bundle
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot use{where}: {exc.strerror or exc}", [], "os_error"


def _one_line(text: str) -> str:
    """A multi-line message (a YAML parser's, with its caret line) on one line."""
    parts = [line.strip() for line in text.splitlines()]
    return " ".join(p for p in parts if p and p != "^")


# --- output ---------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Aligned columns, two spaces apart, no trailing blanks."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value) or "-"


def _echo_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str, *, indent: str = ""
) -> None:
    text = table(headers, rows) if rows else empty
    typer.echo("\n".join(indent + line for line in text.splitlines()))


def _echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso(value: Any) -> str:
    """A stored ISO-8601 time, shown in UTC like the rest."""
    if not value:
        return "-"
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _when(parsed.timestamp())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _document_json(doc: Document) -> dict[str, Any]:
    return {
        "kind": doc.kind,
        "id": doc.id,
        "version": doc.version,
        "updated_at": _when(doc.updated_at),
        "updated_by": doc.updated_by,
        "spec": redact(doc.spec),
    }


# --- apply and export -----------------------------------------------------------------------

_MARKS = {"create": "+", "update": "~", "delete": "-"}


def apply(
    file: Annotated[
        Path, typer.Option("--file", "-f", help="The directory of documents (as export writes).")
    ],
    config: ConfigOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan and each diff; write nothing.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Delete documents the directory does not hold (not tokens)."),
    ] = False,
    exit_code: Annotated[
        bool,
        typer.Option("--exit-code", help="With --dry-run: exit 2 when there are changes (CI)."),
    ] = False,
    reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Make the registry match a directory of documents (GitOps).

    Creates and updates, and with --prune deletes. The whole result is validated first;
    it is written all-or-nothing, and refused when the registry changed since the plan
    was made."""
    if exit_code and not dry_run:
        raise typer.BadParameter("only with --dry-run", param_hint="--exit-code")

    async def work(admin: Admin) -> bool:
        desired = read_bundle(file)
        plan = await admin.service.plan(admin.actor, desired, prune=prune)
        changes: list[Change] = []
        if plan.changes and not dry_run:
            changes = await admin.service.apply(admin.actor, plan, reason=reason)
        if as_json:
            _echo_json(_plan_json(plan, dry_run=dry_run, prune=prune, changes=changes))
        else:
            _echo_plan(file, plan, dry_run=dry_run, changes=changes)
        return bool(plan.changes)

    changed = run(config, work, as_json=as_json)
    if changed and dry_run and exit_code:
        raise typer.Exit(2)


def _echo_plan(directory: Path, plan: Plan, *, dry_run: bool, changes: list[Change]) -> None:
    counts = plan.summary()
    if not plan.changes:
        typer.echo(
            f"No changes: the registry matches {directory} "
            f"({_plural(counts['unchanged'], 'document')})."
        )
        return
    for entry in plan.changes:
        typer.echo(f"{_MARKS[entry.action]} {entry.action} {entry.kind}/{entry.id}")
    typer.echo(
        f"{_plural(len(plan.changes), 'change')}: {counts['create']} to create, "
        f"{counts['update']} to update, {counts['delete']} to delete; "
        f"{counts['unchanged']} unchanged."
    )
    if dry_run:
        for entry in plan.changes:
            typer.echo("")
            diff = entry.diff()
            # Secrets are masked in diffs: a change of a secret alone shows no line.
            typer.echo(
                diff or f"{entry.kind}/{entry.id}: only secret values change (masked)\n", nl=False
            )
        typer.echo("")
        typer.echo("Dry run: nothing was written.")
        return
    revision = max(c.revision for c in changes) if changes else 0
    typer.echo(f"Applied: registry at revision {revision}.")


def _plan_json(plan: Plan, *, dry_run: bool, prune: bool, changes: list[Change]) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "prune": prune,
        "summary": plan.summary(),
        "changes": [_entry_json(e) for e in plan.changes],
        "applied": bool(changes),
        "revision": max((c.revision for c in changes), default=None),
    }


def _entry_json(entry: PlanEntry) -> dict[str, Any]:
    return {
        "action": entry.action,
        "kind": entry.kind,
        "id": entry.id,
        "version": entry.version,
        "diff": entry.diff(),
    }


def export(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The directory to write (created if needed).")
    ],
    config: ConfigOpt,
    as_json: JsonOpt = False,
) -> None:
    """Write the registry to a directory: one YAML file per partner, app, client, policy.

    Secrets are included: the files are written 0600, keep them private. `isthmus apply
    -f DIR` reproduces them exactly; files of documents no longer in the registry are
    removed."""

    async def work(admin: Admin) -> list[Path]:
        written = write_bundle(output, await admin.service.export(admin.actor))
        for path in written:
            path.chmod(0o600)  # client secrets are in them
        return written

    written = run(config, work, as_json=as_json)
    names = [str(p.relative_to(output)) for p in written]
    if as_json:
        _echo_json({"directory": str(output), "files": names})
        return
    typer.echo(f"Exported {_plural(len(names), 'document')} to {output}:")
    for name in names:
        typer.echo(f"  {name}")


# --- partners -------------------------------------------------------------------------------


@partners_app.command("list")
def partners_list(
    config: ConfigOpt,
    status: Annotated[
        PartnerStatus | None, typer.Option("--status", help="Only partners in this status.")
    ] = None,
    search: Annotated[
        str | None,
        typer.Option("--search", "-s", help="Text in the id, name or a domain (any case)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every partner: kind, status, domains, connections."""

    async def work(admin: Admin) -> list[Document]:
        return await admin.service.documents(admin.actor, "partner")

    found = [
        d
        for d in run(config, work, as_json=as_json)
        if (status is None or _status(d.spec) == status.value)
        and (search is None or _matches(d.spec, search))
    ]
    if as_json:
        _echo_json([_document_json(d) for d in found])
        return
    rows = [
        (
            d.id,
            d.spec.get("name"),
            d.spec.get("kind"),
            _status(d.spec),
            d.spec.get("domains", []),
            len(d.spec.get("pending_domains", [])),
            [c.get("id") for c in d.spec.get("connections", [])],
            d.version,
        )
        for d in found
    ]
    headers = ("ID", "NAME", "KIND", "STATUS", "DOMAINS", "PENDING", "CONNECTIONS", "VERSION")
    _echo_table(headers, rows, "No partners match.")


def _status(spec: Spec) -> str:
    return str(spec.get("status", PartnerStatus.invited.value))


def _matches(spec: Spec, text: str) -> bool:
    pending = [p.get("name", "") for p in spec.get("pending_domains", [])]
    haystack = [spec.get("id", ""), spec.get("name", ""), *spec.get("domains", []), *pending]
    return any(text.lower() in str(h).lower() for h in haystack)


@partners_app.command("show")
def partners_show(
    partner_id: Annotated[str, typer.Argument(metavar="ID", help="The partner's id.")],
    config: ConfigOpt,
    as_json: JsonOpt = False,
) -> None:
    """One partner: details, domains, connections, contract, live sessions.

    A pending domain is shown with the DNS TXT record to publish."""

    async def work(admin: Admin) -> tuple[Document, int]:
        doc = await admin.service.document(admin.actor, "partner", partner_id)
        return doc, len(await admin.service.sessions(admin.actor, partner_id))

    doc, sessions = run(config, work, as_json=as_json)
    spec = doc.spec
    if as_json:
        _echo_json({**_document_json(doc), "sessions": sessions, "pending_records": _records(spec)})
        return
    contract = spec.get("contract", {})
    typer.echo(
        f"partner {doc.id} (version {doc.version}, updated {_when(doc.updated_at)} "
        f"by {doc.updated_by})"
    )
    details = [
        ("name", spec.get("name")),
        ("kind", spec.get("kind")),
        ("status", _status(spec)),
        ("contract", f"{_iso(contract.get('valid_from'))} → {_iso(contract.get('valid_until'))}"),
        ("sponsors", spec.get("sponsors", [])),
        ("sessions", f"{sessions} live"),
    ]
    for label, value in details:
        typer.echo(f"  {label + ':':<10} {_cell(value)}")
    typer.echo("")
    typer.echo("domains")
    rows: list[tuple[object, ...]] = [(d, "verified", "-") for d in spec.get("domains", [])]
    rows += [
        (p.get("name"), "pending", _iso(p.get("requested_at")))
        for p in spec.get("pending_domains", [])
    ]
    _echo_table(("DOMAIN", "STATUS", "CLAIMED"), rows, "(none)", indent="  ")
    if spec.get("pending_domains"):
        typer.echo("")
        typer.echo(
            "To verify a pending domain, publish its TXT record, then run "
            f"`isthmus partners domains verify {doc.id} DOMAIN`:"
        )
        for record in _records(spec):
            typer.echo(f"  {record['record']}")
    typer.echo("")
    typer.echo("connections")
    connections = [
        (c.get("id"), c.get("type"), c.get("display_name"), _source(c))
        for c in spec.get("connections", [])
    ]
    _echo_table(("ID", "TYPE", "DISPLAY NAME", "IDP"), connections, "(none)", indent="  ")


def _records(spec: Spec) -> list[dict[str, str]]:
    """The TXT record each pending domain needs, as a zone-file line."""
    found = []
    for pending in spec.get("pending_domains", []):
        name, value = challenge_name(str(pending["name"])), challenge_value(str(pending["token"]))
        found.append(
            {
                "domain": str(pending["name"]),
                "name": name,
                "value": value,
                "record": f'{name}.  IN  TXT  "{value}"',
            }
        )
    return found


def _source(connection: Spec) -> str:
    """Where a connection's IdP is: its issuer, entity id, metadata, or demo users."""
    for key in ("issuer", "idp_entity_id", "idp_metadata_url", "idp_metadata_file"):
        if connection.get(key):
            return str(connection[key])
    if connection.get("idp_metadata_xml"):
        return "(inline metadata)"
    if connection.get("type") == "mock":
        return f"{_plural(len(connection.get('users', [])), 'demo user')}"
    return "-"


@partners_app.command("create")
def partners_create(
    partner_id: Annotated[str, typer.Argument(metavar="ID", help="The new partner's id.")],
    name: Annotated[str, typer.Option("--name", help="The company's name.")],
    kind: Annotated[PartnerKind, typer.Option("--kind", help="The relationship.")],
    config: ConfigOpt,
    domain: Annotated[
        list[str] | None,
        typer.Option("--domain", help="An email domain, claimed as pending (repeatable)."),
    ] = None,
    reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a partner (status invited).

    Domains given here are claimed as pending: the partner proves each with the DNS TXT
    record printed."""

    async def work(admin: Admin) -> Document:
        spec: Spec = {"id": partner_id, "name": name, "kind": kind.value}
        pending = claims(admin.hub, partner_id, domain or [])
        if pending:
            spec["pending_domains"] = pending
        return await admin.service.put(admin.actor, "partner", partner_id, spec, 0, reason=reason)

    doc = run(config, work, as_json=as_json)
    if as_json:
        _echo_json({**_document_json(doc), "pending_records": _records(doc.spec)})
        return
    typer.echo(f"created partner {doc.id} ({doc.spec['kind']}, {_status(doc.spec)})")
    _echo_records(doc)


def claims(hub: Hub, partner_id: str, domains: Sequence[str]) -> list[dict[str, str]]:
    """Pending-domain entries for a new partner (the checks of ``claim_domain``, all at
    once): a domain another partner has verified, or one given twice, is refused."""
    problems = []
    pending: list[dict[str, str]] = []
    requested_at = datetime.now(UTC).isoformat(timespec="seconds")
    for raw in domains:
        name = raw.strip().lower().rstrip(".")
        owner = hub.registry.partner_for_domain(name)
        if owner is not None:
            problems.append(
                Problem("partner", partner_id, "domain", f"{name} is verified by another partner")
            )
        elif any(p["name"] == name for p in pending):
            problems.append(Problem("partner", partner_id, "domain", f"{name} is given twice"))
        else:
            pending.append({"name": name, "token": new_token(), "requested_at": requested_at})
    if problems:
        raise InvalidDocuments(problems)
    return pending


def _echo_records(doc: Document) -> None:
    records = _records(doc.spec)
    if not records:
        return
    typer.echo("Publish these DNS TXT records, then run `isthmus partners domains verify`:")
    for record in records:
        typer.echo(f"  {record['record']}")


def _lifecycle(target: PartnerStatus, verb: str) -> Callable[..., None]:
    def command(
        partner_id: Annotated[str, typer.Argument(metavar="ID", help="The partner's id.")],
        config: ConfigOpt,
        reason: ReasonOpt = "",
        as_json: JsonOpt = False,
    ) -> None:
        async def work(admin: Admin) -> tuple[Document, Document, int | None]:
            before = await admin.service.document(admin.actor, "partner", partner_id)
            with _captured(admin.hub, "admin.partner.sessions_revoked") as revoked:
                after = await admin.service.set_status(
                    admin.actor, partner_id, target, before.version, reason=reason
                )
            ended = sum(int(r.get("sessions", 0)) for r in revoked)
            cuts = target in (PartnerStatus.suspended, PartnerStatus.offboarded)
            return before, after, ended if cuts else None

        before, after, ended = run(config, work, as_json=as_json)
        if as_json:
            _echo_json({**_document_json(after), "sessions_ended": ended})
            return
        line = (
            f"partner {partner_id}: {_status(before.spec)} → {_status(after.spec)} "
            f"(version {before.version} → {after.version})"
        )
        if ended is not None:
            line += f"; {_plural(ended, 'session')} ended"
        typer.echo(line)

    command.__doc__ = verb
    return command


partners_app.command("activate")(
    _lifecycle(PartnerStatus.active, "Activate a partner (invited or suspended): logins open.")
)
partners_app.command("suspend")(
    _lifecycle(
        PartnerStatus.suspended,
        "Suspend a partner: every session and refresh token of it ends at once.",
    )
)
partners_app.command("offboard")(
    _lifecycle(
        PartnerStatus.offboarded,
        "Offboard a partner for good: every session ends; it can then be deleted.",
    )
)


@contextmanager
def _captured(hub: Hub, event: str) -> Iterator[list[dict[str, Any]]]:
    """The audit events named ``event`` emitted inside the block."""
    seen: list[dict[str, Any]] = []

    def sink(record: dict[str, Any]) -> None:
        if record.get("event") == event:
            seen.append(record)

    hub.audit.sinks.append(sink)
    try:
        yield seen
    finally:
        hub.audit.sinks.remove(sink)


PartnerArg = Annotated[str, typer.Argument(metavar="ID", help="The partner's id.")]
DomainArg = Annotated[str, typer.Argument(metavar="DOMAIN", help="An email domain.")]


@domains_app.command("claim")
def domains_claim(
    partner_id: PartnerArg, domain: DomainArg, config: ConfigOpt, as_json: JsonOpt = False
) -> None:
    """Claim a domain as pending and print the TXT record that proves it."""

    async def work(admin: Admin) -> Document:
        return await admin.service.claim_domain(admin.actor, partner_id, domain)

    doc = run(config, work, as_json=as_json)
    name = domain.strip().lower().rstrip(".")
    record = next(r for r in _records(doc.spec) if r["domain"] == name)
    if as_json:
        _echo_json(record)
        return
    typer.echo(f"{name} claimed for {partner_id} (pending). Publish this DNS TXT record:")
    typer.echo(f"  {record['record']}")
    typer.echo(f"then run: isthmus partners domains verify {partner_id} {name}")


@domains_app.command("verify")
def domains_verify(
    partner_id: PartnerArg, domain: DomainArg, config: ConfigOpt, as_json: JsonOpt = False
) -> None:
    """Look the TXT record up: found, the domain is verified and routes logins.

    Not found: exit 1 with what the DNS answered."""

    async def work(admin: Admin) -> Any:
        return await admin.service.verify_domain(admin.actor, partner_id, domain)

    check = run(config, work, as_json=as_json)
    if as_json:
        _echo_json(asdict(check))
    elif check.verified:
        typer.echo(f"{check.domain} verified: it now routes logins to {partner_id}")
    else:
        typer.echo(f"{check.domain} not verified: {check.problem}", err=True)
        typer.echo(f'  expected: {check.record_name}.  IN  TXT  "{check.expected}"', err=True)
    if not check.verified:
        raise typer.Exit(1)


@domains_app.command("remove")
def domains_remove(
    partner_id: PartnerArg, domain: DomainArg, config: ConfigOpt, as_json: JsonOpt = False
) -> None:
    """Remove a domain (verified or pending): it no longer routes logins."""

    async def work(admin: Admin) -> Document:
        before = await admin.service.document(admin.actor, "partner", partner_id)
        name = domain.strip().lower().rstrip(".")
        pending = [p.get("name") for p in before.spec.get("pending_domains", [])]
        if name not in before.spec.get("domains", []) and name not in pending:
            problem = Problem("partner", partner_id, "domain", f"{name} is not a domain of it")
            raise InvalidDocuments([problem])
        return await admin.service.remove_domain(admin.actor, partner_id, domain)

    doc = run(config, work, as_json=as_json)
    if as_json:
        _echo_json(_document_json(doc))
        return
    typer.echo(f"{domain.strip().lower().rstrip('.')} removed from {partner_id}")


@partners_app.command("sessions")
def partners_sessions(partner_id: PartnerArg, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """The partner's live sessions, newest first (read from the configured session store)."""

    async def work(admin: Admin) -> list[Any]:
        return await admin.service.sessions(admin.actor, partner_id)

    found = run(config, work, as_json=as_json)
    if as_json:
        _echo_json(
            [
                {
                    "sid": s.sid,
                    "subject": s.identity.subject,
                    "email": s.identity.email,
                    "connection": s.identity.connection_id,
                    "created_at": _when(s.created_at),
                    "expires_at": _when(s.expires_at),
                }
                for s in found
            ]
        )
        return
    rows = [
        (
            s.sid,
            s.identity.email or s.identity.subject,
            s.identity.connection_id,
            _when(s.created_at),
            _when(s.expires_at),
        )
        for s in found
    ]
    _echo_table(
        ("SID", "USER", "CONNECTION", "CREATED", "EXPIRES"),
        rows,
        f"No live sessions of {partner_id}.",
    )


@partners_app.command("end-session")
def partners_end_session(
    partner_id: PartnerArg,
    sid: Annotated[str, typer.Argument(metavar="SID", help="The session's id (see sessions).")],
    config: ConfigOpt,
    as_json: JsonOpt = False,
) -> None:
    """End one session of the partner (the user signs in again)."""

    async def work(admin: Admin) -> bool:
        return await admin.service.end_session(admin.actor, partner_id, sid)

    ended = run(config, work, as_json=as_json)
    if as_json:
        _echo_json({"sid": sid, "ended": ended})
    elif ended:
        typer.echo(f"session {sid} of {partner_id} ended")
    else:
        typer.echo(f"error: {partner_id} has no live session {sid}", err=True)
    if not ended:
        raise typer.Exit(1)


@partners_app.command("history")
def partners_history(
    partner_id: PartnerArg,
    config: ConfigOpt,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The partner's recorded changes, newest first: who, when, what (secrets masked)."""

    async def work(admin: Admin) -> list[Change]:
        await admin.service.document(admin.actor, "partner", partner_id)
        return await admin.service.history(
            admin.actor, kind="partner", doc_id=partner_id, limit=limit
        )

    changes = run(config, work, as_json=as_json)
    if as_json:
        _echo_json([c.to_dict() for c in changes])
        return
    rows = [(_when(c.at), c.actor, c.action, c.version, _changed(c), c.reason) for c in changes]
    _echo_table(("AT", "ACTOR", "ACTION", "VERSION", "CHANGED", "REASON"), rows, "No changes.")


def _changed(change: Change) -> list[str]:
    """The top-level fields a change touched."""
    before, after = change.before or {}, change.after or {}
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


# --- apps -----------------------------------------------------------------------------------


@apps_app.command("list")
def apps_list(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Every app: where it is reached, where it forwards to, its policy."""

    async def work(admin: Admin) -> tuple[list[Document], set[str]]:
        apps = await admin.service.documents(admin.actor, "app")
        policies = await admin.service.documents(admin.actor, "policy")
        return apps, {p.id for p in policies}

    apps, with_policy = run(config, work, as_json=as_json)
    if as_json:
        _echo_json([{**_document_json(a), "has_policy": a.id in with_policy} for a in apps])
        return
    rows = [
        (
            a.id,
            a.spec.get("name"),
            a.spec.get("hosts") or "(any)",
            a.spec.get("path_prefix", "/"),
            a.spec.get("upstreams", []),
            "yes" if a.id in with_policy else "none (deny all)",
            a.version,
        )
        for a in apps
    ]
    headers = ("ID", "NAME", "HOSTS", "PATH PREFIX", "UPSTREAMS", "POLICY", "VERSION")
    _echo_table(headers, rows, "No apps.")


@apps_app.command("show")
def apps_show(
    app_id: Annotated[str, typer.Argument(metavar="ID", help="The app's id.")],
    config: ConfigOpt,
    as_json: JsonOpt = False,
) -> None:
    """One app: routes, upstreams, headers, and its policy's rules in short."""

    async def work(admin: Admin) -> tuple[Document, Document | None, list[tuple[str, str, str]]]:
        doc = await admin.service.document(admin.actor, "app", app_id)
        try:
            policy_doc = await admin.service.document(admin.actor, "policy", app_id)
        except DocumentNotFound:
            policy_doc = None
        compiled = admin.hub.catalog.policies.policy(app_id)
        rules = [
            (r.name, r.effect, " and ".join(c.describe() for c in r.all_checks) or "always")
            for r in compiled.rules
        ]
        return doc, policy_doc, rules

    doc, policy_doc, rules = run(config, work, as_json=as_json)
    spec = doc.spec
    if as_json:
        _echo_json(
            {
                **_document_json(doc),
                "policy": _document_json(policy_doc) if policy_doc else None,
                "rules": [{"name": n, "effect": e, "when": w} for n, e, w in rules],
            }
        )
        return
    typer.echo(
        f"app {doc.id} (version {doc.version}, updated {_when(doc.updated_at)} by {doc.updated_by})"
    )
    route = [
        ("name", spec.get("name")),
        ("hosts", spec.get("hosts") or "(any)"),
        ("path", spec.get("path_prefix", "/")
         + ("  (prefix stripped)" if spec.get("strip_prefix") else "")),
        ("upstreams", spec.get("upstreams", [])),
        ("assertion", spec.get("assertion_header", "X-Isthmus-Assertion")),
    ]  # fmt: skip
    for label, value in route:
        typer.echo(f"  {label + ':':<11} {_cell(value)}")
    headers = spec.get("identity_headers")
    if headers:
        typer.echo(f"  {'headers:':<11} " + ", ".join(f"{h}={f}" for h, f in headers.items()))
    typer.echo("")
    if policy_doc is None:
        typer.echo("policy: none, every request is denied (no_policy)")
        return
    description = policy_doc.spec.get("description")
    typer.echo(
        f"policy (version {policy_doc.version})" + (f": {description}" if description else "")
    )
    _echo_table(
        ("RULE", "EFFECT", "WHEN"), rules, "(no rules: every request is denied)", indent="  "
    )


# --- audit ----------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: str, now: datetime) -> float:
    """Epoch seconds of ISO-8601 (UTC when no offset) or ``<n>s|m|h|d|w`` ago."""
    relative = _RELATIVE.match(value.strip())
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return (now - timedelta(**{_UNITS[unit]: amount})).timestamp()
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: give ISO-8601 (2025-03-01T12:00:00Z) or an age like 30m, 2h, 7d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def audit(
    config: ConfigOpt,
    partner: Annotated[str | None, typer.Option("--partner", help="A partner id.")] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="An email, upstream subject or hub subject.")
    ] = None,
    app_id: Annotated[str | None, typer.Option("--app", help="An app id.")] = None,
    event: Annotated[
        str | None,
        typer.Option("--event", help="An event name, or a prefix ending in '.' (admin.)."),
    ] = None,
    outcome: Annotated[str | None, typer.Option("--outcome", help="success or failure.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="From: ISO-8601 or an age (2h, 7d).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Before: ISO-8601 or an age.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 100,
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="Export: one JSON event per line, every field.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The audit trail (sign-ins, refusals, policy decisions, admin changes), newest first."""
    now = datetime.now(UTC)
    query = AuditQuery(
        partner=partner,
        user=user,
        app=app_id,
        event=event,
        outcome=outcome,
        since=parse_when(since, now) if since else None,
        until=parse_when(until, now) if until else None,
        limit=limit,
    )

    async def work(admin: Admin) -> list[dict[str, Any]]:
        return await admin.service.audit(admin.actor, query)

    events = run(config, work, as_json=as_json)
    if jsonl:
        for record in events:
            sys.stdout.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()
        return
    if as_json:
        _echo_json(events)
        return
    rows = [
        (
            _when(float(e.get("ts", 0))),
            e.get("event"),
            e.get("outcome"),
            e.get("partner"),
            e.get("email") or e.get("subject") or e.get("actor"),
            e.get("app"),
            _detail(e),
        )
        for e in events
    ]
    headers = ("TIME", "EVENT", "OUTCOME", "PARTNER", "WHO", "APP", "DETAIL")
    _echo_table(headers, rows, "No events match.")


def _detail(record: dict[str, Any]) -> str:
    """The gist of an event in one short cell (--jsonl has every field)."""
    if record.get("event") == "admin.change":
        text = (
            f"{record.get('action')} {record.get('kind')}/{record.get('id')} "
            f"v{record.get('version')}"
        )
        if record.get("reason"):
            text += f": {record['reason']}"
    else:
        parts = []
        if record.get("method"):
            parts.append(f"{record['method']} {record.get('path', '')}")
        for key in ("decision", "reason", "domain", "sessions", "connection", "sid"):
            if record.get(key) is not None:
                parts.append(f"{key}={record[key]}")
        reasons = record.get("reasons")
        if reasons:
            parts.append(str(reasons[0]) if isinstance(reasons, list) else str(reasons))
        text = " ".join(parts)
    return text if len(text) <= 90 else text[:89] + "…"


# --- API tokens -----------------------------------------------------------------------------


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option("--name", help="What the token is for (ci-deploy).")],
    role: Annotated[Role, typer.Option("--role", help="What it may do.")],
    config: ConfigOpt,
    partner: Annotated[
        str | None, typer.Option("--partner", help="The partner of a partner_admin token.")
    ] = None,
    ttl_days: Annotated[
        int | None, typer.Option("--ttl-days", min=1, help="Expires after this many days.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token, printed once on standard output: store it now.

    Only its hash is kept: it cannot be shown again."""

    async def work(admin: Admin) -> tuple[str, Document]:
        return await admin.service.create_token(
            admin.actor, name=name, role=role, partner_id=partner, ttl_days=ttl_days
        )

    token, doc = run(config, work, as_json=as_json)
    if as_json:
        _echo_json({**_token_json(doc), "token": token})
    else:
        typer.echo(token)
    expires = _iso(doc.spec.get("expires_at")) if doc.spec.get("expires_at") else "never"
    typer.echo(
        f"created token {doc.id} ({name!r}, {role.value}, expires {expires}). "
        "It is shown this once and cannot be shown again: store it now.",
        err=True,
    )


@tokens_app.command("list")
def tokens_list(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Every API token (never its secret): role, partner, creation, expiry."""

    async def work(admin: Admin) -> list[Document]:
        return await admin.service.documents(admin.actor, "api_token")

    docs = run(config, work, as_json=as_json)
    if as_json:
        _echo_json([_token_json(d) for d in docs])
        return
    now = datetime.now(UTC).timestamp()
    rows = [
        (
            d.id,
            d.spec.get("name"),
            d.spec.get("role"),
            d.spec.get("partner_id"),
            _iso(d.spec.get("created_at")),
            d.spec.get("created_by"),
            _iso(d.spec.get("expires_at")) if d.spec.get("expires_at") else "never",
            "expired" if _expired(d.spec, now) else "active",
        )
        for d in docs
    ]
    headers = ("ID", "NAME", "ROLE", "PARTNER", "CREATED", "BY", "EXPIRES", "STATE")
    _echo_table(headers, rows, "No API tokens.")


def _expired(spec: Spec, now: float) -> bool:
    expires = spec.get("expires_at")
    if not expires:
        return False
    parsed = datetime.fromisoformat(str(expires))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp() <= now


def _token_json(doc: Document) -> dict[str, Any]:
    spec = {k: v for k, v in doc.spec.items() if k != "secret_sha256"}
    return {"id": doc.id, "version": doc.version, **spec}


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id (tokens list).")],
    config: ConfigOpt,
    reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API token: it stops working at once."""

    async def work(admin: Admin) -> Document:
        doc = await admin.service.document(admin.actor, "api_token", token_id)
        await admin.service.delete(admin.actor, "api_token", token_id, doc.version, reason=reason)
        return doc

    doc = run(config, work, as_json=as_json)
    if as_json:
        _echo_json({"id": doc.id, "revoked": True})
        return
    typer.echo(f"revoked token {doc.id} ({doc.spec.get('name')!r})")


# --- grants ---------------------------------------------------------------------------------

_AHEAD = re.compile(r"^(\d{1,5})([dw])$")


def parse_until(value: str, now: datetime) -> str:
    """ISO-8601 (UTC when no offset) or ``<n>d|w`` from now, as stored ISO-8601."""
    ahead = _AHEAD.match(value.strip())
    if ahead:
        amount, unit = int(ahead.group(1)), ahead.group(2)
        return (now + timedelta(**{_UNITS[unit]: amount})).isoformat(timespec="seconds")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: give ISO-8601 (2025-03-01 or 2025-03-01T12:00:00Z) or 30d, 6w"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.isoformat(timespec="seconds")


@grants_app.command("create")
def grants_create(
    partner: Annotated[str, typer.Option("--partner", help="The partner (all of it, alone).")],
    apps: Annotated[list[str], typer.Option("--app", help="An app id (repeat for a project).")],
    until: Annotated[str, typer.Option("--until", help="End: ISO-8601, or 30d, 6w from now.")],
    config: ConfigOpt,
    email: Annotated[
        str | None, typer.Option("--email", help="One person, by email (a verified domain).")
    ] = None,
    connection: Annotated[
        str | None, typer.Option("--connection", help="One person: their connection...")
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="...and their subject at it.")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Start (default: now): ISO-8601 or 2d.")
    ] = None,
    reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Grant a person, or every member of a partner, apps until a date."""
    now = datetime.now(UTC)
    spec: dict[str, Any] = {"partner_id": partner, "apps": list(apps),
                            "valid_until": parse_until(until, now), "reason": reason,
                            "email": email, "connection_id": connection, "subject": subject,
                            "valid_from": parse_until(start, now) if start else None}  # fmt: skip
    spec = {k: v for k, v in spec.items() if v not in (None, "")}

    async def work(admin: Admin) -> Document:
        return await admin.service.grant(admin.actor, spec)

    doc = run(config, work, as_json=as_json)
    if as_json:
        _echo_json(_document_json(doc))
        return
    typer.echo(
        f"granted {_grantee(doc.spec)} {', '.join(doc.spec['apps'])} "
        f"until {_iso(doc.spec['valid_until'])}: grant {doc.id}"
    )


@grants_app.command("list")
def grants_list(
    config: ConfigOpt,
    partner: Annotated[str | None, typer.Option("--partner", help="One partner's.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every grant (expired ones too): who, which apps, from, until, by whom."""

    async def work(admin: Admin) -> list[Document]:
        docs = await admin.service.documents(admin.actor, "grant")
        return [d for d in docs if partner is None or d.spec.get("partner_id") == partner]

    docs = run(config, work, as_json=as_json)
    if as_json:
        _echo_json([_document_json(d) for d in docs])
        return
    now = datetime.now(UTC).timestamp()
    rows = [
        (
            d.id,
            d.spec.get("partner_id"),
            _grantee(d.spec),
            ",".join(d.spec.get("apps", ())),
            _iso(d.spec.get("valid_from")),
            _iso(d.spec.get("valid_until")),
            d.spec.get("granted_by"),
            "expired" if _expired({"expires_at": d.spec.get("valid_until")}, now) else "active",
        )
        for d in docs
    ]
    headers = ("ID", "PARTNER", "WHO", "APPS", "FROM", "UNTIL", "BY", "STATE")
    _echo_table(headers, rows, "No grants.")


def _grantee(spec: Spec) -> str:
    if spec.get("email"):
        return str(spec["email"])
    if spec.get("subject"):
        return f"{spec.get('connection_id')}:{spec['subject']}"
    return f"all of {spec.get('partner_id')}"


@grants_app.command("revoke")
def grants_revoke(
    grant_id: Annotated[str, typer.Argument(metavar="ID", help="The grant's id (grants list).")],
    config: ConfigOpt,
    reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Revoke a grant: it ends at once."""

    async def work(admin: Admin) -> None:
        await admin.service.revoke_grant(admin.actor, grant_id, reason=reason)

    run(config, work, as_json=as_json)
    if as_json:
        _echo_json({"id": grant_id, "revoked": True})
        return
    typer.echo(f"revoked grant {grant_id}")


# --- lifecycle ----------------------------------------------------------------------------


@lifecycle_app.command("run")
def lifecycle_run(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Run every housekeeping job once now (the hub also runs them every interval).

    With the embedded memory store the sign-ins live in the hub's own process: the
    accounts job is left to the hub (``lifecycle.enabled``) and said so on stderr.
    """
    from federation.admin import lifecycle  # here: the other commands start without it

    async def work(admin: Admin) -> tuple[list[str], tuple[str, ...]]:
        jobs, left = lifecycle.outside_the_hub(admin.hub)
        return await lifecycle.tick(admin.hub, jobs=jobs), left

    done, left = run(config, work, as_json=as_json)
    if as_json:
        _echo_json({"done": done, "left_to_the_hub": list(left)})
        return
    for name in left:
        typer.echo(
            f"{name}: left to the hub — store.backend is memory, so the sign-ins it reads "
            "are in the hub's process only",
            err=True,
        )
    for line in done:
        typer.echo(line)
    typer.echo(f"lifecycle: {_plural(len(done), 'change')}")
