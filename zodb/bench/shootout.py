"""A zodbshootout-style benchmark: replicast (unicast and multicast fan-out) against ZEO and
FileStorage, with 1, 2 and 8 processes.

Each worker process opens its own storage (for replicast: its own client of the cluster;
for ZEO: its own ClientStorage) and, in lock-step with the others (a barrier per phase),
repeats for each round:

- add: one transaction creating ``--objects`` PersistentMapping objects in an OOBTree of
  its own;
- update: one transaction changing every one of them;
- cold read: a new DB on a new storage (empty caches), reading every object;
- warm read: in that DB, a new connection after ``cacheMinimize()`` (every object a ghost
  again), reading every object through the storage (ZEO and replicast answer from their
  client caches; with ``--cache-size 0`` replicast asks the nearest replica each time).

A phase's rate is ``processes * objects / (time of the slowest process)``; the table shows
the median over the rounds. FileStorage runs with one process only (it is not shared between
processes). Progress goes to standard error; the table (Markdown), ``results.json`` and
``shootout.svg`` go to ``--out``.

    REPLICAST_BIN=target/release/replicast python zodb/bench/shootout.py --out target/zodb-bench

See docs/BENCH.md (section ZODB).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

PHASES = ("add", "update", "cold", "warm")

#: The most processes per cell; replicast clients 1-8 are the workers' storages, 9-16 their
#: cold-read storages.
COLD_CLIENTS = 8


# -- storages --------------------------------------------------------------------------------


@dataclass
class Backend:
    """How a worker opens its storage: ``kind`` and what it needs."""

    name: str
    kind: str  # "file", "zeo", "replicast"
    path: str = ""  # FileStorage file, or the replicast client configuration
    address: tuple[str, int] = ("", 0)  # ZEO
    max_processes: int = 1_000
    cache_size: Optional[int] = None  # replicast: the client cache's bytes (None: default)


def open_storage(backend: Backend, worker: int) -> Any:
    """``worker``'s storage. For replicast, ``worker`` numbers the client (its name and
    certificate): one process opens a second storage (the cold read's) as another client, since
    a client name has one connection to the master at a time."""
    if backend.kind == "file":
        import ZODB.FileStorage

        return ZODB.FileStorage.FileStorage(backend.path)
    if backend.kind == "zeo":
        import ZEO.ClientStorage

        return ZEO.ClientStorage.ClientStorage(backend.address, wait_timeout=60)
    if backend.kind == "replicast":
        from replicast_zodb import ReplicastStorage

        options: dict[str, Any] = {}
        if backend.cache_size is not None:
            options["cache_size"] = backend.cache_size
        return ReplicastStorage(backend.path.format(worker=worker + 1), timeout=60, **options)
    raise ValueError(backend.kind)


# -- the worker -------------------------------------------------------------------------------


def worker_main(
    backend: Backend,
    worker: int,
    objects: int,
    rounds: int,
    barrier: Any,
    results: Any,
) -> None:
    """One process of a cell: every phase of every round, timed, in lock-step."""
    # A worker ends with its cell; a hung peer must not keep it forever.
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.alarm(1800)
    try:
        import transaction
        import ZODB
        from BTrees.OOBTree import OOBTree
        from persistent.mapping import PersistentMapping

        db = ZODB.DB(open_storage(backend, worker), cache_size=objects * 2 + 100)
        key = f"worker-{worker}"
        # Every worker adds its tree to the root at once: conflicts are retried, as an
        # application would.
        from ZODB.POSException import ConflictError

        for attempt in range(20):
            tm = transaction.TransactionManager()
            conn = db.open(tm)
            try:
                conn.root()[key] = OOBTree()
                tm.commit()
                break
            except ConflictError:
                tm.abort()
                if attempt == 19:
                    raise
            finally:
                conn.close()
        timings: dict[str, list[float]] = {phase: [] for phase in PHASES}

        def timed(phase: str, work: Callable[[], None]) -> None:
            barrier.wait()
            start = time.perf_counter()
            work()
            timings[phase].append(time.perf_counter() - start)

        for round_ in range(rounds):

            def add() -> None:
                tm = transaction.TransactionManager()
                conn = db.open(tm)
                tree = conn.root()[key]
                for i in range(objects):
                    tree[(round_, i)] = PersistentMapping({"value": i})
                tm.commit()
                conn.close()

            def update() -> None:
                tm = transaction.TransactionManager()
                conn = db.open(tm)
                for mapping in conn.root()[key].values(min=(round_, 0), max=(round_, objects)):
                    mapping["value"] += 1
                tm.commit()
                conn.close()

            timed("add", add)
            timed("update", update)

            cold_db: list[Any] = []

            def read(database: Any) -> None:
                tm = transaction.TransactionManager()
                conn = database.open(tm)
                total = 0
                for mapping in conn.root()[key].values(min=(round_, 0), max=(round_, objects)):
                    total += mapping["value"]
                tm.abort()
                conn.close()
                if total != sum(range(1, objects + 1)):
                    raise AssertionError(f"read {total}: the updates are not all there")

            def cold() -> None:
                # A second client of its own (replicast: client names COLD_CLIENTS + worker).
                database = ZODB.DB(
                    open_storage(backend, worker + COLD_CLIENTS), cache_size=objects * 2 + 100
                )
                cold_db.append(database)
                read(database)

            def warm() -> None:
                database = cold_db[0]
                database.cacheMinimize()
                read(database)

            if backend.kind == "file":
                # One FileStorage file has one opener: the cold read reopens it after closing.
                db.close()
                timed("cold", cold)
                timed("warm", warm)
                cold_db[0].close()
                db = ZODB.DB(open_storage(backend, worker), cache_size=objects * 2 + 100)
            else:
                timed("cold", cold)
                timed("warm", warm)
                cold_db[0].close()
        db.close()
        results.put(("ok", worker, timings))
    except BaseException as error:  # reported to the parent, which fails the cell
        import traceback

        results.put(("error", worker, traceback.format_exc()))
        barrier.abort()
        raise SystemExit(1) from error


@dataclass
class Cell:
    backend: str
    processes: int
    objects: int
    rounds: int
    rates: dict[str, float] = field(default_factory=dict)  # median objects/s per phase
    all_rates: dict[str, list[float]] = field(default_factory=dict)
    error: Optional[str] = None


def run_cell(backend: Backend, processes: int, objects: int, rounds: int) -> Cell:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(
            target=worker_main, args=(backend, w, objects, rounds, barrier, results), daemon=True
        )
        for w in range(processes)
    ]
    # The root object, made once before the workers start: ZODB.DB() makes it when missing,
    # and workers opening their DBs at once would conflict on it (DB() does not retry).
    first = open_storage(backend, 0)
    try:
        import ZODB

        ZODB.DB(first).close()
    finally:
        first.close()
    for process in workers:
        process.start()
    cell = Cell(backend.name, processes, objects, rounds)
    per_worker: list[dict[str, list[float]]] = []
    deadline = time.monotonic() + 1800
    while len(per_worker) < processes and cell.error is None:
        try:
            status, worker, payload = results.get(timeout=max(1.0, deadline - time.monotonic()))
        except Exception:
            cell.error = "no result within the cell's time bound"
            break
        if status == "ok":
            per_worker.append(payload)
        else:
            cell.error = f"worker {worker}: {payload}"
    for process in workers:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
    if cell.error is None:
        for phase in PHASES:
            slowest = [max(w[phase][r] for w in per_worker) for r in range(rounds)]
            rates = [processes * objects / t for t in slowest]
            cell.all_rates[phase] = rates
            cell.rates[phase] = statistics.median(rates)
    return cell


# -- servers ----------------------------------------------------------------------------------


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ZeoServer:
    """``runzeo`` on 127.0.0.1 with a FileStorage in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.port = free_tcp_port()
        runzeo = shutil.which("runzeo") or str(Path(sys.executable).with_name("runzeo"))
        self.log = open(directory / "zeo.log", "ab")
        self.process = subprocess.Popen(
            [runzeo, "-a", f"127.0.0.1:{self.port}", "-f", str(directory / "zeo.fs")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"runzeo did not start (see {directory / 'zeo.log'})")
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


# -- report -----------------------------------------------------------------------------------


def table(cells: list[Cell]) -> str:
    lines = [
        "| storage | processes | " + " | ".join(f"{p} (objects/s)" for p in PHASES) + " |",
        "|---|---:|" + "---:|" * len(PHASES),
    ]
    for cell in cells:
        if cell.error:
            lines.append(f"| {cell.backend} | {cell.processes} | failed: see results.json |")
            continue
        rates = " | ".join(f"{cell.rates[p]:,.0f}" for p in PHASES)
        lines.append(f"| {cell.backend} | {cell.processes} | {rates} |")
    return "\n".join(lines)


def svg(cells: list[Cell]) -> str:
    """Grouped bars: one panel per phase, one group per process count, one bar per storage."""
    backends = list(dict.fromkeys(c.backend for c in cells))
    counts = sorted({c.processes for c in cells})
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]
    panel_w, panel_h, margin = 330, 260, 60
    width = margin + len(PHASES) * (panel_w + 20)
    height = panel_h + 120
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{margin}" y="18" font-size="14">ZODB shootout: objects/s '
        "(higher is better)</text>",
    ]
    for p_index, phase in enumerate(PHASES):
        x0 = margin + p_index * (panel_w + 20)
        y0 = 40
        values = [c.rates.get(phase, 0.0) for c in cells if not c.error]
        top = max(values + [1.0]) * 1.1
        out.append(f'<text x="{x0}" y="{y0 - 5}" font-size="12">{phase}</text>')
        out.append(
            f'<line x1="{x0}" y1="{y0 + panel_h}" x2="{x0 + panel_w}" y2="{y0 + panel_h}" '
            'stroke="black"/>'
        )
        for tick in range(5):
            value = top * tick / 4
            y = y0 + panel_h - panel_h * tick / 4
            out.append(
                f'<text x="{x0 - 4}" y="{y + 4}" text-anchor="end" font-size="9">'
                f"{value:,.0f}</text>"
            )
        group_w = panel_w / max(1, len(counts))
        bar_w = (group_w - 10) / max(1, len(backends))
        for g, count in enumerate(counts):
            gx = x0 + g * group_w + 5
            out.append(
                f'<text x="{gx + (group_w - 10) / 2}" y="{y0 + panel_h + 14}" '
                f'text-anchor="middle">{count} proc</text>'
            )
            for b, backend in enumerate(backends):
                cell = next(
                    (c for c in cells if c.backend == backend and c.processes == count), None
                )
                if cell is None or cell.error:
                    continue
                value = cell.rates[phase]
                h = panel_h * value / top
                out.append(
                    f'<rect x="{gx + b * bar_w:.1f}" y="{y0 + panel_h - h:.1f}" '
                    f'width="{bar_w - 1:.1f}" height="{h:.1f}" fill="{colors[b % len(colors)]}">'
                    f"<title>{backend}, {count} processes, {phase}: {value:,.0f} objects/s</title>"
                    "</rect>"
                )
    for b, backend in enumerate(backends):
        x = margin + b * 170
        y = height - 30
        out.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{colors[b % len(colors)]}"/>')
        out.append(f'<text x="{x + 16}" y="{y + 10}">{backend}</text>')
    out.append("</svg>")
    return "\n".join(out)


# -- main -------------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,8", help="process counts (default 1,2,8)")
    parser.add_argument("--objects", type=int, default=1000, help="objects per transaction")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell (median)")
    parser.add_argument(
        "--storages",
        default="file,zeo,replicast-unicast,replicast-multicast",
        help="which storages (file, zeo, replicast-unicast, replicast-multicast)",
    )
    parser.add_argument("--replicas", type=int, default=3, help="replicast: copies (of 3 storages)")
    parser.add_argument("--out", default="target/zodb-bench", help="output directory")
    parser.add_argument(
        "--cache-size",
        type=int,
        default=None,
        help="replicast: the client object cache in bytes (0: none; default: the storage's)",
    )
    args = parser.parse_args(argv)

    counts = [int(n) for n in args.processes.split(",")]
    wanted = args.storages.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="zodb-bench-"))
    cells: list[Cell] = []
    plan: list[tuple[str, int]] = []
    for name in wanted:
        for count in counts:
            if name == "file" and count > 1:
                continue
            plan.append((name, count))

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        for index, (name, count) in enumerate(plan, 1):
            label = f"[{index}/{len(plan)}] {name}, {count} process{'es' if count > 1 else ''}"
            progress(f"{label}: starting")
            cell_dir = Path(tempfile.mkdtemp(prefix=f"{name}-{count}-", dir=work))
            started = time.monotonic()
            cleanup: Callable[[], None] = lambda: None
            if name == "file":
                backend = Backend(name, "file", path=str(cell_dir / "bench.fs"), max_processes=1)
            elif name == "zeo":
                server = ZeoServer(cell_dir)
                cleanup = server.stop
                backend = Backend(name, "zeo", address=("127.0.0.1", server.port))
            elif name.startswith("replicast-"):
                from replicast_zodb.testing import LocalCluster

                strategy = name.split("-", 1)[1]
                cluster = LocalCluster(
                    cell_dir, storages=3, replicas=args.replicas, clients=2 * COLD_CLIENTS
                )
                cluster.start()
                cleanup = cluster.stop
                for worker in range(1, 2 * COLD_CLIENTS + 1):
                    cluster.client_config(
                        f"client-{worker}", strategy=strategy, file=f"client-{worker}"
                    )
                backend = Backend(
                    name,
                    "replicast",
                    path=str(cell_dir / "client-{worker}.toml"),
                    cache_size=args.cache_size,
                )
            else:
                raise SystemExit(f"unknown storage {name!r}")
            try:
                cell = run_cell(backend, count, args.objects, args.rounds)
            finally:
                cleanup()
            cells.append(cell)
            elapsed = time.monotonic() - started
            if cell.error:
                progress(f"{label}: FAILED after {elapsed:.0f} s\n{cell.error}")
            else:
                rates = ", ".join(f"{p} {cell.rates[p]:,.0f}" for p in PHASES)
                progress(f"{label}: {rates} objects/s ({elapsed:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = table(cells)
    (out / "results.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "objects": args.objects,
                "rounds": args.rounds,
                "replicas": args.replicas,
                "cache_size": args.cache_size,
                "cells": [asdict(c) for c in cells],
            },
            indent=2,
        )
    )
    (out / "shootout.md").write_text(report + "\n")
    (out / "shootout.svg").write_text(svg(cells))
    print(report)
    print(f"\nwritten: {out / 'results.json'}, {out / 'shootout.md'}, {out / 'shootout.svg'}")
    return 1 if any(c.error for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
