"""Where the time of one large ZODB commit goes: tpc_begin, the stores, waiting for the
stores' answers, the vote and tpc_finish, timed apart on the storage API (no ZODB.DB, no
pickling), for replicast with unicast and multicast fan-out.

A cluster of separate processes (one master, ``--storages`` storages, ``--replicas``
copies) is started per strategy; one client commits ``--commits`` transactions of
``--objects`` new objects of ``--size`` bytes each, and the median of every phase is printed
(Markdown) with the commit's total. ``tpc_vote`` is split in two: ``answers`` is the wait for
every storage to answer every store (``wait_stores``), ``vote`` the votes themselves (the
storages make the stores durable). ``--keep DIR`` keeps the cluster's directories (node logs:
run with ``RUST_LOG=replicast_node=trace`` for the storages' and ``REPLICAST_LOG`` for the
client's message trace).

    REPLICAST_BIN=target/release/replicast python zodb/bench/commit_phases.py --objects 1000

See docs/BENCH.md (section ZODB).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

PHASES = ("begin", "stores", "answers", "vote", "finish", "commit")


def run_strategy(
    strategy: str, root: Path, storages: int, replicas: int, objects: int, commits: int, size: int
) -> dict[str, list[float]]:
    """Times ``commits`` commits of ``objects`` objects through a client of a new cluster."""
    import transaction
    from ZODB.utils import z64

    from replicast_zodb import ReplicastStorage
    from replicast_zodb.testing import LocalCluster

    cluster = LocalCluster(root, storages=storages, replicas=replicas, clients=1)
    cluster.start()
    try:
        config = cluster.client_config("client-1", strategy=strategy)
        storage = ReplicastStorage(str(config), timeout=60)
        try:
            timings: dict[str, list[float]] = {phase: [] for phase in PHASES}
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
            # One commit first: connections, fan-out memberships and caches are set up.
            for round_ in range(commits + 1):
                txn = transaction.Transaction()
                oids = [storage.new_oid() for _ in range(objects)]
                marks = [time.perf_counter()]
                storage.tpc_begin(txn)
                marks.append(time.perf_counter())
                for oid in oids:
                    storage.store(oid, z64, data, "", txn)
                marks.append(time.perf_counter())
                # tpc_vote waits for the answers first; asked here, it finds them all in.
                storage._client.wait_stores()
                marks.append(time.perf_counter())
                storage.tpc_vote(txn)
                marks.append(time.perf_counter())
                storage.tpc_finish(txn)
                marks.append(time.perf_counter())
                if round_ == 0:
                    continue
                for phase, (start, end) in zip(PHASES, zip(marks, marks[1:])):
                    timings[phase].append(end - start)
                timings["commit"].append(marks[-1] - marks[0])
            return timings
        finally:
            storage.close()
    finally:
        cluster.stop()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", default="unicast,multicast", help="fan-out strategies")
    parser.add_argument("--objects", type=int, default=1000, help="objects per transaction")
    parser.add_argument("--commits", type=int, default=5, help="commits timed per strategy")
    parser.add_argument("--size", type=int, default=200, help="bytes per object")
    parser.add_argument("--storages", type=int, default=3, help="storage processes")
    parser.add_argument("--replicas", type=int, default=3, help="copies of each object")
    parser.add_argument("--keep", default=None, help="keep the clusters' directories here")
    args = parser.parse_args(argv)

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="commit-phases-"))
    rows = []
    try:
        for strategy in args.strategies.split(","):
            timings = run_strategy(
                strategy,
                root / strategy,
                args.storages,
                args.replicas,
                args.objects,
                args.commits,
                args.size,
            )
            medians = {phase: statistics.median(timings[phase]) for phase in PHASES}
            rows.append((strategy, medians))
            cells = ", ".join(f"{p} {medians[p] * 1e3:.1f}" for p in PHASES)
            print(f"{strategy}: {cells} ms (median of {args.commits})", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"{args.objects} objects of {args.size} bytes per commit, {args.storages} storages, "
        f"replicas {args.replicas}; median of {args.commits} commits, ms\n"
    )
    print("| strategy | " + " | ".join(PHASES) + " |")
    print("|---|" + "---:|" * len(PHASES))
    for strategy, medians in rows:
        print(f"| {strategy} | " + " | ".join(f"{medians[p] * 1e3:.1f}" for p in PHASES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
