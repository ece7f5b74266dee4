"""ZODB's BasicStorage conformance tests, under unicast and multicast fan-out."""

from ZODB.tests import BasicStorage

from clusters import ClusterStorageTest, strategy_variants

strategy_variants(ClusterStorageTest, globals(), BasicStorage.BasicStorage)
