"""ZODB's conflict resolution mixins: resolved conflicts are stored again in the same
transaction, unresolvable ones raise ConflictError; also across undo."""

from ZODB.tests import ConflictResolution, TransactionalUndoStorage

from clusters import ClusterStorageTest


class ConflictResolvingStorage(ClusterStorageTest, ConflictResolution.ConflictResolvingStorage):
    pass


class ConflictResolvingTransUndoStorage(
    ClusterStorageTest, ConflictResolution.ConflictResolvingTransUndoStorage
):
    # ZODB runs this mixin together with TransactionalUndoStorage (as in its FileStorage
    # tests), whose helper it calls; the helper alone, not its tests twice.
    _begin_undos_vote = TransactionalUndoStorage.TransactionalUndoStorage._begin_undos_vote
