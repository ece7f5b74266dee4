//! A network partition of the master group, in network namespaces: three masters, three
//! storages (P = 12, R = 2) and two clients, each a host of its own on one bridge, every node a
//! separate `replicast node` process run with `ip netns exec`.
//!
//! Once transfers have committed, the primary and one storage (and a client beside them) are
//! cut off from the rest: blackhole routes on both sides drop every datagram between the two.
//! The majority side (two masters, two storages) elects a new primary and commits transfers
//! (every balance and the sum checked by the writer itself); the cut-off primary commits
//! nothing (the client beside it cannot commit, and what it tried is on no replica). After the
//! cut heals, there is one primary, every cell is up to date again, and every partition's
//! replicas hold one history.
//!
//! Needs root (CI runs as root); run as another user it fails, saying so, unless
//! `REPLICAST_SKIP_NETNS=1` is set.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use replicast_node::ids::Oid;
use replicast_testkit::netns::{self, Bridge, HostPlan, Plan, Topology};
use replicast_testkit::process::masters::{other_primary, primary_and_term};
use replicast_testkit::process::replicas::{
    all_up_to_date, cells, out_of_date, stop_and_compare_replicas, wait_for_table,
};
use replicast_testkit::process::{ClusterSpec, LocalCluster, Outcome, WAIT, binary, output};

/// The hosts: each node's name and the address of its `eth0`.
const HOSTS: [(&str, Ipv4Addr); 8] = [
    ("master-1", Ipv4Addr::new(10, 79, 0, 1)),
    ("master-2", Ipv4Addr::new(10, 79, 0, 2)),
    ("master-3", Ipv4Addr::new(10, 79, 0, 3)),
    ("storage-1", Ipv4Addr::new(10, 79, 0, 11)),
    ("storage-2", Ipv4Addr::new(10, 79, 0, 12)),
    ("storage-3", Ipv4Addr::new(10, 79, 0, 13)),
    ("client-1", Ipv4Addr::new(10, 79, 0, 21)),
    ("client-2", Ipv4Addr::new(10, 79, 0, 22)),
];
/// The storage cut off with the primary.
const CUT_STORAGE: &str = "storage-1";
/// The client cut off with the primary; it tries to commit there.
const CUT_CLIENT: &str = "client-2";
/// The objects the cut-off client writes start here (above the ids the masters hand out in a
/// run).
const CUT_OIDS: u64 = 7_777_777;
/// How long each `replicast client` command waits for the cluster.
const CLIENT_TIMEOUT: &str = "20";

#[test]
fn the_cut_off_primary_commits_nothing_and_the_majority_goes_on() {
    if !netns::available("the_cut_off_primary_commits_nothing_and_the_majority_goes_on") {
        return;
    }
    let plan = Plan {
        bridges: vec![Bridge {
            name: "br0".into(),
            snooping: false,
        }],
        router: Vec::new(),
        hosts: HOSTS
            .iter()
            .map(|(name, address)| HostPlan::new(name, "br0", *address))
            .collect(),
    };
    let topology = Arc::new(Topology::create("rcpart", &plan).expect("create the namespaces"));
    // The test itself (its `replicast status` and `client` commands) runs on client-1, on the
    // side that keeps the majority.
    topology
        .enter_host("client-1")
        .expect("enter client-1's namespace");
    let cluster = LocalCluster::start(&ClusterSpec {
        stderr_to_files: true,
        topology: Some(Arc::clone(&topology)),
        ..ClusterSpec::three_masters()
    });
    let operator = cluster.admin_config();
    let writer = cluster.client_config("client-1", "");
    let cut_writer = cluster.client_config(CUT_CLIENT, "");

    transfers(&writer, 1, "before the cut");
    // What the cut-off client tries to write lives in a partition the cut-off storage holds,
    // so that on its side everything but the masters' decision is there; the same client
    // writes beforehand, to show that only the cut stops it.
    let table = cells(&operator);
    let partitions = u64::try_from(table.len()).expect("a few partitions");
    let partition = table
        .iter()
        .position(|cells| cells.iter().any(|(storage, _)| storage == CUT_STORAGE))
        .expect("the cut-off storage holds a partition");
    let partition = u64::try_from(partition).expect("a few partitions");
    let cut_oid = (CUT_OIDS..)
        .find(|oid| oid % partitions == partition)
        .expect("an oid of that partition");
    let before = put_on(
        &topology,
        &cut_writer,
        cut_oid + partitions,
        "before-the-cut",
    );
    assert_eq!(
        before.code,
        Some(0),
        "{CUT_CLIENT} writes before the cut: {before:?}"
    );
    let old = cluster.wait_primary();
    let old_term = primary_and_term(&operator).map_or(0, |(_, term)| term);
    let cut_side = [old.as_str(), CUT_STORAGE, CUT_CLIENT];
    let rest: Vec<&str> = HOSTS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !cut_side.contains(name))
        .collect();
    topology.cut(&cut_side, &rest).expect("cut the network");

    // Beside the old primary, a commit cannot happen: it has no majority to decide with.
    let cut_attempt = std::thread::spawn({
        let topology = Arc::clone(&topology);
        let cut_writer = cut_writer.clone();
        move || {
            put_on(
                &topology,
                &cut_writer,
                cut_oid,
                "written-beside-the-old-primary",
            )
        }
    });

    // The majority elects a primary of a later term and commits on.
    let (new, new_term) = other_primary(&operator, &old);
    assert!(
        new_term > old_term,
        "{new} is primary in term {new_term}, after {old}'s {old_term}"
    );
    wait_for_table(
        &operator,
        "the cut-off storage's cells out of date",
        out_of_date(CUT_STORAGE),
    );
    transfers(&writer, 2, "during the cut");

    let attempt = cut_attempt.join().expect("the cut-off put ends");
    assert_ne!(
        attempt.code,
        Some(0),
        "a commit beside the cut-off primary failed: {attempt:?}"
    );

    topology.heal(&cut_side, &rest).expect("heal the network");
    wait_for_table(
        &operator,
        "every cell up to date after the heal",
        all_up_to_date,
    );
    wait_one_primary(&operator, 3);
    transfers(&writer, 3, "after the heal");
    let table = wait_for_table(
        &operator,
        "every cell up to date at the end",
        all_up_to_date,
    );

    let histories = stop_and_compare_replicas(cluster, &table, &[]);
    let written_beside = histories
        .iter()
        .flatten()
        .filter(|(oid, _, _)| *oid == Oid(cut_oid))
        .count();
    assert_eq!(
        written_beside, 0,
        "no revision of what the cut-off client tried is on any replica"
    );
    let written_before = histories
        .iter()
        .flatten()
        .filter(|(oid, _, _)| *oid == Oid(cut_oid + partitions))
        .count();
    assert_eq!(written_before, 1, "what it wrote before the cut is there");
}

/// `replicast client put OID DATA` with `config` on the cut-off client's host.
fn put_on(topology: &Topology, config: &Path, oid: u64, data: &str) -> Outcome {
    let mut put = topology
        .exec(CUT_CLIENT, binary())
        .expect("a command on the cut-off client");
    put.args(["client", "--timeout", CLIENT_TIMEOUT, "--config"])
        .arg(config)
        .args(["put", &oid.to_string(), data]);
    output(&mut put, "replicast client put")
}

/// `replicast client transfers` with `config` on the test's host: 30 transfers between 6 new
/// accounts; the command checks every balance and the sum and exits 0 only then.
fn transfers(config: &Path, seed: u64, when: &str) {
    let outcome = output(
        Command::new(binary())
            .args(["client", "--timeout", CLIENT_TIMEOUT, "--config"])
            .arg(config)
            .args(["transfers", "--accounts", "6", "--count", "30", "--seed"])
            .arg(seed.to_string()),
        "replicast client transfers",
    );
    assert_eq!(
        outcome.code,
        Some(0),
        "transfers {when}: {}\n{}",
        outcome.stdout,
        outcome.stderr
    );
    assert!(
        outcome.stdout.starts_with("committed 30,"),
        "transfers {when}: {}",
        outcome.stdout
    );
}

/// `replicast status --json` with `config`, if it gave JSON.
fn status(config: &Path) -> Option<serde_json::Value> {
    let outcome = output(
        Command::new(binary())
            .args(["status", "--json", "--timeout", "5", "--config"])
            .arg(config),
        "replicast status",
    );
    serde_json::from_str(&outcome.stdout).ok()
}

/// Waits (bounded by [`WAIT`]) until the status lists `masters` masters, exactly one of them
/// primary.
fn wait_one_primary(config: &Path, masters: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let listed = status(config).and_then(|status| {
            let masters = status["masters"].as_array()?.clone();
            Some(masters)
        });
        if let Some(listed) = &listed {
            let primaries = listed
                .iter()
                .filter(|master| master["role"] == "primary")
                .count();
            if listed.len() == masters && primaries == 1 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not one primary of {masters} masters within {WAIT:?}: {listed:?}"
        );
        // A pause between two questions, not a synchronization: the answer decides.
        std::thread::sleep(Duration::from_millis(200));
    }
}
