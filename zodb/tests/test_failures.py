"""Failures while a ZODB application runs: a storage killed with SIGKILL mid-commit (commits go
on with replicas 2, the storage catches up, nothing is lost), the primary master killed (the
group of three elects another, commits go on and other clients see them), and every master
unreachable (a clear ClientDisconnected within a bounded time, never a hang; working again once
the masters are back)."""

from __future__ import annotations

import threading
import time
import unittest

import transaction
import transaction.interfaces
import ZODB
from persistent.mapping import PersistentMapping

from clusters import GROUP, start_cluster, stop_cluster
from replicast_zodb import ClientDisconnected, ReplicastStorage, StorageUnavailable
from replicast_zodb.errors import ReplicastError

#: Bound on the waits of these tests (seconds).
WAIT = 60.0



def commit_retrying(
    db: ZODB.DB, key: str, value: int, transient: tuple[type[BaseException], ...]
) -> None:
    """Sets ``root[key] = value`` in one transaction, tried again on a ``transient`` error
    until :data:`WAIT` has passed (then the error is raised)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            with db.transaction() as conn:
                conn.root()[key] = value
            return
        except transient:
            if time.monotonic() > deadline:
                raise

class StorageKilledWhileCommitting(unittest.TestCase):
    def setUp(self) -> None:
        self.cluster = start_cluster(masters=GROUP)

    def tearDown(self) -> None:
        stop_cluster(self.cluster)

    def test_commits_go_on_and_the_storage_catches_up(self) -> None:
        db = ZODB.DB(ReplicastStorage(self.cluster.client_config("client-1", strategy="multicast")))
        committed: dict[int, int] = {}
        failures: list[BaseException] = []
        stop = threading.Event()
        killed = threading.Event()

        def commit_loop() -> None:
            # An application: 24 objects spread over the partitions, one changed per commit;
            # a transient error is retried, as transaction managers do.
            tm = transaction.TransactionManager()
            conn = db.open(tm)
            with tm:
                for key in range(24):
                    conn.root()[key] = PersistentMapping({"value": 0})
            value = 0
            deadline = time.monotonic() + WAIT
            while not stop.is_set() and time.monotonic() < deadline:
                value += 1
                key = value % 24
                for attempt in range(10):
                    try:
                        with tm:
                            conn.root()[key]["value"] = value
                        committed[key] = value
                        break
                    except Exception as error:  # noqa: BLE001 -- recorded and retried
                        if attempt == 9:
                            failures.append(error)
                            return
                if value == 60:
                    killed.wait(WAIT)
            conn.close()

        writer = threading.Thread(target=commit_loop)
        writer.start()
        try:
            # Mid-commit: the writer is committing when the storage dies.
            deadline = time.monotonic() + WAIT
            while len(committed) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.cluster.kill_storage("storage-2")
            killed.set()
            # Commits go on with the other replica of each partition.
            before = sum(committed.values())
            deadline = time.monotonic() + WAIT
            while sum(committed.values()) < before + 500 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertFalse(failures, f"commits stopped: {failures}")
            self.assertGreater(sum(committed.values()), before, "no commit after the kill")
            # The storage comes back and catches up while commits go on.
            self.cluster.start_storage("storage-2", wait=False)
            self.cluster.wait_up_to_date(WAIT)
        finally:
            stop.set()
            writer.join(WAIT)
        self.assertFalse(writer.is_alive())
        self.assertFalse(failures, f"commits failed: {failures}")

        # Nothing lost: with storage-1 gone too, every partition it shared with storage-2 is
        # served by storage-2 alone, which must hold every committed value.
        self.cluster.kill_storage("storage-1")
        reader = ZODB.DB(ReplicastStorage(self.cluster.client_config("client-2")))
        with reader.transaction() as conn:
            for key, value in committed.items():
                self.assertEqual(conn.root()[key]["value"], value, f"object {key}")
        reader.close()
        db.close()


class PrimaryMasterKilled(unittest.TestCase):
    def setUp(self) -> None:
        self.cluster = start_cluster(masters=GROUP)

    def tearDown(self) -> None:
        stop_cluster(self.cluster)

    def test_commits_go_on_with_the_next_primary(self) -> None:
        self.assertEqual(len(self.cluster.master_names), 3, "the tests' clusters run a group")
        writer = ZODB.DB(ReplicastStorage(self.cluster.client_config("client-1"), timeout=10))
        reader = ZODB.DB(ReplicastStorage(self.cluster.client_config("client-2"), timeout=10))
        try:
            with writer.transaction() as conn:
                conn.root()["n"] = 1
            primary = self.cluster.primary()
            self.cluster.stop_master(primary, kill=True)
            # The group elects another primary and the client follows it: a commit made
            # meanwhile may fail with a clear error (then the application retries, as
            # transaction managers do), never hang past the client's timeout.
            deadline = time.monotonic() + WAIT
            while True:
                try:
                    with writer.transaction() as conn:
                        conn.root()["n"] = 2
                    break
                except ReplicastError:
                    if time.monotonic() > deadline:
                        raise
            successor = self.cluster.primary()
            self.assertNotEqual(successor, primary)
            # Another client learns of the commit through the new primary.
            with reader.transaction() as conn:
                self.assertEqual(conn.root()["n"], 2)
            with writer.transaction() as conn:
                conn.root()["n"] = 3
            with reader.transaction() as conn:
                self.assertEqual(conn.root()["n"], 3)
        finally:
            writer.close()
            reader.close()


class MasterUnreachable(unittest.TestCase):
    def setUp(self) -> None:
        self.cluster = start_cluster(masters=GROUP)

    def tearDown(self) -> None:
        self.cluster.resume_master()
        stop_cluster(self.cluster)

    def test_connecting_without_a_master_fails_in_bounded_time(self) -> None:
        self.cluster.pause_master()
        started = time.monotonic()
        with self.assertRaises(ClientDisconnected) as raised:
            ReplicastStorage(self.cluster.client_config("client-1"), timeout=2)
        elapsed = time.monotonic() - started
        # A bound against a hang, not a speed check: the timeout and the close grace.
        self.assertLess(elapsed, 2 * 3 + 5, "the error came, but far past the timeout")
        self.assertIn("master", str(raised.exception))
        self.cluster.resume_master()
        storage = ReplicastStorage(self.cluster.client_config("client-1"), timeout=10)
        storage.close()

    def test_commit_without_a_master_fails_in_bounded_time_then_works_again(self) -> None:
        db = ZODB.DB(ReplicastStorage(self.cluster.client_config("client-1"), timeout=3))
        with db.transaction() as conn:
            conn.root()["n"] = 1
        self.cluster.pause_master()
        started = time.monotonic()
        with self.assertRaises(ClientDisconnected):
            with db.transaction() as conn:
                conn.root()["n"] = 2
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 3 * 4 + 5, "the error came, but far past the timeout")
        self.cluster.resume_master()
        # Once the master is back, the application works again (a bounded number of
        # attempts: the link to the master is dialed again on demand).
        commit_retrying(db, "n", 3, (ClientDisconnected,))
        with db.transaction() as conn:
            self.assertEqual(conn.root()["n"], 3)
        db.close()


class StoragesUnreachable(unittest.TestCase):
    def setUp(self) -> None:
        self.cluster = start_cluster()

    def tearDown(self) -> None:
        self.cluster.resume_storages()
        stop_cluster(self.cluster)

    def test_a_commit_with_no_replica_left_is_transient_then_works_again(self) -> None:
        # The client's own timeout is long: what ends the commit is its links noticing that
        # no replica of the partition is left.
        db = ZODB.DB(ReplicastStorage(self.cluster.client_config("client-1"), timeout=WAIT))
        with db.transaction() as conn:
            conn.root()["n"] = 1
        self.cluster.pause_storages()
        with self.assertRaises(StorageUnavailable) as raised:
            with db.transaction() as conn:
                conn.root()["n"] = 2
        # Transient: transaction managers retry it.
        self.assertIsInstance(raised.exception, transaction.interfaces.TransientError)
        self.assertIn("NoReplica", str(raised.exception))
        self.cluster.resume_storages()
        commit_retrying(db, "n", 3, (StorageUnavailable, ClientDisconnected))
        with db.transaction() as conn:
            self.assertEqual(conn.root()["n"], 3)
        db.close()
