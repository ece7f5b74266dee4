"""ZODB's IteratorStorage and ExtendedIteratorStorage: iterator(start, stop)."""

from ZODB.tests import IteratorStorage

from clusters import ClusterStorageTest


class IteratorStorageTests(ClusterStorageTest, IteratorStorage.IteratorStorage):
    # The cluster keeps a transaction's extension as the bytes the committer gave (as
    # FileStorage does), and the iterator hands them back unchanged.
    use_extension_bytes = True


class ExtendedIteratorStorageTests(ClusterStorageTest, IteratorStorage.ExtendedIteratorStorage):
    pass
