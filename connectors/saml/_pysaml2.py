"""pysaml2, imported once and quietly.

pysaml2 7.5 imports a cipher mode that ``cryptography`` has moved (a deprecation warning at
import time, nothing the hub uses): it is silenced here, so every module of this package
imports pysaml2 through this one and the warning policy of the rest of the hub holds.

pysaml2's own logging is kept from writing message contents: it logs whole documents
(a refused Response in full at ERROR: names, emails, attributes) and, at DEBUG, every
message it handles. :func:`quiet_pysaml2_logs` (run at import, and again whenever a client
is built, for loggers of modules pysaml2 imports late) puts :class:`NoMessageContents` on
every ``saml2`` logger: DEBUG and INFO records are dropped, WARNING and above keep only
the first line of their message, cut before any ``<`` and at 200 characters, with no
arguments, traceback or stack. Why the hub refused a message is in its IsthmusError
detail, which federation/web/errors.py logs.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
import tempfile
import warnings
import weakref
from typing import Any

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

# xmlsec1 checks signatures against the certificate pysaml2 hands it (from the IdP's
# metadata), never against the system's CA store — yet OpenSSL loads that whole bundle at
# every start, 18 of the ~24 ms an xmlsec1 run costs here. An empty store changes no
# verdict (the corpus and the SimpleSAMLphp tests prove it) and makes each run ~4x cheaper.
_XMLSEC_ENV = {**os.environ, "SSL_CERT_FILE": os.devnull, "SSL_CERT_DIR": os.devnull}


def _xmlsec_popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=_XMLSEC_ENV, **kwargs)  # noqa: S603 - pysaml2's argv


saml2.sigver.Popen = _xmlsec_popen

MAX_LOG_CHARS = 200


class NoMessageContents(logging.Filter):
    """Drops pysaml2's DEBUG/INFO records; reduces the others to a first line, no XML."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        record.msg = _gist(record)
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def _gist(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:  # a malformed format string in pysaml2: keep the bare template
        text = str(record.msg)
    line = text.strip().split("\n", 1)[0]
    line = line.split("<", 1)[0].rstrip(" \t:='\"(")  # no markup, nothing after it
    if record.exc_info and record.exc_info[0] is not None:
        line = f"{line} [{record.exc_info[0].__name__}]"
    if len(line) > MAX_LOG_CHARS:
        line = line[:MAX_LOG_CHARS] + "..."
    return line or "(pysaml2 message withheld)"


_FILTER = NoMessageContents()


def quiet_pysaml2_logs() -> None:
    """Put the filter on every ``saml2`` logger that exists now (idempotent).

    A filter on a logger sees only the records logged *to that logger*, not those
    propagating from its children: hence one per logger, not one on ``saml2``.
    """
    logging.getLogger("saml2").addFilter(_FILTER)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("saml2.") and isinstance(logger, logging.Logger):
            logger.addFilter(_FILTER)  # addFilter ignores a filter already there


quiet_pysaml2_logs()

__all__ = [
    "BINDING_HTTP_POST",
    "BINDING_HTTP_REDIRECT",
    "NoMessageContents",
    "quiet_pysaml2_logs",
    "saml2",
]
