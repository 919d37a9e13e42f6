"""Policy decision time: 1,000 partners x 20 rules (and 10 / 100 / 10,000 partners).

Budget (docs/architecture map): median decision <= 10 us with 1,000 partners x 20 rules,
flat as partners grow — the policy is indexed on partner, so a decision looks only at the
subject's partner's rules plus the partner-independent ones.

The policy per size: for every partner, 20 rules — 4 deny (a path, a method at night, an
IP range, a claim) and 16 allow (group + method + path prefix, role + glob, a weekday
time window in Europe/Paris, email domain + MFA, contract, grant) — plus 3
partner-independent rules (deny /admin, deny suspended-looking claims, allow internal
staff). Requests: 2,000 (subject, request) pairs drawn at random over the partners, about
half allowed, half denied (by a deny rule or by default, with reasons built). Each pair is
decided ``--repeat`` times in a row; its time is the loop's time divided by the repeat
count; the figure is the median (and p90) over the pairs.

Run from the repository root::

    .venv/bin/python -m bench.policy                    # 10, 100, 1000, 10000 partners
    .venv/bin/python -m bench.policy --partners 1000 --pairs 5000

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import policies
from federation.identity import FederatedIdentity
from federation.settings import PartnerSettings

KINDS = ("supplier", "subcontractor", "distributor", "customer")


def rules_for(p: str) -> list[dict[str, object]]:
    deny: list[dict[str, object]] = [
        {
            "name": f"{p}-no-exports",
            "effect": "deny",
            "when": {"partner": p, "path": {"prefix": "/exports"}},
        },
        {
            "name": f"{p}-no-night-writes",
            "effect": "deny",
            "when": {
                "partner": p,
                "method": ["POST", "PUT", "DELETE"],
                "not": {"time": {"timezone": "Europe/Paris", "from": "06:00", "until": "22:00"}},
            },
        },
        {
            "name": f"{p}-blocked-range",
            "effect": "deny",
            "when": {"partner": p, "source_ip": ["192.0.2.0/24"]},
        },
        {
            "name": f"{p}-former-staff",
            "effect": "deny",
            "when": {"partner": p, "claim": {"name": "status", "equals": "left"}},
        },
    ]
    allow: list[dict[str, object]] = []
    for i in range(16):
        kind = i % 4
        when: dict[str, object] = {"partner": p}
        if kind == 0:
            when |= {
                "group": [f"g{i}", "buyers"],
                "method": ["GET", "HEAD"],
                "path": {"prefix": f"/area{i}"},
            }
        elif kind == 1:
            when |= {"role": f"r{i}", "path": {"glob": f"/projects/*/area{i}/**"}}
        elif kind == 2:
            when |= {
                "group": f"g{i}",
                "path": {"prefix": f"/area{i}"},
                "time": {
                    "timezone": "Europe/Paris",
                    "weekdays": ["mon", "tue", "wed", "thu", "fri"],
                    "from": "07:00",
                    "until": "20:00",
                },
            }
        else:
            when |= {
                "email_domain": f"{p}.example",
                "amr": "mfa",
                "contract": "valid",
                "path": {"prefix": f"/area{i}"},
                "method": ["GET", "POST"],
            }
        allow.append(
            {
                "name": f"{p}-allow-{i}",
                "effect": "allow",
                "when": when,
                "reason": f"{p} may use area {i}",
            }
        )
    return deny + allow


SHARED: list[dict[str, object]] = [
    {
        "name": "no-admin",
        "effect": "deny",
        "when": {"path": {"prefix": "/admin"}},
        "public": True,
        "reason": "The admin area is for staff only.",
    },
    {
        "name": "no-left",
        "effect": "deny",
        "when": {"claim": {"name": "status", "equals": "suspended"}},
    },
    {"name": "staff", "effect": "allow", "when": {"partner_kind": "internal", "group": "staff"}},
]


def build(n: int) -> policies.Policy:
    rules = [r for i in range(n) for r in rules_for(f"p{i}")] + SHARED
    return policies.load_policy({"rules": rules}, name="bench")


def pairs(
    n: int, count: int, seed: int = 7
) -> list[tuple[policies.Subject, policies.AccessRequest]]:
    rng = random.Random(seed)
    out = []
    monday = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    for _ in range(count):
        p = f"p{rng.randrange(n)}"
        partner = PartnerSettings.model_validate(
            {"id": p, "name": p, "kind": rng.choice(KINDS), "status": "active"}
        )
        i = rng.randrange(16)
        identity = FederatedIdentity(
            partner_id=p,
            connection_id=f"{p}-oidc",
            issuer="https://idp",
            subject="u",
            email=f"u@{p}.example",
            email_verified=True,
            groups=(f"g{i}", "buyers") if rng.random() < 0.9 else ("other",),
            roles=(f"r{i}",),
            amr=("pwd", "mfa"),
        )
        path = rng.choice(
            [
                f"/area{i}/doc/7",
                f"/projects/x/area{i}/f",
                "/admin/x",
                "/exports/1",
                f"/area{(i + 1) % 16}/z",
            ]
        )
        method = rng.choice(["GET", "GET", "GET", "POST"])
        at = monday + timedelta(hours=rng.randrange(0, 24 * 7))
        ip = rng.choice(["203.0.113.7"] * 8 + ["198.51.100.3", "192.0.2.9"])
        out.append(
            (
                policies.Subject(identity, partner),
                policies.AccessRequest(method, path, "orders.example", ip, at),
            )
        )
    return out


def measure(
    policy: policies.Policy,
    cases: list[tuple[policies.Subject, policies.AccessRequest]],
    repeat: int,
) -> dict[str, float]:
    timer = time.perf_counter_ns
    per_call: list[float] = []
    by_outcome: dict[bool, list[float]] = {True: [], False: []}
    decide = policy.decide
    for subject, request in cases:
        allowed = decide(subject, request).allowed
        start = timer()
        for _ in range(repeat):
            decide(subject, request)
        spent = (timer() - start) / repeat / 1000
        per_call.append(spent)
        by_outcome[allowed].append(spent)
    per_call.sort()
    return {
        "median": statistics.median(per_call),
        "p90": per_call[int(len(per_call) * 0.9)],
        "allowed": len(by_outcome[True]) / len(cases),
        "median_allow": statistics.median(by_outcome[True] or [0.0]),
        "median_deny": statistics.median(by_outcome[False] or [0.0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partners", type=int, nargs="*", default=[10, 100, 1000, 10000])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    print(
        f"python {platform.python_version()} on {platform.machine()}, {platform.processor() or ''}"
    )
    print(
        f"{'partners':>8} {'rules':>7} {'compile s':>9} {'median us':>9} {'p90 us':>7} "
        f"{'allowed':>7} {'allow med':>9} {'deny med':>8}"
    )
    for n in args.partners:
        start = time.perf_counter()
        policy = build(n)
        compile_s = time.perf_counter() - start
        cases = pairs(n, args.pairs)
        m = measure(policy, cases, args.repeat)
        print(
            f"{n:>8} {len(policy.rules):>7} {compile_s:>9.2f} {m['median']:>9.2f} "
            f"{m['p90']:>7.2f} {m['allowed']:>7.0%} {m['median_allow']:>9.2f} "
            f"{m['median_deny']:>8.2f}"
        )
    print("budget: median <= 10 us at 1000 partners x 20 rules, flat in the partner count")


if __name__ == "__main__":
    main()
