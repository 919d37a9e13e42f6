"""Registry documents as files: what ``isthmus export`` writes and ``isthmus apply`` reads.

One document per file, ``<kind>s/<id>.yaml`` (``policies/<app>.yaml`` for policies)::

    kind: partner
    id: acme
    spec:
      name: Acme Corp
      ...

``apply`` reads every ``*.yaml``/``*.yml`` under the directory (several documents per
file, ``---``-separated, are fine). Files are written deterministically (sorted keys), so
exporting what was applied gives back the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from federation.admin.catalog import EXPORTED_KINDS
from federation.admin.documents import Spec

_DIRS = {"partner": "partners", "app": "apps", "client": "clients", "policy": "policies"}


@dataclass(frozen=True, slots=True)
class FileProblem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


class BundleError(Exception):
    def __init__(self, problems: list[FileProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def dumps(kind: str, doc_id: str, spec: Spec) -> str:
    return yaml.safe_dump(
        {"kind": kind, "id": doc_id, "spec": spec},
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
    )


def write_bundle(directory: Path, documents: Iterable[tuple[str, str, Spec]]) -> list[Path]:
    """Write one file per document; files of documents no longer present are removed."""
    written = []
    for kind, doc_id, spec in documents:
        path = directory / _DIRS[kind] / f"{doc_id}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Specs hold client secrets: readable by their owner only.
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(dumps(kind, doc_id, spec), encoding="utf-8")
        written.append(path)
    for sub in _DIRS.values():
        for stale in sorted((directory / sub).glob("*.yaml")):
            if stale not in written:
                stale.unlink()
    return written


def read_bundle(directory: Path) -> list[tuple[str, str, Spec]]:
    """Every document under ``directory``; :class:`BundleError` lists every bad file."""
    if not directory.is_dir():
        raise BundleError([FileProblem(str(directory), "is not a directory")])
    found: dict[tuple[str, str], str] = {}
    documents: list[tuple[str, str, Spec]] = []
    problems: list[FileProblem] = []
    files = sorted([*directory.rglob("*.yaml"), *directory.rglob("*.yml")])
    for path in files:
        name = str(path.relative_to(directory))
        try:
            loaded = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            reason = " ".join(str(exc).split())  # one line per problem
            problems.append(FileProblem(name, f"cannot be read as YAML: {reason}"))
            continue
        for index, item in enumerate(d for d in loaded if d is not None):
            where = name if len(loaded) == 1 else f"{name} (document {index + 1})"
            parsed = _document(item)
            if isinstance(parsed, str):
                problems.append(FileProblem(where, parsed))
                continue
            kind, doc_id, _ = parsed
            if (kind, doc_id) in found:
                problems.append(
                    FileProblem(where, f"{kind}/{doc_id} is also in {found[(kind, doc_id)]}")
                )
                continue
            found[(kind, doc_id)] = where
            documents.append(parsed)
    if problems:
        raise BundleError(problems)
    return documents


def _document(item: Any) -> tuple[str, str, Spec] | str:
    if not isinstance(item, dict):
        return "must be a mapping with kind, id and spec"
    extra = set(item) - {"kind", "id", "spec"}
    if extra:
        return f"unknown keys {', '.join(sorted(map(str, extra)))} (expected kind, id, spec)"
    kind, doc_id, spec = item.get("kind"), item.get("id"), item.get("spec")
    if kind not in EXPORTED_KINDS:
        return f"kind must be one of {', '.join(EXPORTED_KINDS)}, not {kind!r}"
    if not isinstance(doc_id, str) or not doc_id:
        return "id must be a non-empty string"
    if not isinstance(spec, dict):
        return "spec must be a mapping"
    return str(kind), doc_id, spec
