"""``path``: the *normalized* request path (:mod:`policies.paths`) matches a prefix, a glob
or an exact path. Any of the three keys, each a string or a list; the criterion matches
when any pattern does.

- ``prefix: /invoices`` is segment-aware: ``/invoices`` and ``/invoices/7``, not
  ``/invoices-old``. ``prefix: /`` matches every path.
- ``glob: /projects/*/files/**``: ``*`` is any run of characters inside one segment,
  ``**`` any run across segments (``/a/**`` matches ``/a/x/y``, and ``/a/`` itself).
- ``exact: /health``.

A trailing slash never changes a decision: it is dropped from the path and from the
patterns before comparing. For apps with ``case_insensitive_paths`` the patterns are
folded like the path (the request path is folded again here: a caller that forgot
cannot open a way around a deny rule). Patterns are normalized when the policy is
compiled; a pattern that does not normalize (``/a/../b`` is fine, ``/a;b`` is not) is an
error.

    when:
      path: {prefix: [/invoices, /orders], exact: /health}
"""

from __future__ import annotations

import re
from typing import Any

from policies.criteria.base import (
    CompileContext,
    Criterion,
    CriterionValueError,
    mapping,
    string_list,
)
from policies.model import AccessRequest, Subject
from policies.paths import AmbiguousPath, normalize


class Path(Criterion):
    __slots__ = ("all_paths", "exacts", "fold", "glob", "globs", "prefixes", "shown")
    key = "path"
    code = "path_not_allowed"

    def __init__(
        self,
        prefixes: tuple[str, ...],
        exacts: frozenset[str],
        globs: tuple[str, ...],
        *,
        fold: bool,
    ) -> None:
        self.all_paths = "/" in prefixes
        # "/invoices" → "/invoices/": a path matches when it is the prefix or below it.
        self.prefixes = tuple(p + "/" for p in prefixes if p != "/")
        self.exacts = exacts | frozenset(p for p in prefixes if p != "/")
        self.globs = globs
        self.glob = re.compile("|".join(f"(?:{_glob_regex(g)})" for g in globs)) if globs else None
        self.fold = fold
        shown = [f"under {p}" for p in prefixes]
        shown += [f"= {p}" for p in sorted(exacts)]
        shown += [f"like {g}" for g in globs]
        self.shown = " or ".join(shown)

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        if self.all_paths:
            return True
        path = request.path
        if self.fold:
            path = path.lower()
        if len(path) > 1 and path[-1] == "/":
            path = path[:-1]
        if path in self.exacts or path.startswith(self.prefixes):
            return True
        return self.glob is not None and self.glob.fullmatch(path) is not None

    def describe(self) -> str:
        return f"path {self.shown}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        return f"path is {request.path}"


def _glob_regex(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("/**", i) and (i + 3 == len(pattern) or pattern[i + 3] == "/"):
            out.append("(?:/.*)?")  # "/a/**" matches "/a" (trailing slash dropped) and below
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def _pattern(raw: str, fold: bool, *, glob: bool) -> str:
    if not raw.startswith("/"):
        raise CriterionValueError(f"{raw!r} must start with /")
    try:
        text = normalize(raw.replace("*", "x") if glob else raw, case_insensitive=fold)
    except AmbiguousPath as exc:
        raise CriterionValueError(f"{raw!r} is not a normalized path: {exc}") from None
    if glob:
        # Normalize the literal parts only; keep the stars where they were.
        if any(bad in raw + "/" for bad in ("%", "\\", "/./", "/../", "//")):
            raise CriterionValueError(f"glob {raw!r}: write it without dot segments, //, \\ or %")
        text = raw.lower() if fold else raw
    return text[:-1] if len(text) > 1 and text.endswith("/") else text


def compile(value: Any, ctx: CompileContext) -> Path:
    spec = mapping(value, ("prefix", "glob", "exact"))
    if not spec:
        raise CriterionValueError("give prefix, glob and/or exact")
    fold = ctx.case_insensitive_paths
    found: dict[str, list[str]] = {}
    for key in ("prefix", "glob", "exact"):
        if key not in spec:
            continue
        patterns: list[str] = []
        for i, raw in enumerate(string_list(spec[key], what="path")):
            try:
                patterns.append(_pattern(raw, fold, glob=key == "glob"))
            except CriterionValueError as exc:
                field = f"{key}.{i}" if isinstance(spec[key], list) else key
                raise CriterionValueError(exc.message, field) from None
        found[key] = patterns
    return Path(
        tuple(found.get("prefix", ())),
        frozenset(found.get("exact", ())),
        tuple(found.get("glob", ())),
        fold=fold,
    )
