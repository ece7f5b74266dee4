"""What the test modules share: a fresh cluster per test, storages on it, and ZODB's
conformance mixins run against it.

``ClusterStorageTest`` is ZODB's ``StorageTestBase`` with ``self._storage`` a
``ReplicastStorage`` on a cluster started for the test (a master and three storages,
replicas 2, as separate processes; the failure tests run a group of three masters) and stopped after it, and ``_new_storage_client()`` a
second client of the same cluster (ZODB's race tests need one). ZODB's mixins name their
tests ``check*``; each subclass gets ``test_*`` aliases of them, which pytest collects.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from ZODB.tests.StorageTestBase import StorageTestBase

from replicast_zodb import ReplicastStorage
from replicast_zodb.testing import DEFAULT_CLIENTS, LocalCluster, make_certificates

#: The test process's directory (conftest.py sets it); certificates and clusters go there.
SESSION_DIR: Optional[Path] = None

#: Client certificate names made per test process: enough for ZODB's race test that opens
#: 64 clients at once, plus the test's own.
CLIENTS = 72

#: How many masters a test cluster runs by default. The failure tests (test_failures.py) run a
#: group of three (``start_cluster(masters=GROUP)``): clients find the primary, follow a new
#: one and see every master gone, as in production. The conformance suites run one: with a
#: group, ``sync`` calls went unanswered for 30 s and finishes were refused under the
#: many-client tests (the client's requests to a master that is not the primary; a node-layer
#: problem, see docs/ZODB.md).
MASTERS = 1

#: The masters of the failure tests' clusters.
GROUP = 3

#: The fan-out strategies the suites run under.
STRATEGIES = ("unicast", "multicast")

_certs_lock = threading.Lock()
_certs: Optional[Path] = None


def certificates() -> Path:
    """The test process's certificates (made on first use)."""
    global _certs
    with _certs_lock:
        if _certs is None:
            assert SESSION_DIR is not None, "conftest.py sets SESSION_DIR"
            _certs = make_certificates(
                SESSION_DIR / "certs",
                LocalCluster.certificate_names(3, CLIENTS, GROUP)
                + LocalCluster.certificate_names(0, 0, 1),
            )
        return _certs


def start_cluster(**shape: Any) -> LocalCluster:
    """A started cluster in a directory of its own (``shape``: LocalCluster's options;
    :data:`MASTERS` masters unless it says)."""
    assert SESSION_DIR is not None
    root = Path(tempfile.mkdtemp(prefix="cluster-", dir=SESSION_DIR))
    shape.setdefault("masters", MASTERS)
    cluster = LocalCluster(root, certs=certificates(), clients=CLIENTS, **shape)
    try:
        return cluster.start()
    except BaseException:
        cluster.kill()
        raise


def stop_cluster(cluster: LocalCluster) -> None:
    """Kills every node and removes the cluster's directory."""
    cluster.kill()
    shutil.rmtree(cluster.root, ignore_errors=True)


class TestStorage(ReplicastStorage):
    """A ReplicastStorage that calls ``on_close`` once it closed (its client left the
    cluster, so another client may take its name)."""

    on_close: Optional[Callable[[], None]] = None

    def close(self) -> None:
        closed = self._closed
        super().close()
        if not closed and self.on_close is not None:
            self.on_close()


class ClusterStorageTest(StorageTestBase):
    """ZODB's storage test base on a fresh replicast cluster per test."""

    strategy = "unicast"
    cluster_shape: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in dir(cls):
            if name.startswith("check") and callable(getattr(cls, name)):
                alias = "test_" + name[len("check"):]
                if not hasattr(cls, alias):
                    setattr(cls, alias, getattr(cls, name))

    def setUp(self) -> None:
        super().setUp()
        # Client names not in use: a storage takes one and gives it back when closed (ZODB's
        # race tests open and close hundreds of clients, at most 64 at once).
        self._free_names = [f"client-{i}" for i in range(CLIENTS, 1, -1)]
        self._names_lock = threading.Lock()
        self._extra: list[ReplicastStorage] = []
        self.cluster = start_cluster(**self.cluster_shape)
        self._storage = self.open_storage("client-1")

    def open_storage(self, name: Optional[str] = None, **options: Any) -> ReplicastStorage:
        """A new storage (a client of this test's cluster) named ``name`` (by default a
        client name not in use, given back when the storage closes); closed after the test."""
        given_back = None
        if name is None:
            with self._names_lock:
                name = self._free_names.pop()
            given_back = name
        try:
            storage = TestStorage(
                self.cluster.client_config(name, strategy=self.strategy), **options
            )
        except BaseException:
            if given_back is not None:
                self._give_back(given_back)
            raise
        if given_back is not None:
            storage.on_close = lambda: self._give_back(given_back)
        with self._names_lock:
            self._extra.append(storage)
        return storage

    def _give_back(self, name: str) -> None:
        with self._names_lock:
            self._free_names.append(name)

    def open(self, **options: Any) -> None:
        """(ZODB's mixins.) Opens ``self._storage`` again as client-1, with ``options``."""
        self._storage = self.open_storage("client-1", **options)

    def _new_storage_client(self) -> ReplicastStorage:
        return self.open_storage()

    def tearDown(self) -> None:
        try:
            for storage in list(self._extra):
                storage.close()
            super().tearDown()
        finally:
            stop_cluster(self.cluster)


def strategy_variants(base: type, module_globals: dict[str, Any], *mixins: type) -> None:
    """Defines in ``module_globals`` one test class per strategy of :data:`STRATEGIES`,
    deriving from ``mixins`` and ``base``: ``NameUnicast``, ``NameMulticast``."""
    stem = mixins[0].__name__ if mixins else base.__name__
    for strategy in STRATEGIES:
        name = f"{stem}{strategy.capitalize()}"
        module_globals[name] = type(name, (base, *mixins), {"strategy": strategy})
