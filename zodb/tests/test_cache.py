"""The client's object cache (replicast_zodb.cache) on its own: which revisions it answers
``loadBefore`` with, how invalidations end them, the race of a load with an invalidation, and
its bound. (Against a cluster it runs in every conformance suite: ReplicastStorage uses it.)"""

from __future__ import annotations

import unittest

from ZODB.utils import p64

from replicast_zodb.cache import ENTRY_OVERHEAD, RECENT_INVALIDATIONS, ClientCache

OID = p64(1)


class ClientCacheTests(unittest.TestCase):
    def test_a_current_revision_answers_until_it_is_invalidated(self) -> None:
        cache = ClientCache()
        cache.store(OID, b"v1", p64(10), None, cache.ticket())
        self.assertEqual(cache.load_before(OID, p64(11)), (b"v1", p64(10), None))
        self.assertEqual(cache.load_before(OID, p64(1000)), (b"v1", p64(10), None))
        self.assertIsNone(cache.load_before(OID, p64(10)), "not before its own start")
        cache.invalidate(p64(20), [OID])
        # Before the new commit, the old revision still answers, now with its end.
        self.assertEqual(cache.load_before(OID, p64(20)), (b"v1", p64(10), p64(20)))
        self.assertIsNone(cache.load_before(OID, p64(21)), "the new revision is not cached")
        cache.store(OID, b"v2", p64(20), None, cache.ticket())
        self.assertEqual(cache.load_before(OID, p64(21)), (b"v2", p64(20), None))
        self.assertEqual(cache.load_before(OID, p64(15)), (b"v1", p64(10), p64(20)))
        self.assertEqual((cache.hits, cache.misses), (5, 2))

    def test_an_answer_that_crossed_an_invalidation_is_not_kept_as_current(self) -> None:
        cache = ClientCache()
        ticket = cache.ticket()
        # The storage answered "v1 is current"; the commit of v2 was delivered before the
        # answer came in.
        cache.invalidate(p64(20), [OID])
        cache.store(OID, b"v1", p64(10), None, ticket)
        self.assertIsNone(cache.load_before(OID, p64(21)))
        # A revision with a known end is always right.
        cache.store(OID, b"v1", p64(10), p64(20), ticket)
        self.assertEqual(cache.load_before(OID, p64(15)), (b"v1", p64(10), p64(20)))
        # Another object's invalidation does not matter.
        other = p64(2)
        cache.store(other, b"w", p64(5), None, ticket)
        self.assertEqual(cache.load_before(other, p64(30)), (b"w", p64(5), None))

    def test_a_load_older_than_the_remembered_invalidations_is_not_kept_as_current(self) -> None:
        cache = ClientCache()
        ticket = cache.ticket()
        for n in range(RECENT_INVALIDATIONS + 1):
            cache.invalidate(p64(100 + n), [p64(1000 + n)])
        cache.store(OID, b"v1", p64(10), None, ticket)
        self.assertIsNone(cache.load_before(OID, p64(11)), "whether it crossed is unknown")
        cache.store(OID, b"v1", p64(10), None, cache.ticket())
        self.assertEqual(cache.load_before(OID, p64(11)), (b"v1", p64(10), None))

    def test_an_older_answer_does_not_replace_the_current_revision(self) -> None:
        cache = ClientCache()
        cache.store(OID, b"v2", p64(20), None, cache.ticket())
        cache.store(OID, b"v1", p64(10), None, cache.ticket())
        self.assertEqual(cache.load_before(OID, p64(30)), (b"v2", p64(20), None))
        # A newer current one closes the older.
        cache.store(OID, b"v3", p64(30), None, cache.ticket())
        self.assertEqual(cache.load_before(OID, p64(25)), (b"v2", p64(20), p64(30)))
        self.assertEqual(cache.load_before(OID, p64(31)), (b"v3", p64(30), None))

    def test_clear_forgets_everything_and_loads_in_flight(self) -> None:
        cache = ClientCache()
        ticket = cache.ticket()
        cache.store(OID, b"v1", p64(10), None, ticket)
        cache.clear()
        self.assertEqual(len(cache), 0)
        self.assertIsNone(cache.load_before(OID, p64(11)))
        cache.store(OID, b"v1", p64(10), None, ticket)
        self.assertIsNone(cache.load_before(OID, p64(11)), "asked before the clear")
        cache.store(OID, b"v1", p64(10), None, cache.ticket())
        self.assertEqual(cache.load_before(OID, p64(11)), (b"v1", p64(10), None))

    def test_the_size_is_bounded_least_recently_used_first(self) -> None:
        entry = 100 + ENTRY_OVERHEAD
        cache = ClientCache(max_bytes=3 * entry)
        for n in range(1, 4):
            cache.store(p64(n), b"x" * 100, p64(10), None, cache.ticket())
        self.assertEqual(cache.size, 3 * entry)
        # Object 1 used: object 2 is the least recently used.
        self.assertIsNotNone(cache.load_before(p64(1), p64(11)))
        cache.store(p64(4), b"y" * 100, p64(10), None, cache.ticket())
        self.assertEqual(cache.size, 3 * entry)
        self.assertIsNone(cache.load_before(p64(2), p64(11)))
        self.assertIsNotNone(cache.load_before(p64(1), p64(11)))
        # Larger than the whole cache: not kept. A size of 0 keeps nothing.
        cache.store(p64(5), b"z" * (3 * entry), p64(10), None, cache.ticket())
        self.assertIsNone(cache.load_before(p64(5), p64(11)))
        off = ClientCache(max_bytes=0)
        off.store(OID, None, p64(10), None, off.ticket())
        self.assertIsNone(off.load_before(OID, p64(11)))
        with self.assertRaises(ValueError):
            ClientCache(max_bytes=-1)
