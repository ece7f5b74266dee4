"""The exceptions of replicast_zodb that ZODB's POSException family has no class for.

The extension also raises ZODB's own where one fits: ``ConflictError`` (with the oid and both
serials), ``ReadConflictError``, ``POSKeyError``, ``StorageTransactionError``,
``ReadOnlyError``.
"""

from __future__ import annotations

import transaction.interfaces
from ZODB import POSException


class ReplicastError(POSException.StorageError):
    """A failure of the replicast cluster or of this client."""


class ClientDisconnected(ReplicastError, transaction.interfaces.TransientError):
    """No master (or no replica) answered within the client's timeout.

    Transient, as ZEO's error of that name: the transaction may be retried once the cluster
    is reachable again; the storage reconnects by itself.
    """


class StorageUnavailable(ReplicastError, transaction.interfaces.TransientError):
    """No replica of an object answered its load, or none was left for a transaction's stores
    (every replica of a partition failed for it, or a storage gave up waiting for this client).

    Transient: nothing of the transaction committed, and a retry meets the cluster as it is
    then.
    """


class TransactionFailed(ReplicastError):
    """The cluster aborted the transaction for a reason other than a conflict (a storage
    refused its vote, no replica of a partition was left, the master refused the finish)."""


class ConfigurationError(ReplicastError, ValueError):
    """The client configuration file is wrong: the message names the key and the line."""


class ObjectTooLarge(ReplicastError, ValueError):
    """An object's data is larger than the storage's ``max_object_size``."""


__all__ = [
    "ClientDisconnected",
    "ConfigurationError",
    "ObjectTooLarge",
    "ReplicastError",
    "StorageUnavailable",
    "TransactionFailed",
]
