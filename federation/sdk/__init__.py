"""Isthmus SDK for apps behind the hub: validate what the hub says, fast and strictly.

Depends on pyjwt's dependency ``cryptography`` and on ``httpx`` only; nothing else from
the hub is imported. The Starlette/ASGI middleware lives in :mod:`federation.sdk.starlette`
(imported on demand). See docs/sdk.md.
"""

from federation.sdk.logout import (
    BACKCHANNEL_LOGOUT_EVENT,
    BackchannelLogoutReceiver,
    LogoutEvent,
    MemoryReplayCache,
    ReplayCache,
)
from federation.sdk.validator import (
    MAX_LEEWAY,
    HubClaims,
    IntrospectionConfig,
    InvalidToken,
    TokenValidator,
    avalidate_token,
    validate_token,
)

__all__ = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "MAX_LEEWAY",
    "BackchannelLogoutReceiver",
    "HubClaims",
    "IntrospectionConfig",
    "InvalidToken",
    "LogoutEvent",
    "MemoryReplayCache",
    "ReplayCache",
    "TokenValidator",
    "avalidate_token",
    "validate_token",
]
