"""Fixed-window rate limits kept in the hub's shared store (every replica counts together).

Each of the ``limit`` slots of a window is an ``add_once`` key — atomic in every store —
and a hint remembers where the next free slot is, so a check costs two or three round
trips whatever the limit.
"""

from __future__ import annotations

from federation.stores.base import Store


async def consume(store: Store, key: str, limit: int, window: float) -> bool:
    """Claim one of ``limit`` slots of ``key`` in the current window; False when all are
    taken (the caller refuses the attempt)."""
    hint = await store.get(key)
    start = min(int(hint["n"]), limit) if hint else 0
    for slot in range(start, limit):
        if await store.add_once(f"{key}:{slot}", window):
            await store.put(key, {"n": slot + 1}, window)
            return True
    return False
