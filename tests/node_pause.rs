//! A storage that was frozen long enough for the master to count it lost comes back by itself:
//! one master and three storages as `replicast node` processes (P = 12, R = 2), two in-process
//! clients committing transfers all along. One storage is stopped with SIGSTOP until the master
//! runs without it, transfers go on, then it resumes with SIGCONT. The storage must notice that
//! its master link was lost while it slept (even when a new connection already replaced the
//! old one), announce itself again, run and catch up; at the end every partition's replicas
//! hold the same history.

use std::time::Instant;

use replicast_testkit::process::replicas::{
    Writers, all_up_to_date, out_of_date, settle, stop_and_compare, wait_for_table,
};
use replicast_testkit::process::{ClusterSpec, LocalCluster};

const STORAGES: [&str; 3] = ["storage-1", "storage-2", "storage-3"];

#[test]
fn paused_storage_comes_back_and_catches_up() {
    let mut cluster = LocalCluster::start(&ClusterSpec::default());
    let status_config = cluster.client_config("client-4", "");
    let mut writers = Writers::start(&cluster);
    writers.wait_rounds(20, "before the pause");

    // Frozen, not dead: its sockets and connections stay open, it just stops answering.
    cluster.storage("storage-3").signal("-STOP");
    cluster
        .master_node
        .wait_running(&["storage-1", "storage-2"]);
    writers.wait_rounds(20, "while storage-3 is frozen");
    wait_for_table(
        &status_config,
        "storage-3 out of date",
        out_of_date("storage-3"),
    );

    // Resumed: its timers fire at once, its old connection is gone; it must announce itself.
    cluster.storage("storage-3").signal("-CONT");
    let at_resume = writers.total();
    let back = Instant::now();
    cluster.master_node.wait_running(&STORAGES);
    let table = wait_for_table(&status_config, "every cell up to date", all_up_to_date);
    eprintln!(
        "storage-3 resumed after {at_resume} commits, caught up {:?} later ({} commits meanwhile)",
        back.elapsed(),
        writers.total() - at_resume
    );
    writers.wait_rounds(10, "after the catch-up");
    let (commits, accounts) = writers.stop_and_check();
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
