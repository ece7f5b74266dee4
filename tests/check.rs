//! `replicast check` against a cluster of processes: a clean cluster checks clean; a record
//! of one storage changed on disk while it is stopped (bit rot) is found with exactly its oid
//! and TID, on exactly that storage; `--repair` feeds the bad cell again by replication and the
//! replicas agree again; a client's certificate is refused with a typed refusal.

use std::path::Path;
use std::process::Command;

use replicast_node::engine::Engine;
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::partition::partition_of;
use replicast_testkit::process::replicas::{all_up_to_date, cells, wait_for_table};
use replicast_testkit::process::{self, ClusterSpec, LocalCluster, Outcome, binary};

/// Objects written, more than one per partition, so that a partition holds several.
const OBJECTS: u64 = 30;
const PARTITIONS: u32 = 12;
/// The object whose revision is corrupted.
const VICTIM: u64 = 17;

fn check(config: &Path, extra: &[&str]) -> Outcome {
    let config = config.to_str().expect("a UTF-8 path");
    let mut args = vec!["check", "--config", config];
    args.extend_from_slice(extra);
    process::output(
        Command::new(binary()).args(&args),
        &format!("replicast {args:?}"),
    )
}

#[test]
fn a_corrupt_revision_is_found_by_oid_and_tid_and_repaired_by_replication() {
    let mut cluster = LocalCluster::start(&ClusterSpec::default());
    let client = cluster.client_config("client-1", "");
    let admin = cluster.admin_config();
    let mut victim_tid = String::new();
    for oid in 1..=OBJECTS {
        let tid = process::put(&client, oid, &format!("object-{oid}"));
        if oid == VICTIM {
            victim_tid = tid;
        }
    }
    // A second revision of a few objects, the victim's included: the corrupt revision is not
    // the latest one.
    for oid in [3, VICTIM, 25] {
        process::put(&client, oid, &format!("object-{oid}-v2"));
    }

    let clean = check(&admin, &[]);
    assert_eq!(clean.code, Some(0), "{}\n{}", clean.stdout, clean.stderr);
    assert!(
        clean
            .stdout
            .contains("0 difference(s), 0 partition(s) not checked"),
        "{}",
        clean.stdout
    );
    assert_eq!(
        clean.stdout.matches(": clean (").count(),
        PARTITIONS as usize,
        "{}",
        clean.stdout
    );

    // Only operators may ask storages for digests: a client's certificate is refused.
    let refused = check(&client, &["--partition", "0"]);
    assert_eq!(
        refused.code,
        Some(2),
        "{}\n{}",
        refused.stdout,
        refused.stderr
    );
    assert!(
        refused.stdout.contains("needs the role admin"),
        "{}",
        refused.stdout
    );

    // Bit rot on one replica of the victim's first revision, while its storage is stopped.
    let partition = partition_of(Oid(VICTIM), PARTITIONS);
    let table = cells(&admin);
    let holder = table[partition as usize][0].0.clone();
    cluster.storage(&holder).stop();
    {
        let engine = Engine::open(cluster.database(&holder)).expect("open the stopped store");
        let tid = Tid(u64::from_str_radix(&victim_tid, 16).expect("a TID"));
        engine
            .rewrite_content(Oid(VICTIM), tid, ObjectData::from(b"rotten".to_vec()))
            .expect("rewrite the revision");
    }
    cluster.start_storage(&holder);
    wait_for_table(&admin, "the restarted storage caught up", all_up_to_date);

    let found = check(&admin, &[]);
    assert_eq!(found.code, Some(1), "{}\n{}", found.stdout, found.stderr);
    let lines: Vec<&str> = found
        .stdout
        .lines()
        .filter(|line| line.starts_with("  partition"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one difference: {}", found.stdout);
    let expected = format!("partition {partition} oid {VICTIM:016x} tid {victim_tid}");
    assert!(lines[0].contains(&expected), "{expected}: {}", lines[0]);
    assert!(
        lines[0].contains(&format!("bad: {holder}")),
        "the corrupt copy is {holder}'s: {}",
        lines[0]
    );
    assert!(found.stdout.contains("1 difference(s)"), "{}", found.stdout);

    // Checking only another partition finds nothing.
    let other = (partition + 1) % PARTITIONS;
    let elsewhere = check(&admin, &["--partition", &other.to_string()]);
    assert_eq!(elsewhere.code, Some(0), "{}", elsewhere.stdout);

    let repaired = check(&admin, &["--repair"]);
    assert_eq!(
        repaired.code,
        Some(1),
        "{}\n{}",
        repaired.stdout,
        repaired.stderr
    );
    assert!(
        repaired.stdout.contains(&format!(
            "repair: {holder}'s cell of partition {partition} feeds again"
        )),
        "{}",
        repaired.stdout
    );
    // The master answered once the cell was out of date: it is readable again once its
    // storage copied the partition again.
    wait_for_table(&admin, "the repaired cell caught up", all_up_to_date);

    let after = check(&admin, &[]);
    assert_eq!(after.code, Some(0), "{}\n{}", after.stdout, after.stderr);
    let (_, data) = process::get(&client, VICTIM);
    assert_eq!(data, format!("object-{VICTIM}-v2"));
    cluster.stop();
}
