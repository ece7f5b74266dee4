//! A storage that misses writes catches up by replication while transfers go on: one master
//! and three storages as `replicast node` processes (P = 12, R = 2), two in-process clients
//! committing transfers all along. The storage is killed with SIGKILL and restarted. Once the
//! master reports every cell up to date (`replicast status --json`), the nodes stop with
//! SIGTERM and every storage's redb file is opened: each partition's cells hold exactly the
//! same history, every committed transfer is visible and the sum of the balances is unchanged.

use std::time::Instant;

use replicast_testkit::process::replicas::{
    Writers, all_up_to_date, out_of_date, settle, stop_and_compare, wait_for_table,
};
use replicast_testkit::process::{ClusterSpec, LocalCluster};

const STORAGES: [&str; 3] = ["storage-1", "storage-2", "storage-3"];

#[test]
fn killed_storage_catches_up_while_transfers_go_on_and_replicas_end_identical() {
    let mut cluster = LocalCluster::start(&ClusterSpec::default());
    let status_config = cluster.client_config("client-4", "");
    let mut writers = Writers::start(&cluster);
    writers.wait_rounds(20, "before the kill");

    // SIGKILL mid-run: the master notices, its cells go out of date, commits go on.
    cluster.storage("storage-3").kill();
    cluster
        .master_node
        .wait_running(&["storage-1", "storage-2"]);
    writers.wait_rounds(20, "while storage-3 is down");
    wait_for_table(
        &status_config,
        "storage-3 out of date",
        out_of_date("storage-3"),
    );

    // Back: it recovers its own file, then catches up while the writers go on.
    cluster.start_storage("storage-3");
    cluster.master_node.wait_running(&STORAGES);
    let at_restart = writers.total();
    let back = Instant::now();
    let table = wait_for_table(&status_config, "every cell up to date", all_up_to_date);
    eprintln!(
        "storage-3 restarted after {} commits, caught up {:?} later ({} commits meanwhile)",
        at_restart,
        back.elapsed(),
        writers.total() - at_restart
    );
    // Commits after the catch-up reach storage-3 live.
    writers.wait_rounds(10, "after the catch-up");
    assert!(
        writers.total() > at_restart,
        "transfers went on across the restart"
    );
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
