"""ZODB's RecoveryStorage: copyTransactionsFrom and restore, from one cluster into another."""

from ZODB.tests import RecoveryStorage

from clusters import ClusterStorageTest, start_cluster, stop_cluster
from replicast_zodb import ReplicastStorage


class RecoveryStorageTests(ClusterStorageTest, RecoveryStorage.RecoveryStorage):
    def setUp(self) -> None:
        super().setUp()
        # The destination is a second cluster: restore writes the source's TIDs.
        self.destination = start_cluster()
        self._dst = ReplicastStorage(self.destination.client_config("client-1"))

    def new_dest(self) -> ReplicastStorage:
        return self._dst

    def tearDown(self) -> None:
        try:
            self._dst.close()
            super().tearDown()
        finally:
            stop_cluster(self.destination)
