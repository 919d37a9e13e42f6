"""The hub's signing keys and its JWKS (RFC 7517): current, next and previous.

Tokens are signed with ``current``. ``next`` is published ahead of use so that relying
parties that cache the JWKS already know it when it becomes current; ``previous`` stays
published after a rotation so tokens it signed keep validating until they expire.
``isthmus keys rotate`` moves next → current → previous and makes a new next.

With a ``path`` the key set is a JSON file (mode 0600) shared by replicas, re-read when it
changes; without one the keys live in memory (demo).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from federation.jose import PrivateKey, VerificationKey, algorithms_for

Algorithm = Literal["RS256", "ES256"]
RELOAD_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: Algorithm
    private_key: PrivateKey
    created_at: int

    @classmethod
    def generate(cls, alg: Algorithm) -> SigningKey:
        key: PrivateKey
        if alg == "RS256":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        return cls(f"{alg.lower()}-{secrets.token_hex(8)}", alg, key, int(time.time()))

    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def verification_key(self) -> VerificationKey:
        public = self.private_key.public_key()
        return VerificationKey(self.kid, public, algorithms_for(public) & {self.alg})

    def to_json(self, state: str) -> dict[str, Any]:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "kid": self.kid,
            "alg": self.alg,
            "state": state,
            "created_at": self.created_at,
            "pem": pem,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SigningKey:
        key = serialization.load_pem_private_key(data["pem"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"key {data['kid']} is neither RSA nor EC")
        alg: Algorithm = data["alg"]
        if alg not in ("RS256", "ES256"):
            raise ValueError(f"key {data['kid']} has unsupported alg {alg!r}")
        return cls(data["kid"], alg, key, int(data.get("created_at", 0)))


@dataclass(frozen=True, slots=True)
class KeySet:
    current: SigningKey
    next: SigningKey
    previous: SigningKey | None = None

    @classmethod
    def generate(cls, alg: Algorithm) -> KeySet:
        return cls(SigningKey.generate(alg), SigningKey.generate(alg))

    def published(self) -> list[SigningKey]:
        keys = [self.current, self.next]
        return [*keys, self.previous] if self.previous else keys

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.published()]}

    def verification_keys(self) -> list[VerificationKey]:
        return [k.verification_key() for k in self.published()]

    def rotated(self, alg: Algorithm | None = None) -> KeySet:
        return KeySet(self.next, SigningKey.generate(alg or self.next.alg), self.current)

    def to_json(self) -> dict[str, Any]:
        keys = [self.current.to_json("current"), self.next.to_json("next")]
        if self.previous:
            keys.append(self.previous.to_json("previous"))
        return {"keys": keys}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeySet:
        by_state = {k["state"]: SigningKey.from_json(k) for k in data["keys"]}
        return cls(by_state["current"], by_state["next"], by_state.get("previous"))


class KeyManager:
    """Hands out the key set, re-reading the shared file at most once a second."""

    def __init__(
        self,
        path: Path | None,
        algorithm: Algorithm = "RS256",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._algorithm = algorithm
        self._clock = clock
        self._checked = 0.0
        self._mtime: int | None = None
        if path is None:
            self._keys = KeySet.generate(algorithm)
        else:
            self._keys = load_or_create(path, algorithm)
            self._mtime = _mtime(path)
            self._checked = clock()

    @property
    def keys(self) -> KeySet:
        if self._path is not None and self._clock() - self._checked >= RELOAD_INTERVAL:
            self._checked = self._clock()
            mtime = _mtime(self._path)
            if mtime != self._mtime:
                self._keys = KeySet.from_json(json.loads(self._path.read_text()))
                self._mtime = mtime
        return self._keys

    def rotate(self) -> KeySet:
        self._keys = self.keys.rotated()
        if self._path is not None:
            write_keyset(self._path, self._keys)
            self._mtime = _mtime(self._path)
        return self._keys


def load_or_create(path: Path, algorithm: Algorithm) -> KeySet:
    if path.exists():
        return KeySet.from_json(json.loads(path.read_text()))
    keys = KeySet.generate(algorithm)
    write_keyset(path, keys)
    return keys


def rotate_file(path: Path, algorithm: Algorithm | None = None) -> KeySet:
    keys = KeySet.from_json(json.loads(path.read_text())).rotated(algorithm)
    write_keyset(path, keys)
    return keys


def write_keyset(path: Path, keys: KeySet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(keys.to_json(), handle, indent=2)
        os.replace(tmp, path)  # atomic: a reader sees the old set or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns
