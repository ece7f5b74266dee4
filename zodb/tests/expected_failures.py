"""Every conformance test that is expected to fail, with its reason (docs/ZODB.md lists them).

conftest.py marks each as ``xfail(strict=True)``: one that starts passing fails the run, so the
list cannot go stale. ``PENDING`` are waiting for a feature of the node layer (issue 12, branch
zodb-node); ``EXPECTED`` are permanent, each with the reason it cannot pass.
"""

from __future__ import annotations

# Test id suffix (after "::", with the class's strategy suffix removed) -> reason.
PENDING: dict[str, str] = {
    "BasicStorage::test_checkCurrentSerialInTransaction":
        "checkCurrentSerialInTransaction needs the node's read locks (not on the wire yet)",
    "BasicStorage::test_race_loadopen_vs_local_invalidate":
        "loadBefore of a non-current revision needs the node's load_before on the wire",
    "BasicStorage::test_race_load_vs_external_invalidate":
        "needs invalidations delivered to the application, lastTransaction() from the "
        "cluster and loadBefore on the wire",
    "BasicStorage::test_race_external_invalidate_vs_disconnect":
        "needs invalidations delivered to the application, lastTransaction() from the "
        "cluster and loadBefore on the wire",
}

EXPECTED: dict[str, str] = {}


def reason(class_name: str, test_name: str) -> str | None:
    """The reason ``test_name`` of ``class_name`` (a strategy variant) is expected to fail."""
    for strategy in ("Unicast", "Multicast", "Auto"):
        if class_name.endswith(strategy):
            class_name = class_name[: -len(strategy)]
            break
    key = f"{class_name}::{test_name}"
    return PENDING.get(key) or EXPECTED.get(key)
