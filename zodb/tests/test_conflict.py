"""ZODB's conflict resolution mixins: resolved conflicts are stored again in the same
transaction, unresolvable ones raise ConflictError; also across undo."""

from ZODB.tests import ConflictResolution

from clusters import ClusterStorageTest


class ConflictResolvingStorage(ClusterStorageTest, ConflictResolution.ConflictResolvingStorage):
    pass


class ConflictResolvingTransUndoStorage(
    ClusterStorageTest, ConflictResolution.ConflictResolvingTransUndoStorage
):
    pass
