//! Rotating the cluster CA as docs/DEPLOY.md tells it ("Rotating the CA"), against a cluster of
//! `replicast node` processes (a master and three storages on 127.0.0.1, P = 12, R = 2), with
//! one node restarted at a time and the data checked at each step:
//!
//! 1. `replicast certs init` makes the new CA and a certificate of every node from it;
//! 2. every node trusts both CAs (`ca.pem` and `crl.pem` hold the old one's and the new one's),
//!    restarted one by one: clients of either CA commit;
//! 3. every node gets its new certificate, restarted one by one: a client still holding an old
//!    certificate commits too;
//! 4. every node trusts only the new CA: the old client certificate is refused at the
//!    handshake by the cluster, the new one commits, and what was written at the start reads
//!    back.

use std::path::{Path, PathBuf};

use replicast_testkit::process::replicas::{all_up_to_date, wait_for_table};
use replicast_testkit::process::{ClusterSpec, LocalCluster, binary, client, run};

/// Every node of the default cluster spec that has a certificate.
const NODES: [&str; 9] = [
    "master",
    "storage-1",
    "storage-2",
    "storage-3",
    "client-1",
    "client-2",
    "client-3",
    "client-4",
    "admin",
];
/// The nodes that run (restarted at each step), storages first, then the master.
const RUNNING: [&str; 4] = ["storage-1", "storage-2", "storage-3", "master"];

#[test]
fn the_ca_is_rotated_one_node_at_a_time_and_old_certificates_are_refused_at_the_end() {
    let mut cluster = LocalCluster::start(&ClusterSpec {
        stderr_to_files: true,
        ..ClusterSpec::default()
    });
    let certs = cluster.root().join("certs");
    let old = cluster.root().join("old-ca");
    copy_dir(&certs, &old);
    let operator = cluster.admin_config();
    let renewed = cluster.client_config("client-1", "");
    // client-2 keeps its certificate of the old CA to the end, and trusts both CAs: it is the
    // cluster that must refuse it once the old CA is gone.
    let stale = keeping_old_certificate(&cluster, "client-2");
    let first = client(&renewed, &["put", "1000001", "written-before-the-rotation"])
        .expect("a put before the rotation");

    // 1. The new CA and every node's certificate from it.
    let new = cluster.root().join("new-ca");
    run(
        std::process::Command::new(binary())
            .args(["certs", "init", "--out"])
            .arg(&new)
            .arg("--node")
            .arg(NODES.join(",")),
        "replicast certs init (the new CA)",
    )
    .expect("the new CA and certificates");

    // 2. Trust both.
    concatenate(
        &[&old.join("ca.pem"), &new.join("ca.pem")],
        &certs.join("ca.pem"),
    );
    concatenate(
        &[&old.join("crl.pem"), &new.join("crl.pem")],
        &certs.join("crl.pem"),
    );
    std::fs::copy(certs.join("ca.pem"), old.join("both-ca.pem")).expect("keep the bundle");
    std::fs::copy(certs.join("crl.pem"), old.join("both-crl.pem")).expect("keep the bundle");
    restart_one_by_one(&mut cluster, &operator, "trusting both CAs");
    client(
        &renewed,
        &["put", "1000002", "old-certificate-both-trusted"],
    )
    .expect("an old certificate while both CAs are trusted");

    // 3. New certificates everywhere but on client-2.
    for node in NODES.iter().filter(|node| **node != "client-2") {
        for extension in ["pem", "key"] {
            let file = format!("{node}.{extension}");
            std::fs::copy(new.join(&file), certs.join(&file)).expect("install a new certificate");
        }
    }
    restart_one_by_one(&mut cluster, &operator, "with the new certificates");
    client(&renewed, &["put", "1000003", "new-certificate"]).expect("a new certificate");
    client(&stale, &["put", "1000004", "old-certificate-new-cluster"])
        .expect("an old certificate while both CAs are trusted still commits");

    // 4. Only the new CA.
    std::fs::copy(new.join("ca.pem"), certs.join("ca.pem")).expect("the new CA alone");
    std::fs::copy(new.join("crl.pem"), certs.join("crl.pem")).expect("its list alone");
    restart_one_by_one(&mut cluster, &operator, "trusting the new CA only");
    let refused = client(&stale, &["put", "1000005", "old-certificate-refused"])
        .expect_err("a certificate of the old CA is refused");
    assert!(
        refused.contains("certificate") || refused.contains("handshake"),
        "the refusal says why: {refused}"
    );
    client(&renewed, &["put", "1000006", "after-the-rotation"]).expect("a put after");
    let read = client(&renewed, &["get", "1000001"]).expect("read back");
    assert!(
        read.starts_with(&first) && read.ends_with("written-before-the-rotation"),
        "what was written before the rotation reads back at its TID {first}: {read}"
    );
    let refused_write = client(&renewed, &["get", "1000005"]);
    assert!(
        refused_write.is_err() || refused_write.as_deref().is_ok_and(str::is_empty),
        "nothing of the refused client was written: {refused_write:?}"
    );
    cluster.stop();
}

/// Stops and starts each running node in turn, waiting after each for every cell to be up to
/// date again (asked with `operator`'s configuration).
fn restart_one_by_one(cluster: &mut LocalCluster, operator: &Path, step: &str) {
    for node in RUNNING {
        if node == "master" {
            cluster.master_node.stop();
            cluster.restart_master("master");
        } else {
            cluster.storage(node).stop();
            cluster.start_storage(node);
        }
        wait_for_table(
            operator,
            &format!("{step}: every cell up to date after {node}'s restart"),
            all_up_to_date,
        );
    }
}

/// A configuration of client `name` with its certificate and key of the old CA (the copy in
/// `old-ca/`), trusting what `old-ca/both-ca.pem` and `old-ca/both-crl.pem` will hold (both
/// CAs).
fn keeping_old_certificate(cluster: &LocalCluster, name: &str) -> PathBuf {
    let config = cluster.client_config_file(&format!("{name}-old"), name, "");
    let text = std::fs::read_to_string(&config).expect("read a client configuration");
    let text = text
        .replace("certs/ca.pem", "old-ca/both-ca.pem")
        .replace("certs/crl.pem", "old-ca/both-crl.pem")
        .replace(&format!("certs/{name}."), &format!("old-ca/{name}."));
    assert_ne!(
        text,
        std::fs::read_to_string(&config).expect("read it again"),
        "the configuration names the certificate files"
    );
    std::fs::write(&config, text).expect("write the client configuration");
    config
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for entry in std::fs::read_dir(from).expect("list a directory") {
        let entry = entry.expect("a directory entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
    }
}

/// Writes the files of `parts`, one after the other, to `to` (PEM blocks concatenate).
fn concatenate(parts: &[&Path], to: &Path) {
    let text: String = parts
        .iter()
        .map(|part| std::fs::read_to_string(part).expect("read a PEM file"))
        .collect();
    std::fs::write(to, text).expect("write a PEM file");
}
