"""Bad input from Python gets a Python exception naming the problem, never a crash: wrong
types, oids of the wrong length, data over the configured limit, a configuration file that
does not exist or is not a client's."""

from __future__ import annotations

import unittest
from pathlib import Path

from ZODB import POSException
from ZODB.Connection import TransactionMetaData
from ZODB.utils import z64

import clusters
from clusters import start_cluster, stop_cluster
from replicast_zodb import ConfigurationError, ObjectTooLarge, ReplicastStorage


class BadConfiguration(unittest.TestCase):
    def test_missing_file(self) -> None:
        with self.assertRaises(FileNotFoundError) as raised:
            ReplicastStorage("/nonexistent/replicast/client.toml")
        self.assertIn("/nonexistent/replicast/client.toml", str(raised.exception))

    def test_not_toml(self) -> None:
        assert clusters.SESSION_DIR is not None
        path = Path(clusters.SESSION_DIR) / "garbage.toml"
        path.write_text("[node\nname = ")
        with self.assertRaises(ConfigurationError) as raised:
            ReplicastStorage(path)
        self.assertIn(str(path), str(raised.exception))

    def test_path_of_wrong_type(self) -> None:
        with self.assertRaises(TypeError):
            ReplicastStorage(42)  # type: ignore[arg-type]

    def test_bad_timeout(self) -> None:
        with self.assertRaises(ValueError) as raised:
            ReplicastStorage("/nonexistent.toml", timeout=-1)
        self.assertIn("timeout", str(raised.exception))


class BadCalls(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.cluster = start_cluster()

    @classmethod
    def tearDownClass(cls) -> None:
        stop_cluster(cls.cluster)

    def setUp(self) -> None:
        self.storage = ReplicastStorage(
            self.cluster.client_config("client-1"), max_object_size=1000
        )

    def tearDown(self) -> None:
        self.storage.close()

    def test_master_config_is_not_a_client(self) -> None:
        with self.assertRaises(ConfigurationError) as raised:
            ReplicastStorage(self.cluster.root / f"{self.cluster.master_names[0]}.toml")
        self.assertIn("client", str(raised.exception))

    def in_transaction(self, call) -> None:
        t = TransactionMetaData()
        self.storage.tpc_begin(t)
        try:
            call(t)
        finally:
            self.storage.tpc_abort(t)

    def test_oid_of_wrong_length(self) -> None:
        def store(t):
            with self.assertRaises(ValueError) as raised:
                self.storage.store(b"\0\0\1", z64, b"data", "", t)
            self.assertIn("oid must be 8 bytes long, not 3", str(raised.exception))

        self.in_transaction(store)
        with self.assertRaises(ValueError):
            self.storage.loadBefore(b"\0" * 9, b"\xff" * 8)

    def test_oid_of_wrong_type(self) -> None:
        def store(t):
            with self.assertRaises(TypeError) as raised:
                self.storage.store("00000001", z64, b"data", "", t)  # type: ignore[arg-type]
            self.assertIn("oid must be bytes of length 8, not str", str(raised.exception))

        self.in_transaction(store)

    def test_serial_and_data_of_wrong_type(self) -> None:
        oid = self.storage.new_oid()

        def store(t):
            with self.assertRaises(TypeError) as raised:
                self.storage.store(oid, 5, b"data", "", t)  # type: ignore[arg-type]
            self.assertIn("serial", str(raised.exception))
            with self.assertRaises(TypeError) as raised:
                self.storage.store(oid, z64, "text", "", t)  # type: ignore[arg-type]
            self.assertIn("data must be bytes, not str", str(raised.exception))

        self.in_transaction(store)

    def test_data_too_large(self) -> None:
        oid = self.storage.new_oid()

        def store(t):
            with self.assertRaises(ObjectTooLarge) as raised:
                self.storage.store(oid, z64, b"x" * 1001, "", t)
            self.assertIn("1001 bytes", str(raised.exception))
            self.assertIn("1000", str(raised.exception))

        self.in_transaction(store)
        # The storage is still usable, and data at the limit passes.
        t = TransactionMetaData()
        self.storage.tpc_begin(t)
        self.storage.store(oid, z64, b"x" * 1000, "", t)
        self.storage.tpc_vote(t)
        tid = self.storage.tpc_finish(t)
        self.assertEqual(self.storage.load(oid), (b"x" * 1000, tid))

    def test_missing_object_is_a_poskeyerror(self) -> None:
        with self.assertRaises(POSException.POSKeyError):
            self.storage.load(b"\0\0\0\0\0\0\x7f\xff")

    def test_calls_after_close(self) -> None:
        from replicast_zodb import ClientDisconnected

        self.storage.close()
        with self.assertRaises(ClientDisconnected):
            self.storage.load(z64)
        self.storage.close()  # twice is allowed
