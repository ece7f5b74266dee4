"""ZODB's iterator protocol (``IStorageIteration``) over the cluster's transaction log.

``ReplicastStorage.iterator(start, stop)`` returns a :class:`TransactionIterator`: the committed
transactions from ``start`` to ``stop`` (both included), oldest first, as the cluster had them
when ``iterator()`` was called — commits made meanwhile are not shown (the node fixes the end
of the range at that moment). Each item is a :class:`Transaction` (ZODB's
``IStorageTransactionInformation``), iterable (repeatedly) over its :class:`Record` objects.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import zope.interface
from ZODB.BaseStorage import DataRecord, TransactionRecord
from ZODB.interfaces import IStorageTransactionInformation


class Record(DataRecord):
    """One object revision of a transaction: ``oid``, ``tid``, ``data`` (``None`` when the
    revision undid the object's creation), ``data_txn`` (the transaction whose data an undo
    reused, else ``None``)."""


@zope.interface.implementer(IStorageTransactionInformation)
class Transaction(TransactionRecord):
    """A committed transaction: ``tid``, ``status`` (``" "``), ``user``, ``description``,
    ``extension`` (a dict) and ``extension_bytes`` (the bytes the committer gave, kept as
    they were), and its records."""

    def __init__(
        self,
        tid: bytes,
        user: bytes,
        description: bytes,
        extension: bytes,
        records: list[tuple[bytes, Optional[bytes], Optional[bytes]]],
    ) -> None:
        TransactionRecord.__init__(self, tid, " ", user, description, extension)
        self._records = records

    def __iter__(self) -> Iterator[Record]:
        tid = self.tid
        return iter([Record(oid, tid, data, data_txn) for oid, data, data_txn in self._records])


class TransactionIterator:
    """The transactions of a TID range, oldest first (``ReplicastStorage.iterator``); it can
    be consumed once."""

    def __init__(self, native: Any) -> None:
        self._native: Any = native

    def __iter__(self) -> "TransactionIterator":
        return self

    def __next__(self) -> Transaction:
        if self._native is None:
            raise StopIteration
        try:
            tid, user, description, extension, records = next(self._native)
        except StopIteration:
            self._native = None
            raise
        return Transaction(tid, user, description, extension, records)

    def close(self) -> None:
        """Stops the iteration (later ``next`` raise ``StopIteration``)."""
        self._native = None
