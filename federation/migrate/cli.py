"""``isthmus keycloak import``: a Keycloak realm's Organizations as files for ``apply``.

The command reads the realm with a service-account client (client credentials; its
secret from an environment variable or a file, never on the command line), writes one
partner file per organization and ``IMPORT-REPORT.md`` into the output directory, and
prints a summary (``--json``: the whole report). Nothing is written when the realm cannot
be read (exit 1); usage errors exit 2.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from federation.admin.domains import new_token
from federation.migrate.keycloak import (
    KeycloakImportError,
    RealmSnapshot,
    close,
    connect,
    read_realm,
)
from federation.migrate.output import REPORT_FILE, previous_import, write_import
from federation.migrate.partners import ImportOptions, ImportResult, build_import
from federation.settings import PartnerKind

DEFAULT_SECRET_ENV = "ISTHMUS_KEYCLOAK_CLIENT_SECRET"

keycloak_app = typer.Typer(
    help="Keycloak: import a realm's organizations and identity providers.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``isthmus keycloak`` to the ``isthmus`` app."""
    app.add_typer(keycloak_app, name="keycloak")


@keycloak_app.command("import")
def import_realm(
    server: Annotated[
        str, typer.Option("--server", help="Keycloak's base URL (https://sso.example.com).")
    ],
    realm: Annotated[str, typer.Option("--realm", help="The realm to import.")],
    client_id: Annotated[
        str,
        typer.Option(
            "--client-id",
            help="A confidential client with a service account holding the realm-management "
            "roles view-realm, view-identity-providers and manage-realm.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="The directory to write: new, empty, or an earlier import's."
        ),
    ],
    client_secret_env: Annotated[
        str | None,
        typer.Option(
            "--client-secret-env",
            help=f"The environment variable holding the client's secret [default: "
            f"{DEFAULT_SECRET_ENV}].",
        ),
    ] = None,
    client_secret_file: Annotated[
        Path | None,
        typer.Option("--client-secret-file", help="A file holding the client's secret (instead)."),
    ] = None,
    auth_realm: Annotated[
        str | None,
        typer.Option("--auth-realm", help="The realm of the client, when not --realm."),
    ] = None,
    trust_verified_domains: Annotated[
        bool,
        typer.Option(
            "--trust-verified-domains",
            help="Take domains Keycloak marks verified as verified (no DNS proof asked).",
        ),
    ] = False,
    default_kind: Annotated[
        PartnerKind,
        typer.Option(
            "--default-kind", help="The kind of organizations without an isthmus.kind attribute."
        ),
    ] = PartnerKind.supplier,
    as_json: Annotated[bool, typer.Option("--json", help="Machine output: the report.")] = False,
) -> None:
    """Turn a realm's Organizations into partners (status invited) and their identity
    providers into connections, with a report of what could not be carried over.

    Review the files and IMPORT-REPORT.md, fill in the client secrets, then run
    `isthmus apply -f DIR`."""
    secret = _secret(client_secret_env, client_secret_file)
    try:
        previous = previous_import(output)
        snapshot = asyncio.run(_read(server, realm, client_id, secret, auth_realm=auth_realm))
        result = build_import(
            snapshot,
            ImportOptions(
                now=datetime.now(UTC),
                new_token=new_token,
                trust_verified_domains=trust_verified_domains,
                default_kind=default_kind,
            ),
            previous,
        )
        written = write_import(output, result)
    except KeycloakImportError as exc:
        _fail(str(exc), exc.error, as_json)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        _fail(f"cannot write{where}: {exc.strerror or exc}", "os_error", as_json)
    files = [str(p.relative_to(output)) for p in written]
    if as_json:
        body = {"directory": str(output), "files": files, **result.report.to_dict()}
        typer.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    _summary(output, result)


async def _read(
    server: str, realm: str, client_id: str, secret: str, *, auth_realm: str | None
) -> RealmSnapshot:
    admin = connect(server, realm, client_id, secret, auth_realm=auth_realm)
    try:
        return await read_realm(admin, server, realm)
    finally:
        await close(admin)


def _secret(env: str | None, file: Path | None) -> str:
    if file is not None:
        if env is not None:
            raise typer.BadParameter(
                "give --client-secret-env or --client-secret-file, not both",
                param_hint="--client-secret-file",
            )
        try:
            secret = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(
                f"cannot read {file}: {exc}", param_hint="--client-secret-file"
            ) from None
        if not secret:
            raise typer.BadParameter(f"{file} is empty", param_hint="--client-secret-file")
        return secret
    env = env or DEFAULT_SECRET_ENV
    secret = os.environ.get(env, "").strip()
    if not secret:
        raise typer.BadParameter(
            f"the environment variable {env} is not set (or use --client-secret-file)",
            param_hint="--client-secret-env",
        )
    return secret


def _fail(message: str, code: str, as_json: bool) -> NoReturn:
    if as_json:
        body = {"error": code, "message": message, "problems": []}
        typer.echo(json.dumps(body, indent=2, sort_keys=True))
    else:
        typer.echo(f"error: {message}", err=True)
        typer.echo("Nothing was written.", err=True)
    raise typer.Exit(1)


def _summary(output: Path, result: ImportResult) -> None:
    from federation.cli_admin import table

    report = result.report
    rows: list[list[Any]] = []
    for partner in report.partners:
        rows.append(
            [
                partner.id if partner.written else f"{partner.id} (not written)",
                partner.name,
                partner.kind,
                partner.domains,
                [p["domain"] for p in partner.pending_domains],
                [f"{c.id} ({c.type})" for c in partner.connections],
                sum(len(c.notes.todo) for c in partner.connections) + len(partner.notes.todo),
            ]
        )
    headers = ("PARTNER", "NAME", "KIND", "DOMAINS", "PENDING", "CONNECTIONS", "TO DO")
    typer.echo(
        f"Imported realm {report.realm} from {report.server}: "
        f"{len([p for p in report.partners if p.written])} of "
        f"{report.organizations} organizations, written to {output} (every partner invited)."
    )
    typer.echo("")
    typer.echo(table(headers, rows) if rows else "No organizations.")
    if report.skipped:
        typer.echo("")
        typer.echo("Not imported:")
        for item in report.skipped:
            provider = f" ({item.provider_id})" if item.provider_id else ""
            typer.echo(f"  {item.what} {item.name}{provider}: {item.reason}")
    typer.echo("")
    typer.echo("Next:")
    for index, step in enumerate(report.todo, start=1):
        typer.echo(f"  {index}. {step}")
    typer.echo("")
    typer.echo(f"The details, partner by partner: {output / REPORT_FILE}")
