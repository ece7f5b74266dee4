"""What makes a large commit cheap must not change what it commits: the binding gathers a
commit's stores and hands them to the client's driver in batches (``STORE_BATCH`` in
zodb/src/client.rs), and the storage asks the master for larger batches of oids while a
commit keeps using them up (``OID_BATCH`` .. ``OID_BATCH_MAX``)."""

from __future__ import annotations

import unittest

from ZODB import POSException
from ZODB.Connection import TransactionMetaData
from ZODB.utils import z64

from clusters import start_cluster, stop_cluster
from replicast_zodb import ReplicastStorage
from replicast_zodb.storage import OID_BATCH, OID_BATCH_MAX

#: More than the binding's batch of 64 stores, and not a multiple of it: some stores are
#: handed over only by the vote.
OBJECTS = 1_000 + 17


class CommitBatching(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.cluster = start_cluster()

    @classmethod
    def tearDownClass(cls) -> None:
        stop_cluster(cls.cluster)

    def setUp(self) -> None:
        self.storage = ReplicastStorage(self.cluster.client_config("client-1"))

    def tearDown(self) -> None:
        self.storage.close()

    def test_every_store_of_a_large_commit_is_committed(self) -> None:
        t = TransactionMetaData()
        self.storage.tpc_begin(t)
        oids = [self.storage.new_oid() for _ in range(OBJECTS)]
        for n, oid in enumerate(oids):
            self.storage.store(oid, z64, b"object %d" % n, "", t)
        self.storage.tpc_vote(t)
        tid = self.storage.tpc_finish(t)
        self.assertEqual(len(set(oids)), OBJECTS)
        self.assertNotIn(z64, oids)
        # A second client reads them from the storages (not from this storage's cache).
        reader = ReplicastStorage(self.cluster.client_config("client-2"), cache_size=0)
        try:
            for n, oid in enumerate(oids):
                self.assertEqual(reader.load(oid), (b"object %d" % n, tid))
        finally:
            reader.close()

    def test_oid_batches_grow_while_a_commit_uses_them_up(self) -> None:
        t = TransactionMetaData()
        self.storage.tpc_begin(t)
        try:
            self.storage.new_oid()
            self.assertEqual(self.storage._oid_batch, OID_BATCH)
            for _ in range(OBJECTS):
                self.storage.new_oid()
            # 64 + 128 + 256 + 512 < 1,018 oids: the fifth request asked for the most.
            self.assertEqual(self.storage._oid_batch, OID_BATCH_MAX)
        finally:
            self.storage.tpc_abort(t)

    def test_oids_outside_a_transaction_stay_in_small_batches(self) -> None:
        for _ in range(3 * OID_BATCH):
            self.storage.new_oid()
        self.assertEqual(self.storage._oid_batch, OID_BATCH)

    def test_stores_gathered_before_an_abort_are_aborted_with_it(self) -> None:
        # Fewer than a batch: still gathered in the binding when the abort comes; they must
        # neither leak into the next transaction nor fail it.
        t = TransactionMetaData()
        self.storage.tpc_begin(t)
        dropped = [self.storage.new_oid() for _ in range(3)]
        for oid in dropped:
            self.storage.store(oid, z64, b"aborted", "", t)
        self.storage.tpc_abort(t)

        t = TransactionMetaData()
        self.storage.tpc_begin(t)
        kept = self.storage.new_oid()
        self.storage.store(kept, z64, b"kept", "", t)
        self.storage.tpc_vote(t)
        tid = self.storage.tpc_finish(t)
        self.assertEqual(self.storage.load(kept), (b"kept", tid))
        for oid in dropped:
            with self.assertRaises(POSException.POSKeyError):
                self.storage.load(oid)
