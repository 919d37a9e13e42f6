"""Signing keys: JWKS publishes current, next and previous; rotation breaks no token."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from federation import jose
from federation.keys import KeyManager, KeySet, load_or_create, rotate_file


def token(keys: KeySet) -> str:
    now = int(time.time())
    key = keys.current
    return jose.sign(
        {"iss": "i", "aud": "a", "iat": now, "exp": now + 60}, key.private_key, key.alg, key.kid
    )


def test_jwks_publishes_current_and_next_then_previous() -> None:
    keys = KeySet.generate("RS256")
    assert [k["kid"] for k in keys.jwks()["keys"]] == [keys.current.kid, keys.next.kid]
    rotated = keys.rotated()
    kids = [k["kid"] for k in rotated.jwks()["keys"]]
    assert kids == [keys.next.kid, rotated.next.kid, keys.current.kid]
    assert all("d" not in k and "p" not in k for k in rotated.jwks()["keys"])  # public only


def test_token_from_before_rotation_still_validates() -> None:
    keys = KeySet.generate("ES256")
    before = token(keys)
    after_keys = keys.rotated()
    for t in (before, token(after_keys)):
        assert jose.verify(t, after_keys.verification_keys(), issuer="i", audience="a")


def test_a_jwks_cached_before_rotation_knows_the_new_signing_key() -> None:
    keys = KeySet.generate("RS256")
    cached = keys.verification_keys()
    assert jose.verify(token(keys.rotated()), cached, issuer="i", audience="a")


def test_key_file_is_private_and_shared(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    created = load_or_create(path, "RS256")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(path, "RS256").current.kid == created.current.kid


def test_manager_sees_a_rotation_made_by_another_process(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "keys.json"
    manager = KeyManager(path, "RS256", clock=lambda: now[0])
    old = manager.keys
    rotated = rotate_file(path)
    assert manager.keys.current.kid == old.current.kid  # re-read at most once a second
    now[0] += 1.5
    assert manager.keys.current.kid == rotated.current.kid == old.next.kid
    assert manager.keys.previous is not None and manager.keys.previous.kid == old.current.kid


def test_manager_rotate_writes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    manager = KeyManager(path, "ES256")
    old = manager.keys
    manager.rotate()
    assert load_or_create(path, "ES256").current.kid == old.next.kid
