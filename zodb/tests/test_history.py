"""ZODB's HistoryStorage: history(oid, size)."""

from ZODB.tests import HistoryStorage

from clusters import ClusterStorageTest


class HistoryStorageTests(ClusterStorageTest, HistoryStorage.HistoryStorage):
    pass
