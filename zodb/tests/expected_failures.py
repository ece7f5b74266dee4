"""Every conformance test that is expected to fail, with its reason (docs/ZODB.md lists them).

conftest.py marks each as ``xfail(strict=True)``: one that starts passing fails the run, so the
list cannot go stale. ``PENDING`` are waiting for a feature of the node layer (issue 12, branch
zodb-node); ``EXPECTED`` are permanent, each with the reason it cannot pass.
"""

from __future__ import annotations

import fnmatch

# "Class::test" (the class without its strategy suffix; fnmatch patterns) -> reason.
PENDING: dict[str, str] = {
    "BasicStorage::test_checkCurrentSerialInTransaction":
        "checkCurrentSerialInTransaction needs the node's read locks (not on the wire yet)",
    "BasicStorage::test_race_loadopen_vs_local_invalidate":
        "loadBefore of a non-current revision needs the node's load_before on the wire",
    "BasicStorage::test_race_load_vs_external_invalidate":
        "needs invalidations delivered to the application, lastTransaction() from the cluster and loadBefore on the wire",
    "BasicStorage::test_race_external_invalidate_vs_disconnect":
        "needs invalidations delivered to the application, lastTransaction() from the cluster and loadBefore on the wire",
    "ConflictResolvingStorage::test_Resolve":
        "resolution needs conflicts reported without aborting and a second store of the oid",
    "ConflictResolvingStorage::testUnresolvable":
        "needs conflicts reported without aborting (ZODB expects the ConflictError from store/vote with the transaction open)",
    "ConflictResolvingTransUndoStorage::*":
        "undo is not on the wire yet",
    "HistoryStorageTests::*":
        "history is not on the wire yet",
    "IteratorStorageTests::*":
        "the transaction iterator is not on the wire yet",
    "ExtendedIteratorStorageTests::*":
        "the transaction iterator is not on the wire yet",
    "PackableStorageTests::*":
        "pack is not on the wire yet",
    "PackableUndoStorageTests::*":
        "pack and undo are not on the wire yet",
    "RecoveryStorageTests::*":
        "restore (tpc_begin with a chosen tid) and the iterator are not on the wire yet",
    "RevisionStorageTests::*":
        "loadSerial and loadBefore of past revisions are not on the wire yet",
    "TransactionalUndoStorageTests::testCreationUndoneGetTid":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testIndicesInUndoInfo":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testIndicesInUndoLog":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testNotUndoable":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testPackAfterUndoDeletion":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testPackAfterUndoManyTimes":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testSimpleTransactionalUndo":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testTransactionalUndoAfterPack":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testTransactionalUndoAfterPackWithObjectUnlinkFromRoot":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testTwoObjectUndo":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testTwoObjectUndoAgain":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testTwoObjectUndoAtOnce":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testUndoCreationBranch1":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testUndoCreationBranch2":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testUndoLogMetadata":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testUndoMultipleConflictResolution":
        "undo is not on the wire yet",
    "TransactionalUndoStorageTests::testUndoMultipleConflictResolutionReversed":
        "undo is not on the wire yet",
    "ZODBOnCluster::testMultipleUndoInOneTransaction":
        "undo is not on the wire yet",
}

EXPECTED: dict[str, str] = {}


def reason(class_name: str, test_name: str) -> str | None:
    """The reason ``test_name`` of ``class_name`` (a strategy variant) is expected to fail."""
    for strategy in ("Unicast", "Multicast", "Auto"):
        if class_name.endswith(strategy):
            class_name = class_name[: -len(strategy)]
            break
    key = f"{class_name}::{test_name}"
    for table in (EXPECTED, PENDING):
        for pattern, why in table.items():
            if fnmatch.fnmatchcase(key, pattern):
                return why
    return None
