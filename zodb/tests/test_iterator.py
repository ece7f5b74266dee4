"""ZODB's IteratorStorage and ExtendedIteratorStorage: iterator(start, stop)."""

from ZODB.tests import IteratorStorage

from clusters import ClusterStorageTest


class IteratorStorageTests(ClusterStorageTest, IteratorStorage.IteratorStorage):
    pass


class ExtendedIteratorStorageTests(ClusterStorageTest, IteratorStorage.ExtendedIteratorStorage):
    pass
