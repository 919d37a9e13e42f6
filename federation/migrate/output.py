"""The import's output directory: partner files (``write_bundle``) and the report.

Running the import again over its own output keeps what the first run or the admin put
there: pending-domain tokens (records already published stay valid) and client secrets
filled in since (for the same client id). Any other non-empty directory is refused:
``write_bundle`` removes files it did not write.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from federation.admin.bundle import BundleError, read_bundle, write_bundle
from federation.migrate.keycloak import KeycloakImportError
from federation.migrate.partners import ImportResult, PreviousImport

REPORT_FILE = "IMPORT-REPORT.md"


def previous_import(directory: Path) -> PreviousImport:
    """What an earlier import left in ``directory`` (empty when there is none).

    :class:`KeycloakImportError` when ``directory`` holds anything but an earlier import's
    output: :func:`write_bundle` removes files it did not write, so pointing the import at
    a directory of other documents would delete them."""
    if not directory.exists():
        return PreviousImport()
    if not directory.is_dir():
        raise KeycloakImportError(f"{directory} is not a directory")
    if not any(directory.iterdir()):
        return PreviousImport()
    if not (directory / REPORT_FILE).is_file():
        raise KeycloakImportError(
            f"{directory} is not empty and holds no {REPORT_FILE}: it is not an earlier "
            "import's output, whose files would be replaced. Choose a new directory."
        )
    try:
        documents = read_bundle(directory)
    except BundleError:
        return PreviousImport()  # unreadable files: start afresh (they are rewritten)
    pending: dict[tuple[str, str], tuple[str, str]] = {}
    secrets: dict[str, tuple[str, str]] = {}
    for kind, doc_id, spec in documents:
        if kind != "partner":
            continue
        for item in spec.get("pending_domains") or []:
            if isinstance(item, dict) and all(
                item.get(k) for k in ("name", "token", "requested_at")
            ):
                moment = item["requested_at"]
                when = moment.isoformat() if isinstance(moment, datetime) else str(moment)
                pending[(doc_id, str(item["name"]))] = (str(item["token"]), when)
        for connection in spec.get("connections") or []:
            if isinstance(connection, dict) and connection.get("client_secret"):
                secrets[str(connection.get("id"))] = (
                    str(connection.get("client_id")),
                    str(connection["client_secret"]),
                )
    return PreviousImport(pending, secrets)


def write_import(directory: Path, result: ImportResult) -> list[Path]:
    """The partner files (0600: they may hold secrets) and ``IMPORT-REPORT.md``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = write_bundle(directory, result.documents)
    report = directory / REPORT_FILE
    report.write_text(result.report.markdown(), encoding="utf-8")
    return [*written, report]
