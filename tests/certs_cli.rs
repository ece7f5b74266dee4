//! `replicast certs`, run as a built binary in a temporary directory.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use replicast_certs::{CertificateInfo, ClusterCa, NodeIdentity};

fn replicast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replicast"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run replicast")
}

fn ok(args: &[&str]) -> String {
    let out = replicast(args);
    assert!(
        out.status.success(),
        "replicast {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns its standard error.
fn fails(args: &[&str]) -> String {
    let out = replicast(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "replicast {args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

#[test]
fn init_writes_a_ca_and_loadable_node_identities() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("certs");
    ok(&[
        "certs",
        "init",
        "--out",
        path(&dir),
        "--node",
        "node-a,node-b",
        "--node",
        "node-c",
        "--san",
        "node-a=127.0.0.1",
        "--san",
        "node-a=a.example.org",
        "--cluster",
        "prod",
    ]);

    let ca = ClusterCa::load(&dir).expect("CA loads");
    assert_eq!(ca.cluster_name(), "prod");
    for node in ["node-a", "node-b", "node-c"] {
        let identity = NodeIdentity::load_dir(&dir, node).expect("identity loads");
        assert_eq!(identity.name(), node);
        assert_eq!(identity.ca_certificate_der(), ca.certificate_der());
    }
    let info = CertificateInfo::read_file(&dir.join("node-a.pem")).expect("info");
    assert_eq!(
        info[0].subject_alt_names,
        ["DNS:node-a", "IP:127.0.0.1", "DNS:a.example.org"]
    );
    let info = CertificateInfo::read_file(&dir.join("node-b.pem")).expect("info");
    assert_eq!(info[0].subject_alt_names, ["DNS:node-b"]);
}

#[cfg(unix)]
#[test]
fn private_keys_are_written_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().expect("tempdir");
    ok(&[
        "certs",
        "init",
        "--out",
        path(tmp.path()),
        "--node",
        "node-a",
    ]);
    ok(&["certs", "add", "--ca", path(tmp.path()), "--node", "node-b"]);
    for key in ["ca.key", "node-a.key", "node-b.key"] {
        let mode = fs::metadata(tmp.path().join(key))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = path(tmp.path());
    ok(&["certs", "init", "--out", dir, "--node", "node-a"]);
    let ca_before = fs::read(tmp.path().join("ca.pem")).expect("read");

    let stderr = fails(&["certs", "init", "--out", dir, "--node", "node-a"]);
    assert!(
        stderr.contains(path(&tmp.path().join("ca.pem"))),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        fs::read(tmp.path().join("ca.pem")).expect("read"),
        ca_before
    );

    // One node file in the way is enough to refuse, and then nothing at all is written.
    let fresh = tempfile::tempdir().expect("tempdir");
    fs::write(fresh.path().join("node-z.pem"), "keep me").expect("write");
    let stderr = fails(&[
        "certs",
        "init",
        "--out",
        path(fresh.path()),
        "--node",
        "node-y,node-z",
    ]);
    assert!(
        stderr.contains(path(&fresh.path().join("node-z.pem"))),
        "{stderr}"
    );
    assert!(!fresh.path().join("ca.pem").exists());
    assert!(!fresh.path().join("node-y.pem").exists());
    assert_eq!(
        fs::read_to_string(fresh.path().join("node-z.pem")).expect("read"),
        "keep me"
    );

    ok(&["certs", "init", "--out", dir, "--node", "node-a", "--force"]);
    assert_ne!(
        fs::read(tmp.path().join("ca.pem")).expect("read"),
        ca_before
    );
    NodeIdentity::load_dir(tmp.path(), "node-a").expect("identity loads after --force");
}

#[test]
fn add_issues_from_an_existing_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca_dir = tmp.path().join("ca");
    ok(&["certs", "init", "--out", path(&ca_dir), "--node", "node-a"]);
    ok(&[
        "certs",
        "add",
        "--ca",
        path(&ca_dir),
        "--node",
        "node-b",
        "--san",
        "::1",
    ]);
    let identity = NodeIdentity::load_dir(&ca_dir, "node-b").expect("node-b loads");
    let ca = ClusterCa::load(&ca_dir).expect("CA loads");
    assert_eq!(identity.ca_certificate_der(), ca.certificate_der());
    let info = CertificateInfo::read_file(&ca_dir.join("node-b.pem")).expect("info");
    assert_eq!(info[0].subject_alt_names, ["DNS:node-b", "IP:::1"]);

    let stderr = fails(&["certs", "add", "--ca", path(&ca_dir), "--node", "node-b"]);
    assert!(
        stderr.contains(path(&ca_dir.join("node-b.pem"))),
        "{stderr}"
    );
    ok(&[
        "certs",
        "add",
        "--ca",
        path(&ca_dir),
        "--node",
        "node-b",
        "--force",
    ]);

    // Into another directory: the node's files and a copy of the CA certificate, no CA key.
    let node_dir = tmp.path().join("node-c");
    ok(&[
        "certs",
        "add",
        "--ca",
        path(&ca_dir),
        "--node",
        "node-c",
        "--out",
        path(&node_dir),
    ]);
    NodeIdentity::load_dir(&node_dir, "node-c").expect("node-c loads from its own directory");
    assert!(!node_dir.join("ca.key").exists());
    ok(&[
        "certs",
        "add",
        "--ca",
        path(&ca_dir),
        "--node",
        "node-d",
        "--out",
        path(&node_dir),
    ]);
}

#[test]
fn add_refuses_a_directory_holding_another_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    ok(&["certs", "init", "--out", path(&one), "--node", "node-a"]);
    ok(&["certs", "init", "--out", path(&two), "--node", "node-a"]);
    let stderr = fails(&[
        "certs",
        "add",
        "--ca",
        path(&one),
        "--node",
        "node-b",
        "--out",
        path(&two),
    ]);
    assert!(stderr.contains(path(&two.join("ca.pem"))), "{stderr}");
    assert!(!two.join("node-b.pem").exists());
}

#[test]
fn add_without_a_ca_names_the_missing_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stderr = fails(&["certs", "add", "--ca", path(tmp.path()), "--node", "node-a"]);
    assert!(
        stderr.contains(path(&tmp.path().join("ca.pem"))),
        "{stderr}"
    );
    assert!(stderr.contains("not found"), "{stderr}");
}

#[test]
fn show_prints_subject_names_validity_and_issuer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = path(tmp.path());
    ok(&[
        "certs",
        "init",
        "--out",
        dir,
        "--node",
        "node-a",
        "--san",
        "10.1.2.3",
        "--cluster",
        "blue",
    ]);
    let out = ok(&["certs", "show", path(&tmp.path().join("node-a.pem"))]);
    for expected in [
        "CN=node-a",
        "DNS:node-a, IP:10.1.2.3",
        "not after:",
        "issuer:     O=blue, CN=blue CA",
        "valid",
    ] {
        assert!(out.contains(expected), "{expected:?} missing in:\n{out}");
    }
    let stderr = fails(&["certs", "show", path(&tmp.path().join("node-a.key"))]);
    assert!(stderr.contains("node-a.key"), "{stderr}");
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = path(tmp.path());
    let stderr = fails(&["certs", "init", "--out", dir, "--node", "Node_A"]);
    assert!(stderr.contains("Node_A"), "{stderr}");
    let stderr = fails(&[
        "certs",
        "init",
        "--out",
        dir,
        "--node",
        "a,b",
        "--san",
        "127.0.0.1",
    ]);
    assert!(stderr.contains("NODE=IP_OR_DNS"), "{stderr}");
    let stderr = fails(&[
        "certs",
        "init",
        "--out",
        dir,
        "--node",
        "a",
        "--san",
        "c=127.0.0.1",
    ]);
    assert!(stderr.contains("\"c\""), "{stderr}");
    let stderr = fails(&[
        "certs",
        "init",
        "--out",
        dir,
        "--node",
        "a",
        "--san",
        "a=not a name",
    ]);
    assert!(stderr.contains("not a name"), "{stderr}");
    let stderr = fails(&["--log-level", "[[", "certs", "show", dir]);
    assert!(stderr.contains("--log-level"), "{stderr}");
    assert_eq!(
        fs::read_dir(tmp.path()).expect("read dir").count(),
        0,
        "nothing written"
    );
}
