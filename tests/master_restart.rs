//! A master's crash is a non-event: the four ways a master restart lost or hid committed data
//! when its state lived in memory, each as a process test with one master (restarted) and with
//! three (the primary SIGKILLed, the others go on).
//!
//! 1. Stale copies: storage-3 is down while objects are written; the master is SIGKILLed and
//!    comes back (or another takes over); storage-3's cells must still be out of date, catch
//!    up by replication, and every object read back as written.
//! 2. Object ids and TIDs: after the master's crash, new accounts get new object ids and new
//!    commits later TIDs.
//! 3. The partition table: a storage added by an operator is still in the table after every
//!    node stopped and started again.
//! 4. Transfers running across the SIGKILL of the (primary) master finish, with retries, not
//!    errors.

use std::process::{Command, Stdio};

use replicast_testkit::process::replicas::{all_up_to_date, out_of_date, wait_for_table};
use replicast_testkit::process::{
    self as support, ClusterSpec, LocalCluster, binary, client, get, put, put_retrying, replicast,
};

/// SIGKILLs the primary; with one master, starts it again. Returns the master killed.
fn crash_primary(cluster: &mut LocalCluster) -> String {
    let primary = cluster.wait_primary();
    cluster.master_process(&primary).kill();
    if cluster.master_names().len() == 1 {
        cluster.restart_master(&primary);
    }
    primary
}

fn status_json(config: &std::path::Path) -> serde_json::Value {
    let outcome = support::output(
        Command::new(binary())
            .args(["status", "--json", "--config"])
            .arg(config),
        "replicast status",
    );
    serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|error| panic!("status is JSON ({error}): {}", outcome.stderr))
}

fn stale_copies_are_never_served(spec: ClusterSpec) {
    let mut cluster = LocalCluster::start(&spec);
    let writer = cluster.client_config("client-1", "");
    let status = cluster.client_config("client-4", "");
    cluster.storage("storage-3").kill();
    wait_for_table(&status, "storage-3 out of date", out_of_date("storage-3"));
    let tids: Vec<String> = (1..=12).map(|oid| put(&writer, oid, "v1")).collect();

    let killed = crash_primary(&mut cluster);
    cluster.start_storage("storage-3");
    // The out-of-date cells were in the log: they are not served before replication filled
    // them, then every cell is up to date again.
    wait_for_table(&status, "every cell up to date", all_up_to_date);
    let mut latest = Vec::new();
    for (oid, tid) in (1..=12).zip(&tids) {
        let read = get(&writer, oid);
        assert_eq!(read, (tid.clone(), "v1".to_owned()), "object {oid}");
        latest.push(put_retrying(&writer, oid, "v2"));
    }
    let last = u64::from_str_radix(
        status_json(&status)["last_tid"].as_str().expect("last_tid"),
        16,
    )
    .expect("hex");
    let max_put = tids
        .iter()
        .map(|tid| u64::from_str_radix(tid, 16).expect("hex"))
        .max()
        .expect("12 puts");
    assert!(
        last > max_put,
        "the last TID {last:x} is after the first puts"
    );
    if cluster.master_names().len() > 1 {
        // The killed master comes back as a follower and catches up.
        cluster.restart_master(&killed);
    }
    // storage-3 holds the objects of its partitions as committed: its stale copies were
    // replaced by replication, not taken for up to date.
    let table = wait_for_table(&status, "every cell up to date", all_up_to_date);
    cluster.storage("storage-3").stop();
    let store = replicast_node::engine::Engine::open(cluster.database("storage-3"))
        .expect("open storage-3's store");
    let partitions = table.len() as u64;
    let mut held = 0;
    for (oid, tid) in (1..=12u64).zip(&latest) {
        let cells = &table[(oid % partitions) as usize];
        if cells.iter().any(|(storage, _)| storage == "storage-3") {
            let revision = store
                .load(replicast_node::ids::Oid(oid))
                .expect("load")
                .unwrap_or_else(|| panic!("storage-3 holds object {oid}"));
            assert_eq!(
                format!("{:016x}", revision.tid.0),
                *tid,
                "object {oid} on storage-3"
            );
            held += 1;
        }
    }
    assert!(held > 0, "storage-3 holds some of the objects");
    drop(store);
    cluster.stop();
}

fn object_ids_and_tids_never_go_back(spec: ClusterSpec) {
    let mut cluster = LocalCluster::start(&spec);
    let writer = cluster.client_config("client-1", "");
    let first = client(&writer, &["transfers", "--accounts", "4", "--count", "5"])
        .unwrap_or_else(|error| panic!("transfers before the crash: {error}"));
    assert!(first.starts_with("committed 5"), "{first}");
    let before = put(&writer, 1000, "before");
    crash_primary(&mut cluster);
    // New accounts get new ids: a reused id would conflict with its committed revision.
    let second = client(
        &writer,
        &[
            "transfers",
            "--accounts",
            "4",
            "--count",
            "5",
            "--seed",
            "2",
        ],
    )
    .unwrap_or_else(|error| panic!("transfers after the crash: {error}"));
    assert!(second.starts_with("committed 5"), "{second}");
    let after = put_retrying(&writer, 1000, "after");
    assert!(after > before, "TIDs never go back: {after} after {before}");
    cluster.stop();
}

fn a_table_change_survives_a_restart_of_every_node(spec: ClusterSpec) {
    let spec = ClusterSpec {
        spare_storages: vec!["storage-4".into()],
        ..spec
    };
    let mut cluster = LocalCluster::start(&spec);
    let writer = cluster.client_config("client-1", "");
    // The operator: only an admin's certificate may change the storage set.
    let status = cluster.admin_config();
    let tid = put(&writer, 7, "kept");
    cluster.start_storage("storage-4");
    let config = status.to_string_lossy().to_string();
    // The storage connects to the primary first; until then it is not there to add.
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        match replicast(&["admin", "--config", &config, "add-storage", "storage-4"]) {
            Ok(line) => {
                assert!(line.starts_with("added storage-4"), "{line}");
                break;
            }
            Err(error) => assert!(
                std::time::Instant::now() < deadline,
                "add-storage storage-4: {error}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let table = wait_for_table(&status, "storage-4's cells up to date", |table| {
        all_up_to_date(table)
            && table
                .iter()
                .flatten()
                .any(|(storage, _)| storage == "storage-4")
    });
    let version = status_json(&status)["partition_table"]["version"].clone();

    // Every node stops cleanly, then starts again.
    cluster.restart_every_node();
    let after = wait_for_table(&status, "the same table", |after| after == table.as_slice());
    assert_eq!(after, table);
    // Not the configuration's table (version 1 without storage-4): the log's, changed since
    // (the storages that stopped went out of date and caught up again).
    let version_after = status_json(&status)["partition_table"]["version"]
        .as_u64()
        .expect("a version");
    assert!(
        version_after >= version.as_u64().expect("a version"),
        "table version {version_after} after {version}"
    );
    assert_eq!(get(&writer, 7), (tid, "kept".to_owned()));
    cluster.stop();
}

fn transfers_go_on_across_the_crash(spec: ClusterSpec) {
    let mut cluster = LocalCluster::start(&spec);
    let writer = cluster.client_config("client-1", "");
    let status = cluster.client_config("client-4", "");
    let transfers = Command::new(binary())
        .args(["client", "--timeout", "30", "--config"])
        .arg(&writer)
        .args(["transfers", "--accounts", "6", "--count", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the transfers");
    // Once commits flow (the last TID moves), the primary dies.
    let deadline = std::time::Instant::now() + support::WAIT;
    while status_json(&status)["last_tid"] == "0000000000000000" {
        assert!(std::time::Instant::now() < deadline, "no commit");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    crash_primary(&mut cluster);
    let output = transfers.wait_with_output().expect("the transfers end");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the transfers went on across the crash: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("committed 60"), "{stdout}");
    cluster.stop();
}

#[test]
fn one_master_stale_copies_are_never_served() {
    stale_copies_are_never_served(ClusterSpec::default());
}

#[test]
fn three_masters_stale_copies_are_never_served() {
    stale_copies_are_never_served(ClusterSpec::three_masters());
}

#[test]
fn one_master_object_ids_and_tids_never_go_back() {
    object_ids_and_tids_never_go_back(ClusterSpec::default());
}

#[test]
fn three_masters_object_ids_and_tids_never_go_back() {
    object_ids_and_tids_never_go_back(ClusterSpec::three_masters());
}

#[test]
fn one_master_table_change_survives_a_restart_of_every_node() {
    a_table_change_survives_a_restart_of_every_node(ClusterSpec::default());
}

#[test]
fn three_masters_table_change_survives_a_restart_of_every_node() {
    a_table_change_survives_a_restart_of_every_node(ClusterSpec::three_masters());
}

#[test]
fn one_master_transfers_go_on_across_its_crash() {
    transfers_go_on_across_the_crash(ClusterSpec::default());
}

#[test]
fn three_masters_transfers_go_on_across_the_primarys_crash() {
    transfers_go_on_across_the_crash(ClusterSpec::three_masters());
}
