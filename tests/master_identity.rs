//! One process per master name (issue 14), against three masters and three storages as
//! processes (P = 12, R = 2): a second process started with the primary's configuration (same
//! name and certificate, on another port and with its own log file) is refused by the other
//! masters and exits naming the running one; the group keeps its primary and its term, commits
//! go on, and `replicast status` never shows the second process's address. (The same for a
//! storage: tests/node_identity.rs.)

use std::fs::File;
use std::path::Path;
use std::process::Command;

use replicast_testkit::process::masters::primary_and_term;
use replicast_testkit::process::{
    ClusterSpec, LocalCluster, NodeProcess, binary, free_port, get, output, put, write_config,
};

/// `replicast status --json` with `config`, as text (a master group answers through its
/// primary; not operational exits 2 with the status all the same).
fn status_text(config: &Path) -> String {
    output(
        Command::new(binary())
            .args(["status", "--json", "--timeout", "5", "--config"])
            .arg(config),
        "replicast status --json",
    )
    .stdout
}

/// The masters that `status` (JSON text) reports primary.
fn primaries(status: &str) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(status).expect("status prints JSON");
    json["masters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|master| master["role"] == "primary")
        .filter_map(|master| master["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_second_process_with_a_running_masters_name_is_refused_and_the_group_goes_on() {
    let mut cluster = LocalCluster::start(&ClusterSpec::three_masters());
    let admin = cluster.admin_config();
    let config = cluster.client_config("client-1", "");
    let (primary, term) = primary_and_term(&admin).expect("the group has a primary");
    let before = put(&config, 1_000_001, "before");

    // The primary's own configuration, on another port and with its own log file (the same
    // file would be refused for its lock, which is not what this is about).
    let running = cluster.master_addresses[&primary];
    let original = std::fs::read_to_string(cluster.config(&primary)).expect("read the config");
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let second = original.replace(
        &format!("listen = \"{running}\""),
        &format!("listen = \"{elsewhere}\""),
    );
    assert_ne!(second, original, "the second process listens elsewhere");
    let second = format!("{second}\n[master]\npath = \"data/{primary}-second-log.redb\"\n");
    let second = write_config(cluster.root(), &format!("{primary}-second"), &second);
    let stderr = cluster.root().join("second.stderr");
    let mut impostor = NodeProcess::start_command(
        &primary,
        Command::new(binary())
            .args(["node", "--config"])
            .arg(&second)
            .current_dir(cluster.root())
            .stderr(File::create(&stderr).expect("create the stderr file")),
    );

    // While it runs (it retries for a few idle timeouts, as a restarted master whose
    // predecessor's connections are still open would) and after it exits, the group is
    // undisturbed: one primary, the same, never the second process's address; commits go on.
    let mut checks = 0;
    let mut check = |what: &str| {
        let status = status_text(&admin);
        assert_eq!(
            primaries(&status),
            vec![primary.clone()],
            "{what}: {primary} stays the one primary: {status}"
        );
        assert!(
            !status.contains(&elsewhere),
            "{what}: status never shows the second process's address {elsewhere}: {status}"
        );
        let oid = 1_000_100 + checks;
        let tid = put(&config, oid, what);
        assert_eq!(get(&config, oid), (tid, what.to_owned()));
        checks += 1;
    };
    check("while the second process runs");
    let exit = impostor.wait_exit();
    assert!(!exit.success(), "the second process must not run: {exit}");
    let error = std::fs::read_to_string(&stderr).expect("read its standard error");
    assert!(
        error.contains(&format!("{primary} is already running at"))
            && error.contains(&running.to_string()),
        "the refusal names the running {primary} at {running}: {error}"
    );
    check("after the second process exited");
    assert_eq!(
        primary_and_term(&admin),
        Some((primary.clone(), term)),
        "no election: the primary and its term are those from before"
    );
    assert_eq!(get(&config, 1_000_001), (before, "before".to_owned()));
    assert!(
        cluster.master_process(&primary).is_running(),
        "the running {primary} was not stopped"
    );
    cluster.stop();
}
