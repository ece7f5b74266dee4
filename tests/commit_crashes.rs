//! Crashes at the three exact points of a commit where a process dies holding something the
//! others need (issue 15's list), each with `replicast node` processes (P = 12, R = 2, three
//! storages) killed with SIGKILL:
//!
//! 1. The writer, between its stores (answered: its objects locked on their storages) and its
//!    vote. The writer is this test binary, re-run as a process of its own. The cluster aborts
//!    its transaction (the master's log says so), another writer then commits on the same
//!    objects within [`MAX_ATTEMPTS`] attempts (the locks were released), and no replica ever
//!    holds what the dead writer stored.
//! 2. A storage, between its vote and learning the decision. The commit is decided all the
//!    same and read from the other replica; the storage restarts with the voted transaction on
//!    disk, learns the outcome from the master, commits it at the decided TID (its log says
//!    so: without that check, replication would repair a storage that dropped it, unseen), and
//!    ends with its peer's history.
//! 3. The primary of three masters, between putting a commit decision in its log and sending
//!    the first finish to a storage: a crash point (`replicast_node::crash_point`, in the test
//!    build only) stops it exactly there, and the test SIGKILLs it. The next primary finishes
//!    the transaction on the storages (its log says every voter acknowledged it); if the
//!    writer was told it committed, it is readable everywhere, and whatever the writer was
//!    told, both accounts agree on one outcome.
//!
//! Each ends with the checks of the other process tests: the bank invariant (every transfer
//! the writer was told committed is visible, no other, the sum kept), every partition's
//! replicas holding the same history, and no node panicked; and with two of its own: the
//! replicas hold exactly the revisions of the accounts' creation and of the commits (nothing of
//! a transaction that did not commit), and no storage holds a transaction still pending.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use replicast_node::client::ClientConfig;
use replicast_node::config::NodeConfig;
use replicast_node::crash_point;
use replicast_node::driver::{ClientHandle, connect_from_config};
use replicast_node::engine::Engine;
use replicast_node::ids::{Oid, Tid};
use replicast_node::master::MasterEvent;
use replicast_node::storage::StorageEvent;
use replicast_node::transaction::TransactionInfo;
use replicast_testkit::process::masters::other_primary;
use replicast_testkit::process::replicas::{
    Table, all_up_to_date, compare_replicas, wait_for_table,
};
use replicast_testkit::process::{
    ClusterSpec, LocalCluster, NodeProcess, WAIT, connect_masters, random_group,
};
use replicast_testkit::workload::transfers::{self, Commit, balance, balance_data};
use replicast_transport::fanout::Strategy;

/// The accounts: with consecutive object ids, one per partition.
const ACCOUNTS: u32 = 12;
/// What the writer that dies adds to each balance it stores: a sum that shows it if visible.
const POISON: i64 = 1_000_000;
/// The most attempts another writer needs to commit on the dead writer's objects: its first
/// waits for their locks until the cluster notices the writer is gone (its links' idle
/// timeout, 2 s), far within a client's storage timeout (10 s); a lock held until the
/// storages' own idle timeout (30 s) costs three.
const MAX_ATTEMPTS: u64 = 2;
/// The variables that make this test binary the writer of test 1: its client configuration,
/// and the two accounts (object ids, comma-separated).
const WRITER_CONFIG: &str = "REPLICAST_DOOMED_WRITER_CONFIG";
const WRITER_ACCOUNTS: &str = "REPLICAST_DOOMED_WRITER_ACCOUNTS";
/// The line the writer prints once its stores are answered: `stored TTID`.
const STORED: &str = "stored ";

/// A cluster whose nodes' standard error goes to files (checked for panics at the end).
fn start(spec: ClusterSpec) -> LocalCluster {
    LocalCluster::start(&ClusterSpec {
        stderr_to_files: true,
        ..spec
    })
}

/// A tokio runtime for the test's in-process clients.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Client `name` of `cluster` (in-process), storing over its QUIC links; it follows the
/// primary.
async fn connect(cluster: &LocalCluster, name: &str) -> ClientHandle {
    let certs = cluster.root().join("certs");
    let masters = &cluster.master_addresses;
    connect_masters(&certs, name, masters, Strategy::Unicast, random_group()).await
}

/// The accounts, created in one transaction, and its TID.
async fn create_accounts(client: &mut ClientHandle) -> (Vec<Oid>, Tid) {
    let accounts = transfers::create_accounts(client, ACCOUNTS)
        .await
        .expect("create the accounts");
    let (created, _) = client
        .load(accounts[0])
        .await
        .expect("load an account")
        .expect("the account exists");
    (accounts, created)
}

/// Begins a transaction on `client` that changes each account of `deltas` by its delta plus
/// `extra`, loads and stores them; returns its TTID once every store is answered (the objects
/// are locked on their storages; nothing is voted).
async fn store_transfer(client: &ClientHandle, deltas: &[(Oid, i64)], extra: i64) -> Tid {
    let ttid = client.begin().await.expect("begin");
    for (oid, delta) in deltas {
        let (serial, data) = client
            .load(*oid)
            .await
            .expect("load an account")
            .unwrap_or_else(|| panic!("account {oid} exists"));
        let value = balance(*oid, &data).expect("a balance") + delta + extra;
        client
            .store(*oid, serial, balance_data(value))
            .await
            .expect("store an account");
    }
    let conflicts = client.wait_stores().await.expect("the stores are answered");
    assert!(conflicts.is_empty(), "no conflict: {conflicts:?}");
    ttid
}

/// A transfer of 5 from the first account to the second.
fn deltas(pair: [Oid; 2]) -> Vec<(Oid, i64)> {
    vec![(pair[0], -5), (pair[1], 5)]
}

/// One transfer between the two accounts of `pair` by `client`, committed within
/// [`MAX_ATTEMPTS`] attempts (conflicts and aborts retried).
async fn transfer_on(client: &mut ClientHandle, pair: [Oid; 2], seed: u64) -> Commit {
    let run = transfers::run(client, &pair, 1, seed)
        .await
        .expect("a transfer on the same accounts commits");
    let attempts = 1 + run.conflicts + run.other_aborts;
    println!("a transfer on the same accounts committed in {attempts} attempts");
    assert!(
        attempts <= MAX_ATTEMPTS,
        "a transfer on the same accounts took {attempts} attempts: {}",
        run.summary()
    );
    run.commits[0].clone()
}

/// The bank invariant through `client`: every commit of `commits` is visible, no other, and
/// the sum is kept.
async fn check_accounts(client: &mut ClientHandle, accounts: &[Oid], commits: &[Commit]) {
    let sum = transfers::check(client, accounts, commits)
        .await
        .expect("every committed transfer is visible, no other, the sum kept");
    assert_eq!(sum, transfers::INITIAL_BALANCE * i64::from(ACCOUNTS));
}

/// The end of every test: no node panicked; once every node stopped, every partition's
/// replicas hold the same history, and it is exactly the accounts' creation (at `created`) and
/// `commits`, with no transaction left pending on any storage.
fn stop_and_check(
    mut cluster: LocalCluster,
    table: &Table,
    accounts: &[Oid],
    created: Tid,
    commits: &[Commit],
) {
    cluster.assert_no_panic();
    cluster.stop_running();
    let histories = compare_replicas(&cluster, table, accounts);
    let held: BTreeSet<(Oid, Tid)> = histories
        .iter()
        .flatten()
        .map(|(oid, tid, _)| (*oid, *tid))
        .collect();
    let expected: BTreeSet<(Oid, Tid)> = accounts
        .iter()
        .map(|oid| (*oid, created))
        .chain(
            commits
                .iter()
                .flat_map(|commit| commit.deltas.iter().map(|(oid, _)| (*oid, commit.tid))),
        )
        .collect();
    assert_eq!(
        held, expected,
        "the replicas hold the creation and the commits, nothing else"
    );
    for name in cluster.storages.keys() {
        let store = Engine::open(cluster.database(name))
            .unwrap_or_else(|error| panic!("open {name}'s store: {error}"));
        let pending = store.pending_transactions().expect("pending transactions");
        assert!(
            pending.is_empty(),
            "{name} holds pending transactions: {pending:?}"
        );
    }
}

/// The writer of test 1, in a process of its own: begins a transfer on the two accounts,
/// stores them with [`POISON`] added, says so once the stores are answered, and waits to be
/// killed (it gives up after [`WAIT`], so that it never outlives a test that died).
fn run_doomed_writer(config: &Path) {
    let accounts: Vec<Oid> = std::env::var(WRITER_ACCOUNTS)
        .expect("the accounts")
        .split(',')
        .map(|oid| Oid(oid.parse().expect("an object id")))
        .collect();
    let config = NodeConfig::load(config).expect("the writer's configuration");
    runtime().block_on(async {
        let (client, _endpoint) = connect_from_config(&config, ClientConfig::default(), WAIT)
            .await
            .expect("the writer connects");
        let pair = [accounts[0], accounts[1]];
        let ttid = store_transfer(&client, &deltas(pair), POISON).await;
        println!("{STORED}{}", ttid.0);
        tokio::time::sleep(WAIT).await;
    });
    panic!("the writer was not killed within {WAIT:?}");
}

#[test]
fn a_writer_killed_between_its_stores_and_its_vote_is_aborted_and_its_locks_released() {
    if let Some(config) = std::env::var_os(WRITER_CONFIG) {
        // This process is the writer that the test below kills.
        return run_doomed_writer(Path::new(&config));
    }
    let cluster = start(ClusterSpec {
        // The test reads in the master's log that it aborted the dead writer's transaction.
        log_filter: Some(ROLE_EVENTS_LOGGED.to_owned()),
        ..ClusterSpec::default()
    });
    let status = cluster.client_config("client-4", "");
    let writer_config = cluster.client_config("client-3", "");
    let runtime = runtime();
    let mut client = runtime.block_on(connect(&cluster, "client-1"));
    let (accounts, created) = runtime.block_on(create_accounts(&mut client));
    let pair = [accounts[0], accounts[1]];

    // A child process whose output is read line by line, killed on drop, as a node's is.
    let mut writer = NodeProcess::start_command(
        "doomed writer",
        Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "a_writer_killed_between_its_stores_and_its_vote_is_aborted_and_its_locks_released",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_CONFIG, &writer_config)
            .env(WRITER_ACCOUNTS, format!("{},{}", pair[0].0, pair[1].0)),
    );
    // At the end of a line: libtest prints `test NAME ... ` before the test's first output.
    let ttid = writer.wait_for("its stores answered", |line| {
        line.rsplit_once(STORED)
            .map(|(_, ttid)| Tid(ttid.parse().expect("a TTID")))
    });
    writer.kill();
    println!("the writer was killed holding the locks of {ttid:?}");
    let master = cluster.master_node.name.clone();
    wait_for_event(&cluster, &master, 0, &MasterEvent::Aborted { ttid });

    let commit = runtime.block_on(transfer_on(&mut client, pair, 1));
    let commits = vec![commit];
    runtime.block_on(async {
        check_accounts(&mut client, &accounts, &commits).await;
        client.close().await.expect("close the client");
    });
    let table = wait_for_table(&status, "every cell up to date", all_up_to_date);
    stop_and_check(cluster, &table, &accounts, created, &commits);
}

/// The nodes' log filter of the tests: the harness's, with the role events (one per
/// transaction) at debug, so that a test reads in a node's log that it committed or aborted a
/// transaction.
const ROLE_EVENTS_LOGGED: &str = "warn,replicast_node::consensus=info,\
    replicast_node::driver=info,replicast::cli::node=debug";

/// Polls node `name`'s standard error past byte `from` (bounded by [`WAIT`]) until it logged
/// `event` (a role event, as its `Debug` shows it).
fn wait_for_event(cluster: &LocalCluster, name: &str, from: usize, event: &dyn std::fmt::Debug) {
    let wanted = format!("{event:?}");
    let deadline = Instant::now() + WAIT;
    loop {
        let stderr = cluster.stderr(name);
        if stderr
            .get(from..)
            .is_some_and(|after| after.contains(&wanted))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not log {wanted} within {WAIT:?}"
        );
        // A pause between two looks at the log, not a synchronization: the log decides.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_storage_killed_between_its_vote_and_the_decision_learns_the_commit_at_restart() {
    const VICTIM: &str = "storage-2";
    let mut cluster = start(ClusterSpec {
        // The test reads in the victim's log that it committed the transaction it found
        // voted at its restart.
        log_filter: Some(ROLE_EVENTS_LOGGED.to_owned()),
        ..ClusterSpec::default()
    });
    let status = cluster.client_config("client-4", "");
    let runtime = runtime();
    let mut client = runtime.block_on(connect(&cluster, "client-1"));
    let (accounts, created) = runtime.block_on(create_accounts(&mut client));
    // Two accounts the victim holds a replica of: it votes for both.
    let table = runtime
        .block_on(client.partition_table())
        .expect("the partition table")
        .expect("a partition table");
    let held: Vec<Oid> = accounts
        .iter()
        .copied()
        .filter(|oid| table.readable_cells(*oid).any(|cell| cell.node == VICTIM))
        .collect();
    let pair = [held[0], held[1]];

    let ttid = runtime.block_on(async {
        let ttid = store_transfer(&client, &deltas(pair), 0).await;
        client
            .vote(TransactionInfo::default())
            .await
            .expect("every replica votes");
        ttid
    });
    cluster.storage(VICTIM).kill();
    // It voted and heard nothing since: the transaction waits on its disk.
    {
        let store = Engine::open(cluster.database(VICTIM)).expect("open the victim's store");
        let pending = store.pending_transactions().expect("pending transactions");
        assert!(
            pending
                .iter()
                .any(|txn| txn.ttid == ttid && txn.voted && txn.oids.len() == 2),
            "{VICTIM} holds {ttid:?} voted: {pending:?}"
        );
    }
    let tid = runtime
        .block_on(client.finish())
        .expect("the commit is decided without the killed voter");
    for oid in pair {
        let (found, replica) = runtime
            .block_on(client.load_with_replica(oid))
            .expect("load from the other replica");
        assert_ne!(replica, VICTIM, "{oid} is read from a live replica");
        assert_eq!(
            found.map(|(serial, _)| serial),
            Some(tid),
            "{oid} is read at the commit from {replica}"
        );
    }

    let log_from = cluster.stderr(VICTIM).len();
    cluster.start_storage(VICTIM);
    wait_for_event(
        &cluster,
        VICTIM,
        log_from,
        &StorageEvent::Committed { ttid, tid },
    );
    let commits = vec![Commit {
        tid,
        deltas: deltas(pair),
    }];
    let table = wait_for_table(&status, "every cell up to date", all_up_to_date);
    runtime.block_on(async {
        check_accounts(&mut client, &accounts, &commits).await;
        client.close().await.expect("close the client");
    });
    stop_and_check(cluster, &table, &accounts, created, &commits);
}

#[test]
fn a_primary_killed_between_deciding_and_telling_the_storages_is_finished_by_the_next() {
    let mut cluster = start(ClusterSpec {
        // The test reads in the next primary's log that it finished the transaction.
        log_filter: Some(ROLE_EVENTS_LOGGED.to_owned()),
        ..ClusterSpec::three_masters()
    });
    let status = cluster.client_config("client-4", "");
    let runtime = runtime();
    let mut client = runtime.block_on(connect(&cluster, "client-1"));
    let (accounts, created) = runtime.block_on(create_accounts(&mut client));
    let pair = [accounts[0], accounts[1]];
    let ttid = runtime.block_on(async {
        let ttid = store_transfer(&client, &deltas(pair), 0).await;
        client
            .vote(TransactionInfo::default())
            .await
            .expect("every replica votes");
        ttid
    });
    let primary = cluster.wait_primary();

    cluster.arm_crash_point(crash_point::PRIMARY_DECIDED);
    let finishing = {
        let client = client.clone();
        runtime.spawn(async move { (client.finish().await, Instant::now()) })
    };
    let stopped = cluster.wait_crash_point(crash_point::PRIMARY_DECIDED);
    assert_eq!(stopped, primary, "the primary decided the commit");
    cluster.master_process(&primary).kill();
    let killed = Instant::now();
    let (next, term) = other_primary(&status, &primary);
    println!("{primary} killed after deciding {ttid:?}; {next} took over in term {term}");

    let (told, returned) = runtime
        .block_on(async { tokio::time::timeout(WAIT, finishing).await })
        .unwrap_or_else(|_| panic!("the finish did not end within {WAIT:?}"))
        .expect("the finish task");
    // Before the kill: the primary's answer left before it stopped; after: the writer asked
    // the next primary.
    let when = if returned < killed {
        "before the kill".to_owned()
    } else {
        format!("{} ms after the kill", (returned - killed).as_millis())
    };
    let committed = match told {
        Ok(tid) => {
            println!("the writer was told {ttid:?} committed at {tid:?}, {when}");
            Some(tid)
        }
        Err(error) => {
            // Either outcome, as long as both accounts show the same one.
            println!("the writer was told nothing ({when}): {error}");
            runtime.block_on(client.abort()).expect("abort");
            let serials: Vec<Tid> = pair
                .iter()
                .map(|oid| {
                    runtime
                        .block_on(client.load(*oid))
                        .expect("load an account")
                        .map(|(serial, _)| serial)
                        .unwrap_or_else(|| panic!("account {oid} exists"))
                })
                .collect();
            assert_eq!(serials[0], serials[1], "both accounts show one outcome");
            (serials[0] != created).then_some(serials[0])
        }
    };
    if let Some(tid) = committed {
        // The next primary finished it: every voter acknowledged the commit.
        wait_for_event(&cluster, &next, 0, &MasterEvent::Committed { ttid, tid });
    }
    let mut commits: Vec<Commit> = committed
        .map(|tid| Commit {
            tid,
            deltas: deltas(pair),
        })
        .into_iter()
        .collect();
    // The voted transaction's locks are released on every storage: the same accounts commit.
    commits.push(runtime.block_on(transfer_on(&mut client, pair, 3)));

    cluster.restart_master(&primary);
    let table = wait_for_table(&status, "every cell up to date", all_up_to_date);
    runtime.block_on(async {
        check_accounts(&mut client, &accounts, &commits).await;
        client.close().await.expect("close the client");
    });
    stop_and_check(cluster, &table, &accounts, created, &commits);
}
