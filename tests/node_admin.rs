//! Operator commands against a cluster of processes: `replicast status` and `replicast admin
//! add-storage / remove-storage`, with the partitions re-replicated so that R copies exist
//! again (NEO's tweak), and every object read back; and both commands run with the
//! configuration of a client that commits transfers meanwhile, and of a running storage,
//! disturbing neither.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use replicast_node::engine::Engine;
use replicast_node::ids::Oid;
use replicast_node::object::ObjectData;
use replicast_testkit::process;
use replicast_testkit::process::{ClusterSpec, LocalCluster, Outcome, WAIT, binary};
use replicast_testkit::workload::transfers;
use replicast_transport::fanout::Strategy;
use serde_json::Value;
use tokio::sync::watch;

/// Objects written before the storage set changes: one per partition and then some.
const OBJECTS: u64 = 16;
const PARTITIONS: u64 = 12;
/// Pause between two status polls while waiting for replication (each poll is a process).
const POLL: Duration = Duration::from_millis(250);

/// Runs `replicast ARGS` to its end, bounded by [`WAIT`](process::WAIT).
fn replicast(args: &[&str]) -> Outcome {
    process::output(
        Command::new(binary()).args(args),
        &format!("replicast {args:?}"),
    )
}

/// `replicast status --json` with `config`: the exit code and the parsed status.
fn status(config: &Path) -> (Option<i32>, Value) {
    let config = config.to_str().expect("a UTF-8 path");
    let outcome = replicast(&["status", "--config", config, "--json"]);
    let json = serde_json::from_str(&outcome.stdout).unwrap_or_else(|error| {
        panic!(
            "status --json prints JSON ({error}); exit {:?}, stdout {:?}, stderr {:?}",
            outcome.code, outcome.stdout, outcome.stderr
        )
    });
    (outcome.code, json)
}

/// Polls the status until `done` holds, bounded by [`WAIT`]; returns that status.
fn wait_status(config: &Path, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, status) = status(config);
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "no status where {what} within {WAIT:?}; last: {status:#}"
        );
        thread::sleep(POLL);
    }
}

/// `replicast admin --config CONFIG ARGS`.
fn admin(config: &Path, args: &[&str]) -> Outcome {
    let config = config.to_str().expect("a UTF-8 path");
    let mut all = vec!["admin", "--config", config];
    all.extend_from_slice(args);
    replicast(&all)
}

fn node<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|node| node["name"] == name)
}

fn cells(status: &Value) -> Vec<Vec<Value>> {
    status["partition_table"]["cells"]
        .as_array()
        .expect("cells is a list")
        .iter()
        .map(|cells| cells.as_array().expect("a partition's cells").clone())
        .collect()
}

/// Every partition has exactly `replicas` cells, all up to date, none on `absent`.
fn settled(status: &Value, replicas: usize, absent: &str) -> bool {
    cells(status).iter().all(|cells| {
        cells.len() == replicas
            && cells
                .iter()
                .all(|cell| cell["state"] == "up_to_date" && cell["storage"] != absent)
    })
}

fn holders(status: &Value) -> BTreeMap<u64, Vec<String>> {
    (0..)
        .zip(cells(status))
        .map(|(partition, cells)| {
            let nodes = cells
                .iter()
                .map(|cell| cell["storage"].as_str().expect("a name").to_owned())
                .collect();
            (partition, nodes)
        })
        .collect()
}

fn storages_in_state(status: &Value, state: &str) -> Vec<String> {
    let mut names: Vec<String> = status["nodes"]
        .as_array()
        .expect("nodes is a list")
        .iter()
        .filter(|node| node["role"] == "storage" && node["state"] == state)
        .map(|node| node["name"].as_str().expect("a name").to_owned())
        .collect();
    names.sort();
    names
}

fn read_back_everything(client: &Path) {
    for oid in 1..=OBJECTS {
        let (_, data) = process::get(client, oid);
        assert_eq!(data, format!("object-{oid}"), "object {oid} reads back");
    }
}

#[test]
fn status_then_a_storage_added_and_one_removed_with_every_object_kept() {
    let mut cluster = LocalCluster::start(&ClusterSpec {
        spare_storages: vec!["storage-4".into()],
        ..ClusterSpec::default()
    });
    let master = cluster.config("master");
    let client = cluster.client_config("client-1", "");

    let mut last_tid = String::new();
    for oid in 1..=OBJECTS {
        last_tid = process::put(&client, oid, &format!("object-{oid}"));
    }

    // The master's own configuration and a client's both ask; neither becomes a client.
    let (code, before) = status(&master);
    assert_eq!(code, Some(0), "operational: {before:#}");
    assert_eq!(before["operational"], true);
    assert_eq!(before["master"], "master");
    assert_eq!(
        before["last_tid"],
        last_tid.as_str(),
        "the last commit's TID"
    );
    assert_eq!(
        storages_in_state(&before, "running"),
        ["storage-1", "storage-2", "storage-3"]
    );
    assert_eq!(
        node(&before, "master").map(|n| &n["address"]),
        Some(&Value::String(cluster.master.to_string()))
    );
    assert_eq!(
        node(&before, "storage-2").map(|n| &n["address"]),
        Some(&Value::String(
            cluster.storage_address("storage-2").to_string()
        ))
    );
    assert_eq!(
        before["partition_table"]["partitions"], PARTITIONS,
        "{before:#}"
    );
    assert!(settled(&before, 2, "storage-4"), "{before:#}");
    let (code, from_client) = status(&client);
    assert_eq!(code, Some(0));
    assert!(
        node(&from_client, "client-1").is_none(),
        "asking does not make the asker a client: {from_client:#}"
    );

    let text = replicast(&["status", "--config", master.to_str().expect("UTF-8")]);
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    assert!(
        text.stdout.starts_with("cluster operational"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("PARTITIONS"), "{}", text.stdout);

    // A fourth storage starts: it connects and waits, holding nothing.
    let refused = admin(&master, &["add-storage", "storage-4"]);
    assert_eq!(refused.code, Some(1), "storage-4 is not running yet");
    assert!(
        refused.stderr.contains("not connected"),
        "{}",
        refused.stderr
    );
    cluster.start_storage("storage-4");
    wait_status(&master, "storage-4 waits", |status| {
        storages_in_state(status, "waiting") == ["storage-4"]
    });

    let added = admin(&master, &["add-storage", "storage-4"]);
    assert_eq!(added.code, Some(0), "{}", added.stderr);
    assert!(
        added.stdout.starts_with("added storage-4"),
        "{}",
        added.stdout
    );
    let grown = wait_status(&master, "storage-4 holds up-to-date cells", |status| {
        settled(status, 2, "nobody")
            && cells(status)
                .iter()
                .flatten()
                .any(|cell| cell["storage"] == "storage-4")
    });
    assert_eq!(
        storages_in_state(&grown, "running"),
        ["storage-1", "storage-2", "storage-3", "storage-4"]
    );
    let per_storage = |name: &str| {
        cells(&grown)
            .iter()
            .flatten()
            .filter(|cell| cell["storage"] == name)
            .count()
    };
    assert_eq!(
        (1..=4)
            .map(|i| per_storage(&format!("storage-{i}")))
            .collect::<Vec<_>>(),
        [6, 6, 6, 6],
        "24 cells balanced over 4 storages: {grown:#}"
    );
    read_back_everything(&client);

    // Refusals change nothing.
    let member = admin(&master, &["add-storage", "storage-2"]);
    assert_eq!(member.code, Some(1));
    assert!(
        member.stderr.contains("already in the partition table"),
        "{}",
        member.stderr
    );
    let stranger = admin(&master, &["remove-storage", "storage-9"]);
    assert_eq!(stranger.code, Some(1));
    assert!(
        stranger.stderr.contains("not in the partition table"),
        "{}",
        stranger.stderr
    );

    // storage-1 leaves: its partitions are copied elsewhere, R = 2 again, none on storage-1.
    let removed = admin(&master, &["remove-storage", "storage-1"]);
    assert_eq!(removed.code, Some(0), "{}", removed.stderr);
    let shrunk = wait_status(&master, "R up-to-date cells without storage-1", |status| {
        settled(status, 2, "storage-1")
    });
    assert_eq!(
        shrunk["partition_table"]["storages"],
        serde_json::json!(["storage-2", "storage-3", "storage-4"])
    );
    assert_eq!(
        storages_in_state(&shrunk, "waiting"),
        ["storage-1"],
        "still connected, holding nothing"
    );
    read_back_everything(&client);
    cluster.storage("storage-1").stop();

    // Stopped storages: the master still has the table, but nobody serves it.
    for name in ["storage-2", "storage-3", "storage-4"] {
        cluster.storage(name).stop();
    }
    let (code, down) = status(&master);
    assert_eq!(code, Some(2), "not operational: {down:#}");
    assert_eq!(down["operational"], false);
    assert_eq!(storages_in_state(&down, "down").len(), 3);
    cluster.master_node.stop();

    // Every cell of the final table holds its objects on disk.
    let holders = holders(&shrunk);
    for (name, store) in ["storage-2", "storage-3", "storage-4"]
        .map(|name| (name, Engine::open(cluster.database(name)).expect("open")))
    {
        for oid in 1..=OBJECTS {
            if !holders[&(oid % PARTITIONS)].iter().any(|node| node == name) {
                continue;
            }
            let revision = store.load(Oid(oid)).expect("read").unwrap_or_else(|| {
                panic!("{name} holds a cell of object {oid}'s partition but not the object")
            });
            assert_eq!(
                revision.data,
                ObjectData::from(format!("object-{oid}").into_bytes()),
                "{name}: object {oid}"
            );
        }
    }
}

/// Transfers per round of the writer that runs beside the operator commands.
const ROUND: usize = 4;
/// Rounds of operator commands run while the writer commits.
const ASKS: usize = 3;

/// `replicast status` and `replicast admin` with the configuration of client-2, which commits
/// transfers in this process all along, and with storage-1's: both ask on request streams,
/// which the master answers (or its gate refuses: admin commands need an admin's certificate)
/// apart from the running nodes' messages, so that neither node is disturbed: every transfer
/// commits without an abort, the client's driver never loses a peer, and the master lists both
/// as running in every answer.
#[test]
fn asking_with_the_config_of_a_running_client_or_storage_disturbs_neither() {
    let cluster = LocalCluster::start(&ClusterSpec::default());
    let client_config = cluster.client_config("client-2", "");
    let storage_config = cluster.config("storage-1");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let certs = cluster.root().join("certs");
    let (mut client, accounts) = runtime.block_on(async {
        let mut client = process::connect(
            &certs,
            "client-2",
            cluster.master,
            Strategy::Unicast,
            process::random_group(),
        )
        .await;
        let accounts = transfers::create_accounts(&mut client, 8)
            .await
            .expect("create the accounts");
        (client, accounts)
    });

    // The writer commits rounds of transfers until told to stop, publishing its count.
    let (progress, mut committed) = watch::channel(0usize);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = runtime.spawn({
        let stop = stop.clone();
        let accounts = accounts.clone();
        async move {
            let mut commits = Vec::new();
            let mut other_aborts = 0;
            for seed in 1.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let run = transfers::run(&mut client, &accounts, ROUND, seed)
                    .await
                    .map_err(|error| format!("round {seed}: {error}"))?;
                other_aborts += run.other_aborts;
                commits.extend(run.commits);
                progress.send_replace(commits.len());
            }
            Ok::<_, String>((client, commits, other_aborts))
        }
    });

    for round in 0..ASKS {
        let before = *committed.borrow_and_update();
        for (asker, config) in [("client-2", &client_config), ("storage-1", &storage_config)] {
            let (code, status) = status(config);
            assert_eq!(code, Some(0), "round {round}, as {asker}: {status:#}");
            assert_eq!(
                storages_in_state(&status, "running"),
                ["storage-1", "storage-2", "storage-3"],
                "round {round}, as {asker}: {status:#}"
            );
            assert_eq!(
                node(&status, "client-2").map(|n| &n["role"]),
                Some(&Value::String("client".into())),
                "round {round}, as {asker}: the running client is still connected: {status:#}"
            );
        }
        // Changes are asked the same way; a client's or a storage's certificate may not ask
        // them: the master's gate refuses, naming the role needed, and nothing changes.
        for (asker, config, command) in [
            ("client", &client_config, ["add-storage", "storage-2"]),
            ("storage", &storage_config, ["remove-storage", "storage-9"]),
        ] {
            let refused = admin(config, &command);
            assert_eq!(refused.code, Some(1), "{}", refused.stderr);
            assert!(
                refused
                    .stderr
                    .contains("AskChangeStorage needs the role master or admin")
                    && refused
                        .stderr
                        .contains(&format!("certificate grants {asker}")),
                "{}",
                refused.stderr
            );
        }
        // The writer goes on committing after each round of questions.
        runtime
            .block_on(async {
                tokio::time::timeout(WAIT, committed.wait_for(|count| *count > before)).await
            })
            .unwrap_or_else(|_| panic!("no commit within {WAIT:?} after round {round}"))
            .expect("the writer publishes its progress until it ends");
    }

    stop.store(true, Ordering::Relaxed);
    let (mut client, commits, other_aborts) = runtime
        .block_on(async { tokio::time::timeout(WAIT, writer).await })
        .unwrap_or_else(|_| panic!("the writer did not stop within {WAIT:?}"))
        .expect("the writer task ends without panicking")
        .unwrap_or_else(|error| panic!("a transfer did not commit: {error}"));
    assert_eq!(other_aborts, 0, "no transfer was aborted by a failure");
    let stats = client.stats();
    assert_eq!(stats.peers_lost, 0, "the client lost no link: {stats:?}");
    assert_eq!(stats.send_failures, 0, "{stats:?}");
    runtime.block_on(async {
        transfers::check(&mut client, &accounts, &commits)
            .await
            .expect("every committed transfer is visible");
        client.close().await.expect("close the client");
    });
    let (code, after) = status(&client_config);
    assert_eq!(code, Some(0), "{after:#}");
    assert!(
        settled(&after, 2, "nobody"),
        "every cell up to date: {after:#}"
    );
    cluster.stop();
}
