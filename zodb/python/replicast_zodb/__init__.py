"""replicast_zodb: a ZODB storage on a replicast cluster.

>>> import ZODB, transaction
>>> from replicast_zodb import ReplicastStorage
>>> db = ZODB.DB(ReplicastStorage("/etc/replicast/client.toml"))     # doctest: +SKIP

From ZConfig (zope.conf, ``ZODB.config.databaseFromString``)::

    %import replicast_zodb
    <zodb>
      <replicast>
        config /etc/replicast/client.toml
      </replicast>
    </zodb>

and, with zodburi installed, ``replicast:///etc/replicast/client.toml``.
"""

from replicast_zodb.errors import (
    ClientDisconnected,
    ConfigurationError,
    ObjectTooLarge,
    ReplicastError,
    StorageUnavailable,
    TransactionFailed,
)
from replicast_zodb.storage import ReplicastStorage

__all__ = [
    "ClientDisconnected",
    "ConfigurationError",
    "ObjectTooLarge",
    "ReplicastError",
    "ReplicastStorage",
    "StorageUnavailable",
    "TransactionFailed",
]
