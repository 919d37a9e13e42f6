"""base64url (RFC 4648 §5) and JSON for the JWS hot path, in two implementations.

``PURE`` needs only the standard library: ``binascii`` in strict mode after mapping the
URL-safe alphabet, and the C scanner behind ``json.loads`` called directly (without its
encoding sniffing and whitespace regular expressions). ``FAST`` is used when the optional
``isthmus[sdk-speedups]`` extra is installed: pybase64 (SIMD, validating) and orjson —
about 3 µs less per token, which is most of what the SDK adds to an RS256 verify.

Both refuse the same inputs: characters outside the URL-safe alphabet (``+``, ``/``,
whitespace), bad padding, invalid UTF-8, and JSON's non-finite ``NaN``/``Infinity`` (a
claim that compares false to every time must not reach an ``exp`` check).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# (segment bytes) -> decoded bytes; raises ValueError (binascii.Error is one). The caller
# has refused "+" and "/" already (see `url_safe`): checking a whole token once as a str
# costs a tenth of checking each segment as bytes.
Decode = Callable[[bytes], bytes]
# (JSON bytes) -> value; raises ValueError.
Parse = Callable[[bytes], Any]

_PAD = (b"", b"", b"==", b"=")  # by len % 4 (1 is malformed: refused by the decoder)
_TABLE = bytes.maketrans(b"-_", b"+/")


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    decode: Decode
    parse: Parse


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number here")


_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder(  # type: ignore[attr-defined]
    parse_constant=_no_constant
).scan_once
_STRICT = json.JSONDecoder(parse_constant=_no_constant)
a2b_base64 = binascii.a2b_base64


def url_safe(text: str) -> bool:
    """False when ``text`` holds "+" or "/" (base64, not base64url): refused before
    decoding, as both decoders would take them."""
    return "+" not in text and "/" not in text


def _pure_decode(segment: bytes) -> bytes:
    mapped = segment.translate(_TABLE)
    return a2b_base64(mapped + _PAD[len(mapped) & 3], strict_mode=True)


def _pure_parse(data: bytes) -> Any:
    text = data.decode("utf-8")
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        end = -1
    if end != len(text):  # whitespace around it, or not JSON: the full decoder decides
        value = _STRICT.decode(text)
    return value


PURE = Codec("pure", _pure_decode, _pure_parse)


def _fast() -> Codec | None:
    try:
        import orjson
        import pybase64
    except ImportError:
        return None
    b64decode = pybase64.b64decode

    def decode(segment: bytes) -> bytes:
        # altchars="-_" maps the URL-safe alphabet (pybase64 1.x would still take "+" and
        # "/" then, with a warning: the caller refused them).
        return b64decode(segment + _PAD[len(segment) & 3], altchars=b"-_", validate=True)

    return Codec("fast", decode, orjson.loads)


FAST = _fast()
CODEC = FAST or PURE
