"""Durable, versioned documents: the registry's storage (partners, apps, clients, ...).

A document is ``(kind, id) → spec`` with a version that grows by one on every write.
Writes are optimistic: each carries the version its author read (0 = "must not exist
yet") and a stale version is refused with :class:`VersionConflict` — never silently
overwritten. :meth:`DocumentStore.apply` writes several documents all-or-nothing, so a
refused write (a conflict, a validation problem found before) leaves nothing half-written.

Every write is recorded as a :class:`Change` — who, when, what, before and after — and
bumps one store-wide ``revision`` number, which replicas poll to see changes (one cheap
read). Two implementations share one contract suite (``tests/admin/test_documents_contract.py``):
SQLite (a file, or ``:memory:`` for a single process) and Redis (shared by replicas).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from federation.errors import IsthmusError

Spec = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Document:
    kind: str
    id: str
    version: int
    spec: Spec
    updated_at: float
    updated_by: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.id)


@dataclass(frozen=True, slots=True)
class Write:
    """One document write in an :meth:`DocumentStore.apply` batch.

    ``spec=None`` deletes. ``expected_version`` is the version the author read: ``0``
    means the document must not exist yet, ``None`` skips the check (only for tools that
    take the last word on purpose, such as ``isthmus apply --force``).
    """

    kind: str
    id: str
    spec: Spec | None
    expected_version: int | None


@dataclass(frozen=True, slots=True)
class Change:
    """What one write did: the audit record of an admin change."""

    revision: int
    kind: str
    id: str
    action: str  # create | update | delete
    version: int  # the document's version after the write (0 once deleted)
    before: Spec | None
    after: Spec | None
    actor: str
    at: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "kind": self.kind,
            "id": self.id,
            "action": self.action,
            "version": self.version,
            "before": self.before,
            "after": self.after,
            "actor": self.actor,
            "at": self.at,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        return cls(
            revision=int(data["revision"]),
            kind=str(data["kind"]),
            id=str(data["id"]),
            action=str(data["action"]),
            version=int(data["version"]),
            before=data.get("before"),
            after=data.get("after"),
            actor=str(data["actor"]),
            at=float(data["at"]),
            reason=str(data.get("reason", "")),
        )


class VersionConflict(IsthmusError):
    """A write carried a stale version: someone else changed the document since.

    ``conflicts`` lists each stale write as (kind, id, expected version, found version).
    """

    error = "version_conflict"
    status = 409
    public_message = (
        "Someone else changed this since you read it. Reload, re-apply your change, and save again."
    )

    def __init__(self, conflicts: list[tuple[str, str, int | None, int]]) -> None:
        self.conflicts = conflicts
        super().__init__(
            "; ".join(
                f"{kind}/{doc_id}: expected version {expected}, found {found}"
                for kind, doc_id, expected, found in conflicts
            )
        )


class RevisionMoved(Exception):
    """The registry changed between validation and write: validate again and retry."""

    def __init__(self, expected: int, found: int) -> None:
        super().__init__(f"registry at revision {found}, not {expected}")
        self.expected = expected
        self.found = found


class DocumentStore(Protocol):
    async def get(self, kind: str, doc_id: str) -> Document | None: ...

    async def documents(self, kind: str | None = None) -> list[Document]:
        """Every document (of one kind), sorted by (kind, id)."""

    async def apply(
        self,
        writes: Sequence[Write],
        *,
        actor: str,
        reason: str = "",
        expected_revision: int | None = None,
        now: float | None = None,
    ) -> list[Change]:
        """All of ``writes`` or none (:class:`VersionConflict` lists every stale one).

        Writes that change nothing (same spec, or deleting a missing document with
        ``expected_version`` 0 or None) are skipped and return no change. With
        ``expected_revision``, nothing is written unless the store is still at that
        revision (:class:`RevisionMoved`): the caller validated the whole registry at that
        revision, and cross-document rules (a domain owned once) must hold after the write.
        ``now`` stamps the changes (the hub's clock; default: the wall clock).
        """

    async def revision(self) -> int:
        """The store-wide revision: grows on every change; replicas poll it."""

    async def history(
        self, *, kind: str | None = None, doc_id: str | None = None, limit: int = 100
    ) -> list[Change]:
        """Recorded changes, newest first."""

    async def aclose(self) -> None: ...


def canonical(spec: Spec) -> str:
    """One text per spec: equal specs compare equal (used to skip no-op writes)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)


def action_of(before: Spec | None, after: Spec | None) -> str:
    if before is None:
        return "create"
    return "delete" if after is None else "update"


class SqliteDocumentStore:
    """Documents in SQLite: a file survives restarts; ``:memory:`` suits one process.

    Calls are synchronous under a lock (admin writes are rare and take microseconds); a
    transaction per :meth:`apply` makes the batch all-or-nothing.
    """

    def __init__(self, path: str = ":memory:") -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(_SCHEMA)

    async def get(self, kind: str, doc_id: str) -> Document | None:
        with self._lock:
            row = self._db.execute(
                "SELECT kind, id, version, spec, updated_at, updated_by FROM documents "
                "WHERE kind = ? AND id = ?",
                (kind, doc_id),
            ).fetchone()
        return _document(row) if row else None

    async def documents(self, kind: str | None = None) -> list[Document]:
        query = "SELECT kind, id, version, spec, updated_at, updated_by FROM documents"
        args: tuple[str, ...] = ()
        if kind is not None:
            query += " WHERE kind = ?"
            args = (kind,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY kind, id", args).fetchall()
        return [_document(row) for row in rows]

    async def apply(
        self,
        writes: Sequence[Write],
        *,
        actor: str,
        reason: str = "",
        expected_revision: int | None = None,
        now: float | None = None,
    ) -> list[Change]:
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (revision,) = self._db.execute("SELECT revision FROM meta").fetchone()
                if expected_revision is not None and expected_revision != revision:
                    raise RevisionMoved(expected_revision, int(revision))
                changes = self._apply_locked(writes, actor, reason, now)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return changes

    def _apply_locked(
        self, writes: Sequence[Write], actor: str, reason: str, now: float
    ) -> list[Change]:
        current: dict[tuple[str, str], tuple[int, Spec]] = {}
        conflicts: list[tuple[str, str, int | None, int]] = []
        for w in writes:
            row = self._db.execute(
                "SELECT version, spec FROM documents WHERE kind = ? AND id = ?", (w.kind, w.id)
            ).fetchone()
            found = (int(row[0]), json.loads(row[1])) if row else (0, {})
            current[(w.kind, w.id)] = found
            if w.expected_version is not None and w.expected_version != found[0]:
                conflicts.append((w.kind, w.id, w.expected_version, found[0]))
        if conflicts:
            raise VersionConflict(conflicts)
        (revision,) = self._db.execute("SELECT revision FROM meta").fetchone()
        changes = []
        for w in writes:
            version, old = current[(w.kind, w.id)]
            before = old if version else None
            if _unchanged(before, w.spec):
                continue
            revision += 1
            new_version = 0 if w.spec is None else version + 1
            if w.spec is None:
                self._db.execute("DELETE FROM documents WHERE kind = ? AND id = ?", (w.kind, w.id))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                    (w.kind, w.id, new_version, canonical(w.spec), now, actor),
                )
            change = Change(
                revision, w.kind, w.id, action_of(before, w.spec), new_version,
                before, w.spec, actor, now, reason,
            )  # fmt: skip
            self._db.execute(
                "INSERT INTO changes VALUES (?, ?, ?, ?)",
                (revision, w.kind, w.id, canonical(change.to_dict())),
            )
            changes.append(change)
        self._db.execute("UPDATE meta SET revision = ?", (revision,))
        return changes

    async def revision(self) -> int:
        with self._lock:
            (revision,) = self._db.execute("SELECT revision FROM meta").fetchone()
        return int(revision)

    async def history(
        self, *, kind: str | None = None, doc_id: str | None = None, limit: int = 100
    ) -> list[Change]:
        query, args = "SELECT change FROM changes WHERE 1 = 1", list[str]()
        if kind is not None:
            query, args = query + " AND kind = ?", [*args, kind]
        if doc_id is not None:
            query, args = query + " AND id = ?", [*args, doc_id]
        with self._lock:
            rows = self._db.execute(
                query + " ORDER BY revision DESC LIMIT ?", (*args, limit)
            ).fetchall()
        return [Change.from_dict(json.loads(row[0])) for row in rows]

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()


def _unchanged(before: Spec | None, after: Spec | None) -> bool:
    if before is None or after is None:
        return before is None and after is None
    return canonical(before) == canonical(after)


def _document(row: tuple[Any, ...]) -> Document:
    kind, doc_id, version, spec, updated_at, updated_by = row
    return Document(kind, doc_id, int(version), json.loads(spec), float(updated_at), updated_by)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, spec TEXT NOT NULL,
    updated_at REAL NOT NULL, updated_by TEXT NOT NULL, PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY, kind TEXT NOT NULL, id TEXT NOT NULL, change TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_doc ON changes (kind, id);
CREATE TABLE IF NOT EXISTS meta (revision INTEGER NOT NULL);
INSERT INTO meta SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM meta);
"""
