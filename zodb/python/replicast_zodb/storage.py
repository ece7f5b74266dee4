"""ReplicastStorage: a ZODB storage whose process is a client of a replicast cluster.

Each instance is one client of the cluster (``replicast_zodb._native.Client``, the node's
client in Rust): its stores fan out to the replicas by the configured strategy (unicast,
multicast or auto), its loads go to the replica with the lowest measured round-trip time,
unless its object cache (:mod:`replicast_zodb.cache`, as ZEO's client cache) has the revision.
Every call blocks the calling thread with the GIL released and is bounded by ``timeout``.

One transaction at a time per instance, as ZODB's ``BaseStorage`` does it: ``tpc_begin`` takes
the commit lock, ``tpc_finish`` / ``tpc_abort`` release it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Optional

import zope.interface
from persistent.TimeStamp import TimeStamp
from ZODB import POSException
from ZODB._compat import loads
from ZODB.BaseStorage import copy as copy_transactions
from ZODB.ConflictResolution import ConflictResolvingStorage
from ZODB.interfaces import (
    IMultiCommitStorage,
    IStorage,
    IStorageIteration,
    IStorageRestoreable,
    IStorageUndoable,
    ReadVerifyingStorage,
)
from ZODB.utils import u64, z64

from replicast_zodb import _native, gc
from replicast_zodb.cache import DEFAULT_CACHE_BYTES, ClientCache
from replicast_zodb.errors import ReplicastError
from replicast_zodb.iteration import TransactionIterator

logger = logging.getLogger(__name__)

#: The storages not closed yet: closed at interpreter exit, so that the master learns their
#: clients left (a client of the same name may connect right after, e.g. the next run of a
#: script).
_open_storages: "weakref.WeakSet[ReplicastStorage]" = weakref.WeakSet()


@atexit.register
def _close_open_storages() -> None:
    for storage in list(_open_storages):
        try:
            storage.close()
        except Exception:  # exiting: nothing more can be done about it
            logger.debug("closing %r at exit failed", storage, exc_info=True)


#: How many oids the first request to the master reserves, and the most one request asks
#: for (the master's own limit, ``max_oid_batch``, is 1024 by default).
OID_BATCH = 64
OID_BATCH_MAX = 1024

#: How many transactions one request for the undo log asks for.
UNDO_LOG_PAGE = 100

#: The largest TID: "before" it is "every transaction".
_TID_MAX = b"\xff" * 8

#: Bound on the rounds of conflict resolution in one vote (each round resolves what the
#: storages reported; more only under a storm of commits on the same objects).
MAX_RESOLUTION_ROUNDS = 100


@zope.interface.implementer(
    IStorage,
    IMultiCommitStorage,
    IStorageIteration,
    IStorageUndoable,
    IStorageRestoreable,
    ReadVerifyingStorage,
)
class ReplicastStorage(ConflictResolvingStorage):
    """A ZODB storage on a replicast cluster.

    ``config_path`` is the client's TOML configuration (``node.role = "client"``: its name and
    certificate, the master's address, ``[fanout] strategy`` and ``[multicast]``); see
    ``docs/examples/client.toml``. Several processes may share one configuration and
    certificate.

    ``timeout`` bounds every wait for the cluster, connecting included: a master that cannot be
    reached raises :class:`replicast_zodb.errors.ClientDisconnected` after it.
    ``max_object_size`` bounds one object's pickle (bytes; larger ones raise
    :class:`replicast_zodb.errors.ObjectTooLarge` before anything is sent).
    ``cache_size`` bounds the object cache (bytes of object data; 0 turns it off).
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        *,
        name: Optional[str] = None,
        read_only: bool = False,
        timeout: float = 30.0,
        max_object_size: Optional[int] = None,
        cache_size: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if not isinstance(config_path, (str, os.PathLike)):
            raise TypeError(
                f"config_path must be a str or os.PathLike, not {type(config_path).__name__}"
            )
        if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 0:
            raise ValueError(f"cache_size must be a number of bytes >= 0, not {cache_size!r}")
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
        # Held while tpc_finish hands its tid to the DB: lastTransaction() waits for it, so no
        # reader sees this process's commit before its own connections were invalidated.
        self._finish_lock = threading.RLock()
        self._lock = threading.Lock()
        self._transaction: Any = None
        # The temporary TID of this storage's transaction in progress (what begin returned).
        self._ttid: Optional[bytes] = None
        # This transaction's stores: oid -> (serial, data), for conflict resolution; data
        # None for an undo's store (its content is another revision's).
        self._stored: dict[bytes, tuple[bytes, Optional[bytes]]] = {}
        # This transaction's undo stores: oid -> the TID whose content the new revision gets
        # (None: the object's creation was undone).
        self._undone_to: dict[bytes, Optional[bytes]] = {}
        # This transaction's restores (no conflict resolution for them, but their objects
        # change as well).
        self._restored: set[bytes] = set()
        # Revisions read lately (ZODB's race tests call ``_cache.clear()`` when they fail).
        self._cache = ClientCache(cache_size)
        self._oids: list[bytes] = []
        # How many oids the next request to the master asks for: doubled each time a batch is
        # used up within one transaction (a commit of many new objects), so such a commit
        # costs a request or two instead of one per 64 objects (each a round trip to the
        # master: 23% of a 1,000-object commit's time with a fixed batch of 64).
        self._oid_batch = OID_BATCH
        # Counts tpc_begin calls: which transaction the last request for oids was made in.
        self._begun = 0
        self._oid_refilled_in = -1
        self._oid_lock = threading.Lock()
        self._db: Any = None
        self._closed = False
        self._client.set_invalidation_listener(self._invalidated)
        _open_storages.add(self)

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
        """How many objects the database holds (the cluster counts them per partition)."""
        return self._client.size()[0]

    def getSize(self) -> int:
        """The bytes of object data the database holds, every revision counted once (not
        once per replica)."""
        return self._client.size()[1]

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

    @property
    def invalidation_count(self) -> int:
        """How many commits of other clients this storage was told of."""
        return self._client.invalidation_count()

    def registerDB(self, wrapper: Any) -> None:
        # ConflictResolvingStorage takes the DB's record transforms (conflict resolution
        # unpickles records).
        super().registerDB(wrapper)
        self._db = wrapper

    def _invalidated(self, tid: bytes, oids: Optional[list[bytes]]) -> None:
        """The client's listener: another client committed ``oids`` at ``tid`` (``None``:
        commits may have been missed). Runs on the client's delivery thread, in TID order;
        lastTransaction() moves to ``tid`` only after this returned."""
        if oids is None:
            self._cache.clear()
        else:
            self._cache.invalidate(tid, oids)
        db = self._db
        if db is None:
            return
        if oids is None:
            db.invalidateCache()
        else:
            db.invalidate(tid, oids)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.close()

    # -- reading ---------------------------------------------------------------------------

    def lastTransaction(self) -> bytes:
        with self._finish_lock:
            return self._client.last_transaction()

    def sync(self, force: bool = True) -> None:
        """Waits until every commit the master had finished when asked was delivered here
        (``lastTransaction()`` reached it), as ZEO's sync does."""
        if force:
            self._client.sync()

    def load(self, oid: bytes, version: str = "") -> tuple[bytes, bytes]:
        """The current revision of ``oid`` as ``(data, serial)`` (``POSKeyError`` if none)."""
        loaded = self._client.load(oid)
        if loaded is None or loaded[0] is None:
            raise POSException.POSKeyError(oid)
        return loaded

    def getTid(self, oid: bytes) -> bytes:
        """The TID of the current revision of ``oid`` (``POSKeyError`` if none)."""
        return self.load(oid)[1]

    def loadBefore(self, oid: bytes, tid: bytes) -> Optional[tuple[bytes, bytes, Optional[bytes]]]:
        # Wrong types go to the native client, which names the problem.
        cacheable = isinstance(oid, bytes) and isinstance(tid, bytes)
        cached = self._cache.load_before(oid, tid) if cacheable else None
        if cached is not None:
            data, serial, end = cached
        else:
            ticket = self._cache.ticket()
            found = self._client.load_before(oid, tid)
            if found is None:
                return None
            data, serial, end = found
            if cacheable:
                self._cache.store(oid, data, serial, end, ticket)
        if data is None:
            # The revision current then undid the object's creation.
            raise POSException.POSKeyError(oid)
        return data, serial, end

    def loadSerial(self, oid: bytes, serial: bytes) -> bytes:
        data = self._client.load_serial(oid, serial)
        if data is None:
            raise POSException.POSKeyError(oid)
        return data

    def history(self, oid: bytes, size: int = 1) -> list[dict[str, Any]]:
        entries = []
        for tid, user, description, extension, length in self._client.history(oid, max(1, size)):
            entry: dict[str, Any] = {
                "time": TimeStamp(tid).timeTime(),
                "tid": tid,
                "serial": tid,
                "user_name": user,
                "description": description,
                "size": length,
                "version": "",
            }
            if extension:
                entry.update(_extension(extension))
            entries.append(entry)
        return entries

    def iterator(
        self, start: Optional[bytes] = None, stop: Optional[bytes] = None
    ) -> TransactionIterator:
        """The committed transactions with TIDs from ``start`` to ``stop`` (both included;
        ``None``: from the first, to the last known now), oldest first; commits made after
        this call are not shown."""
        return TransactionIterator(self._client.iterator(start, stop))

    # -- pack ------------------------------------------------------------------------------

    def pack(self, t: Optional[float], referencesf: Callable[..., Any]) -> None:
        """Removes the revisions that stopped being current before time ``t`` (seconds since
        the epoch) on every storage, then the objects nothing reaches any more (garbage
        collection, with ``referencesf``; see ``replicast_zodb.gc``). A storage that did not
        answer keeps its old revisions until the next pack (logged)."""
        if self._read_only:
            raise POSException.ReadOnlyError()
        if t is None:
            t = time.time()
        requested = TimeStamp(*time.gmtime(t)[:5] + (t % 60,)).raw()
        # Not past the last commit: a later TID would hide the commits still to come below it
        # from the undo log.
        pack_tid = min(requested, self._client.sync())
        if pack_tid == z64:
            return
        _packed, failed, _removed = self._client.pack(pack_tid)
        if failed:
            logger.warning("pack at %s: storages %s did not answer", _tid_repr(pack_tid), failed)
        # Packed revisions are gone from the storages: from the cache too.
        self._cache.clear()
        garbage = gc.unreachable(self._client, pack_tid, referencesf)
        if garbage:
            _packed, failed, _removed = self._client.collect(pack_tid, garbage)
            if failed:
                logger.warning(
                    "garbage collection at %s: storages %s did not answer",
                    _tid_repr(pack_tid),
                    failed,
                )

    # -- undo ------------------------------------------------------------------------------

    def supportsUndo(self) -> bool:
        return True

    def undoLog(
        self, first: int = 0, last: int = -20, filter: Optional[Callable[[dict], Any]] = None
    ) -> list[dict[str, Any]]:
        """Descriptions of undoable transactions, newest first: the slice ``first:last`` of
        those ``filter`` accepts (``last < 0``: at most ``-last`` of them)."""
        if last < 0:
            last = first - last
        wanted = last - first
        results: list[dict[str, Any]] = []
        if wanted <= 0:
            return results
        index = 0
        before = _TID_MAX
        while True:
            page = self._client.undo_log(before, UNDO_LOG_PAGE)
            if not page:
                return results
            for tid, user, description, extension in page:
                entry = _undo_description(tid, user, description, extension)
                if filter is not None and not filter(entry):
                    continue
                if index >= first:
                    results.append(entry)
                    if len(results) >= wanted:
                        return results
                index += 1
            before = page[-1][0]

    def undoInfo(
        self, first: int = 0, last: int = -20, specification: Optional[dict] = None
    ) -> list[dict[str, Any]]:
        """``undoLog`` keeping the transactions whose description has every item of
        ``specification``."""
        if not specification:
            return self.undoLog(first, last)
        items = list(specification.items())

        def matches(entry: dict[str, Any]) -> bool:
            return all(key in entry and entry[key] == value for key, value in items)

        return self.undoLog(first, last, matches)

    def undo(self, transaction_id: bytes, transaction: Any) -> tuple[None, list[bytes]]:
        """Undoes the transaction ``transaction_id`` (an ``id`` of ``undoLog``) within
        ``transaction``: each object it wrote gets back the content it had before — directly
        when the undone revision is still the object's current one (no data is sent: the new
        revision points at the old one), else by conflict resolution against what came since
        (``UndoError`` when that fails). Returns the oids written."""
        if self._read_only:
            raise POSException.ReadOnlyError()
        self._check_transaction(transaction)
        if not isinstance(transaction_id, bytes) or len(transaction_id) != 8:
            raise POSException.UndoError(f"not a transaction id: {transaction_id!r}")
        undone = transaction_id
        records = self._client.undo_info(undone)
        if records is None:
            raise POSException.UndoError(
                f"no transaction {_tid_repr(undone)} (or it was packed away)"
            )
        written = []
        for oid, current, before in records:
            self._undo_record(oid, undone, current, before)
            written.append(oid)
        return None, written

    def _undo_record(
        self, oid: bytes, undone: bytes, current: bytes, before: Optional[bytes]
    ) -> None:
        """Stores the undo of ``undone``'s revision of ``oid`` (whose last committed revision
        is ``current``; ``before`` the revision ``undone`` replaced)."""
        if oid in self._stored:
            # Written earlier in this transaction (another undo, or a store): undo on top of
            # that content, with the serial its store named.
            serial, pending = self._stored[oid]
            if pending is None:
                source = self._undone_to[oid]
                if source == undone:
                    self._store_undo(oid, serial, before)
                    return
                pending = self.loadSerial(oid, source) if source is not None else None
        elif current == undone:
            self._store_undo(oid, current, before)
            return
        else:
            serial = current
            pending = self._load_for_undo(oid, current)
        undone_data = self._load_for_undo(oid, undone)
        if pending is not None and pending == undone_data:
            # What is current now is the undone content (e.g. an undo of it was undone).
            self._store_undo(oid, serial, before)
            return
        if pending is None or before is None:
            raise POSException.UndoError(
                "the object was deleted or created by the undone transaction and changed "
                "since",
                oid,
            )
        wanted = self._load_for_undo(oid, before)
        if wanted is None:
            raise POSException.UndoError("the revision to go back to is a deletion", oid)
        try:
            data = self.tryToResolveConflict(oid, serial, undone, wanted, pending)
        except POSException.ConflictError:
            raise POSException.UndoError(
                "some data were modified by a later transaction", oid
            ) from None
        self._client.store(oid, serial, data)
        self._stored[oid] = (serial, data)
        self._undone_to.pop(oid, None)

    def _load_for_undo(self, oid: bytes, serial: bytes) -> Optional[bytes]:
        """Revision ``serial`` of ``oid`` (``None``: a deletion); ``UndoError`` when it is
        gone."""
        try:
            return self._client.load_serial(oid, serial)
        except POSException.POSKeyError:
            raise POSException.UndoError(
                f"revision {_tid_repr(serial)} of the object is gone (packed?)", oid
            ) from None

    def _store_undo(self, oid: bytes, serial: bytes, before: Optional[bytes]) -> None:
        self._client.store_undo(oid, serial, before)
        self._stored[oid] = (serial, None)
        self._undone_to[oid] = before

    # -- oids ------------------------------------------------------------------------------

    def new_oid(self) -> bytes:
        if self._read_only:
            raise POSException.ReadOnlyError()
        with self._oid_lock:
            while not self._oids:
                if self._transaction is not None and self._oid_refilled_in == self._begun:
                    self._oid_batch = min(self._oid_batch * 2, OID_BATCH_MAX)
                self._oid_refilled_in = self._begun
                self._oids = self._client.new_oids(self._oid_batch)
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
        self._commit_lock.acquire()
        try:
            ttid = self._client.begin(tid)
        except BaseException:
            self._commit_lock.release()
            raise
        with self._lock:
            self._begun += 1
            self._transaction = transaction
            self._ttid = ttid
            self._stored = {}
            self._undone_to = {}
            self._restored = set()

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
        serial = serial or z64
        self._client.store(oid, serial, data)
        self._stored[oid] = (serial, data)
        self._undone_to.pop(oid, None)

    def restore(
        self,
        oid: bytes,
        serial: bytes,
        data: Optional[bytes],
        version: str,
        prev_txn: Optional[bytes],
        transaction: Any,
    ) -> None:
        if self._read_only:
            raise POSException.ReadOnlyError()
        self._check_transaction(transaction)
        if version:
            raise POSException.Unsupported("Versions aren't supported")
        self._client.restore(oid, data)
        self._restored.add(oid)

    def copyTransactionsFrom(self, other: Any, verbose: int = 0) -> None:
        """Copies every transaction of ``other`` with its TIDs (``restore``)."""
        copy_transactions(other, self, verbose)

    def checkCurrentSerialInTransaction(
        self, oid: bytes, serial: bytes, transaction: Any
    ) -> None:
        self._check_transaction(transaction)
        self._client.check_current_serial(oid, serial)

    def _resolve(self, conflicts: list[tuple[bytes, bytes, bytes, str]]) -> None:
        """Each write conflict resolved (ZODB's conflict resolution) and stored again on top
        of the committed serial; a stale read raises ReadConflictError, an unresolvable write
        ConflictError."""
        for oid, serial, current, kind in conflicts:
            if kind == "read":
                raise POSException.ReadConflictError(oid=oid, serials=(current, serial))
            stored = self._stored.get(oid)
            if stored is None or stored[1] is None:
                raise POSException.ConflictError(oid=oid, serials=(current, serial))
            # Raises ConflictError when the object's class cannot resolve it.
            data = self.tryToResolveConflict(oid, current, stored[0], stored[1])
            self._client.store(oid, current, data)
            self._stored[oid] = (current, data)

    def tpc_vote(self, transaction: Any) -> Optional[list[bytes]]:
        self._check_transaction(transaction)
        info = (
            _as_bytes(getattr(transaction, "user", b"")),
            _as_bytes(getattr(transaction, "description", b"")),
            _as_bytes(getattr(transaction, "extension_bytes", b"")),
        )
        for _ in range(MAX_RESOLUTION_ROUNDS):
            # The votes go out with the stores still unanswered: a storage votes once it
            # holds them, and one that found a conflict answers it instead.
            resolved, conflicts = self._client.vote(*info)
            if not conflicts:
                return resolved or None
            self._resolve(conflicts)
        raise POSException.ConflictError(
            f"conflicts still came back after {MAX_RESOLUTION_ROUNDS} rounds of resolution"
        )

    def tpc_finish(self, transaction: Any, f: Optional[Callable[[bytes], Any]] = None) -> bytes:
        self._check_transaction(transaction)
        try:
            with self._finish_lock:
                tid = self._client.finish()
                # This commit's objects end their cached revisions, before anyone here sees
                # the tid.
                self._cache.invalidate(tid, [*self._stored, *self._restored])
                # The callback (the DB's invalidations of this commit in this process) runs
                # before lastTransaction() shows the tid to anyone.
                if f is not None:
                    f(tid)
            return tid
        finally:
            self._end_transaction()

    def tpc_abort(self, transaction: Any) -> None:
        with self._lock:
            if transaction is not self._transaction:
                return
            ttid = self._ttid
        try:
            # Only this transaction: a late abort never ends one begun since.
            self._client.abort(ttid)
        except ReplicastError as error:
            # The cluster is out of reach: the storages abort what they hold on their own.
            logger.warning("abort of a transaction could not reach the cluster: %s", error)
        finally:
            self._end_transaction()

    def _end_transaction(self) -> None:
        with self._lock:
            self._transaction = None
            self._ttid = None
            self._stored = {}
            self._undone_to = {}
            self._restored = set()
        self._commit_lock.release()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def _tid_repr(tid: bytes) -> str:
    return f"0x{u64(tid):016x}"


def _undo_description(
    tid: bytes, user: bytes, description: bytes, extension: bytes
) -> dict[str, Any]:
    """An undo log entry as FileStorage makes it: ``id`` (the TID, what ``undo`` takes),
    ``time``, ``user_name``, ``description``, and the extension's items."""
    entry: dict[str, Any] = {
        "id": tid,
        "time": TimeStamp(tid).timeTime(),
        "user_name": user,
        "description": description,
    }
    if extension:
        entry.update(_extension(extension))
    return entry


def _extension(data: bytes) -> dict[str, Any]:
    """A transaction's extension as ZODB pickles it (``extension_bytes``)."""
    try:
        value = loads(data)
    except Exception:  # not a pickle: an application wrote its own bytes
        return {}
    return value if isinstance(value, dict) else {}
