//! Changing the masters of a stopped group, as docs/DEPLOY.md (section 6) tells an operator:
//! three masters become one, then three again, and no commit is lost on the way.
//!
//! Each change: every node stopped; `replicast master-log show` on each master's log picks the
//! most up-to-date one (greatest last term, then last index); it is copied to every master of
//! the new group; `[masters]` changes in every configuration; `replicast master-log
//! set-members` on each new master; everything started again. A master whose configuration
//! was changed without `set-members` refuses to start, naming both groups.
//!
//! Checked: every object written before a change reads back at its TID after it; the new group
//! commits; the group of three survives the SIGKILL of its primary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use replicast_testkit::process::{
    ClusterSpec, LocalCluster, binary, get, put, put_retrying, replicast, run,
};

/// What `replicast master-log show` prints, by key.
fn show(config: &Path) -> BTreeMap<String, String> {
    let out = replicast(&["master-log", "--config", path(config), "show"])
        .unwrap_or_else(|error| panic!("master-log show {}: {error}", config.display()));
    out.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

fn number(shown: &BTreeMap<String, String>, key: &str) -> u64 {
    shown[key]
        .parse()
        .unwrap_or_else(|error| panic!("{key} {:?}: {error}", shown[key]))
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Stops every storage, then every master that runs.
fn stop_all(cluster: &mut LocalCluster) {
    let storages: Vec<String> = cluster.storage_addresses().keys().cloned().collect();
    for name in &storages {
        if cluster.storage(name).is_running() {
            cluster.storage(name).stop();
        }
    }
    for name in cluster.master_names() {
        if cluster.master_process(&name).is_running() {
            cluster.master_process(&name).stop();
        }
    }
}

fn start_storages(cluster: &mut LocalCluster) {
    let storages: Vec<String> = cluster.storage_addresses().keys().cloned().collect();
    for name in &storages {
        cluster.start_storage(name);
    }
}

/// Replaces `from` with `to` in every configuration file of the cluster.
fn rewrite_configs(cluster: &LocalCluster, from: &str, to: &str) {
    let entries = std::fs::read_dir(cluster.root()).expect("the cluster's directory");
    for entry in entries {
        let file = entry.expect("an entry").path();
        if file.extension().is_some_and(|ext| ext == "toml") {
            let text = std::fs::read_to_string(&file).expect("read a configuration");
            std::fs::write(&file, text.replace(from, to)).expect("write a configuration");
        }
    }
}

/// The `[masters]` lines of `names`.
fn masters_lines(cluster: &LocalCluster, names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("{name} = \"{}\"\n", cluster.master_addresses[*name]))
        .collect()
}

/// Copies the most up-to-date log of `from` to each master of `to`; returns its name.
fn copy_latest_log(cluster: &LocalCluster, from: &[&str], to: &[&str]) -> String {
    let latest = from
        .iter()
        .map(|name| (*name, show(&cluster.config(name))))
        .max_by_key(|(_, shown)| (number(shown, "last_term"), number(shown, "last_index")))
        .expect("a master");
    let source = PathBuf::from(&latest.1["path"]);
    for name in to {
        let target = PathBuf::from(&show(&cluster.config(name))["path"]);
        if target != source {
            std::fs::copy(&source, &target).expect("copy the log");
        }
    }
    latest.0.to_owned()
}

fn set_members(cluster: &LocalCluster, name: &str) -> BTreeMap<String, String> {
    let config = cluster.config(name);
    replicast(&["master-log", "--config", path(&config), "set-members"])
        .unwrap_or_else(|error| panic!("set-members {name}: {error}"));
    show(&config)
}

/// Each object reads back as written, at its TID.
fn check_objects(writer: &Path, written: &BTreeMap<u64, (String, String)>) {
    for (oid, expected) in written {
        assert_eq!(&get(writer, *oid), expected, "object {oid}");
    }
}

#[test]
fn three_masters_become_one_and_three_again_keeping_every_commit() {
    let mut cluster = LocalCluster::start(&ClusterSpec::three_masters());
    let writer = cluster.client_config("client-1", "");
    let three = ["master-1", "master-2", "master-3"];
    let three_lines = masters_lines(&cluster, &three);
    let one_lines = masters_lines(&cluster, &["master-1"]);
    let mut written = BTreeMap::new();
    for oid in 1..=6 {
        let tid = put(&writer, oid, "before");
        written.insert(oid, (tid, "before".to_owned()));
    }

    // Three become one.
    stop_all(&mut cluster);
    copy_latest_log(&cluster, &three, &["master-1"]);
    rewrite_configs(&cluster, &three_lines, &one_lines);
    // Changed in the configuration only: refused, naming both groups.
    let refused = run(
        Command::new(binary())
            .args(["node", "--config"])
            .arg(cluster.config("master-1")),
        "master-1 with a changed [masters]",
    )
    .expect_err("a master whose log is of another group refuses to start");
    assert!(
        refused.contains("belongs to the group") && refused.contains("master-2"),
        "the refusal names both groups: {refused}"
    );
    let shown = set_members(&cluster, "master-1");
    assert_eq!(shown["members"], "master-1");
    cluster.restart_master("master-1");
    start_storages(&mut cluster);
    assert_eq!(cluster.wait_primary(), "master-1");
    check_objects(&writer, &written);
    for oid in 7..=9 {
        let tid = put(&writer, oid, "alone");
        written.insert(oid, (tid, "alone".to_owned()));
    }

    // One becomes three.
    stop_all(&mut cluster);
    // (Configurations first: until then, master-2's names a group without it, which
    // `master-log` refuses like `node` does.)
    rewrite_configs(&cluster, &one_lines, &three_lines);
    let source = copy_latest_log(&cluster, &["master-1"], &three);
    assert_eq!(source, "master-1");
    for name in three {
        let shown = set_members(&cluster, name);
        assert_eq!(shown["members"], "master-1,master-2,master-3", "{name}");
    }
    for name in three {
        cluster.restart_master(name);
    }
    start_storages(&mut cluster);
    let primary = cluster.wait_primary();
    check_objects(&writer, &written);
    for oid in 10..=12 {
        let tid = put_retrying(&writer, oid, "three");
        written.insert(oid, (tid, "three".to_owned()));
    }
    // A real group of three: it goes on without its primary.
    cluster.master_process(&primary).kill();
    for oid in 13..=15 {
        let tid = put_retrying(&writer, oid, "failover");
        written.insert(oid, (tid, "failover".to_owned()));
    }
    check_objects(&writer, &written);
    cluster.stop();
}
