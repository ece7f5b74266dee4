"""ZODB's MTStorage: several threads sharing one storage, under unicast and multicast."""

from ZODB.tests import MTStorage

from clusters import ClusterStorageTest, strategy_variants

strategy_variants(ClusterStorageTest, globals(), MTStorage.MTStorage)
