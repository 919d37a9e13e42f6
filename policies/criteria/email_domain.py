"""``email_domain``: the subject's *verified* email is in one of these domains;
``*.acme.example`` also takes every subdomain of acme.example. An unverified or missing
email never matches.

    when:
      email_domain: [acme.example, "*.acme-group.example"]
"""

from __future__ import annotations

from typing import Any

from policies.criteria.base import (
    CompileContext,
    Criterion,
    CriterionValueError,
    one_of,
    string_list,
)
from policies.model import AccessRequest, Subject


class EmailDomain(Criterion):
    __slots__ = ("domains", "suffixes")
    key = "email_domain"
    code = "email_domain_not_allowed"

    def __init__(self, domains: frozenset[str], suffixes: tuple[str, ...]) -> None:
        self.domains = domains
        self.suffixes = suffixes  # ".acme.example" for "*.acme.example"

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        identity = subject.identity
        if not identity.email_verified:
            return False
        domain = identity.email_domain
        if domain is None:
            return False
        domain = domain.rstrip(".")
        return domain in self.domains or (bool(self.suffixes) and domain.endswith(self.suffixes))

    def describe(self) -> str:
        shown = [*self.domains, *(f"*{s}" for s in self.suffixes)]
        return f"verified email domain is {one_of(shown)}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        identity = subject.identity
        if identity.email_domain is None:
            return "no email"
        verified = "verified" if identity.email_verified else "unverified"
        return f"{verified} email domain is {identity.email_domain}"


def compile(value: Any, ctx: CompileContext) -> EmailDomain:
    domains: set[str] = set()
    suffixes: list[str] = []
    for i, item in enumerate(string_list(value, what="domain")):
        domain = item.lower().rstrip(".")
        wildcard = domain.startswith("*.")
        bare = domain[2:] if wildcard else domain
        labels = bare.split(".")
        if "@" in bare or "*" in bare or len(labels) < 2 or "" in labels:
            field = str(i) if isinstance(value, list) else ""
            raise CriterionValueError(f"{item!r} is not a domain (or *.domain)", field)
        if wildcard:
            suffixes.append("." + bare)
        else:
            domains.add(bare)
    return EmailDomain(frozenset(domains), tuple(suffixes))
