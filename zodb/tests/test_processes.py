"""Several Python processes on one cluster, as the worker processes of one Zope site: each sees
the others' commits (invalidations), and conflicts are resolved or raised as ZODB would.

Every round, each process reads two counters at the same serial, then (after a barrier, so the
race is certain) commits an increment of each:

- ``BTrees.Length.Length`` resolves conflicts: every increment commits, never with a
  ConflictError naming the object (a retry when wound-wait aborts a transaction after its
  vote raises a ConflictError that names none, and is retried like any);
- a ``PersistentMapping`` does not: exactly one process commits on top of the serial they all
  read, every other one gets ``ConflictError`` on its first attempt and retries.

After each round every process, in a new transaction on its old connection (whose cached
objects only invalidations can refresh), must see both counters at their round's total.
Variants: 2 and 8 processes, each its own client name, or all sharing one client
configuration and certificate.
"""

from __future__ import annotations

import multiprocessing
import time
import unittest
from typing import Any

from clusters import start_cluster, stop_cluster

#: Rounds of the race per process count.
ROUNDS = 3
#: Bound on each wait of the test (seconds).
WAIT = 120.0


def worker(
    config: str, index: int, processes: int, barrier: Any, results: Any
) -> None:  # runs in a spawned process
    import transaction
    import ZODB
    from ZODB.POSException import ConflictError

    from replicast_zodb import ReplicastStorage

    try:
        storage = ReplicastStorage(config, timeout=30)
        db = ZODB.DB(storage)
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        first_attempt_conflicts = []
        # ConflictErrors of Length's increments that name the object: resolution failed.
        length_conflicts = 0
        for round_ in range(ROUNDS):
            # Length resolves conflicts: every process read it at the same serial, and the
            # increments commit without ConflictError, except the rare one whose transaction
            # lost its locks to an older one after voting (wound-wait), which retries.
            tm.begin()
            conn.root()["length"].change(1)
            barrier.wait(WAIT)
            for _ in range(50):
                try:
                    tm.commit()
                    break
                except ConflictError as error:
                    tm.abort()
                    # A wound (the transaction lost its locks to an older one after its
                    # vote) names no object; a conflict that came back unresolved does.
                    if error.oid is not None:
                        length_conflicts += 1
                    tm.begin()
                    conn.root()["length"].change(1)
            else:
                raise AssertionError("50 attempts of one Length increment all conflicted")
            # A PersistentMapping does not: one commits on top of the serial all read, the
            # others get ConflictError and retry.
            tm.begin()
            plain = conn.root()["plain"]
            plain["n"] = plain["n"] + 1
            barrier.wait(WAIT)
            try:
                tm.commit()
                first_attempt_conflicts.append(False)
            except ConflictError:
                tm.abort()
                first_attempt_conflicts.append(True)
                for _ in range(50):
                    tm.begin()
                    plain = conn.root()["plain"]
                    plain["n"] = plain["n"] + 1
                    try:
                        tm.commit()
                        break
                    except ConflictError:
                        tm.abort()
                else:
                    raise AssertionError("50 retries of one increment all conflicted")
            barrier.wait(WAIT)
            # Everyone committed this round: the old connection, whose cached objects only
            # invalidations refresh, must see it all.
            expected = processes * (round_ + 1)
            deadline = time.monotonic() + 10
            while True:
                tm.begin()
                seen = (conn.root()["length"](), conn.root()["plain"]["n"])
                tm.abort()
                if seen == (expected, expected) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if seen != (expected, expected):
                raise AssertionError(
                    f"process {index}, round {round_}: sees (length, plain) = {seen}, "
                    f"not ({expected}, {expected})"
                )
            barrier.wait(WAIT)
        invalidations = storage.invalidation_count
        conn.close()
        db.close()
        results.put(("ok", index, first_attempt_conflicts, invalidations, length_conflicts))
    except BaseException:
        import traceback

        results.put(("error", index, traceback.format_exc(), 0, 0))
        barrier.abort()


class ProcessesOnOneCluster(unittest.TestCase):
    shared_name = False

    def setUp(self) -> None:
        self.cluster = start_cluster()

    def tearDown(self) -> None:
        stop_cluster(self.cluster)

    def config(self, index: int) -> str:
        name = "client-1" if self.shared_name else f"client-{index + 1}"
        return str(self.cluster.client_config(name, strategy="multicast"))

    def run_processes(self, processes: int) -> None:
        import transaction
        import ZODB
        from BTrees.Length import Length
        from persistent.mapping import PersistentMapping

        from replicast_zodb import ReplicastStorage

        # The counters, from a client of its own (closed before the workers start).
        db = ZODB.DB(ReplicastStorage(self.cluster.client_config("client-72")))
        with db.transaction() as conn:
            conn.root()["length"] = Length(0)
            conn.root()["plain"] = PersistentMapping({"n": 0})
        db.close()
        transaction.abort()

        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(processes)
        results = context.Queue()
        workers = [
            context.Process(
                target=worker, args=(self.config(i), i, processes, barrier, results)
            )
            for i in range(processes)
        ]
        for process in workers:
            process.start()
        outcomes = []
        try:
            for _ in range(processes):
                outcomes.append(results.get(timeout=WAIT * 2))
        finally:
            for process in workers:
                process.join(timeout=WAIT)
                if process.is_alive():
                    process.kill()
                    process.join()
        errors = [o[2] for o in outcomes if o[0] == "error"]
        self.assertEqual(errors, [], "\n".join(errors))
        # Per round, all read the same serial of `plain`: exactly one committed on top of it.
        for round_ in range(ROUNDS):
            conflicted = sum(1 for o in outcomes if o[2][round_])
            self.assertEqual(
                conflicted, processes - 1, f"round {round_}: first-attempt conflicts"
            )
        # Length's conflicts were resolved: without resolution, all but one process would
        # get a ConflictError naming it every round. (A wound, an abort after the vote when
        # an older transaction waited, names no object and is retried: how often depends on
        # the machine's load, so it is not counted.)
        length_conflicts = sum(o[4] for o in outcomes)
        self.assertEqual(length_conflicts, 0, "unresolved conflicts of Length")
        # Each process was told of the others' commits.
        for _, index, _, invalidations, _ in outcomes:
            self.assertGreater(invalidations, 0, f"process {index} got no invalidation")

        db = ZODB.DB(ReplicastStorage(self.cluster.client_config("client-72")))
        with db.transaction() as conn:
            self.assertEqual(conn.root()["length"](), processes * ROUNDS)
            self.assertEqual(conn.root()["plain"]["n"], processes * ROUNDS)
        db.close()

    def test_two_processes(self) -> None:
        self.run_processes(2)

    def test_eight_processes(self) -> None:
        self.run_processes(8)


class ProcessesSharingOneCertificate(ProcessesOnOneCluster):
    shared_name = True



class ScriptRunTwice(unittest.TestCase):
    """The README's example, run twice in a row as separate processes with one client
    configuration: the first run's client leaves the cluster at exit (the storage closes
    itself), so the second connects under the same name and sees the first one's commit."""

    def setUp(self) -> None:
        self.cluster = start_cluster()

    def tearDown(self) -> None:
        stop_cluster(self.cluster)

    def test_readme_example_twice(self) -> None:
        import subprocess
        import sys

        self.cluster.client_config("client-1", strategy="auto", file="client")
        script = (
            "import ZODB, transaction\n"
            "from replicast_zodb import ReplicastStorage\n"
            'db = ZODB.DB(ReplicastStorage("client.toml"))\n'
            "with db.transaction() as conn:\n"
            '    conn.root()["runs"] = conn.root().get("runs", 0) + 1\n'
            "with db.transaction() as conn:\n"
            '    print(conn.root()["runs"])\n'
        )
        for run in (1, 2):
            done = subprocess.run(
                [sys.executable, "-c", script],
                cwd=self.cluster.root,
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertEqual(done.stdout.strip(), str(run))
