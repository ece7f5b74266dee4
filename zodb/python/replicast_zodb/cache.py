"""The client's object cache: revisions of objects read from the cluster, kept in memory and
answered without asking a storage again (what ZEO's ``ClientCache`` does for ZEO).

A revision is ``(data, start, end)``: written by ``start``, current until ``end`` (``None``
while it is the object's latest known revision). ``loadBefore(oid, before)`` is answered from
the cache when a revision with ``start < before`` and ``end`` unknown or ``>= before`` is
there. A revision with an ``end`` never changes; a current one is closed (its ``end`` set)
by :meth:`ClientCache.invalidate` when another transaction writes the object, which the
storage calls before ``lastTransaction()`` moves past that transaction (invalidations are
delivered in TID order), so no reader can ask for a TID after the change while the cache
still calls the old revision current.

One race is left: the answer to a load may arrive after an invalidation of the same object
was delivered (the answer said "current", the commit was announced meanwhile). A current
revision is therefore only kept when no invalidation of its object was delivered since the
load was asked (:meth:`ClientCache.ticket`, then :meth:`ClientCache.store`).

Bounded by ``max_bytes`` of data (least recently used revisions go first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Optional

#: The cache's default size in bytes of object data (ZEO's default is 20 MB as well).
DEFAULT_CACHE_BYTES = 20 * 1024 * 1024

#: How many recently invalidated objects are remembered to settle loads in flight; a load
#: older than the oldest of them is not cached as current.
RECENT_INVALIDATIONS = 10_000

#: What a revision costs besides its data, counted against the bound (so that deletions and
#: empty records are bounded too).
ENTRY_OVERHEAD = 64

#: A cached revision: data (``None`` for a deletion), start TID, end TID (``None``: current).
Revision = tuple[Optional[bytes], bytes, Optional[bytes]]


class ClientCache:
    """Object revisions by oid, bounded by ``max_bytes``; thread-safe."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"the cache size cannot be negative: {max_bytes}")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # (oid, start) -> (data, end); ordered from least to most recently used.
        self._revisions: "OrderedDict[tuple[bytes, bytes], tuple[Optional[bytes], Optional[bytes]]]" = (
            OrderedDict()
        )
        # oid -> the starts of its cached revisions.
        self._by_oid: dict[bytes, set[bytes]] = {}
        # oid -> start of its current revision (the one with no end), when cached.
        self._current: dict[bytes, bytes] = {}
        self._bytes = 0
        # Invalidations delivered so far, and the number of the last one of each object
        # invalidated lately (oldest first).
        self._sequence = 0
        self._recent: "OrderedDict[bytes, int]" = OrderedDict()
        self._forgotten_before = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._revisions)

    @property
    def size(self) -> int:
        """The bytes held: object data plus :data:`ENTRY_OVERHEAD` per revision."""
        return self._bytes

    def load_before(self, oid: bytes, before: bytes) -> Optional[Revision]:
        """The cached revision of ``oid`` current just before ``before``, if any."""
        with self._lock:
            for start in self._by_oid.get(oid, ()):
                if start >= before:
                    continue
                data, end = self._revisions[(oid, start)]
                if end is None or end >= before:
                    self._revisions.move_to_end((oid, start))
                    self.hits += 1
                    return data, start, end
            self.misses += 1
            return None

    def ticket(self) -> int:
        """Taken before a load is asked, given to :meth:`store` with its answer."""
        with self._lock:
            return self._sequence

    def store(self, oid: bytes, data: Optional[bytes], start: bytes, end: Optional[bytes],
              ticket: int) -> None:
        """Keeps a revision read from a storage (``ticket`` from :meth:`ticket`, taken
        before the read was asked). A current revision (``end`` ``None``) is dropped when its
        object was invalidated since the ticket, or when that can no longer be told."""
        size = _cost(data)
        if size > self.max_bytes:
            return
        with self._lock:
            if end is None:
                if ticket < self._forgotten_before:
                    return
                invalidated = self._recent.get(oid)
                if invalidated is not None and invalidated > ticket:
                    return
                current = self._current.get(oid)
                if current is not None and current != start:
                    # Another revision is cached as current: the later one wins only if it
                    # is later (an answer of an older state must not replace it).
                    if current > start:
                        return
                    self._close(oid, current, start)
                self._current[oid] = start
            key = (oid, start)
            old = self._revisions.pop(key, None)
            if old is not None:
                self._bytes -= _cost(old[0])
                if old[1] is not None and end is None:
                    # Already known to have ended: keep that.
                    end = old[1]
                    self._current.pop(oid, None)
            self._revisions[key] = (data, end)
            self._by_oid.setdefault(oid, set()).add(start)
            self._bytes += size
            self._evict()

    def invalidate(self, tid: bytes, oids: list[bytes]) -> None:
        """Another transaction (``tid``) wrote ``oids``: their current revisions end there."""
        with self._lock:
            self._sequence += 1
            for oid in oids:
                self._recent.pop(oid, None)
                self._recent[oid] = self._sequence
                current = self._current.get(oid)
                if current is not None and current < tid:
                    self._close(oid, current, tid)
            while len(self._recent) > RECENT_INVALIDATIONS:
                _, sequence = self._recent.popitem(last=False)
                self._forgotten_before = max(self._forgotten_before, sequence)

    def clear(self) -> None:
        """Forgets everything (commits may have been missed: any revision may be stale)."""
        with self._lock:
            self._sequence += 1
            self._forgotten_before = self._sequence
            self._revisions.clear()
            self._by_oid.clear()
            self._current.clear()
            self._recent.clear()
            self._bytes = 0

    def _close(self, oid: bytes, start: bytes, end: bytes) -> None:
        data, _ = self._revisions[(oid, start)]
        self._revisions[(oid, start)] = (data, end)
        self._current.pop(oid, None)

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._revisions:
            (oid, start), (data, end) = self._revisions.popitem(last=False)
            self._bytes -= _cost(data)
            starts = self._by_oid.get(oid)
            if starts is not None:
                starts.discard(start)
                if not starts:
                    del self._by_oid[oid]
            if end is None and self._current.get(oid) == start:
                del self._current[oid]


def _cost(data: Optional[bytes]) -> int:
    """What a revision with ``data`` counts against the bound."""
    return ENTRY_OVERHEAD + (len(data) if data is not None else 0)
