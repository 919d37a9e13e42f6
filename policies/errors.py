"""Policy errors: every problem of a policy document at once, each with file, line and field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    file: str  # the file name, or "<name>" for a policy given as text or data
    line: int | None  # 1-based; None when the policy came as data (no source text)
    field: str  # dotted path of the bad key, e.g. "rules.2.when.path.prefix"
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field or '<root>'}: {self.message}"


class PolicyError(Exception):
    """A policy that cannot be compiled; ``problems`` lists every problem found."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = problems
        count = len(problems)
        head = f"{count} policy problem{'s' if count != 1 else ''}"
        super().__init__("\n".join([head, *(f"  {p}" for p in problems)]))
