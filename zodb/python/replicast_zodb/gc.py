"""Garbage collection after a pack: which objects nothing reaches any more.

The cluster packs (removes old revisions) on its own; deciding what is garbage needs ZODB's
pickles, so it happens here, with ZODB's ``referencesf``:

- the revision of every object current at the pack TID (``scan_objects``) gives the reference
  graph at that TID;
- reachable: everything reached from the root object (oid 0) over that graph, plus every
  object written after the pack TID and everything such a later revision references (a commit
  made after the pack TID may have linked an object again);
- the rest is unreachable: ``collect`` removes it on every storage, which still skips an
  object written after the pack TID.

Memory: one entry per object (its oid and the oids it references) while it runs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ZODB.utils import p64, u64, z64

#: How many revisions one scan request hands over.
SCAN_BATCH = 10_000


def unreachable(
    client: Any, pack_tid: bytes, referencesf: Callable[[bytes], Iterable[bytes]]
) -> list[bytes]:
    """The oids of the objects unreachable at ``pack_tid`` and not referenced since (see the
    module's description); ``client`` is a ``replicast_zodb._native.Client``."""
    references: dict[bytes, list[bytes]] = {}
    scan = client.scan_objects(pack_tid)
    while True:
        batch = scan.next_batch(SCAN_BATCH)
        if not batch:
            break
        for oid, _serial, data in batch:
            references[oid] = list(referencesf(data)) if data else []
    roots = [z64]
    # Revisions after the pack TID: the objects they wrote and everything they reference.
    for _tid, _user, _description, _extension, records in client.iterator(p64(u64(pack_tid) + 1)):
        for oid, data, _data_txn in records:
            roots.append(oid)
            if data:
                roots.extend(referencesf(data))
    reachable: set[bytes] = set()
    stack = roots
    while stack:
        oid = stack.pop()
        if oid in reachable:
            continue
        reachable.add(oid)
        stack.extend(references.get(oid, ()))
    return [oid for oid in references if oid not in reachable]
