"""Just-in-time accounts: when each person the hub has seen last signed in.

(Being built — issue 9.)
"""

from __future__ import annotations

from datetime import datetime

from federation.admin.service import AdminService


async def end_inactive_grants(service: AdminService, now: datetime) -> list[str]:
    """End the grants of people who have not signed in for ``inactive_after_days``."""
    return []
