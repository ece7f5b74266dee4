"""Every conformance test that is expected to fail, with its reason (docs/ZODB.md lists them).

conftest.py marks each as ``xfail(strict=True)``: one that starts passing fails the run, so the
list cannot go stale. ``PENDING`` are waiting for a feature of the node layer (issue 12, branch
zodb-node); ``EXPECTED`` are permanent, each with the reason it cannot pass.
"""

from __future__ import annotations

import fnmatch

# "Class::test" (the class without its strategy suffix; fnmatch patterns) -> reason.
PENDING: dict[str, str] = {
    "ProcessesSharingOneCertificate::*":
        "several processes with one client certificate need the sessions of the links branch",
    "MasterUnreachable::test_commit_without_a_master_fails_in_bounded_time_then_works_again":
        "the client does not recover its link to the master after it was lost (P4 in the API notes)",
    "ConflictResolvingTransUndoStorage::*":
        "undo (undo_info, store_undo) is not in the client handle yet (zodb-node milestone 3)",
    "IteratorStorageTests::*":
        "the transaction iterator is not in the client handle yet (zodb-node milestone 3)",
    "ExtendedIteratorStorageTests::*":
        "the transaction iterator is not in the client handle yet (zodb-node milestone 3)",
    "PackableStorageTests::*":
        "pack is not in the client handle yet (zodb-node milestone 4)",
    "PackableUndoStorageTests::*":
        "pack and undo are not in the client handle yet (zodb-node milestones 3, 4)",
    "RecoveryStorageTests::*":
        "copyTransactionsFrom needs the iterator (zodb-node milestone 3)",
    "RevisionStorageTests::testLoadBeforeUndo":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testCreationUndoneGetTid":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testIndicesInUndoInfo":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testIndicesInUndoLog":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testNotUndoable":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testPackAfterUndoDeletion":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testPackAfterUndoManyTimes":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testSimpleTransactionalUndo":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testTransactionalUndoAfterPack":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testTransactionalUndoAfterPackWithObjectUnlinkFromRoot":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testTwoObjectUndo":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testTwoObjectUndoAgain":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testTwoObjectUndoAtOnce":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testUndoCreationBranch1":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testUndoCreationBranch2":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testUndoLogMetadata":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testUndoMultipleConflictResolution":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "TransactionalUndoStorageTests::testUndoMultipleConflictResolutionReversed":
        "undo is not in the client handle yet (zodb-node milestone 3)",
    "ZODBOnCluster::testMultipleUndoInOneTransaction":
        "undo is not in the client handle yet (zodb-node milestone 3)",
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
