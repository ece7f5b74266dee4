//! Deterministic simulation of a group of three masters under two-phase commits: masters
//! `m1..m3` (raft logs in redb files), storages `s1..s3` (real redb stores, P = 12, R = 2) and
//! two clients committing transfers, joined by the testkit's simulated network on a virtual
//! clock (seeded per-message delays, one link in order). While the clients work, a seeded
//! schedule crashes the primary (it restarts from its log file a few seconds later), crashes a
//! follower, or cuts the primary off from every other node (then heals), one fault at a time.
//! Every node hears of a lost peer half a second after it was lost, as an idle QUIC link tells.
//!
//! Checked in every run: at most one primary per term; every client finishes its transfers
//! (aborts retried); every transfer a client was told committed is visible on every up-to-date
//! replica and no aborted one is (each account holds its initial balance plus exactly the
//! committed changes, the sum is kept); no TID is given twice and each client's TIDs increase;
//! no object id is handed out twice.
//!
//! `MASTERS_SIM_SEEDS=N` runs N seeds (default [`SEEDS`], split between four tests, one per
//! quarter); `MASTERS_SIM_SEED=S` runs only seed S, `MASTERS_SIM_TRACE=1` prints the faults.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use replicast_node::client::Client;
use replicast_node::consensus::{GroupSettings, RaftLog};
use replicast_node::driver::Role;
use replicast_node::engine::Engine;
use replicast_node::ids::Oid;
use replicast_node::master::{GroupConfig, Master, MasterConfig};
use replicast_node::partition::{CellState, PartitionTable};
use replicast_node::persist::InlineStorage;
use replicast_node::protocol::{Transmit, encode};
use replicast_node::storage::StorageConfig;
use replicast_testkit::sim::{InFlight, Network, Sent, SplitMix64, sent_in_order, wall};
use replicast_testkit::workload::transfers::{INITIAL_BALANCE, balance};
use replicast_testkit::workload::worker::{Plan, Worker, client_config};

const MASTERS: [&str; 3] = ["m1", "m2", "m3"];
const STORAGES: [&str; 3] = ["s1", "s2", "s3"];
const CLIENTS: [&str; 2] = ["c1", "c2"];
const PARTITIONS: u32 = 12;
const ACCOUNTS: u64 = 6;
const TRANSFERS: u32 = 10;
/// Object ids the masters hand out start here, above the accounts' fixed ids.
const FIRST_OID: u64 = 1_000;
/// Faults injected per run.
const FAULTS: u32 = 3;
/// Seeds run by default: 1,000, in [`SLICES`] tests of which nextest runs several at once.
const SEEDS: u64 = 1_000;
/// The tests the seeds are divided between.
const SLICES: u64 = 4;
const MAX_STEPS: usize = 400_000;
const MAX_VIRTUAL_TIME: Duration = Duration::from_secs(300);
/// When a node hears that a peer it lost is gone.
const LOSS_NOTICE: Duration = Duration::from_millis(500);

/// A client committing transfers between the accounts: each transaction asks for an object
/// id first (the ids are checked for duplicates at the end), then loads two accounts, stores
/// the moved amount and commits; an abort begins again. The first client creates the
/// accounts first.
fn worker(name: &str, seed: u64, setup: bool) -> Worker {
    let masters = MASTERS.map(str::to_owned).to_vec();
    let mut client = Client::with_masters(name, masters, client_config());
    client.connect();
    let mut worker = Worker::new(
        client,
        Plan::Transfers { accounts: ACCOUNTS },
        TRANSFERS,
        seed,
    );
    worker.asks_oids = true;
    worker.setup = setup.then_some(ACCOUNTS);
    worker
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    CrashPrimary,
    CrashFollower,
    IsolatePrimary,
}

struct Sim {
    now: Duration,
    network: Network<String, Vec<u8>>,
    rng: SplitMix64,
    dir: tempfile::TempDir,
    election_ticks: BTreeMap<String, usize>,
    masters: BTreeMap<String, Option<Master>>,
    storages: BTreeMap<String, InlineStorage>,
    workers: Vec<Worker>,
    /// The primary of each term seen.
    primaries: BTreeMap<u64, String>,
    faults_left: u32,
    next_fault: Option<Duration>,
    /// When the fault in force ends, and on which master.
    heal: Option<(Duration, String)>,
    /// Loss notices due: (when, who hears, of whom).
    notices: Vec<(Duration, String, String)>,
    protocol_errors: usize,
    trace: bool,
    /// A node whose messages are printed (`MASTERS_SIM_WATCH=NAME`).
    watch: Option<String>,
}

/// A directory for the run's files: in memory where the system has one (`/dev/shm`), so that
/// the stores' and logs' syncs cost nothing.
fn run_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir")
}

fn table() -> PartitionTable {
    let names: Vec<String> = STORAGES.map(str::to_owned).to_vec();
    PartitionTable::new(PARTITIONS, 2, &names).expect("table")
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x5eed);
        // Distinct, fixed election timeouts in an order of the seed's choosing.
        let mut ticks = vec![10, 13, 16];
        let first = rng.below(3) as usize;
        ticks.rotate_left(first);
        if rng.below(2) == 0 {
            ticks.swap(1, 2);
        }
        let election_ticks = MASTERS
            .iter()
            .zip(ticks)
            .map(|(name, ticks)| ((*name).to_owned(), ticks))
            .collect();
        let dir = run_dir();
        let storages = STORAGES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let store = Engine::open(dir.path().join(format!("{name}.redb"))).expect("store");
                let mut storage = InlineStorage::open_with_masters(
                    wall(Duration::ZERO),
                    name,
                    MASTERS.map(str::to_owned).to_vec(),
                    store,
                    StorageConfig {
                        outcome_timeout: Duration::from_secs(3),
                        ..StorageConfig::default()
                    },
                )
                .expect("storage");
                // As the node does: the storage tells the primary where it listens.
                storage.announce_address(([127, 0, 0, 1], 7_101 + i as u16).into());
                ((*name).to_owned(), storage)
            })
            .collect();
        let workers = CLIENTS
            .iter()
            .enumerate()
            .map(|(i, name)| worker(name, seed << 8 | i as u64, i == 0))
            .collect();
        let first_fault = Duration::from_millis(800 + rng.below(1500));
        let mut sim = Self {
            now: Duration::ZERO,
            network: Network::new(seed, 20),
            rng,
            dir,
            election_ticks,
            masters: BTreeMap::new(),
            storages,
            workers,
            primaries: BTreeMap::new(),
            faults_left: FAULTS,
            next_fault: Some(first_fault),
            heal: None,
            notices: Vec::new(),
            protocol_errors: 0,
            trace: std::env::var_os("MASTERS_SIM_TRACE").is_some(),
            watch: std::env::var("MASTERS_SIM_WATCH").ok(),
        };
        for name in MASTERS {
            let master = sim.open_master(name);
            sim.masters.insert(name.to_owned(), Some(master));
        }
        sim
    }

    /// Opens master `name` on its log file (a new one at the start, the same after a crash).
    fn open_master(&self, name: &str) -> Master {
        let config = GroupConfig {
            name: name.to_owned(),
            masters: MASTERS
                .iter()
                .map(|name| ((*name).to_owned(), None))
                .collect(),
            settings: GroupSettings {
                election_ticks: self.election_ticks[name],
                max_election_ticks: self.election_ticks[name] + 1,
                ..GroupSettings::default()
            },
        };
        let log = RaftLog::open(
            self.dir.path().join(format!("{name}-log.redb")),
            &config.voters(),
        )
        .expect("open the log");
        Master::open(
            table(),
            MasterConfig {
                finish_timeout: Duration::from_secs(5),
                first_oid: Oid(FIRST_OID),
                ..MasterConfig::default()
            },
            config,
            log,
            wall(self.now),
        )
        .expect("open the master")
    }

    fn primary(&self) -> Option<String> {
        self.masters
            .iter()
            .find(|(name, master)| {
                master.as_ref().is_some_and(Master::is_primary) && !self.network.is_down(name)
            })
            .map(|(name, _)| name.clone())
    }

    /// At most one primary per term.
    fn check_primaries(&mut self) {
        for (name, master) in &self.masters {
            if let Some(master) = master.as_ref().filter(|master| master.is_primary()) {
                let term = master.term();
                let first = self.primaries.entry(term).or_insert_with(|| name.clone());
                assert_eq!(first, name, "two primaries of term {term}");
            }
        }
    }

    fn send(&mut self, from: &str, transmit: Transmit) {
        let bytes = encode(&transmit.message);
        let from = from.to_owned();
        let sent = self.network.send(self.now, &from, &transmit.to, bytes);
        // A message for a node that is down: the sender's dial fails, and it hears of the
        // loss as of any other.
        if sent == Sent::Down
            && !self.network.is_down(&from)
            && !self
                .notices
                .iter()
                .any(|(_, who, lost)| *who == from && *lost == transmit.to)
        {
            self.notices
                .push((self.now + LOSS_NOTICE, from, transmit.to));
        }
    }

    /// Takes every message and event out of every state machine.
    fn flush(&mut self) {
        let now = wall(self.now);
        let mut out = Vec::new();
        for (name, master) in &mut self.masters {
            if let Some(master) = master {
                out.extend(
                    std::iter::from_fn(|| master.poll_transmit()).map(|t| (name.clone(), t)),
                );
                while master.poll_event().is_some() {}
            }
        }
        for (name, storage) in &mut self.storages {
            out.extend(std::iter::from_fn(|| storage.poll_transmit()).map(|t| (name.clone(), t)));
            while storage.poll_event().is_some() {}
        }
        for (from, transmit) in out {
            self.send(&from, transmit);
        }
        for index in 0..self.workers.len() {
            loop {
                let worker = &mut self.workers[index];
                let mut progressed = worker.drive(now);
                while let Some(event) = worker.client.poll_event() {
                    worker.react(now, event);
                    progressed = true;
                }
                let name = worker.client.name().to_owned();
                // Stores in their place among the messages, one per storage.
                let transmits: Vec<Transmit> = sent_in_order(&mut worker.client)
                    .into_iter()
                    .map(|(transmit, _)| transmit)
                    .collect();
                progressed |= !transmits.is_empty();
                for transmit in transmits {
                    self.send(&name, transmit);
                }
                if !progressed {
                    break;
                }
            }
        }
    }

    fn next_timer(&self) -> Option<Duration> {
        let epoch = wall(Duration::ZERO);
        let masters = self
            .masters
            .values()
            .flatten()
            .filter_map(|master| master.poll_timeout());
        let storages = self
            .storages
            .values()
            .filter_map(InlineStorage::poll_timeout);
        let clients = self
            .workers
            .iter()
            .filter_map(|worker| worker.client.poll_timeout());
        masters
            .chain(storages)
            .chain(clients)
            .map(|at| at.duration_since(epoch).unwrap_or_default())
            .chain(self.next_fault)
            .chain(self.heal.as_ref().map(|(at, _)| *at))
            .chain(self.notices.iter().map(|(at, _, _)| *at))
            .min()
    }

    fn record(&mut self, result: Result<(), replicast_node::protocol::ProtocolError>) {
        if let Err(error) = result {
            // Late answers and orders of a deposed primary are refused with typed errors.
            self.protocol_errors += 1;
            if self.trace {
                eprintln!("{:?} refused: {error}", self.now);
            }
        }
    }

    fn deliver(&mut self, packet: InFlight<String, Vec<u8>>) {
        let now = wall(self.now);
        let InFlight { from, to, payload } = packet;
        if let Some(watch) = &self.watch
            && (from == *watch || to == *watch)
            && let Ok(message) = replicast_node::protocol::decode(&payload)
            && !matches!(message, replicast_node::protocol::Message::Consensus(_))
        {
            let term = match &message {
                replicast_node::protocol::Message::FromPrimary { term, .. } => *term,
                _ => 0,
            };
            eprintln!(
                "{:?} {from} -> {to}: {} (term {term})",
                self.now,
                message.into_order().kind()
            );
        }
        let result = if let Some(slot) = self.masters.get_mut(&to) {
            match slot {
                Some(master) => master.handle_bytes(now, &from, &payload),
                None => Ok(()),
            }
        } else if let Some(storage) = self.storages.get_mut(&to) {
            storage.handle_bytes(now, &from, &payload)
        } else if let Some(worker) = self
            .workers
            .iter_mut()
            .find(|worker| worker.client.name() == to)
        {
            worker.client.handle_bytes(now, &from, &payload)
        } else {
            Ok(())
        };
        self.record(result);
    }

    fn fire(&mut self) {
        let now = wall(self.now);
        let mut results = Vec::new();
        for master in self.masters.values_mut().flatten() {
            if master.poll_timeout().is_some_and(|at| at <= now) {
                results.push(master.handle_timeout(now));
            }
        }
        for storage in self.storages.values_mut() {
            if storage.poll_timeout().is_some_and(|at| at <= now) {
                results.push(Role::handle_timeout(storage, now));
            }
        }
        for worker in &mut self.workers {
            if worker.client.poll_timeout().is_some_and(|at| at <= now) {
                results.push(Role::handle_timeout(&mut worker.client, now));
            }
        }
        for result in results {
            self.record(result);
        }
        let due: Vec<(String, String)> = self
            .notices
            .iter()
            .filter(|(at, _, _)| *at <= self.now)
            .map(|(_, who, lost)| (who.clone(), lost.clone()))
            .collect();
        self.notices.retain(|(at, _, _)| *at > self.now);
        for (who, lost) in due {
            self.notify_lost(&who, &lost);
        }
        if self.heal.as_ref().is_some_and(|(at, _)| *at <= self.now) {
            let (_, name) = self.heal.take().expect("a fault to heal");
            self.heal_master(&name);
        }
        if self.next_fault.is_some_and(|at| at <= self.now) {
            self.next_fault = None;
            self.inject();
        }
    }

    fn notify_lost(&mut self, who: &str, lost: &str) {
        let now = wall(self.now);
        let result = if let Some(slot) = self.masters.get_mut(who) {
            match slot {
                Some(master) => master.peer_lost(now, lost),
                None => Ok(()),
            }
        } else if let Some(storage) = self.storages.get_mut(who) {
            storage.peer_lost(now, lost)
        } else if let Some(worker) = self
            .workers
            .iter_mut()
            .find(|worker| worker.client.name() == who)
        {
            Role::peer_lost(&mut worker.client, now, lost)
        } else {
            Ok(())
        };
        self.record(result);
    }

    fn everyone(&self) -> Vec<String> {
        MASTERS
            .iter()
            .chain(&STORAGES)
            .chain(&CLIENTS)
            .map(|name| (*name).to_owned())
            .collect()
    }

    /// Every other node hears that `name` is gone, later; a cut-off node hears the same of
    /// every other.
    fn notice_loss(&mut self, name: &str, both_ways: bool) {
        let at = self.now + LOSS_NOTICE;
        for other in self.everyone() {
            if other != name {
                self.notices.push((at, other.clone(), name.to_owned()));
                if both_ways {
                    self.notices.push((at, name.to_owned(), other));
                }
            }
        }
    }

    fn inject(&mut self) {
        let Some(primary) = self.primary() else {
            // No primary yet: try again shortly.
            self.next_fault = Some(self.now + Duration::from_millis(500));
            return;
        };
        let fault = match self.rng.below(3) {
            0 => Fault::CrashPrimary,
            1 => Fault::CrashFollower,
            _ => Fault::IsolatePrimary,
        };
        let target = match fault {
            Fault::CrashFollower => {
                let followers: Vec<&str> = MASTERS
                    .iter()
                    .copied()
                    .filter(|name| *name != primary)
                    .collect();
                followers[self.rng.below(followers.len() as u64) as usize].to_owned()
            }
            _ => primary,
        };
        if self.trace {
            eprintln!("{:?}: {fault:?} {target}", self.now);
        }
        match fault {
            Fault::CrashPrimary | Fault::CrashFollower => {
                // Dropping the master drops what it held in memory; its log keeps what redb
                // made durable.
                self.masters.insert(target.clone(), None);
                self.network.crash(&target);
                self.notice_loss(&target, false);
            }
            Fault::IsolatePrimary => {
                self.network.cut_off(&target);
                self.notice_loss(&target, true);
            }
        }
        let down = Duration::from_millis(1_000 + self.rng.below(3_000));
        self.heal = Some((self.now + down, target));
        self.faults_left -= 1;
    }

    fn heal_master(&mut self, name: &str) {
        if self.trace {
            eprintln!("{:?}: {name} back", self.now);
        }
        // Notices of its loss still due are moot: it is back.
        self.notices
            .retain(|(_, who, lost)| who != name && lost != name);
        if self.masters[name].is_none() {
            let master = self.open_master(name);
            self.masters.insert(name.to_owned(), Some(master));
        }
        self.network.restart(&name.to_owned());
        if self.faults_left > 0 {
            self.next_fault = Some(self.now + Duration::from_millis(300 + self.rng.below(1_500)));
        }
    }

    /// Runs until every client is done and the faults are over, then until every cell is up
    /// to date and nothing is in flight.
    fn run(&mut self) {
        for _ in 0..MAX_STEPS {
            self.flush();
            self.check_primaries();
            let done = self.workers.iter().all(Worker::is_finished)
                && self.faults_left == 0
                && self.heal.is_none();
            if done && self.settled() {
                return;
            }
            let arrival = self.network.next_arrival();
            let Some(next) = arrival.into_iter().chain(self.next_timer()).min() else {
                panic!(
                    "nothing left to happen: {:?}",
                    self.workers.iter().map(|w| &w.step).collect::<Vec<_>>()
                );
            };
            self.now = self.now.max(next);
            assert!(
                self.now <= MAX_VIRTUAL_TIME,
                "virtual time bound reached: {:?}; {}",
                self.workers.iter().map(|w| &w.step).collect::<Vec<_>>(),
                self.describe()
            );
            if arrival == Some(next) {
                let packet = self.network.pop_due(self.now).expect("a packet is due");
                self.deliver(packet);
            } else {
                self.fire();
            }
        }
        panic!("step bound reached");
    }

    /// The primary, its table's cells out of date, the transactions the storages hold.
    fn describe(&self) -> String {
        let primary = self.primary();
        let cells: Vec<String> = primary
            .as_ref()
            .and_then(|name| self.masters[name].as_ref())
            .map(|master| {
                master
                    .table()
                    .partitions()
                    .enumerate()
                    .flat_map(|(partition, cells)| {
                        cells
                            .iter()
                            .filter(|cell| cell.state != CellState::UpToDate)
                            .map(move |cell| format!("{partition}:{}:{:?}", cell.node, cell.state))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let held: Vec<(String, usize)> = self
            .storages
            .iter()
            .map(|(name, storage)| (name.clone(), storage.role().transactions_in_progress()))
            .collect();
        format!("primary {primary:?}, cells not up to date {cells:?}, transactions held {held:?}")
    }

    /// A primary serves, every cell is up to date in its table, and no storage holds a
    /// transaction.
    fn settled(&self) -> bool {
        let Some(primary) = self.primary() else {
            return false;
        };
        let table = self.masters[&primary]
            .as_ref()
            .expect("the primary runs")
            .table();
        table
            .partitions()
            .flatten()
            .all(|cell| cell.state == CellState::UpToDate)
            && self
                .storages
                .values()
                .all(|storage| storage.role().transactions_in_progress() == 0)
    }

    fn check(&self) {
        let mut tids = BTreeSet::new();
        let mut expected: BTreeMap<Oid, i64> = (1..=ACCOUNTS).map(|oid| (Oid(oid), 0)).collect();
        let mut oids = BTreeSet::new();
        for worker in &self.workers {
            assert!(
                worker
                    .commits
                    .windows(2)
                    .all(|pair| pair[0].tid < pair[1].tid),
                "{}'s TIDs increase",
                worker.client.name()
            );
            for commit in &worker.commits {
                assert!(tids.insert(commit.tid), "TID {} given twice", commit.tid);
                for (oid, delta) in &commit.deltas {
                    *expected.get_mut(oid).expect("an account") += delta;
                }
            }
            for oid in &worker.oids {
                assert!(oid.0 >= FIRST_OID, "object id {oid} below the first");
                assert!(oids.insert(*oid), "object id {oid} handed out twice");
            }
        }
        let primary = self.primary().expect("a primary");
        let table = self.masters[&primary]
            .as_ref()
            .expect("the primary runs")
            .table();
        let mut sum = 0;
        // The setup commit's changes are the initial balances.
        for (oid, value) in &expected {
            let value = *value;
            let partition = (oid.0 % u64::from(PARTITIONS)) as usize;
            let cells = table.partitions().nth(partition).expect("a partition");
            let mut read = 0;
            for cell in cells {
                assert_eq!(cell.state, CellState::UpToDate);
                let revision = self.storages[&cell.node]
                    .engine()
                    .load(*oid)
                    .expect("load")
                    .unwrap_or_else(|| panic!("{oid} on {}", cell.node));
                let found = balance(*oid, &revision.data).expect("a balance");
                assert_eq!(
                    found, value,
                    "{oid} on {}: initial balance plus the committed transfers",
                    cell.node
                );
                read += 1;
            }
            assert!(read > 0, "{oid} has an up-to-date replica");
            sum += value;
        }
        assert_eq!(sum, INITIAL_BALANCE * ACCOUNTS as i64, "the sum is kept");
    }
}

fn run_seed(seed: u64) -> (Duration, usize, u32, usize) {
    let mut sim = Sim::new(seed);
    sim.run();
    sim.check();
    let commits = sim.workers.iter().map(|w| w.commits.len()).sum();
    let aborts = sim.workers.iter().map(Worker::aborts).sum();
    (sim.now, commits, aborts, sim.protocol_errors)
}

/// Runs the seeds of slice `slice` (of [`SLICES`]) of the `MASTERS_SIM_SEEDS` (or [`SEEDS`])
/// seeds; with `MASTERS_SIM_SEED`, only that seed (in slice 0).
fn run_slice(slice: u64) {
    if let Some(seed) = std::env::var("MASTERS_SIM_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
    {
        if slice == 0 {
            let outcome = run_seed(seed);
            eprintln!("seed {seed}: {outcome:?}");
        }
        return;
    }
    let seeds = std::env::var("MASTERS_SIM_SEEDS")
        .ok()
        .and_then(|seeds| seeds.parse().ok())
        .unwrap_or(SEEDS);
    let started = Instant::now();
    let mut commits = 0;
    let mut ran = 0;
    for seed in (0..seeds).filter(|seed| seed % SLICES == slice) {
        let outcome = std::panic::catch_unwind(|| run_seed(seed));
        match outcome {
            Ok((_, committed, _, _)) => commits += committed,
            Err(panic) => {
                eprintln!("seed {seed} failed: rerun with MASTERS_SIM_SEED={seed}");
                std::panic::resume_unwind(panic);
            }
        }
        ran += 1;
    }
    eprintln!(
        "{ran} seeds (slice {slice} of {SLICES}), {commits} commits, {FAULTS} faults each, in {:?}",
        started.elapsed()
    );
}

#[test]
fn masters_crashing_and_cut_off_lose_no_commit_seeds_slice_0() {
    run_slice(0);
}

#[test]
fn masters_crashing_and_cut_off_lose_no_commit_seeds_slice_1() {
    run_slice(1);
}

#[test]
fn masters_crashing_and_cut_off_lose_no_commit_seeds_slice_2() {
    run_slice(2);
}

#[test]
fn masters_crashing_and_cut_off_lose_no_commit_seeds_slice_3() {
    run_slice(3);
}
