//! A sans-IO client driven through a workload inside a simulation: the two-phase commit and
//! the master group simulations (`node/tests/twopc_sim.rs`, `node/tests/masters_sim.rs`) each
//! run a few of them against their roles, on the virtual clock of [`sim`](crate::sim).
//!
//! A [`Worker`] owns its [`Client`] and reacts to its events: it begins a transaction when
//! idle ([`Worker::drive`]), loads what its [`Plan`] picks, stores the new values, votes and
//! finishes; an abort or a conflict sends it back to idle, to begin again. Transfers keep the
//! sum of the balances, so a lost, doubled or half-applied commit shows in the final sum.
//!
//! ```
//! use replicast_node::client::{Client, ClientConfig};
//! use replicast_testkit::workload::worker::{Plan, Worker};
//!
//! let client = Client::new("c1", "master", ClientConfig::default());
//! let mut worker = Worker::new(client, Plan::Transfers { accounts: 4 }, 10, 7);
//! worker.setup = Some(4); // this one creates the accounts first
//! // Not ready until the client's table came: nothing to do yet.
//! assert!(!worker.drive(std::time::SystemTime::UNIX_EPOCH));
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use replicast_node::client::{AbortReason, Client, ClientConfig, ClientEvent};
use replicast_node::ids::{Oid, Tid};
use replicast_node::protocol::LoadResult;
use replicast_node::transaction::TransactionInfo;

use super::transfers::{Commit, INITIAL_BALANCE, balance, balance_data};
use crate::sim::SplitMix64;

/// The client settings of the simulations: timeouts of seconds of virtual time, so that a
/// crash, a cut or a slow disk is waited out or noticed within a run's bound.
pub fn client_config() -> ClientConfig {
    ClientConfig {
        storage_timeout: Duration::from_secs(10),
        vote_timeout: Duration::from_secs(1),
        vote_bytes_per_second: 16 << 20,
        load_timeout: Duration::from_secs(2),
        master_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    }
}

/// What each transaction of a [`Worker`] does.
#[derive(Clone, Debug)]
pub enum Plan {
    /// Moves a random amount between two random accounts among `1..=accounts`.
    Transfers {
        /// How many accounts there are (object ids 1 to `accounts`).
        accounts: u64,
    },
    /// Adds one to every object of `oids`, storing them in this order.
    WriteAll {
        /// The objects, in the order stored.
        oids: Vec<Oid>,
    },
}

/// Where a [`Worker`] is in its transaction.
#[derive(Debug)]
pub enum Step {
    /// Between transactions.
    Idle,
    /// Waiting for the new object id asked before a transaction ([`Worker::asks_oids`]).
    AskingOid,
    /// Waiting for the begin.
    Beginning,
    /// Waiting for the loads of `requests` (request id to object); `read` holds what came.
    Loading {
        /// The loads not answered yet.
        requests: BTreeMap<u64, Oid>,
        /// The serial and balance of each object loaded.
        read: BTreeMap<Oid, (Tid, i64)>,
    },
    /// Waiting for the vote on `writes` (object, change).
    Voting {
        /// What the transaction changes.
        writes: Vec<(Oid, i64)>,
    },
    /// Waiting for the finish of `writes`.
    Finishing {
        /// What the transaction changes.
        writes: Vec<(Oid, i64)>,
    },
    /// Gone after its vote, never to finish ([`Worker::vanish_at_vote`]).
    Vanished,
    /// Every transaction asked of it committed.
    Done,
}

/// A client and the workload driving it. The fields are the test's to set before the run
/// (`setup`, `asks_oids`, `vanish_at_vote`, `clock_skew`, `trace`) and to read after it.
pub struct Worker {
    /// The client role, which the simulation feeds and drains.
    pub client: Client,
    /// What each transaction does.
    pub plan: Plan,
    /// Creates this many accounts holding [`INITIAL_BALANCE`] each before its first
    /// transaction (one worker of a run does).
    pub setup: Option<u64>,
    /// Transactions still to commit.
    pub todo: u32,
    /// Asks the master for a new object id before each transaction (the ids are kept in
    /// [`oids`](Self::oids), for a test that no id is handed out twice).
    pub asks_oids: bool,
    /// Draws the accounts and amounts.
    pub rng: SplitMix64,
    /// The client has its table.
    pub ready: bool,
    /// Where it is.
    pub step: Step,
    /// The transaction in progress (or the last one).
    pub ttid: Tid,
    /// Its commits, in order.
    pub commits: Vec<Commit>,
    /// The object ids the master handed it.
    pub oids: Vec<Oid>,
    /// Transactions aborted by a conflict.
    pub conflicts: u32,
    /// Transactions aborted for any other reason.
    pub other_aborts: u32,
    /// Of the other aborts, those that broke a possible cycle of waits (`Wounded`).
    pub cycle_aborts: u32,
    /// Invalidations received.
    pub invalidations: u32,
    /// Vanishes once its next transaction voted (a client that dies between vote and finish).
    pub vanish_at_vote: bool,
    /// The transaction it vanished in.
    pub vanished: Option<Tid>,
    /// How far this client's clock is ahead of the simulation's (negative: behind), in
    /// seconds: every time the client is given is its own ([`local`](Self::local)).
    pub clock_skew: i64,
    /// The greatest distance seen between a ttid this client made and the simulation's time
    /// when it made it.
    pub worst_ttid_error: Duration,
    /// Prints each abort that is not a conflict to standard error.
    pub trace: bool,
}

impl Worker {
    /// A worker of `client` committing `todo` transactions of `plan`, its choices drawn from
    /// `seed`.
    pub fn new(client: Client, plan: Plan, todo: u32, seed: u64) -> Self {
        Self {
            client,
            plan,
            setup: None,
            todo,
            asks_oids: false,
            rng: SplitMix64::new(seed),
            ready: false,
            step: Step::Idle,
            ttid: Tid::ZERO,
            commits: Vec::new(),
            oids: Vec::new(),
            conflicts: 0,
            other_aborts: 0,
            cycle_aborts: 0,
            invalidations: 0,
            vanish_at_vote: false,
            vanished: None,
            clock_skew: 0,
            worst_ttid_error: Duration::ZERO,
            trace: false,
        }
    }

    /// What this client's clock reads at the simulation's time `now`.
    pub fn local(&self, now: SystemTime) -> SystemTime {
        let skew = Duration::from_secs(self.clock_skew.unsigned_abs());
        if self.clock_skew >= 0 {
            now + skew
        } else {
            now - skew
        }
    }

    /// The simulation's time when this client's clock reads `local`.
    pub fn global(&self, local: SystemTime) -> SystemTime {
        let skew = Duration::from_secs(self.clock_skew.unsigned_abs());
        if self.clock_skew >= 0 {
            local - skew
        } else {
            local + skew
        }
    }

    /// Whether it has nothing more to do: done, or vanished.
    pub fn is_finished(&self) -> bool {
        matches!(self.step, Step::Done | Step::Vanished)
    }

    /// Every abort, whatever its reason.
    pub fn aborts(&self) -> u32 {
        self.conflicts + self.other_aborts
    }

    /// Starts the next transaction when idle (`now` is the client's time); whether it did
    /// anything.
    ///
    /// # Panics
    /// When the client refuses to begin while idle: the workload broke the client's contract.
    pub fn drive(&mut self, now: SystemTime) -> bool {
        if !self.ready || !matches!(self.step, Step::Idle) {
            return false;
        }
        if self.setup.is_none() && self.todo == 0 {
            self.step = Step::Done;
        } else if self.asks_oids && self.setup.is_none() {
            self.client.new_oids(1);
            self.step = Step::AskingOid;
        } else {
            self.client.begin(now).expect("begin when idle");
            self.step = Step::Beginning;
        }
        true
    }

    /// Takes one of the client's events (`now` is the client's time).
    ///
    /// # Panics
    /// When an event breaks the client's contract (a vote or a commit of another
    /// transaction, a conflict naming one serial twice), or the client refuses what the
    /// workload asks in the step the events put it in.
    pub fn react(&mut self, now: SystemTime, event: ClientEvent) {
        match event {
            ClientEvent::Ready => self.ready = true,
            ClientEvent::NewOids { first, count } => {
                self.oids
                    .extend((0..u64::from(count)).map(|i| Oid(first.0 + i)));
                if matches!(self.step, Step::AskingOid) {
                    self.client.begin(now).expect("begin after the new oid");
                    self.step = Step::Beginning;
                }
            }
            ClientEvent::Begun { ttid } => self.begun(now, ttid),
            ClientEvent::Loaded {
                request, result, ..
            } => self.loaded(now, request, result),
            ClientEvent::Voted { ttid } => {
                assert_eq!(ttid, self.ttid);
                let Step::Voting { writes } = &mut self.step else {
                    panic!("voted while not voting");
                };
                let writes = std::mem::take(writes);
                if self.vanish_at_vote {
                    self.vanished = Some(ttid);
                    self.step = Step::Vanished;
                    return;
                }
                self.client.finish().expect("finish after vote");
                self.step = Step::Finishing { writes };
            }
            ClientEvent::Committed { ttid, tid } => {
                assert_eq!(ttid, self.ttid);
                let Step::Finishing { writes } = &mut self.step else {
                    panic!("committed while not finishing");
                };
                self.commits.push(Commit {
                    tid,
                    deltas: std::mem::take(writes),
                });
                if self.setup.take().is_none() {
                    self.todo -= 1;
                }
                self.step = Step::Idle;
            }
            ClientEvent::Aborted { reason, .. } => {
                match reason {
                    AbortReason::Conflict {
                        serial, current, ..
                    } => {
                        assert_ne!(serial, current, "a conflict names two different serials");
                        self.conflicts += 1;
                    }
                    other => {
                        if self.trace {
                            eprintln!("{} aborted: {other:?}", self.client.name());
                        }
                        if matches!(other, AbortReason::Wounded { .. }) {
                            self.cycle_aborts += 1;
                        }
                        self.other_aborts += 1;
                    }
                }
                self.step = Step::Idle;
            }
            ClientEvent::Invalidated { oids, .. } => {
                assert!(!oids.is_empty());
                self.invalidations += 1;
            }
            ClientEvent::VoteHeld { conflicts, .. } => {
                // A conflict holds the transaction open for resolution; this workload gives
                // up instead and begins again from the loads.
                assert!(!conflicts.is_empty());
                for conflict in &conflicts {
                    assert_ne!(
                        conflict.serial, conflict.current,
                        "a conflict names two serials"
                    );
                }
                self.client.abort().expect("abort after a conflict");
                self.conflicts += 1;
                self.step = Step::Idle;
            }
            ClientEvent::StorageFailed { .. }
            | ClientEvent::StoresAnswered { .. }
            | ClientEvent::BeginRefused { .. }
            | ClientEvent::Answered { .. }
            | ClientEvent::LastTransaction { .. }
            | ClientEvent::Resynced { .. } => {}
        }
    }

    /// The transaction began: the accounts are created, or what the plan picks is loaded.
    fn begun(&mut self, now: SystemTime, ttid: Tid) {
        self.ttid = ttid;
        let made_at = self.global(now);
        let error = match ttid.system_time().duration_since(made_at) {
            Ok(after) => after,
            Err(before) => before.duration(),
        };
        self.worst_ttid_error = self.worst_ttid_error.max(error);
        if let Some(accounts) = self.setup {
            let writes: Vec<(Oid, i64)> = (1..=accounts)
                .map(|oid| (Oid(oid), INITIAL_BALANCE))
                .collect();
            for (oid, value) in &writes {
                self.client
                    .store(now, *oid, Tid::ZERO, balance_data(*value))
                    .expect("store");
            }
            self.vote(now, writes);
            return;
        }
        let oids = match &self.plan {
            Plan::Transfers { accounts } => {
                let from = 1 + self.rng.below(*accounts);
                let to = 1 + (from + self.rng.below(accounts - 1)) % accounts;
                vec![Oid(from), Oid(to)]
            }
            Plan::WriteAll { oids } => oids.clone(),
        };
        let requests = oids
            .iter()
            .map(|oid| (self.client.load(now, *oid).expect("load"), *oid))
            .collect();
        self.step = Step::Loading {
            requests,
            read: BTreeMap::new(),
        };
    }

    /// A load came: once all did, the new values are stored and the transaction votes; a
    /// load that found nothing aborts it.
    fn loaded(&mut self, now: SystemTime, request: u64, result: LoadResult) {
        let Step::Loading { requests, read } = &mut self.step else {
            return;
        };
        let Some(oid) = requests.remove(&request) else {
            return;
        };
        match result {
            LoadResult::Found { tid, data } => {
                read.insert(oid, (tid, balance(oid, &data).expect("a balance")));
            }
            LoadResult::Missing | LoadResult::Failed => {
                self.client.abort().expect("abort while loading");
                self.other_aborts += 1;
                self.step = Step::Idle;
                return;
            }
        }
        if !requests.is_empty() {
            return;
        }
        let read = std::mem::take(read);
        let writes: Vec<(Oid, i64)> = match &self.plan {
            Plan::Transfers { .. } => {
                let amount = 1 + self.rng.below(10) as i64;
                let mut oids = read.keys().copied().collect::<Vec<_>>();
                if self.rng.below(2) == 0 {
                    oids.reverse();
                }
                vec![(oids[0], -amount), (oids[1], amount)]
            }
            Plan::WriteAll { oids } => oids.iter().map(|oid| (*oid, 1)).collect(),
        };
        for (oid, delta) in &writes {
            let (serial, value) = read[oid];
            self.client
                .store(now, *oid, serial, balance_data(value + delta))
                .expect("store");
        }
        self.vote(now, writes);
    }

    fn vote(&mut self, now: SystemTime, writes: Vec<(Oid, i64)>) {
        let info = TransactionInfo {
            user: self.client.name().into(),
            ..TransactionInfo::default()
        };
        self.client.vote(now, info).expect("vote after stores");
        self.step = Step::Voting { writes };
    }
}
