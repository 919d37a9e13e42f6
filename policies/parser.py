"""Read a policy document (YAML text, a file, or data) and compile it into rules.

Every problem is collected, each with the file, the line (from PyYAML's node marks) and
the dotted field (``rules.2.when.path.prefix``); :class:`PolicyError` lists them all.
The structure checked here is the one ``schema.json`` describes for editors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policies.combinators import All, Always, Not
from policies.combinators import Any as AnyOf
from policies.criteria import CRITERIA, CompileContext, Criterion, CriterionValueError
from policies.criteria.partner import Partner
from policies.errors import PolicyError, PolicyProblem
from policies.rules import Rule

Loc = tuple[str | int, ...]

RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
TOP_KEYS = ("version", "description", "rules")
RULE_KEYS = ("name", "effect", "when", "reason", "public", "code", "description")
COMBINATORS = ("all", "any", "not")

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Document:
    data: Any
    file: str
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[PolicyProblem] = field(default_factory=list)

    def problem(self, loc: Loc, message: str) -> None:
        line = None
        for end in range(len(loc), -1, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                break
        dotted = ".".join(str(part) for part in loc)
        self.problems.append(PolicyProblem(self.file, line, dotted, message))


def read(source: str | Path | Mapping[str, Any], name: str) -> Document:
    if isinstance(source, Mapping):
        return Document(dict(source), name)
    if isinstance(source, Path):
        file = str(source)
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError([PolicyProblem(file, None, "", f"cannot read: {exc}")]) from None
    else:
        file, text = name, source
    doc = Document(None, file)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError([PolicyProblem(file, line, "", f"not valid YAML: {problem}")]) from None
    if node is not None:
        doc.data = _convert(node, (), doc, yaml.constructor.SafeConstructor())
    if doc.problems:
        raise PolicyError(doc.problems)
    return doc


def _convert(node: yaml.Node, loc: Loc, doc: Document, constructor: Any) -> Any:
    doc.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                doc.lines[(*loc, "?")] = key_node.start_mark.line + 1
                doc.problem((*loc, "?"), "keys must be plain strings")
                continue
            key = constructor.construct_object(key_node)
            child = (*loc, str(key))
            doc.lines[child] = key_node.start_mark.line + 1
            if str(key) in out:
                doc.problem(child, "duplicate key")
                continue
            out[str(key)] = _convert(value_node, child, doc, constructor)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*loc, i), doc, constructor) for i, item in enumerate(node.value)]
    return constructor.construct_object(node)


def compile_document(doc: Document, ctx: CompileContext) -> list[Rule]:
    data = doc.data
    if not isinstance(data, dict):
        doc.problem((), "a policy is a mapping with a 'rules' list")
        raise PolicyError(doc.problems)
    for key in data:
        if key not in TOP_KEYS:
            doc.problem((key,), f"unknown key (expected {', '.join(TOP_KEYS)})")
    if "version" in data and data["version"] != 1:
        doc.problem(("version",), "the only version is 1")
    if "description" in data and not isinstance(data["description"], str):
        doc.problem(("description",), "expected text")
    rules: list[Rule] = []
    raw_rules = data.get("rules")
    if raw_rules is None:
        doc.problem(("rules",), "required: a list of rules (an empty list denies everything)")
    elif not isinstance(raw_rules, list):
        doc.problem(("rules",), "expected a list of rules")
    else:
        seen: set[str] = set()
        for i, raw in enumerate(raw_rules):
            rule = _rule(raw, ("rules", i), doc, ctx)
            if rule is None:
                continue
            if rule.name in seen:
                doc.problem(("rules", i, "name"), f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
            rules.append(rule)
    if doc.problems:
        raise PolicyError(doc.problems)
    return rules


def _rule(raw: Any, loc: Loc, doc: Document, ctx: CompileContext) -> Rule | None:
    if not isinstance(raw, dict):
        doc.problem(loc, "a rule is a mapping (name, effect, when, ...)")
        return None
    before = len(doc.problems)
    for key in raw:
        if key not in RULE_KEYS:
            doc.problem((*loc, key), f"unknown key (expected {', '.join(RULE_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not RULE_NAME.fullmatch(name):
        doc.problem((*loc, "name"), "required: letters, digits, _ . : - (at most 128)")
    effect = raw.get("effect")
    if effect not in ("allow", "deny"):
        doc.problem((*loc, "effect"), "required: allow or deny")
    reason = raw.get("reason")
    if reason is not None and (not isinstance(reason, str) or not reason.strip()):
        doc.problem((*loc, "reason"), "expected a sentence")
    public = raw.get("public", False)
    if not isinstance(public, bool):
        doc.problem((*loc, "public"), "expected true or false")
    code = raw.get("code")
    if code is not None and (not isinstance(code, str) or not CODE.fullmatch(code)):
        doc.problem((*loc, "code"), "expected a snake_case code like admin_area")
    if "description" in raw and not isinstance(raw["description"], str):
        doc.problem((*loc, "description"), "expected text")
    checks: list[Criterion] = []
    partner: Partner | None = None
    if "when" not in raw:
        doc.problem((*loc, "when"), "required: criteria, or 'always' to match every request")
    else:
        when = raw["when"]
        if when == "always":
            checks = [Always()]
        else:
            compiled = _when(when, (*loc, "when"), doc, ctx)
            for check in compiled:
                if isinstance(check, Partner) and partner is None:
                    partner = check  # indexed, not evaluated per request
                else:
                    checks.append(check)
            if partner is not None and not checks:
                checks = [Always()]
    if len(doc.problems) > before:
        return None
    assert isinstance(name, str) and isinstance(public, bool)
    return Rule.build(
        name=name,
        effect=str(effect),
        checks=tuple(checks),
        partner=partner,
        reason=reason,
        public=public,
        code=code,
    )


def _when(when: Any, loc: Loc, doc: Document, ctx: CompileContext) -> list[Criterion]:
    if not isinstance(when, dict) or not when:
        doc.problem(loc, "expected a non-empty mapping of criteria (or 'always')")
        return []
    out: list[Criterion] = []
    for key, value in when.items():
        here = (*loc, key)
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                doc.problem(here, f"'{key}' takes a non-empty list of criteria mappings")
                continue
            children: list[Criterion] = []
            for i, item in enumerate(value):
                parts = _when(item, (*here, i), doc, ctx)
                if parts:
                    children.append(parts[0] if len(parts) == 1 else All(tuple(parts)))
            if len(children) == len(value):
                out.append(All(tuple(children)) if key == "all" else AnyOf(tuple(children)))
        elif key == "not":
            parts = _when(value, here, doc, ctx)
            if parts:
                out.append(Not(parts[0] if len(parts) == 1 else All(tuple(parts))))
        elif key in CRITERIA:
            try:
                out.append(CRITERIA[key](value, ctx))
            except CriterionValueError as exc:
                sub = tuple(part for part in exc.field.split(".") if part)
                doc.problem((*here, *(int(p) if p.isdigit() else p for p in sub)), exc.message)
        else:
            known = ", ".join([*CRITERIA, *COMBINATORS])
            doc.problem(here, f"unknown criterion (expected one of {known})")
    return out
