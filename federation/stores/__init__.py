"""Short-lived shared state: sessions, login flows, codes, refresh tokens, replay caches.

One small interface, :class:`~federation.stores.base.Store`, with TTLs on everything;
``memory`` is the single-process default, ``redis`` shares state between replicas. The
same contract suite (``tests/stores/test_contract.py``) runs against both.
"""

from federation.stores.base import JSON, Store
from federation.stores.memory import MemoryStore

__all__ = ["JSON", "MemoryStore", "Store"]
