"""ZODB's SynchronizedStorage: transaction calls with a foreign or no transaction."""

from ZODB.tests import Synchronization

from clusters import ClusterStorageTest


class SynchronizedStorage(ClusterStorageTest, Synchronization.SynchronizedStorage):
    pass
