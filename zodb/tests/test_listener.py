"""The invalidation listener and the GIL: closing a storage (or replacing its listener) while
its listener runs on the client's delivery thread returns instead of deadlocking the process.

The delivery thread holds the listener's lock while it calls the listener, and the listener
needs the GIL. ``close()`` used to take that lock with the GIL held: when an invalidation was
being delivered at that moment, the process stopped for good, every Python thread waiting for
the GIL (ZODB's ``test_race_external_invalidate_vs_disconnect``, 64 threads opening and
closing storages, hit it on most runs). Each case runs in a child process, so that a deadlock
shows as a timeout of this test, not as a hung test run.
"""

from __future__ import annotations

import subprocess
import sys
import unittest

from clusters import start_cluster, stop_cluster

#: Bound on the child process (seconds); it needs a few when nothing deadlocks.
WAIT = 60.0

# The child: client-1's listener is entered by client-2's commit and holds the delivery
# thread (GIL released) for HOLD seconds; meanwhile the main thread, holding the GIL, calls
# STEP. Before the fix that was a deadlock whatever the order of the two threads afterwards.
CHILD = """
import sys, threading
import transaction, ZODB
from replicast_zodb import ReplicastStorage

HOLD = 2.0
step = sys.argv[1]
entered = threading.Event()

class HeldListener(ReplicastStorage):
    def _invalidated(self, tid, oids):
        if oids is not None:
            entered.set()
            threading.Event().wait(HOLD)
        super()._invalidated(tid, oids)

reader = HeldListener("client-1.toml")
writer = ZODB.DB(ReplicastStorage("client-2.toml"))
with writer.transaction() as conn:
    conn.root()["x"] = 1
if not entered.wait(60):
    sys.exit("client-1 got no invalidation within 60 s")
if step == "close":
    reader.close()
else:
    reader._client.set_invalidation_listener(None)
    reader.close()
writer.close()
print("returned")
"""


class ListenerAndGil(unittest.TestCase):
    def setUp(self) -> None:
        self.cluster = start_cluster()
        self.cluster.client_config("client-1", file="client-1")
        self.cluster.client_config("client-2", file="client-2")

    def tearDown(self) -> None:
        stop_cluster(self.cluster)

    def run_child(self, step: str) -> None:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, step],
            cwd=self.cluster.root,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(), "returned")

    def test_close_while_the_listener_runs(self) -> None:
        self.run_child("close")

    def test_listener_removed_while_it_runs(self) -> None:
        self.run_child("remove")
