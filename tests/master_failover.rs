//! Failover under load: three masters and three storages (P = 12, R = 2) as processes, three
//! in-process clients committing transfers on shared accounts through one fan-out strategy, and
//! the primary SIGKILLed again and again ([`FAILOVERS`] times, at a random point of whatever
//! two-phase commits are running), each time started again as a follower once the others
//! committed without it, so that a majority stays.
//!
//! The writers see retries, not errors: every transfer commits within the workload's retry
//! bound. At the end the bank invariant holds (every transfer a writer was told committed is
//! visible, none it was told aborted is, the sum is unchanged), every partition's replicas hold
//! the same history, no object id was handed out twice, and a commit that began after another
//! one returned has a later TID, across every failover.
//!
//! Each failover is timed from the SIGKILL to the commit of the first transfer begun after it
//! (an upper bound: it includes that transfer's own round trips); the distribution is printed
//! (`cargo nextest run -p replicast --test master_failover --no-capture`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use replicast_node::driver::ClientHandle;
use replicast_node::ids::{Oid, Tid};
use replicast_testkit::process::replicas::{all_up_to_date, stop_and_compare, wait_for_table};
use replicast_testkit::process::{
    ClusterSpec, LocalCluster, WAIT, connect_masters, multicast_section, random_group,
    strategy_name,
};
use replicast_testkit::workload::transfers::{self, Commit, Rng};
use replicast_transport::fanout::Strategy;
use tokio::sync::watch;

/// SIGKILLs of the primary per run.
const FAILOVERS: usize = 10;
/// The writers (in-process clients) and the accounts they share.
const WRITERS: [&str; 3] = ["client-1", "client-2", "client-3"];
const ACCOUNTS: u32 = 12;
/// Bounds each writer's rounds (the run stops them long before).
const MAX_ROUNDS: u64 = 100_000;
/// The latest point of a kill after commits were seen flowing again.
const KILL_SPREAD_MS: u64 = 250;

/// One committed transfer of a writer: when its round began (before it asked the master for
/// an object id), when the transfer returned committed, and its TID.
#[derive(Clone, Copy, Debug)]
struct Round {
    started: Instant,
    ended: Instant,
    tid: Tid,
}

/// What a writer did: its client, its commits and the object ids it was handed.
struct WriterLog {
    client: ClientHandle,
    commits: Vec<Commit>,
    oids: Vec<Oid>,
}

/// Rounds until stopped: an object id from the primary, then one transfer committed (aborts
/// retried), reported on `rounds`. An error ends the writer (the run then fails with it).
async fn write(
    mut client: ClientHandle,
    writer: u64,
    accounts: Vec<Oid>,
    mut stop: watch::Receiver<bool>,
    rounds: mpsc::Sender<Round>,
) -> Result<WriterLog, String> {
    let mut commits = Vec::new();
    let mut oids = Vec::new();
    for round in 0..MAX_ROUNDS {
        if *stop.borrow_and_update() {
            break;
        }
        let started = Instant::now();
        let oid = client
            .new_oids(1)
            .await
            .map_err(|error| format!("round {round}: new_oids: {error}"))?;
        oids.extend(oid);
        let run = transfers::run(&mut client, &accounts, 1, writer << 32 | round)
            .await
            .map_err(|error| format!("round {round}: {error}"))?;
        let commit = run
            .commits
            .into_iter()
            .next()
            .ok_or("a run of one commit")?;
        // The test may have stopped listening already.
        let _ = rounds.send(Round {
            started,
            ended: Instant::now(),
            tid: commit.tid,
        });
        commits.push(commit);
    }
    Ok(WriterLog {
        client,
        commits,
        oids,
    })
}

/// The writers: their runtime, tasks and reports.
struct Writers {
    runtime: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<WriterLog, String>>>,
    reports: mpsc::Receiver<Round>,
    /// Every round reported so far.
    rounds: Vec<Round>,
    accounts: Vec<Oid>,
}

impl Writers {
    fn start(cluster: &LocalCluster, strategy: Strategy, group: SocketAddr) -> Self {
        let certs = cluster.root().join("certs");
        let masters = cluster.master_addresses.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (stop, stopped) = watch::channel(false);
        let (sender, reports) = mpsc::channel();
        let (tasks, accounts) = runtime.block_on(async {
            let mut clients = Vec::new();
            for name in WRITERS {
                clients.push(connect_masters(&certs, name, &masters, strategy, group).await);
            }
            let accounts = transfers::create_accounts(&mut clients[0], ACCOUNTS)
                .await
                .expect("create the accounts");
            let tasks = (1..)
                .zip(clients)
                .map(|(writer, client)| {
                    tokio::spawn(write(
                        client,
                        writer,
                        accounts.clone(),
                        stopped.clone(),
                        sender.clone(),
                    ))
                })
                .collect();
            (tasks, accounts)
        });
        Self {
            runtime,
            stop,
            tasks,
            reports,
            rounds: Vec::new(),
            accounts,
        }
    }

    /// Waits (bounded by [`WAIT`]) for the commit of a round begun after `after`; returns when
    /// it returned. A writer's error, or no such commit in time, fails the test with the
    /// writers' errors.
    fn commit_begun_after(&mut self, after: Instant, what: &str) -> Instant {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(round) => {
                    self.rounds.push(round);
                    if round.started > after {
                        return round.ended;
                    }
                }
                Err(error) => {
                    let errors = self.stop_and_join().err().unwrap_or_default();
                    panic!("{what}: no commit ({error}); the writers: {errors}");
                }
            }
        }
    }

    /// Stops the writers and waits for them; their logs, or their errors.
    fn stop_and_join(&mut self) -> Result<Vec<WriterLog>, String> {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let outcomes: Vec<Result<WriterLog, String>> = self.runtime.block_on(async {
            let mut outcomes = Vec::new();
            for (writer, task) in (1..).zip(tasks) {
                outcomes.push(match tokio::time::timeout(WAIT, task).await {
                    Ok(Ok(Ok(log))) => Ok(log),
                    Ok(Ok(Err(error))) => Err(format!("writer {writer}: {error}")),
                    Ok(Err(error)) => Err(format!("writer {writer}: {error}")),
                    Err(_) => Err(format!("writer {writer} did not stop within {WAIT:?}")),
                });
            }
            outcomes
        });
        self.rounds.extend(self.reports.try_iter());
        let errors: Vec<String> = outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().err().cloned())
            .collect();
        if errors.is_empty() {
            Ok(outcomes.into_iter().filter_map(Result::ok).collect())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Stops the writers and checks what they did: every writer went on to the end, the
    /// bank invariant holds, no object id was handed out twice (and each writer got them in
    /// increasing order), every commit begun after another returned has a later TID. Returns
    /// every commit and the accounts.
    fn stop_and_check(mut self) -> (Vec<Commit>, Vec<Oid>) {
        let logs = self
            .stop_and_join()
            .unwrap_or_else(|errors| panic!("the writers saw retries, not errors: {errors}"));
        let mut handed_out: BTreeSet<Oid> = self.accounts.iter().copied().collect();
        let mut commits = Vec::new();
        for (writer, log) in (1..).zip(&logs) {
            assert!(
                !log.commits.is_empty(),
                "writer {writer} committed across the failovers"
            );
            assert!(
                log.oids.windows(2).all(|pair| pair[0] < pair[1]),
                "writer {writer} was handed object ids in increasing order"
            );
            for oid in &log.oids {
                assert!(handed_out.insert(*oid), "object id {oid} handed out twice");
            }
            assert!(
                log.commits.windows(2).all(|pair| pair[0].tid < pair[1].tid),
                "writer {writer}'s commits have increasing TIDs"
            );
            commits.extend(log.commits.iter().cloned());
        }
        assert_eq!(
            self.rounds.len(),
            commits.len(),
            "every commit was reported"
        );
        // Real-time order: a commit begun after another one returned has a later TID, whoever
        // the primaries of the two were.
        let mut by_end = self.rounds.clone();
        by_end.sort_by_key(|round| round.ended);
        let mut latest = Vec::with_capacity(by_end.len());
        let mut max = Tid::ZERO;
        for round in &by_end {
            max = max.max(round.tid);
            latest.push(max);
        }
        for round in &self.rounds {
            let before = by_end.partition_point(|earlier| earlier.ended < round.started);
            if before > 0 {
                assert!(
                    latest[before - 1] < round.tid,
                    "commit {} begun after commit {} returned",
                    round.tid,
                    latest[before - 1]
                );
            }
        }
        let mut logs = logs.into_iter();
        let accounts = self.accounts.clone();
        self.runtime.block_on(async {
            let mut checker = logs.next().expect("a writer").client;
            let sum = transfers::check(&mut checker, &accounts, &commits)
                .await
                .expect("every committed transfer is visible, no aborted one, the sum is kept");
            assert_eq!(sum, transfers::INITIAL_BALANCE * accounts.len() as i64);
            checker.close().await.expect("close a client");
            for log in logs {
                log.client.close().await.expect("close a client");
            }
        });
        (commits, accounts)
    }
}

/// Prints the failover times: each, then min, median, 90th percentile and max.
fn report(strategy: Strategy, mut failovers: Vec<Duration>) {
    failovers.sort();
    let at = |fraction: f64| failovers[((failovers.len() - 1) as f64 * fraction).round() as usize];
    let all: Vec<String> = failovers
        .iter()
        .map(|took| format!("{}", took.as_millis()))
        .collect();
    println!(
        "{}: failover (SIGKILL of the primary to the commit of a transfer begun after it) over \
         {} kills, ms: min {}, median {}, p90 {}, max {}; all: {}",
        strategy_name(strategy),
        failovers.len(),
        at(0.0).as_millis(),
        at(0.5).as_millis(),
        at(0.9).as_millis(),
        at(1.0).as_millis(),
        all.join(" ")
    );
}

fn primary_killed_again_and_again(strategy: Strategy, seed: u64) {
    let group = random_group();
    let spec = ClusterSpec {
        storage_sections: multicast_section(group),
        ..ClusterSpec::three_masters()
    };
    let mut cluster = LocalCluster::start(&spec);
    let status = cluster.client_config("client-4", "");
    let mut writers = Writers::start(&cluster, strategy, group);
    let mut rng = Rng::new(seed);
    let mut failovers = Vec::new();
    for failover in 0..FAILOVERS {
        // Commits flow (with the master killed last time back as a follower)...
        writers.commit_begun_after(Instant::now(), &format!("before kill {failover}"));
        let primary = cluster.wait_primary();
        // ... then the primary dies, at whatever point the two-phase commits are (a pause
        // that picks the point, not a synchronization).
        std::thread::sleep(Duration::from_millis(rng.below(KILL_SPREAD_MS)));
        let killed = Instant::now();
        cluster.master_process(&primary).kill();
        let next = writers.commit_begun_after(killed, &format!("after {primary} was killed"));
        let took = next - killed;
        println!(
            "{}: kill {failover}: {primary}, next commit {} ms later",
            strategy_name(strategy),
            took.as_millis()
        );
        failovers.push(took);
        cluster.restart_master(&primary);
    }
    let (commits, accounts) = writers.stop_and_check();
    report(strategy, failovers);
    let table = wait_for_table(&status, "every cell up to date", all_up_to_date);
    stop_and_compare(cluster, &table, &commits, &accounts);
}

#[test]
fn primary_killed_again_and_again_with_unicast_stores() {
    primary_killed_again_and_again(Strategy::Unicast, 1);
}

#[test]
fn primary_killed_again_and_again_with_multicast_stores() {
    primary_killed_again_and_again(Strategy::Multicast, 2);
}

#[test]
fn primary_killed_again_and_again_with_auto_stores() {
    primary_killed_again_and_again(Strategy::Auto, 3);
}
