//! A cluster of separate processes on 127.0.0.1: one master and three storages (P = 12, R = 2)
//! started by `replicast node`, with certificates made by `replicast certs init`; objects
//! written and read back by `replicast client`, concurrent transfers from two in-process
//! clients (sum and every balance checked); a storage killed with SIGKILL while commits go on;
//! the rest stopped with SIGTERM and SIGINT. Each node runs without transparent huge pages.

use std::path::Path;
use std::process::{Command, Stdio};

use replicast_node::driver::ClientHandle;
use replicast_testkit::process;
use replicast_testkit::process::{
    ClusterSpec, LocalCluster, binary, client, get, put, random_group, write_config,
};
use replicast_testkit::workload::transfers;
use replicast_transport::fanout::Strategy;

const CLIENT: &str = "client-1";

#[test]
fn cluster_of_processes_commits_survives_a_killed_storage_and_stops_cleanly() {
    let mut cluster = LocalCluster::start(&ClusterSpec::default());
    let master_address = cluster.master;

    // A node turns transparent huge pages off for itself (src/main.rs says why).
    let pid = cluster.storage("storage-1").child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's status");
    assert!(
        status.lines().any(|line| line == "THP_enabled:\t0"),
        "the storage runs with transparent huge pages on: {status}"
    );

    // The client finds the storages through the master's address book; a second
    // configuration lists them itself in [storages].
    let client_config = cluster.client_config(CLIENT, "");
    let listing: Vec<String> = ["storage-1", "storage-2", "storage-3"]
        .iter()
        .map(|name| format!("{name} = \"{}\"", cluster.storage_address(name)))
        .collect();
    let listing_config = cluster.client_config_file(
        "client-listing-storages",
        CLIENT,
        &format!("[storages]\n{}\n", listing.join("\n")),
    );

    // Objects spread over several partitions, each on two of the three storages.
    // Far above the master's OID allocator, which the in-process clients below use.
    let oids: Vec<u64> = (1_000_001..=1_000_006).collect();
    for oid in &oids {
        let tid = put(&client_config, *oid, &format!("first {oid}"));
        assert_eq!(get(&client_config, *oid), (tid, format!("first {oid}")));
    }
    assert!(
        client(&client_config, &["get", "2000000"]).is_err(),
        "an object never written does not load"
    );

    // Concurrent transfers from two in-process clients.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let certs = cluster.root().join("certs");
    let connect = |name: &'static str| {
        process::connect(
            &certs,
            name,
            master_address,
            Strategy::Unicast,
            random_group(),
        )
    };
    let (mut first, mut second, accounts) = runtime.block_on(async {
        let mut first = connect("client-2").await;
        let second = connect("client-3").await;
        let accounts = transfers::create_accounts(&mut first, 10)
            .await
            .expect("create the accounts");
        (first, second, accounts)
    });
    let mut commits = Vec::new();
    let mut transfer_round = |mut first: ClientHandle, mut second: ClientHandle, seed: u64| {
        runtime.block_on(async {
            let (mine, theirs) = tokio::join!(
                transfers::run(&mut first, &accounts, 25, seed),
                transfers::run(&mut second, &accounts, 25, seed + 1),
            );
            commits.extend(mine.expect("first client's transfers").commits);
            commits.extend(theirs.expect("second client's transfers").commits);
            transfers::check(&mut second, &accounts, &commits)
                .await
                .expect("every committed transfer is visible, no aborted one");
            (first, second)
        })
    };
    (first, second) = transfer_round(first, second, 1);

    // A storage dies without a word; the master notices, commits and loads go on.
    cluster.storage("storage-3").kill();
    cluster
        .master_node
        .wait_running(&["storage-1", "storage-2"]);
    let mut second_tids = Vec::new();
    for oid in &oids {
        second_tids.push(put(&client_config, *oid, &format!("second {oid}")));
    }
    (first, second) = transfer_round(first, second, 3);
    runtime.block_on(async {
        first.close().await.expect("close the first client");
        second.close().await.expect("close the second client");
    });
    for (oid, tid) in oids.iter().zip(second_tids) {
        assert_eq!(
            get(&client_config, *oid),
            (tid.clone(), format!("second {oid}"))
        );
        assert_eq!(get(&listing_config, *oid), (tid, format!("second {oid}")));
    }

    // SIGTERM (and SIGINT, as from a terminal): every remaining node stops cleanly.
    for (name, signal) in [("storage-1", "-TERM"), ("storage-2", "-INT")] {
        let node = cluster.storage(name);
        node.signal(signal);
        let status = node.wait_exit();
        assert!(status.success(), "{name} exits 0 on {signal}: {status}");
    }
    cluster.master_node.stop();
}

/// Runs `replicast node --config FILE` on a configuration that must be refused; returns its
/// standard error after checking it exited with 1 without printing a ready line.
fn refused_node(config: &Path) -> String {
    let output = Command::new(binary())
        .args(["node", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("run replicast node");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "no ready line: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn node_refuses_a_bad_configuration_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let header = "[node]\nname = \"master\"\nrole = \"master\"\nlisten = \"127.0.0.1:7000\"\n";
    let tls = "[tls]\nca = \"ca.pem\"\ncert = \"master.pem\"\nkey = \"master.key\"\n";

    let typo = write_config(
        root,
        "typo",
        &format!("{header}{tls}[cluster]\npartitions = 12\nreplica = 2\n"),
    );
    let error = refused_node(&typo);
    assert!(error.contains("`cluster.replica`"), "{error}");

    let no_storages = write_config(
        root,
        "no-storages",
        &format!("{header}{tls}[cluster]\npartitions = 12\nreplicas = 2\n"),
    );
    let error = refused_node(&no_storages);
    assert!(error.contains("`cluster.storages` is missing"), "{error}");

    let too_few = write_config(
        root,
        "too-few",
        &format!("{header}{tls}[cluster]\npartitions = 12\nreplicas = 2\nstorages = [\"s-1\"]\n"),
    );
    let error = refused_node(&too_few);
    assert!(error.contains("`cluster.storages`"), "{error}");

    let no_certificate = write_config(
        root,
        "no-certificate",
        &format!(
            "{header}{tls}[cluster]\npartitions = 12\nreplicas = 2\nstorages = [\"s-1\", \"s-2\"]\n"
        ),
    );
    let error = refused_node(&no_certificate);
    assert!(error.contains("[tls]"), "{error}");
}
