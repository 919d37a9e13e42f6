"""Path normalization, security invariant 4: normalize once, decide on that path, forward
exactly that path, and refuse what could be read two ways.

:func:`normalize` takes the *raw* request path (still percent-encoded, without the query
string: ASGI's ``scope["raw_path"].decode("ascii")``, never the already-decoded
``scope["path"]``, which would make the one decoding a second one) and returns the path
policies decide on. Rules, in order:

1. It must start with ``/`` or ``\\``, be at most 8 KiB and hold printable ASCII only
   (clients percent-encode everything else). ``?`` and ``#`` are refused (the query is not
   part of the path).
2. Raw backslashes become ``/`` (as Windows servers and browsers read them).
3. ``;`` path parameters are **refused**, raw or encoded (``/admin;jsessionid=1``,
   ``/x/..;/admin``): servlet containers strip them, others do not, so they can be read two
   ways.
4. Percent-decoding happens exactly once. Refused: malformed escapes (``%zz``, ``%u0061``),
   encoded ``/`` ``\\`` ``%`` (so every double encoding such as ``%252e`` is refused), encoded
   NUL and other control characters, bytes that are not valid UTF-8 (overlong forms
   included), and non-ASCII characters that compatibility-normalize (NFKC) to ``/`` ``\\``
   ``.`` ``;`` or ``%`` (fullwidth solidus, one-dot leader, ...).
5. Empty segments (``//``) and ``.`` segments are dropped; ``..`` removes the segment
   before it and stops at the root (``/../admin`` is ``/admin``, RFC 3986 §5.2.4).
6. A segment ending in ``.`` or a space (``/admin.``, ``/admin%20``, ``/...``) is refused:
   Windows servers drop those, so ``/admin.`` may be ``/admin`` upstream.
7. A trailing slash is kept (``/docs/`` stays ``/docs/``, ``/docs/.`` becomes ``/docs/``);
   path criteria ignore it when matching, so it never changes a decision.
8. Case is folded (``str.lower``) only for apps with ``case_insensitive_paths``.

Anything refused raises :class:`AmbiguousPath` (a ``ValueError``): answer 400, never pass
the request on. :func:`to_upstream` re-encodes a normalized path for forwarding.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

__all__ = ["MAX_PATH_LENGTH", "AmbiguousPath", "normalize", "to_upstream"]

MAX_PATH_LENGTH = 8192

_HEX = frozenset("0123456789abcdefABCDEF")
# Printable ASCII without the characters refused outright (rule 1 and 3).
_RAW_OK = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset("?#;")
_DECODED_REFUSED = frozenset(b"/\\%;") | frozenset(range(0x20)) | {0x7F}
_LOOKALIKE_TARGETS = frozenset("/\\.;%")
# Characters that never need the slow checks: the path is usually only these.
_FAST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~/")


class AmbiguousPath(ValueError):
    """A path that could be read two ways (or is malformed): refuse the request."""


def normalize(raw_path: str, *, case_insensitive: bool = False) -> str:
    """The one normalized path a request is decided on and forwarded with (see module doc)."""
    if not raw_path or raw_path[0] not in "/\\":
        raise AmbiguousPath("the path must start with /")
    if len(raw_path) > MAX_PATH_LENGTH:
        raise AmbiguousPath("the path is too long")
    # Common case: nothing to decode, no dots, no empty segments.
    fast = _FAST.issuperset(raw_path) and "//" not in raw_path
    text = raw_path if fast else _decode(raw_path)
    segments: list[str] = []
    parts = text.split("/")
    trailing = False
    for segment in parts[1:]:
        trailing = False
        if segment in ("", "."):
            trailing = True
            continue
        if segment == "..":
            if segments:
                segments.pop()
            trailing = True
            continue
        if segment[-1] in ". ":
            raise AmbiguousPath(f"a segment ends with {segment[-1]!r}: {segment!r}")
        segments.append(segment)
    path = "/" + "/".join(segments)
    if trailing and segments:
        path += "/"
    return path.lower() if case_insensitive else path


def _decode(raw_path: str) -> str:
    for char in raw_path:
        if char not in _RAW_OK and char != "\\":
            if char in "?#":
                raise AmbiguousPath("the path holds a query or fragment delimiter")
            if char == ";":
                raise AmbiguousPath("path parameters (;) are refused")
            raise AmbiguousPath(f"raw character {char!r} (percent-encode it)")
    raw = raw_path.replace("\\", "/")
    if "%" not in raw:
        return raw
    out = bytearray()
    i = 0
    length = len(raw)
    while i < length:
        char = raw[i]
        if char != "%":
            out.append(ord(char))
            i += 1
            continue
        pair = raw[i + 1 : i + 3]
        if len(pair) != 2 or not _HEX.issuperset(pair):
            raise AmbiguousPath(f"malformed percent-escape at {raw[i : i + 3]!r}")
        byte = int(pair, 16)
        if byte in _DECODED_REFUSED:
            raise AmbiguousPath(f"encoded {chr(byte)!r} (%{pair}) is refused")
        out.append(byte)
        i += 3
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        raise AmbiguousPath("the decoded path is not valid UTF-8") from None
    if not text.isascii():
        for char in text:
            if ord(char) >= 0x80 and _is_lookalike(char):
                raise AmbiguousPath(f"{char!r} reads as a path delimiter")
    return text


def _is_lookalike(char: str) -> bool:
    category = unicodedata.category(char)
    if category.startswith("C") or category in ("Zl", "Zp"):
        return True  # control, format (bidi, zero width), surrogate, private use
    return not _LOOKALIKE_TARGETS.isdisjoint(unicodedata.normalize("NFKC", char))


def to_upstream(path: str) -> str:
    """Percent-encode a normalized path for the request line sent upstream."""
    return quote(path, safe="/:@!$&'()*+,=-._~")
