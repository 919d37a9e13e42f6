"""``method``: the HTTP method is one of these (``GET``, ``POST``, ...; upper-cased).

when:
  method: [GET, HEAD]
"""

from __future__ import annotations

import re
from typing import Any

from policies.criteria.base import (
    CompileContext,
    Criterion,
    CriterionValueError,
    one_of,
    string_list,
)
from policies.model import AccessRequest, Subject

_TOKEN = re.compile(r"[A-Z][A-Z0-9_-]*")


class Method(Criterion):
    __slots__ = ("methods",)
    key = "method"
    code = "method_not_allowed"

    def __init__(self, methods: frozenset[str]) -> None:
        self.methods = methods

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        return request.method in self.methods

    def describe(self) -> str:
        return f"method is {one_of(self.methods)}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        return f"method is {request.method}"


def compile(value: Any, ctx: CompileContext) -> Method:
    methods = [m.upper() for m in string_list(value, what="HTTP method")]
    for i, method in enumerate(methods):
        if not _TOKEN.fullmatch(method):
            field = str(i) if isinstance(value, list) else ""
            raise CriterionValueError(f"{method!r} is not an HTTP method", field)
    return Method(frozenset(methods))
