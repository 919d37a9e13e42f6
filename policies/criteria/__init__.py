"""The criteria of the policy language, one module each, in an explicit registry
(YAML key → compile function). No import side effects: adding a criterion is adding a
module and a line here (and to ``schema.json``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from policies.criteria import (
    acr,
    amr,
    claim,
    connection,
    contract,
    email_domain,
    grant,
    group,
    method,
    partner,
    partner_kind,
    path,
    role,
    source_ip,
    time_window,
)
from policies.criteria.base import CompileContext, Criterion, CriterionValueError

Compile = Callable[[Any, CompileContext], Criterion]

CRITERIA: Mapping[str, Compile] = {
    "partner": partner.compile,
    "partner_kind": partner_kind.compile,
    "connection": connection.compile,
    "group": group.compile,
    "role": role.compile,
    "claim": claim.compile,
    "email_domain": email_domain.compile,
    "method": method.compile,
    "path": path.compile,
    "time": time_window.compile,
    "source_ip": source_ip.compile,
    "acr": acr.compile,
    "amr": amr.compile,
    "contract": contract.compile,
    "grant": grant.compile,
}

__all__ = ["CRITERIA", "CompileContext", "Criterion", "CriterionValueError"]
