"""Opening the storage the ways a ZODB user does: ZConfig (``%import replicast_zodb`` and a
``<replicast>`` section inside ``<zodb>``) and a zodburi URI (``replicast:///path``)."""

from __future__ import annotations

import unittest

import transaction
import ZODB
import ZODB.config
import zodburi

from clusters import start_cluster, stop_cluster
from replicast_zodb import ReplicastStorage


class OpenFromConfiguration(unittest.TestCase):
    def setUp(self) -> None:
        self.cluster = start_cluster()
        self.config = self.cluster.client_config("client-1", strategy="multicast")

    def tearDown(self) -> None:
        stop_cluster(self.cluster)

    def commit_and_read(self, db: ZODB.DB) -> None:
        with db.transaction() as conn:
            conn.root()["answer"] = 42
        with db.transaction() as conn:
            self.assertEqual(conn.root()["answer"], 42)

    def test_zconfig_database(self) -> None:
        db = ZODB.config.databaseFromString(
            f"""
            %import replicast_zodb
            <zodb>
              cache-size 100
              <replicast>
                config {self.config}
                timeout 20
                max-object-size 1MB
              </replicast>
            </zodb>
            """
        )
        try:
            storage = db.storage
            self.assertIsInstance(storage, ReplicastStorage)
            self.assertEqual(storage.strategy, "multicast")
            self.assertEqual(storage.getName(), f"replicast:{self.config}")
            self.commit_and_read(db)
        finally:
            db.close()

    def test_zconfig_storage_options(self) -> None:
        storage = ZODB.config.storageFromString(
            f"""
            %import replicast_zodb
            <replicast>
              config {self.config}
              name main
              read-only true
            </replicast>
            """
        )
        try:
            self.assertEqual(storage.getName(), "main")
            self.assertTrue(storage.isReadOnly())
            with self.assertRaises(ZODB.POSException.ReadOnlyError):
                storage.new_oid()
        finally:
            storage.close()

    def test_zconfig_missing_file_is_named(self) -> None:
        import ZConfig

        with self.assertRaises(ZConfig.ConfigurationError) as raised:
            ZODB.config.storageFromString(
                """
                %import replicast_zodb
                <replicast>
                  config /nonexistent/client.toml
                </replicast>
                """
            )
        self.assertIn("/nonexistent/client.toml", str(raised.exception))

    def test_zodburi(self) -> None:
        factory, dbkw = zodburi.resolve_uri(
            f"replicast://{self.config}?timeout=20&database_name=main"
        )
        self.assertEqual(dbkw["database_name"], "main")
        db = ZODB.DB(factory(), **dbkw)
        try:
            self.assertEqual(db.database_name, "main")
            self.commit_and_read(db)
        finally:
            db.close()
        transaction.abort()

    def test_zodburi_rejects_a_host(self) -> None:
        with self.assertRaises(ValueError) as raised:
            zodburi.resolve_uri("replicast://somehost/etc/client.toml")
        self.assertIn("not a host", str(raised.exception))
