"""pysaml2, imported once and quietly.

pysaml2 7.5 imports a cipher mode that ``cryptography`` has moved (a deprecation warning at
import time, nothing the hub uses): it is silenced here, so every module of this package
imports pysaml2 through this one and the warning policy of the rest of the hub holds.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
import warnings
import weakref

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        from cryptography.utils import CryptographyDeprecationWarning

        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    except ImportError:  # pragma: no cover - older cryptography
        pass
    import saml2
    import saml2.client
    import saml2.config
    import saml2.cryptography.symmetric
    import saml2.entity
    import saml2.mdstore
    import saml2.metadata
    import saml2.response
    import saml2.saml
    import saml2.samlp
    import saml2.server
    import saml2.sigver
    import saml2.time_util
    from saml2 import (
        BINDING_HTTP_POST,
        BINDING_HTTP_REDIRECT,
    )


class _TempFile:
    """A temporary file by name only: written and closed at once, unlinked when dropped.

    pysaml2's ``make_temp`` returns open NamedTemporaryFile objects and only ever uses
    their ``name`` (xmlsec1 reads the path); when one ends up in a reference cycle the
    garbage collector finds its file descriptor still open (a ResourceWarning at an
    arbitrary moment). No descriptor stays open with this one.
    """

    def __init__(self, content: bytes, suffix: str) -> None:
        fd, self.name = tempfile.mkstemp(suffix=suffix)
        with os.fdopen(fd, "wb") as file:
            file.write(content)
        weakref.finalize(self, _unlink, self.name)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _make_temp(
    content: str | bytes, suffix: str = "", decode: bool = True, delete_tmpfiles: bool = True
) -> _TempFile:
    data = content.encode("utf-8") if isinstance(content, str) else content
    return _TempFile(base64.b64decode(data) if decode else data, suffix)


saml2.sigver.make_temp = _make_temp
saml2.entity.make_temp = _make_temp

__all__ = ["BINDING_HTTP_POST", "BINDING_HTTP_REDIRECT", "saml2"]
