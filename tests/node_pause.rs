//! A storage frozen with SIGSTOP while transfers run, once per fan-out strategy: one master and
//! three storages as `replicast node` processes (P = 12, R = 2, the storages joining writers'
//! groups on 127.0.0.1), two in-process clients committing transfers all along. One storage is
//! stopped with SIGSTOP until the master runs without it and `replicast status` shows its cells
//! out of date; transfers go on (at least [`WHILE_FROZEN`] of them, counted by their TIDs, are
//! decided while it is stopped), then it resumes with SIGCONT. The storage must notice that its
//! master link was lost while it slept (even when a new connection already replaced the old
//! one), announce itself again, run and catch up; at the end the bank invariant holds and every
//! partition's replicas hold the same history.
//!
//! The gaps between commits and the commits per second before, during and after the freeze are
//! printed for the record (`cargo nextest run -p replicast --test node_pause --no-capture`);
//! nothing is asserted on time.

use std::time::{Instant, SystemTime};

use replicast_node::ids::Tid;
use replicast_testkit::process::replicas::{
    Writers, all_up_to_date, out_of_date, settle, stop_and_compare, wait_for_table,
};
use replicast_testkit::process::{
    ClusterSpec, LocalCluster, multicast_section, random_group, strategy_name,
};
use replicast_testkit::workload::gaps::CommitGaps;
use replicast_transport::fanout::Strategy;

const STORAGES: [&str; 3] = ["storage-1", "storage-2", "storage-3"];
/// Transfers that must be decided while storage-3 is stopped.
const WHILE_FROZEN: usize = 30;
/// Transfers of the two writers that may be under way when a phase starts (decided before it,
/// reported after it).
const IN_FLIGHT: usize = 2;

/// One line on the commits whose TIDs lie in `[from, to)`: how many, per second (between the
/// first and the last of them) and their gaps, the gap from the last commit before `from` to
/// the first in the phase included (a stall that starts the phase belongs to it).
fn phase(what: &str, tids: &[Tid], from: SystemTime, to: SystemTime) -> (usize, String) {
    let mut sorted = tids.to_vec();
    sorted.sort_unstable();
    let inside: Vec<Tid> = sorted
        .iter()
        .copied()
        .filter(|tid| (from..to).contains(&tid.system_time()))
        .collect();
    let previous = sorted.iter().copied().rfind(|tid| tid.system_time() < from);
    let gaps = CommitGaps::of(previous.into_iter().chain(inside.iter().copied()));
    let span = match (inside.first(), inside.last()) {
        (Some(first), Some(last)) => last
            .system_time()
            .duration_since(first.system_time())
            .unwrap_or_default(),
        _ => Default::default(),
    };
    let rate = if span.is_zero() {
        0.0
    } else {
        inside.len().saturating_sub(1) as f64 / span.as_secs_f64()
    };
    (
        inside.len(),
        format!(
            "{what}: {} commits in {span:.1?}, {rate:.1} commits/s, {}",
            inside.len(),
            gaps.summary()
        ),
    )
}

fn paused_storage_comes_back_and_catches_up(strategy: Strategy) {
    let name = strategy_name(strategy);
    let group = random_group();
    let mut cluster = LocalCluster::start(&ClusterSpec {
        storage_sections: multicast_section(group),
        // A failure prints the ends of the nodes' logs: replication's rounds and failures.
        stderr_to_files: true,
        ..ClusterSpec::default()
    });
    let status_config = cluster.client_config("client-4", "");
    let mut writers = Writers::start_with(&cluster, strategy, group);
    writers.wait_rounds(20, "before the pause");

    // Frozen, not dead: its sockets and connections stay open, it just stops answering.
    let frozen = SystemTime::now();
    cluster.storage("storage-3").signal("-STOP");
    // Reported failed: the master runs without it, its cells are out of date.
    cluster
        .master_node
        .wait_running(&["storage-1", "storage-2"]);
    wait_for_table(
        &status_config,
        "storage-3 out of date",
        out_of_date("storage-3"),
    );
    writers.wait_rounds(WHILE_FROZEN + IN_FLIGHT, "while storage-3 is frozen");

    // Resumed: its timers fire at once, its old connection is gone; it must announce itself.
    let resumed = SystemTime::now();
    cluster.storage("storage-3").signal("-CONT");
    let at_resume = writers.total();
    let back = Instant::now();
    cluster.master_node.wait_running(&STORAGES);
    let table = wait_for_table(&status_config, "every cell up to date", all_up_to_date);
    eprintln!(
        "{name}: storage-3 resumed after {at_resume} commits, caught up {:?} later ({} commits \
         meanwhile)",
        back.elapsed(),
        writers.total() - at_resume
    );
    writers.wait_rounds(20, "after the catch-up");
    let (commits, accounts) = writers.stop_and_check();
    let ended = SystemTime::now();

    let tids: Vec<Tid> = commits.iter().map(|commit| commit.tid).collect();
    let (_, before) = phase("before the freeze", &tids, SystemTime::UNIX_EPOCH, frozen);
    let (while_frozen, during) = phase("storage-3 frozen", &tids, frozen, resumed);
    let (_, after) = phase("after SIGCONT", &tids, resumed, ended);
    eprintln!(
        "{name}: {before}\n{name}: {during}\n{name}: {after}\n{name}: whole run: {} commits, {}",
        tids.len(),
        CommitGaps::of(tids.iter().copied()).summary()
    );
    assert!(
        while_frozen >= WHILE_FROZEN,
        "{name}: commits go on while storage-3 is stopped: {while_frozen} decided then, at \
         least {WHILE_FROZEN} expected"
    );

    let table = settle(&status_config, &table);
    assert_eq!(
        table
            .iter()
            .flatten()
            .filter(|(storage, _)| storage == "storage-3")
            .count(),
        8,
        "storage-3 holds its 8 cells again"
    );
    stop_and_compare(cluster, &table, &commits, &accounts);
}

#[test]
fn paused_storage_comes_back_and_catches_up_with_unicast_stores() {
    paused_storage_comes_back_and_catches_up(Strategy::Unicast);
}

#[test]
fn paused_storage_comes_back_and_catches_up_with_multicast_stores() {
    paused_storage_comes_back_and_catches_up(Strategy::Multicast);
}

#[test]
fn paused_storage_comes_back_and_catches_up_with_auto_stores() {
    paused_storage_comes_back_and_catches_up(Strategy::Auto);
}
