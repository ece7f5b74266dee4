"""ZODB's TransactionalUndoStorage: undo, undoLog, undoInfo."""

from ZODB.tests import TransactionalUndoStorage

from clusters import ClusterStorageTest


class TransactionalUndoStorageTests(
    ClusterStorageTest, TransactionalUndoStorage.TransactionalUndoStorage
):
    pass
