"""A local replicast cluster of real processes, for tests and benchmarks.

``LocalCluster`` starts a master (or a group of masters) and storages as ``replicast node``
processes on 127.0.0.1,
with certificates from ``replicast certs init`` and configuration files in a directory of its
own, and writes client configurations for it. The ``replicast`` binary is ``$REPLICAST_BIN``,
else the one on ``PATH``.

>>> with LocalCluster(tmpdir) as cluster:                             # doctest: +SKIP
...     storage = ReplicastStorage(cluster.client_config("client-1", strategy="multicast"))

Every wait is bounded (``WAIT`` seconds); a node that does not become ready in time is an
error naming it, with the end of its standard error.
"""

from __future__ import annotations

import fcntl
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import json
import time
from pathlib import Path
from typing import IO, Any, Callable, Optional

#: Bound on every wait for a node process (seconds).
WAIT = 60.0

#: Node names that get a certificate besides the cluster's own nodes.
DEFAULT_CLIENTS = 8


def replicast_binary() -> str:
    """The ``replicast`` command: ``$REPLICAST_BIN``, else the one on ``PATH``."""
    path = os.environ.get("REPLICAST_BIN") or shutil.which("replicast")
    if not path:
        raise RuntimeError(
            "the replicast binary is not found: build it (cargo build -p replicast) and set "
            "REPLICAST_BIN to target/debug/replicast, or put it on PATH"
        )
    return path


# Below Linux's default ephemeral range (32768-60999): a socket bound to port 0 anywhere on the
# machine cannot take the port of a node that is down between a kill and its restart. The Rust
# harness (replicast_testkit::process::free_port) uses 12000-31999; this one keeps apart.
FIXED_PORTS = range(5000, 12000)

# Probing a port says only that it is free now: a node binds it later, and restarts bind it
# again after a kill. Two harness processes (pytest-xdist workers, a benchmark beside the
# tests) could pick the same port in between. So a picked port is reserved machine-wide by an
# exclusive lock on a file named for it, held until the cluster that uses it is killed; the
# kernel drops the lock when the holder dies, so a crashed run leaves no stale reservation.
PORT_LOCKS = Path(tempfile.gettempdir()) / "replicast-zodb-test-ports"

# port -> the open lock file that reserves it (for this process).
_reserved: dict[int, IO[bytes]] = {}
_reserved_lock = threading.Lock()


def _reserve(port: int) -> bool:
    """Takes the machine-wide reservation of ``port``; False when another holder has it."""
    PORT_LOCKS.mkdir(parents=True, exist_ok=True)
    handle = open(PORT_LOCKS / f"{port}.lock", "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return False
    _reserved[port] = handle
    return True


def free_port() -> int:
    """A UDP port free on 127.0.0.1 right now (QUIC listens on UDP) and reserved for the
    caller until :func:`release_port`, for a node configured with a fixed port, taken at a
    random place of ``FIXED_PORTS``."""
    rng = random.SystemRandom()
    with _reserved_lock:
        for _ in range(500):
            port = rng.choice(FIXED_PORTS)
            if port in _reserved or not _reserve(port):
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    _reserved.pop(port).close()
                    continue
            return port
    raise RuntimeError(f"no free UDP port on 127.0.0.1 in {FIXED_PORTS} after 500 tries")


def release_port(port: int) -> None:
    """Gives back the reservation :func:`free_port` took (no node may bind ``port`` again)."""
    with _reserved_lock:
        handle = _reserved.pop(port, None)
    if handle is not None:
        handle.close()


def random_group() -> str:
    """A multicast group in 239.255.0.0/16 and a port, different per cluster, so that clusters
    running at once never hear each other."""
    rng = random.SystemRandom()
    return f"239.255.{rng.randint(1, 254)}.{rng.randint(1, 254)}:{rng.randint(20000, 59999)}"


def make_certificates(directory: Path, names: list[str]) -> Path:
    """``replicast certs init --out DIRECTORY --node NAMES``; returns ``DIRECTORY``."""
    subprocess.run(
        [replicast_binary(), "certs", "init", "--out", str(directory), "--node", ",".join(names)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=WAIT,
    )
    return directory


class NodeError(RuntimeError):
    """A node process failed to start or stopped badly."""


class NodeProcess:
    """One ``replicast node --config FILE`` process; its standard output is read by a thread
    of its own (the ready and running lines), its standard error goes to a log file."""

    def __init__(self, name: str, config: Path, log: Path) -> None:
        self.name = name
        self.config = config
        self.log = log
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._log_file: IO[bytes] = open(log, "ab")
        self.process = subprocess.Popen(
            [replicast_binary(), "node", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            cwd=config.parent,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"stdout of {name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        for line in stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _stderr_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def wait_line(self, predicate, what: str, timeout: float = WAIT) -> str:
        """The first line of standard output that ``predicate`` accepts."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NodeError(f"{self.name}: no {what} within {timeout} s\n{self._stderr_tail()}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._lines.put(None)
                raise NodeError(
                    f"{self.name} exited ({self.process.wait()}) before {what}\n"
                    f"{self._stderr_tail()}"
                )
            if predicate(line):
                return line

    def wait_ready(self) -> str:
        """Waits for ``ready NAME ADDRESS``; returns the address."""
        line = self.wait_line(lambda l: l.startswith(f"ready {self.name} "), "ready line")
        return line.split()[2]

    def wait_running(self, storages: list[str], timeout: float = WAIT) -> None:
        """(The master.) Waits until it reports exactly ``storages`` running."""
        wanted = "running " + ",".join(sorted(storages))
        self.wait_line(lambda l: l == wanted, f"line {wanted!r}", timeout)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.running:
            self.process.kill()
        self.process.wait(timeout=WAIT)
        self._log_file.close()

    def stop(self) -> int:
        """SIGTERM (a clean stop), SIGKILL after ``WAIT``; returns the exit code."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=WAIT)
        self._log_file.close()
        return self.process.returncode


def _common_sections(name: str, certs: Path) -> str:
    # A silent peer is noticed within a second or two, not QUIC's 30 s.
    return (
        f'[tls]\nca = "{certs}/ca.pem"\ncert = "{certs}/{name}.pem"\nkey = "{certs}/{name}.key"\n\n'
        '[link]\nkeep_alive_ms = 500\nidle_timeout_ms = 2000\n\n[log]\nlevel = "warn"\n'
    )


def has_primary(status: dict[str, Any]) -> bool:
    """Whether a master of ``status`` (``replicast status --json``) says it is the primary."""
    return any(master.get("role") == "primary" for master in status.get("masters") or [])


def master_names(masters: int) -> list[str]:
    """The masters' names: ``master`` alone, or ``master-1..N`` for a group."""
    return ["master"] if masters == 1 else [f"master-{i}" for i in range(1, masters + 1)]


class LocalCluster:
    """``masters`` masters (1: ``master`` alone; more: the raft group ``master-1..N``, which
    elects a primary and replaces it when it fails) and ``storages`` storages (``replicas``
    copies of each of ``partitions`` partitions) as processes on 127.0.0.1, in ``root``
    (configurations, ``data/``, logs).

    ``certs`` is a directory made by :func:`make_certificates` holding the masters',
    ``storage-1..N`` and the client names; made in ``root/certs`` when not given. Clusters may
    share one: they differ by ports and multicast group.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        storages: int = 3,
        replicas: int = 2,
        partitions: int = 12,
        certs: Optional[Path] = None,
        clients: int = DEFAULT_CLIENTS,
        masters: int = 1,
    ) -> None:
        if masters < 1:
            raise ValueError(f"a cluster needs at least one master, not {masters}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage_names = [f"storage-{i}" for i in range(1, storages + 1)]
        self.replicas = replicas
        self.partitions = partitions
        self.group = random_group()
        if certs is None:
            certs = make_certificates(
                self.root / "certs", self.certificate_names(storages, clients, masters)
            )
        self.certs = Path(certs)
        self.master_names = master_names(masters)
        #: The master processes started, by name.
        self.masters: dict[str, NodeProcess] = {}
        self._paused: set[str] = set()
        self.master_addresses = {name: f"127.0.0.1:{free_port()}" for name in self.master_names}
        self.storages: dict[str, NodeProcess] = {}
        self._storage_addresses = {name: f"127.0.0.1:{free_port()}" for name in self.storage_names}
        self._write_configs()

    @staticmethod
    def certificate_names(
        storages: int = 3, clients: int = DEFAULT_CLIENTS, masters: int = 1
    ) -> list[str]:
        """Every name a cluster of this shape needs a certificate for."""
        return (
            master_names(masters)
            + [f"storage-{i}" for i in range(1, storages + 1)]
            + [f"client-{i}" for i in range(1, clients + 1)]
        )

    def _write(self, name: str, text: str) -> Path:
        path = self.root / f"{name}.toml"
        path.write_text(text)
        return path

    @property
    def _masters_section(self) -> str:
        """How the other nodes name the masters: ``[master]`` for one, ``[masters]`` for a
        group (every master, so that a node finds the primary by itself)."""
        if len(self.master_names) == 1:
            name = self.master_names[0]
            return f'[master]\naddress = "{self.master_addresses[name]}"\nname = "{name}"\n'
        group = "".join(f'{n} = "{a}"\n' for n, a in self.master_addresses.items())
        return f"[masters]\n{group}"

    def _write_configs(self) -> None:
        storages = ", ".join(f'"{s}"' for s in self.storage_names)
        group = self._masters_section if len(self.master_names) > 1 else ""
        for name in self.master_names:
            self._write(
                name,
                f'[node]\nname = "{name}"\nrole = "master"\n'
                f'listen = "{self.master_addresses[name]}"\n\n'
                f"{_common_sections(name, self.certs)}\n"
                f"[cluster]\npartitions = {self.partitions}\nreplicas = {self.replicas}\n"
                f"storages = [{storages}]\n\n{group}",
            )
        for name in self.storage_names:
            self._write(
                name,
                f'[node]\nname = "{name}"\nrole = "storage"\n'
                f'listen = "{self._storage_addresses[name]}"\n\n'
                f"{_common_sections(name, self.certs)}\n"
                f"{self._masters_section}\n"
                f'[storage]\npath = "data/{name}.redb"\n\n'
                f'[multicast]\ngroup = "{self.group}"\ninterface = "127.0.0.1"\n',
            )

    def start(self) -> "LocalCluster":
        """Starts the masters and every storage; returns once the (primary) master reports
        them all running."""
        started = [
            NodeProcess(name, self.root / f"{name}.toml", self.root / f"{name}.log")
            for name in self.master_names
        ]
        for node in started:
            self._master_ready(node)
        for name in self.storage_names:
            self.start_storage(name, wait=False)
        self.wait_running()
        return self

    def start_master(self, name: Optional[str] = None) -> None:
        """Starts (or restarts) master ``name`` (the first by default) and waits for its
        ready line."""
        name = name or self.master_names[0]
        self._master_ready(NodeProcess(name, self.root / f"{name}.toml", self.root / f"{name}.log"))

    def _master_ready(self, node: NodeProcess) -> None:
        self.masters[node.name] = node
        address = node.wait_ready()
        if address != self.master_addresses[node.name]:
            raise NodeError(
                f"{node.name} listens at {address}, not {self.master_addresses[node.name]}"
            )

    @property
    def master(self) -> Optional[NodeProcess]:
        """The first master's process (the only one without a group)."""
        return self.masters.get(self.master_names[0])

    @property
    def master_address(self) -> str:
        """The first master's address."""
        return self.master_addresses[self.master_names[0]]

    def primary(self, timeout: float = WAIT) -> str:
        """The name of the master that says it is the primary (asked until one does)."""

        if len(self.master_names) == 1:
            return self.master_names[0]
        status = self.wait_status(has_primary, "a primary master", timeout)
        return next(m["name"] for m in status["masters"] if m.get("role") == "primary")

    def start_storage(self, name: str, wait: bool = True) -> None:
        """Starts (or restarts) storage ``name`` and waits for its ready line; with ``wait``,
        also until the master reports every started storage running."""
        node = NodeProcess(name, self.root / f"{name}.toml", self.root / f"{name}.log")
        node.wait_ready()
        self.storages[name] = node
        if wait:
            self.wait_running()

    def wait_running(self, timeout: float = WAIT) -> None:
        """Until the (primary) master reports every started storage running."""
        running = [name for name, node in self.storages.items() if node.running]
        if len(self.master_names) == 1:
            assert self.master is not None
            self.master.wait_running(running, timeout)
            return

        def all_running(status: dict[str, Any]) -> bool:
            up = [
                node["name"]
                for node in status.get("nodes", [])
                if node.get("role") == "storage" and node.get("state") == "running"
            ]
            return has_primary(status) and sorted(up) == sorted(running)

        self.wait_status(all_running, f"a primary with storages {running} running", timeout)

    def kill_storage(self, name: str) -> None:
        """SIGKILLs storage ``name``."""
        self.storages[name].kill()

    def stop_master(self, name: Optional[str] = None, kill: bool = False) -> None:
        """Stops (SIGTERM, or SIGKILL with ``kill``) master ``name`` (the first by
        default)."""
        node = self.masters[name or self.master_names[0]]
        if kill:
            node.kill()
        else:
            node.stop()

    def client_config(
        self,
        name: str = "client-1",
        *,
        strategy: str = "unicast",
        file: Optional[str] = None,
    ) -> Path:
        """Writes the configuration of client ``name`` (a certificate name of this cluster)
        with ``[fanout] strategy`` (unicast, multicast or auto) to ``FILE.toml`` (``NAME-
        STRATEGY.toml`` by default); returns its path."""
        multicast = (
            f'\n[multicast]\ngroup = "{self.group}"\ninterface = "127.0.0.1"\n'
            if strategy != "unicast"
            else ""
        )
        return self._write(
            file or f"{name}-{strategy}",
            f'[node]\nname = "{name}"\nrole = "client"\nlisten = "127.0.0.1:0"\n\n'
            f"{_common_sections(name, self.certs)}\n"
            f"{self._masters_section}\n"
            f'[fanout]\nstrategy = "{strategy}"\n{multicast}',
        )

    def status(self) -> dict[str, Any]:
        """``replicast status --json`` as the masters answer it (asked with the configuration
        of a master that runs and is not paused; it redirects to the primary)."""
        asked = next(
            (
                name
                for name in self.master_names
                if name in self.masters and self.masters[name].running and name not in self._paused
            ),
            self.master_names[0],
        )
        done = subprocess.run(
            [
                replicast_binary(),
                "status",
                "--json",
                "--timeout",
                "5",
                "--config",
                str(self.root / f"{asked}.toml"),
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        if done.returncode not in (0, 2):
            raise NodeError(f"replicast status failed: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def wait_status(
        self, accept: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT
    ) -> dict[str, Any]:
        """Asks the master until ``accept`` takes its status (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status: Any = self.status()
            except NodeError as error:
                # No answer yet (e.g. the masters are still electing a primary).
                status = error
            if not isinstance(status, NodeError) and accept(status):
                return status
            if time.monotonic() > deadline:
                raise NodeError(f"{what}: not within {timeout} s; last status {status}")
            # A pause between two questions, not a synchronization: the answer decides.
            time.sleep(0.2)

    def wait_up_to_date(self, timeout: float = WAIT) -> None:
        """Until every cell of the partition table is up to date."""

        def all_up_to_date(status: dict[str, Any]) -> bool:
            cells = status["partition_table"]["cells"]
            return all(cell["state"] == "up_to_date" for partition in cells for cell in partition)

        self.wait_status(all_up_to_date, "every cell up to date", timeout)

    def pause_master(self, name: Optional[str] = None) -> None:
        """SIGSTOPs master ``name`` (every master by default): it is unreachable, its state
        kept (:meth:`resume_master`)."""
        for node in self._masters_named(name):
            node.process.send_signal(signal.SIGSTOP)
            self._paused.add(node.name)

    def resume_master(self, name: Optional[str] = None) -> None:
        """SIGCONTs master ``name`` (every master by default) paused by :meth:`pause_master`."""
        for node in self._masters_named(name):
            if node.running:
                node.process.send_signal(signal.SIGCONT)
            self._paused.discard(node.name)

    def _masters_named(self, name: Optional[str]) -> list[NodeProcess]:
        return list(self.masters.values()) if name is None else [self.masters[name]]

    def pause_storages(self) -> None:
        """SIGSTOPs every storage: unreachable, their state kept (:meth:`resume_storages`)."""
        for node in self.storages.values():
            node.process.send_signal(signal.SIGSTOP)
            self._paused.add(node.name)

    def resume_storages(self) -> None:
        """SIGCONTs the storages paused by :meth:`pause_storages`."""
        for node in self.storages.values():
            if node.running and node.name in self._paused:
                node.process.send_signal(signal.SIGCONT)
            self._paused.discard(node.name)

    def stop(self) -> None:
        """Stops every node (SIGTERM; SIGKILL for one that does not stop in time)."""
        for node in self.storages.values():
            node.stop()
        for node in self.masters.values():
            node.stop()

    def kill(self) -> None:
        """SIGKILLs every node (a test's cleanup: nothing is left running) and gives back the
        cluster's ports."""
        for node in self.storages.values():
            node.kill()
        for node in self.masters.values():
            node.kill()
        for address in [*self.master_addresses.values(), *self._storage_addresses.values()]:
            release_port(int(address.rsplit(":", 1)[1]))

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
