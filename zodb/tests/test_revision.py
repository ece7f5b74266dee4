"""ZODB's RevisionStorage: loadSerial and loadBefore of past revisions."""

from ZODB.tests import RevisionStorage

from clusters import ClusterStorageTest


class RevisionStorageTests(ClusterStorageTest, RevisionStorage.RevisionStorage):
    pass
