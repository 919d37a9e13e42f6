"""Per-partner access policies (issue 4): data, deny by default, every decision with reasons.

The public API::

    policy = load_policy(Path("orders.yaml"), name="orders")        # PolicyError on problems
    path = paths.normalize(raw_path, case_insensitive=False)         # AmbiguousPath → 400
    decision = policy.decide(Subject(identity, partner), AccessRequest(
        method, path, host, source_ip, now))
    decision.allowed, decision.reasons, decision.public_reasons()

Modules: ``model`` (the values), ``paths`` (invariant 4), ``parser`` (YAML with lines),
``schema.json`` (the language for editors), ``criteria`` (one module per criterion),
``combinators`` (all/any/not), ``rules``, ``evaluator`` (the partner index, decisions,
explain), ``testing`` (policy test cases as data). No web framework is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policies.criteria.base import CompileContext
from policies.errors import PolicyError, PolicyProblem
from policies.evaluator import DENY_ALL, Explanation, Policy, RuleTrace
from policies.model import AccessRequest, Decision, Grant, Reason, Subject
from policies.parser import compile_document, read

__all__ = [
    "DENY_ALL",
    "AccessRequest",
    "Decision",
    "Explanation",
    "Grant",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "Reason",
    "RuleTrace",
    "Subject",
    "load_policy",
]


def load_policy(
    source: str | Path | Mapping[str, Any],
    *,
    name: str,
    app_id: str | None = None,
    case_insensitive_paths: bool = False,
) -> Policy:
    """Parse, check and compile a policy; raise :class:`PolicyError` listing every problem.

    ``source``: YAML text (``str``), a YAML file (``Path``), or the parsed document
    (a mapping, e.g. an app's inline ``policy:``). ``name`` names it in problems and
    reasons (use the file name or ``apps.<id>.policy``). ``app_id`` is the app whose
    grants ``grant: valid`` looks for (default: ``name``). ``case_insensitive_paths``
    must match the app's setting: path patterns are then folded like the paths.
    """
    doc = read(source, name)
    ctx = CompileContext(app_id=app_id or name, case_insensitive_paths=case_insensitive_paths)
    return Policy(name, compile_document(doc, ctx))
