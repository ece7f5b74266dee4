"""ZODB's ReadOnlyStorage and PersistentStorage: reopening the storage (read-only, or as a new
client) sees what was committed."""

from ZODB.tests import PersistentStorage, ReadOnlyStorage

from clusters import ClusterStorageTest


class ReadOnlyStorageTests(ClusterStorageTest, ReadOnlyStorage.ReadOnlyStorage):
    pass


class PersistentStorageTests(ClusterStorageTest, PersistentStorage.PersistentStorage):
    pass
