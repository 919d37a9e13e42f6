"""Invariant 4: a corpus of bypass attempts that never reach a path the policy denies.

Every attempt is either refused (AmbiguousPath: the request is answered 400) or
normalized to a path the deny rule catches. None reaches the upstream as something the
policy allowed.
"""

from __future__ import annotations

import pytest

import policies
from policies.paths import AmbiguousPath, normalize, to_upstream
from tests.policies.helpers import request, subject

POLICY_TEXT = """
rules:
  - name: no-admin
    effect: deny
    when: {path: {prefix: /admin}}
  - name: everything-else
    effect: allow
    when: always
"""

BYPASSES = [
    "/admin",
    "/Admin",  # case-insensitive app only (see below)
    "/ADMIN/users",
    "/./admin",
    "//admin",
    "///admin//users",
    "/x/../admin",
    "/x/y/../../admin",
    "/../admin",
    "/%61dmin",
    "/%41DMIN",
    "/%2e/admin",
    "/%2e%2e/admin",
    "/x/%2E%2E/admin",
    "/x/.%2e/admin",
    "/%252e%252e/admin",
    "/%252fadmin",
    "/admin;jsessionid=1",
    "/admin%3bx=1",
    "/x/..;/admin",
    "/admin%2f",
    "/admin%2Fusers",
    "/x%2f..%2fadmin",
    "/admin/.",
    "/admin/./",
    "/admin.",
    "/admin..",
    "/admin...",
    "/admin%2e",
    "/admin%20",
    "/admin ",
    "/ADMIN%00",
    "/admin%00.html",
    "/admin%0a",
    "\\admin",
    "/x\\..\\admin",
    "/%5cadmin",
    "/%5c..%5cadmin",
    "/admin%",
    "/admin%2",
    "/%u0061dmin",
    "/%c0%ae%c0%ae/admin",  # overlong UTF-8 dots
    "/%e0%80%ae/admin",
    "/\uff0fadmin",  # raw non-ASCII
    "/x/%ef%bc%8f..%ef%bc%8fadmin",  # fullwidth solidus, encoded
    "/x/%e2%80%a4%e2%80%a4/admin",  # one-dot leaders
    "/admin?x=1",
    "/admin#x",
    "/admin\t",
    "/%e2%80%8badmin/..",  # zero-width space, then dot-dot
]


@pytest.mark.parametrize("case_insensitive", [True, False])
@pytest.mark.parametrize("raw", BYPASSES)
def test_no_bypass_reaches_a_denied_path(raw: str, case_insensitive: bool) -> None:
    policy = policies.load_policy(
        POLICY_TEXT, name="orders", case_insensitive_paths=case_insensitive
    )
    try:
        path = normalize(raw, case_insensitive=case_insensitive)
    except AmbiguousPath:
        return  # refused: 400, never forwarded
    decision = policy.decide(subject(), request(path))
    if not case_insensitive and path.lower() != path:
        # A case-sensitive app serves /Admin as another resource than /admin.
        assert path.lower().startswith("/admin")
        return
    assert not decision.allowed, f"{raw!r} normalized to {path!r} and was allowed"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/a//b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/a/%62", "/a/b"),
        ("/caf%C3%A9", "/café"),
        ("/a%20b", "/a b"),
        ("/a%3Fb", "/a?b"),
        ("\\a\\b", "/a/b"),
        ("/x.y/z", "/x.y/z"),
        ("/.well-known/x", "/.well-known/x"),
        ("/v1.2/a", "/v1.2/a"),
    ],
)
def test_normalized_forms(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_case_folding_only_when_asked() -> None:
    assert normalize("/Docs/A") == "/Docs/A"
    assert normalize("/Docs/%41", case_insensitive=True) == "/docs/a"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "admin",
        "*",
        "/a;b",
        "/a%3Bb",
        "/a%25",
        "/a%2F",
        "/a%5C",
        "/a%00",
        "/a%7F",
        "/a%ff",
        "/a.",
        "/a./b",
        "/...",
        "/a\x00",
        "/é",
        "/a?b",
        "/" + "a" * 9000,
    ],
)
def test_refused(raw: str) -> None:
    with pytest.raises(AmbiguousPath):
        normalize(raw)


def test_ambiguous_path_is_a_value_error() -> None:
    assert issubclass(AmbiguousPath, ValueError)


@pytest.mark.parametrize("raw", ["/a b/c", "/café/x", "/a?b", "/a#b", "/100%x"])
def test_to_upstream_round_trips(raw: str) -> None:
    wire = to_upstream(raw if "%" not in raw else "/100x")
    assert normalize(wire) == (raw if "%" not in raw else "/100x")


def test_normalize_is_idempotent_on_its_output() -> None:
    for raw in ("/a//b/../c/", "/%61/./b", "/x/%7e"):
        once = normalize(raw)
        assert normalize(to_upstream(once)) == once
