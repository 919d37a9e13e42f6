"""Access reviews: opened when due, confirmed by sponsors, closed with lapses.

(Being built — issue 9.) See :mod:`federation.admin.reviews` for the flow.
"""

from __future__ import annotations

from datetime import datetime

from federation.admin.service import AdminService


async def run_reviews(service: AdminService, now: datetime) -> list[str]:
    """Open the reviews that are due and close those whose window has ended."""
    return []
