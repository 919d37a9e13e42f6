"""What every criterion is: a compiled, immutable test on (subject, request), able to say
what it requires (for reasons) and what it saw (for ``explain``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from policies.model import AccessRequest, Subject


class CriterionValueError(ValueError):
    """A criterion's value in a policy is wrong; ``field`` is relative to the criterion."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class CompileContext:
    """What a criterion may need to know about the app its policy guards."""

    app_id: str
    case_insensitive_paths: bool = False


class Criterion(ABC):
    """One compiled criterion. ``matches`` is the hot path: no allocation, no parsing."""

    __slots__ = ()
    key: ClassVar[str]  # its name in the YAML ``when:`` mapping
    code: ClassVar[str]  # the reason code when an allow rule fails on it

    @abstractmethod
    def matches(self, subject: Subject, request: AccessRequest) -> bool: ...

    @abstractmethod
    def describe(self) -> str:
        """What it requires, as a phrase: ``partner is one of acme, globex``."""

    @abstractmethod
    def observed(self, subject: Subject, request: AccessRequest) -> str:
        """What the request had, as a phrase (``explain`` only): ``partner is initech``."""

    def failing(self, subject: Subject, request: AccessRequest) -> Criterion:
        """The criterion to blame when this one does not match (combinators look inside)."""
        return self

    def leaves(self) -> Iterable[Criterion]:
        yield self


# --- helpers for compile functions ------------------------------------------------------


def string_list(value: Any, *, what: str = "value") -> tuple[str, ...]:
    """A string or a non-empty list of non-empty strings (an empty list is refused: say
    what you mean instead of relying on what "nothing" means)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise CriterionValueError(f"expected a {what} or a non-empty list of them")
    out: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, str | int) or str(item) == "":
            field = str(i) if isinstance(value, list) else ""
            raise CriterionValueError(f"expected a non-empty {what}, got {item!r}", field)
        out.append(str(item))
    return tuple(out)


def mapping(value: Any, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CriterionValueError("expected a mapping")
    allowed_set = set(allowed)
    for key in value:
        if key not in allowed_set:
            expected = ", ".join(sorted(allowed_set))
            raise CriterionValueError(f"unknown key {key!r} (expected {expected})", str(key))
    for key in required:
        if key not in value:
            raise CriterionValueError(f"{key!r} is required")
    return value


def one_of(values: Iterable[str]) -> str:
    items = sorted(values)
    return items[0] if len(items) == 1 else "one of " + ", ".join(items)
