"""Sign-up requests: made, confirmed, decided by the named sponsor, expired.

(Being built — issue 9.) See :mod:`federation.admin.signups` for the flow.
"""

from __future__ import annotations

from datetime import datetime

from federation.admin.service import AdminService


async def expire_requests(service: AdminService, now: datetime) -> list[str]:
    """Close the pending requests whose ``expires_at`` has passed."""
    return []
