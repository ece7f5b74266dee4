"""ZODB's PackableStorage and PackableUndoStorage: pack(t, referencesf)."""

from ZODB.tests import PackableStorage

from clusters import ClusterStorageTest


class PackableStorageTests(ClusterStorageTest, PackableStorage.PackableStorage):
    pass


class PackableUndoStorageTests(ClusterStorageTest, PackableStorage.PackableUndoStorage):
    pass
