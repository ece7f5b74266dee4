"""ZODB's own ZODBTests (testZODB.py) on a ZODB.DB over the cluster, under unicast and
multicast."""

import ZODB
from ZODB.tests import testZODB

from clusters import ClusterStorageTest, strategy_variants


class ZODBOnCluster(ClusterStorageTest, testZODB.ZODBTests):
    def setUp(self) -> None:
        ClusterStorageTest.setUp(self)
        self._db = ZODB.DB(self._storage)

    def tearDown(self) -> None:
        self._db.close()
        ClusterStorageTest.tearDown(self)


strategy_variants(ZODBOnCluster, globals())
del ZODBOnCluster
