"""ReplicastStorage: a ZODB storage whose process is a client of a replicast cluster.

Each instance is one client of the cluster (``replicast_zodb._native.Client``, the node's
client in Rust): its stores fan out to the replicas by the configured strategy (unicast,
multicast or auto), its loads go to the replica with the lowest measured round-trip time. Every
call blocks the calling thread with the GIL released and is bounded by ``timeout``.

One transaction at a time per instance, as ZODB's ``BaseStorage`` does it: ``tpc_begin`` takes
the commit lock, ``tpc_finish`` / ``tpc_abort`` release it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Iterable, Optional

import zope.interface
from ZODB import POSException
from ZODB.ConflictResolution import ConflictResolvingStorage
from ZODB.interfaces import IMultiCommitStorage, IStorage
from ZODB.utils import oid_repr, z64

from replicast_zodb import _native
from replicast_zodb.errors import ReplicastError

logger = logging.getLogger(__name__)

#: How many oids one request to the master reserves.
OID_BATCH = 64


@zope.interface.implementer(IStorage, IMultiCommitStorage)
class ReplicastStorage(ConflictResolvingStorage):
    """A ZODB storage on a replicast cluster.

    ``config_path`` is the client's TOML configuration (``node.role = "client"``: its name and
    certificate, the master's address, ``[fanout] strategy`` and ``[multicast]``); see
    ``docs/examples/client.toml``. Several processes may share one configuration and
    certificate.

    ``timeout`` bounds every wait for the cluster, connecting included: a master that cannot be
    reached raises :class:`replicast_zodb.errors.ClientDisconnected` after it.
    ``max_object_size`` bounds one object's pickle (bytes).
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        *,
        name: Optional[str] = None,
        read_only: bool = False,
        timeout: float = 30.0,
        max_object_size: Optional[int] = None,
    ) -> None:
        self._config_path = os.path.abspath(os.fspath(config_path))
        options: dict[str, Any] = {"timeout": timeout}
        if max_object_size is not None:
            options["max_object_size"] = max_object_size
        self._client = _native.Client(self._config_path, **options)
        self._name = name or f"replicast:{self._config_path}"
        self._read_only = bool(read_only)
        self._timeout = timeout
        # Held from tpc_begin to tpc_finish / tpc_abort: one transaction at a time.
        self._commit_lock = threading.Lock()
        # Guards the state below; lastTransaction() waits on it while tpc_finish calls back.
        self._lock = threading.RLock()
        self._transaction: Any = None
        self._ltid = z64
        self._oids: list[bytes] = []
        self._oid_lock = threading.Lock()
        self._db: Any = None
        self._closed = False

    # -- naming and state ------------------------------------------------------------------

    def getName(self) -> str:
        return self._name

    def sortKey(self) -> str:
        # Unique per cluster configuration: two-phase commits spanning several storages lock
        # them in this order.
        return self._name

    def isReadOnly(self) -> bool:
        return self._read_only

    def __len__(self) -> int:
        # The cluster does not count objects (yet): IStorage allows 0 for "not tracked".
        return 0

    def getSize(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"<ReplicastStorage {self._name} as {self._client.name} ({self._client.strategy})>"

    @property
    def client_name(self) -> str:
        """The client's node name (``node.name`` of its configuration)."""
        return self._client.name

    @property
    def strategy(self) -> str:
        """How stores reach the replicas: ``unicast``, ``multicast`` or ``auto``."""
        return self._client.strategy

    def registerDB(self, wrapper: Any) -> None:
        # ConflictResolvingStorage.registerDB takes the DB's record transforms, then this.
        self._db = wrapper

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.close()

    # -- reading ---------------------------------------------------------------------------

    def lastTransaction(self) -> bytes:
        with self._lock:
            return self._ltid

    def _load_current(self, oid: bytes) -> tuple[Optional[bytes], bytes]:
        loaded = self._client.load(oid)
        if loaded is None:
            raise POSException.POSKeyError(oid)
        return loaded

    def load(self, oid: bytes, version: str = "") -> tuple[bytes, bytes]:
        """The current revision of ``oid`` as ``(data, serial)`` (``POSKeyError`` if none)."""
        data, serial = self._load_current(oid)
        if data is None:
            raise POSException.POSKeyError(oid)
        return data, serial

    def loadBefore(self, oid: bytes, tid: bytes) -> Optional[tuple[bytes, bytes, Optional[bytes]]]:
        data, serial = self._load_current(oid)
        if serial < tid:
            if data is None:
                return None
            return data, serial, None
        # The revision wanted is older than the current one, which only the node's
        # load_before serves (not on the wire yet): the reader's snapshot is stale, which ZODB
        # handles by retrying the transaction.
        raise POSException.ReadConflictError(
            f"load {oid_repr(oid)} before {oid_repr(tid)}: only the current revision "
            f"({oid_repr(serial)}) can be read yet",
            oid=oid,
        )

    def loadSerial(self, oid: bytes, serial: bytes) -> bytes:
        data, current = self._load_current(oid)
        if current == serial and data is not None:
            return data
        raise POSException.Unsupported(
            f"loadSerial({oid_repr(oid)}, {oid_repr(serial)}): only the current revision "
            f"({oid_repr(current)}) can be read yet"
        )

    def history(self, oid: bytes, size: int = 1) -> list[dict[str, Any]]:
        raise POSException.Unsupported("history is not served by the cluster yet")

    def pack(self, t: float, referencesf: Callable[..., Any]) -> None:
        raise POSException.Unsupported("pack is not served by the cluster yet")

    # -- undo ------------------------------------------------------------------------------

    def supportsUndo(self) -> bool:
        return False

    def undo(self, transaction_id: bytes, transaction: Any) -> Any:
        if self._read_only:
            raise POSException.ReadOnlyError()
        raise POSException.Unsupported("undo is not served by the cluster yet")

    # -- oids ------------------------------------------------------------------------------

    def new_oid(self) -> bytes:
        if self._read_only:
            raise POSException.ReadOnlyError()
        with self._oid_lock:
            while not self._oids:
                # Oid 0 is the root object's, which the DB creates itself.
                self._oids = [oid for oid in self._client.new_oids(OID_BATCH) if oid != z64]
                self._oids.reverse()
            return self._oids.pop()

    # -- two-phase commit ------------------------------------------------------------------

    def tpc_begin(self, transaction: Any, tid: Optional[bytes] = None, status: str = " ") -> None:
        if self._read_only:
            raise POSException.ReadOnlyError()
        with self._lock:
            if self._transaction is transaction:
                raise POSException.StorageTransactionError(
                    "Duplicate tpc_begin calls for same transaction"
                )
        if tid is not None:
            raise POSException.Unsupported(
                "tpc_begin with a chosen tid (restore) is not served by the cluster yet"
            )
        self._commit_lock.acquire()
        try:
            self._client.begin()
        except BaseException:
            self._commit_lock.release()
            raise
        with self._lock:
            self._transaction = transaction

    def _check_transaction(self, transaction: Any) -> None:
        if transaction is not self._transaction:
            raise POSException.StorageTransactionError(self, transaction)

    def store(
        self, oid: bytes, serial: Optional[bytes], data: bytes, version: str, transaction: Any
    ) -> None:
        if self._read_only:
            raise POSException.ReadOnlyError()
        self._check_transaction(transaction)
        if version:
            raise POSException.Unsupported("Versions aren't supported")
        self._client.store(oid, serial, data)

    def tpc_vote(self, transaction: Any) -> Optional[Iterable[bytes]]:
        self._check_transaction(transaction)
        self._client.vote(
            _as_bytes(getattr(transaction, "user", b"")),
            _as_bytes(getattr(transaction, "description", b"")),
            _as_bytes(getattr(transaction, "extension_bytes", b"")),
        )
        return None

    def tpc_finish(self, transaction: Any, f: Optional[Callable[[bytes], Any]] = None) -> bytes:
        self._check_transaction(transaction)
        try:
            tid = self._client.finish()
            with self._lock:
                # The callback (the DB's invalidations of this commit) runs before
                # lastTransaction() moves to its tid: a reader never sees the tid without them.
                if f is not None:
                    f(tid)
                if tid > self._ltid:
                    self._ltid = tid
            return tid
        finally:
            self._end_transaction()

    def tpc_abort(self, transaction: Any) -> None:
        with self._lock:
            if transaction is not self._transaction:
                return
        try:
            self._client.abort()
        except POSException.StorageTransactionError:
            # The cluster already aborted it (a failed vote, a conflict): nothing is left.
            pass
        except ReplicastError as error:
            # The cluster is out of reach: the storages abort what they hold on their own.
            logger.warning("abort of a transaction could not reach the cluster: %s", error)
        finally:
            self._end_transaction()

    def _end_transaction(self) -> None:
        with self._lock:
            self._transaction = None
        self._commit_lock.release()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)
