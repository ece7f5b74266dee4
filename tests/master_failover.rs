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
use replicast_testkit::process::masters::{other_primary, primary_and_term};
use replicast_testkit::process::replicas::{all_up_to_date, stop_and_compare, wait_for_table};
use replicast_testkit::process::{
    ClusterSpec, LocalCluster, WAIT, client, connect_masters, multicast_section, random_group,
    strategy_name,
};
use replicast_testkit::sim::SplitMix64;
use replicast_testkit::workload::transfers::{self, Commit};
use replicast_transport::fanout::Strategy;
use tokio::sync::watch;

/// SIGKILLs of the primary per run.
const FAILOVERS: usize = 10;
/// The writers (in-process clients) and the accounts they share.
const WRITERS: [&str; 3] = ["client-1", "client-2", "client-3"];
const ACCOUNTS: u32 = 12;
/// Bounds each writer's rounds (the run stops them long before).
const MAX_ROUNDS: u64 = 100_000;
/// The client that checks the accounts at the end.
const CHECKER: &str = "checker";
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

/// What a writer did: its client, its commits, the object ids it was handed, and the error
/// that ended it, if one did.
struct WriterLog {
    client: ClientHandle,
    commits: Vec<Commit>,
    oids: Vec<Oid>,
    error: Option<String>,
}

/// Rounds until stopped: an object id from the primary, then one transfer committed (aborts
/// retried), reported on `rounds`. An error ends the writer; the transfer it was in is then of
/// unknown outcome.
async fn write(
    mut client: ClientHandle,
    writer: u64,
    accounts: Vec<Oid>,
    mut stop: watch::Receiver<bool>,
    rounds: mpsc::Sender<Round>,
) -> WriterLog {
    let mut commits = Vec::new();
    let mut oids = Vec::new();
    let mut error = None;
    for round in 0..MAX_ROUNDS {
        if *stop.borrow_and_update() {
            break;
        }
        let started = Instant::now();
        match client.new_oids(1).await {
            Ok(oid) => oids.extend(oid),
            Err(failure) => {
                error = Some(format!("round {round}: new_oids: {failure}"));
                break;
            }
        }
        let commit = match transfers::run(&mut client, &accounts, 1, writer << 32 | round).await {
            Ok(run) if run.commits.len() == 1 => run.commits[0].clone(),
            Ok(run) => {
                error = Some(format!("round {round}: {} commits", run.commits.len()));
                break;
            }
            Err(failure) => {
                error = Some(format!("round {round}: {failure}"));
                break;
            }
        };
        // The test may have stopped listening already.
        let _ = rounds.send(Round {
            started,
            ended: Instant::now(),
            tid: commit.tid,
        });
        commits.push(commit);
    }
    WriterLog {
        client,
        commits,
        oids,
        error,
    }
}

/// The writers: their runtime, tasks and reports.
struct Writers {
    runtime: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<WriterLog>>,
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
    /// it returned. No such commit in time fails the test with the writers' errors.
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
                    let errors: Vec<String> = self
                        .stop_and_join()
                        .into_iter()
                        .filter_map(|log| log.error)
                        .collect();
                    panic!("{what}: no commit ({error}); the writers: {errors:?}");
                }
            }
        }
    }

    /// Stops the writers and waits for them; their logs.
    fn stop_and_join(&mut self) -> Vec<WriterLog> {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let logs = self.runtime.block_on(async {
            let mut logs = Vec::new();
            for (writer, task) in (1..).zip(tasks) {
                match tokio::time::timeout(WAIT, task).await {
                    Ok(Ok(log)) => logs.push(log),
                    Ok(Err(error)) => panic!("writer {writer}: {error}"),
                    Err(_) => panic!("writer {writer} did not stop within {WAIT:?}"),
                }
            }
            logs
        });
        self.rounds.extend(self.reports.try_iter());
        logs
    }

    /// Stops the writers and checks what they did: every writer went on to the end (unless
    /// `errors_allowed`, when every node died at once), no object id was handed out twice
    /// (and each writer got them in increasing order), a commit begun after another returned
    /// has a later TID, and the bank invariant: through `checker`, every transfer a writer was
    /// told committed is visible, no other one, and the sum is unchanged (when a writer
    /// stopped on an error, its last transfer is of unknown outcome: then the sum only).
    /// Returns every commit and the accounts.
    fn stop_and_check(
        mut self,
        errors_allowed: bool,
        checker: impl std::future::Future<Output = ClientHandle>,
    ) -> (Vec<Commit>, Vec<Oid>) {
        let logs = self.stop_and_join();
        let errors: Vec<String> = logs.iter().filter_map(|log| log.error.clone()).collect();
        assert!(
            errors_allowed || errors.is_empty(),
            "the writers saw retries, not errors: {errors:?}"
        );
        let mut handed_out: BTreeSet<Oid> = self.accounts.iter().copied().collect();
        let mut commits = Vec::new();
        for (writer, log) in (1..).zip(&logs) {
            assert!(!log.commits.is_empty(), "writer {writer} committed");
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
        if !errors.is_empty() {
            println!("writers stopped by an error: {errors:?}");
        }
        let accounts = self.accounts.clone();
        self.runtime.block_on(async {
            for log in logs {
                // A writer that stopped on an error may not close cleanly.
                let closed = log.client.close().await;
                assert!(errors_allowed || closed.is_ok(), "close a writer");
            }
            let mut checker = checker.await;
            let expected = transfers::INITIAL_BALANCE * accounts.len() as i64;
            if errors.is_empty() {
                let sum = transfers::check(&mut checker, &accounts, &commits)
                    .await
                    .expect("every committed transfer is visible, no aborted one, the sum kept");
                assert_eq!(sum, expected);
            } else {
                let mut sum = 0;
                for oid in &accounts {
                    let (_, data) = checker
                        .load(*oid)
                        .await
                        .expect("load an account")
                        .unwrap_or_else(|| panic!("account {oid} exists"));
                    sum += transfers::balance(*oid, &data).expect("a balance");
                }
                assert_eq!(sum, expected, "the sum of the balances is unchanged");
            }
            checker.close().await.expect("close the checker");
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

/// Three masters and three storages with a `[multicast]` group; every node's standard error
/// in a file (checked for panics at the end), and a certificate for the checking client.
fn start_cluster(group: SocketAddr) -> LocalCluster {
    let mut spec = ClusterSpec {
        storage_sections: multicast_section(group),
        stderr_to_files: true,
        ..ClusterSpec::three_masters()
    };
    // The checker reads as a client does: its certificate grants `client`.
    spec.extra_names.push(format!("{CHECKER}=client"));
    LocalCluster::start(&spec)
}

/// The client that checks the accounts at the end.
fn checker(
    cluster: &LocalCluster,
    group: SocketAddr,
) -> impl std::future::Future<Output = ClientHandle> + 'static {
    let certs = cluster.root().join("certs");
    let masters = cluster.master_addresses.clone();
    async move { connect_masters(&certs, CHECKER, &masters, Strategy::Unicast, group).await }
}

fn primary_killed_again_and_again(strategy: Strategy, seed: u64) {
    let group = random_group();
    let mut cluster = start_cluster(group);
    let status = cluster.client_config("client-4", "");
    let mut writers = Writers::start(&cluster, strategy, group);
    let mut rng = SplitMix64::new(seed);
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
    let (commits, accounts) = writers.stop_and_check(false, checker(&cluster, group));
    report(strategy, failovers);
    let table = wait_for_table(&status, "every cell up to date", all_up_to_date);
    cluster.assert_no_panic();
    stop_and_compare(cluster, &table, &commits, &accounts);
}

/// SIGSTOP of the primary under load: another master takes over and commits go on; SIGCONT:
/// the old primary hears of the later term and steps down (it prints `role follower TERM`
/// with a later term) instead of serving or deciding with its own; what it said after being
/// deposed took no effect (the writers' checks and the replicas' histories).
#[test]
fn a_paused_primary_comes_back_deposed() {
    let group = random_group();
    let mut cluster = start_cluster(group);
    let status = cluster.client_config("client-4", "");
    let mut writers = Writers::start(&cluster, Strategy::Unicast, group);
    writers.commit_begun_after(Instant::now(), "before the pause");
    let (old, old_term) = {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = primary_and_term(&status) {
                break found;
            }
            assert!(Instant::now() < deadline, "no primary within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    cluster.master_process(&old).signal("-STOP");
    let (new, new_term) = other_primary(&status, &old);
    assert!(
        new_term > old_term,
        "{new} is the primary of term {new_term}, after {old}'s {old_term}"
    );
    writers.commit_begun_after(Instant::now(), &format!("with {old} paused"));
    cluster.master_process(&old).signal("-CONT");
    let term =
        cluster
            .master_process(&old)
            .wait_for("`role follower TERM` of a later term", |line| {
                line.strip_prefix("role follower ")
                    .and_then(|term| term.parse::<u64>().ok())
                    .filter(|term| *term > old_term)
            });
    println!("{old} (primary of term {old_term}) came back a follower of term {term}");
    // Orders it sent late, if any, were refused; the storages and clients say so.
    // Commits go on with the old primary back, several rounds.
    for round in 0..3 {
        writers.commit_begun_after(Instant::now(), &format!("after {old} came back ({round})"));
    }
    let (commits, accounts) = writers.stop_and_check(false, checker(&cluster, group));
    let table = wait_for_table(&status, "every cell up to date", all_up_to_date);
    cluster.assert_no_panic();
    let refusals: usize = cluster
        .storages
        .keys()
        .map(|name| cluster.stderr(name).matches("order refused").count())
        .sum();
    println!("late orders of {old} the storages refused: {refusals}");
    stop_and_compare(cluster, &table, &commits, &accounts);
}

/// Every node SIGKILLed at once under load, then all started again: the cluster runs again
/// without an operator (new transfers commit), nothing a writer was told committed is lost
/// (the sum kept, every commit's revisions on every replica, the same history on each), no
/// object id handed out twice, TIDs in real-time order across the restart.
#[test]
fn every_node_killed_at_once_loses_nothing_committed() {
    let group = random_group();
    let mut cluster = start_cluster(group);
    let status = cluster.client_config("client-4", "");
    let mut writers = Writers::start(&cluster, Strategy::Unicast, group);
    for round in 0..3 {
        writers.commit_begun_after(Instant::now(), &format!("before the kill ({round})"));
    }
    let masters = cluster.master_names();
    let storages: Vec<String> = cluster.storages.keys().cloned().collect();
    // Every signal first, then the waits: the nodes die together.
    for name in &masters {
        cluster.master_process(name).signal("-KILL");
    }
    for name in &storages {
        cluster.storage(name).signal("-KILL");
    }
    for name in &masters {
        assert!(!cluster.master_process(name).wait_exit().success());
    }
    for name in &storages {
        assert!(!cluster.storage(name).wait_exit().success());
    }
    for name in &masters {
        cluster.restart_master(name);
    }
    for name in &storages {
        cluster.start_storage(name);
    }
    let (commits, accounts) = writers.stop_and_check(true, checker(&cluster, group));
    println!(
        "{} transfers committed before or across the restart of every node",
        commits.len()
    );
    // The cluster runs again: a new writer's transfers commit.
    let writer = cluster.client_config("client-1", "");
    let after = client(&writer, &["transfers", "--accounts", "4", "--count", "10"])
        .unwrap_or_else(|error| panic!("transfers after the restart: {error}"));
    assert!(after.starts_with("committed 10"), "{after}");
    let table = wait_for_table(&status, "every cell up to date", all_up_to_date);
    cluster.assert_no_panic();
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
