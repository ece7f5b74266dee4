//! `replicast certs`, run as a built binary in a temporary directory.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use replicast_certs::{CertificateInfo, ClusterCa, NodeIdentity, Role, Roles};

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
        "storage-a,client-b",
        "--node",
        "client-c",
        "--san",
        "storage-a=127.0.0.1",
        "--san",
        "storage-a=a.example.org",
        "--cluster",
        "prod",
    ]);

    let ca = ClusterCa::load(&dir).expect("CA loads");
    assert_eq!(ca.cluster_name(), "prod");
    for node in ["storage-a", "client-b", "client-c"] {
        let identity = NodeIdentity::load_dir(&dir, node).expect("identity loads");
        assert_eq!(identity.name(), node);
        assert_eq!(identity.ca_certificate_der(), ca.certificate_der());
    }
    let info = CertificateInfo::read_file(&dir.join("storage-a.pem")).expect("info");
    assert_eq!(
        info[0].subject_alt_names,
        [
            "DNS:storage-a",
            "IP:127.0.0.1",
            "DNS:a.example.org",
            "URI:urn:replicast:role:storage"
        ]
    );
    let info = CertificateInfo::read_file(&dir.join("client-b.pem")).expect("info");
    assert_eq!(
        info[0].subject_alt_names,
        ["DNS:client-b", "URI:urn:replicast:role:client"]
    );
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
        "storage-a",
    ]);
    ok(&[
        "certs",
        "add",
        "--ca",
        path(tmp.path()),
        "--node",
        "client-b",
    ]);
    for key in ["ca.key", "storage-a.key", "client-b.key"] {
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
    ok(&["certs", "init", "--out", dir, "--node", "storage-a"]);
    let ca_before = fs::read(tmp.path().join("ca.pem")).expect("read");

    let stderr = fails(&["certs", "init", "--out", dir, "--node", "storage-a"]);
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
    fs::write(fresh.path().join("client-z.pem"), "keep me").expect("write");
    let stderr = fails(&[
        "certs",
        "init",
        "--out",
        path(fresh.path()),
        "--node",
        "client-y,client-z",
    ]);
    assert!(
        stderr.contains(path(&fresh.path().join("client-z.pem"))),
        "{stderr}"
    );
    assert!(!fresh.path().join("ca.pem").exists());
    assert!(!fresh.path().join("client-y.pem").exists());
    assert_eq!(
        fs::read_to_string(fresh.path().join("client-z.pem")).expect("read"),
        "keep me"
    );

    ok(&[
        "certs",
        "init",
        "--out",
        dir,
        "--node",
        "storage-a",
        "--force",
    ]);
    assert_ne!(
        fs::read(tmp.path().join("ca.pem")).expect("read"),
        ca_before
    );
    NodeIdentity::load_dir(tmp.path(), "storage-a").expect("identity loads after --force");
}

#[test]
fn add_issues_from_an_existing_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca_dir = tmp.path().join("ca");
    ok(&[
        "certs",
        "init",
        "--out",
        path(&ca_dir),
        "--node",
        "storage-a",
    ]);
    ok(&[
        "certs",
        "add",
        "--ca",
        path(&ca_dir),
        "--node",
        "client-b",
        "--san",
        "::1",
    ]);
    let identity = NodeIdentity::load_dir(&ca_dir, "client-b").expect("client-b loads");
    let ca = ClusterCa::load(&ca_dir).expect("CA loads");
    assert_eq!(identity.ca_certificate_der(), ca.certificate_der());
    let info = CertificateInfo::read_file(&ca_dir.join("client-b.pem")).expect("info");
    assert_eq!(
        info[0].subject_alt_names,
        ["DNS:client-b", "IP:::1", "URI:urn:replicast:role:client"]
    );

    let stderr = fails(&["certs", "add", "--ca", path(&ca_dir), "--node", "client-b"]);
    assert!(
        stderr.contains(path(&ca_dir.join("client-b.pem"))),
        "{stderr}"
    );
    ok(&[
        "certs",
        "add",
        "--ca",
        path(&ca_dir),
        "--node",
        "client-b",
        "--force",
    ]);

    // Into another directory: the node's files and a copy of the CA certificate, no CA key.
    let node_dir = tmp.path().join("client-c");
    ok(&[
        "certs",
        "add",
        "--ca",
        path(&ca_dir),
        "--node",
        "client-c",
        "--out",
        path(&node_dir),
    ]);
    NodeIdentity::load_dir(&node_dir, "client-c").expect("client-c loads from its own directory");
    assert!(!node_dir.join("ca.key").exists());
    ok(&[
        "certs",
        "add",
        "--ca",
        path(&ca_dir),
        "--node",
        "admin-d",
        "--out",
        path(&node_dir),
    ]);
}

#[test]
fn add_refuses_a_directory_holding_another_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    ok(&["certs", "init", "--out", path(&one), "--node", "storage-a"]);
    ok(&["certs", "init", "--out", path(&two), "--node", "storage-a"]);
    let stderr = fails(&[
        "certs",
        "add",
        "--ca",
        path(&one),
        "--node",
        "client-b",
        "--out",
        path(&two),
    ]);
    assert!(stderr.contains(path(&two.join("ca.pem"))), "{stderr}");
    assert!(!two.join("client-b.pem").exists());
}

#[test]
fn add_without_a_ca_names_the_missing_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stderr = fails(&[
        "certs",
        "add",
        "--ca",
        path(tmp.path()),
        "--node",
        "storage-a",
    ]);
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
        "storage-a",
        "--san",
        "10.1.2.3",
        "--cluster",
        "blue",
    ]);
    let out = ok(&["certs", "show", path(&tmp.path().join("storage-a.pem"))]);
    for expected in [
        "CN=storage-a",
        "DNS:storage-a, IP:10.1.2.3",
        "not after:",
        "issuer:     O=blue, CN=blue CA",
        "valid",
    ] {
        assert!(out.contains(expected), "{expected:?} missing in:\n{out}");
    }
    let stderr = fails(&["certs", "show", path(&tmp.path().join("storage-a.key"))]);
    assert!(stderr.contains("storage-a.key"), "{stderr}");
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
        "--role",
        "client",
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
        "a=client",
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
        "a=storage",
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

/// Each node's roles: written as NAME=ROLE, given by --role, or the role its name starts with;
/// a node with none of these is refused, and nothing is written.
#[test]
fn roles_come_from_the_node_list_the_role_option_or_the_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("certs");
    let out = ok(&[
        "certs",
        "init",
        "--out",
        path(&dir),
        "--node",
        "master,storage-1,client-1,admin",
        "--node",
        "ops=client+admin,backup=storage",
    ]);
    assert!(out.contains("node ops (client+admin)"), "{out}");
    for (node, roles) in [
        ("master", "master"),
        ("storage-1", "storage"),
        ("client-1", "client"),
        ("admin", "admin"),
        ("ops", "client+admin"),
        ("backup", "storage"),
    ] {
        let identity = NodeIdentity::load_dir(&dir, node).expect("identity loads");
        assert_eq!(identity.roles().to_string(), roles, "{node}");
        let info = CertificateInfo::read_file(&dir.join(format!("{node}.pem"))).expect("info");
        assert_eq!(info[0].roles, roles, "{node}");
        for role in identity.roles().iter() {
            assert!(
                info[0]
                    .subject_alt_names
                    .contains(&format!("URI:urn:replicast:role:{role}")),
                "{node}: {:?}",
                info[0].subject_alt_names
            );
        }
    }

    // --role applies to the nodes given without one, whatever their names say.
    ok(&[
        "certs",
        "add",
        "--ca",
        path(&dir),
        "--node",
        "storage-9",
        "--role",
        "client",
    ]);
    let identity = NodeIdentity::load_dir(&dir, "storage-9").expect("identity loads");
    assert_eq!(identity.roles(), Roles::from(Role::Client));
    ok(&["certs", "add", "--ca", path(&dir), "--node", "ops-2=admin"]);
    let identity = NodeIdentity::load_dir(&dir, "ops-2").expect("identity loads");
    assert_eq!(identity.roles(), Roles::from(Role::Admin));

    let show = ok(&["certs", "show", path(&dir.join("ops.pem"))]);
    assert!(show.contains("roles:      client+admin"), "{show}");
    let show = ok(&["certs", "show", path(&dir.join("ca.pem"))]);
    assert!(!show.contains("roles:"), "a CA has no roles:\n{show}");

    let fresh = tempfile::tempdir().expect("tempdir");
    let stderr = fails(&[
        "certs",
        "init",
        "--out",
        path(fresh.path()),
        "--node",
        "master,mallory",
    ]);
    assert!(stderr.contains("mallory=ROLE"), "{stderr}");
    let stderr = fails(&[
        "certs",
        "init",
        "--out",
        path(fresh.path()),
        "--node",
        "mallory=root",
    ]);
    assert!(stderr.contains("\"root\""), "{stderr}");
    let stderr = fails(&[
        "certs",
        "init",
        "--out",
        path(fresh.path()),
        "--node",
        "mallory",
        "--role",
        "client,admin",
    ]);
    assert!(stderr.contains("--role"), "{stderr}");
    assert_eq!(
        fs::read_dir(fresh.path()).expect("read dir").count(),
        0,
        "nothing written"
    );
}

/// `certs init` writes an empty revocation list; `certs revoke` adds a node's certificate to
/// it, numbered one higher each time; bad arguments and an unreadable list are errors naming
/// what is wrong, and leave the list as it was.
#[test]
fn revoke_extends_the_revocation_list() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("certs");
    ok(&[
        "certs",
        "init",
        "--out",
        path(&dir),
        "--node",
        "master,storage-1,client-1",
    ]);
    let crl = dir.join("crl.pem");
    let ca = replicast_certs::load_ca_certificate(&dir.join("ca.pem")).expect("CA");
    let list = replicast_certs::RevocationList::load(&crl, std::slice::from_ref(&ca))
        .expect("init wrote a list");
    assert_eq!((list.number(), list.revoked().len()), (1, 0));

    let out = ok(&["certs", "revoke", "--ca", path(&dir), "client-1"]);
    assert!(
        out.contains("revoked client-1") && out.contains("CRL number 2"),
        "{out}"
    );
    let client = NodeIdentity::load_dir(&dir, "client-1").expect("client-1");
    let storage = NodeIdentity::load_dir(&dir, "storage-1").expect("storage-1");
    let list = replicast_certs::RevocationList::load(&crl, std::slice::from_ref(&ca))
        .expect("the new list");
    assert!(list.is_revoked(&client.certificate_der()));
    assert!(!list.is_revoked(&storage.certificate_der()));

    // A certificate replaced since is revoked by its own file.
    fs::copy(
        dir.join("storage-1.pem"),
        tmp.path().join("old-storage-1.pem"),
    )
    .expect("copy");
    ok(&[
        "certs",
        "add",
        "--ca",
        path(&dir),
        "--node",
        "storage-1",
        "--force",
    ]);
    let old = tmp.path().join("old-storage-1.pem");
    let out = ok(&[
        "certs",
        "revoke",
        "--ca",
        path(&dir),
        "storage-1",
        "--cert",
        path(&old),
    ]);
    assert!(
        out.contains("CRL number 3") && out.contains("2 revoked"),
        "{out}"
    );
    let list = replicast_certs::RevocationList::load(&crl, std::slice::from_ref(&ca))
        .expect("the new list");
    assert!(list.is_revoked(&storage.certificate_der()));
    let renewed = NodeIdentity::load_dir(&dir, "storage-1").expect("renewed storage-1");
    assert!(!list.is_revoked(&renewed.certificate_der()));
    let shown = ok(&["certs", "show", path(&crl)]);
    assert!(shown.contains("CRL number: 3"), "{shown}");

    // Errors: an unknown node, a certificate of another node, one of another CA, a spoilt list.
    let before = fs::read(&crl).expect("read");
    let stderr = fails(&["certs", "revoke", "--ca", path(&dir), "client-9"]);
    assert!(
        stderr.contains("client-9.pem") && stderr.contains("not found"),
        "{stderr}"
    );
    let stderr = fails(&[
        "certs",
        "revoke",
        "--ca",
        path(&dir),
        "client-1",
        "--cert",
        path(&dir.join("master.pem")),
    ]);
    assert!(
        stderr.contains("of node master, not of client-1"),
        "{stderr}"
    );
    let other = tmp.path().join("other");
    ok(&["certs", "init", "--out", path(&other), "--node", "client-1"]);
    let stderr = fails(&[
        "certs",
        "revoke",
        "--ca",
        path(&dir),
        "client-1",
        "--cert",
        path(&other.join("client-1.pem")),
    ]);
    assert!(stderr.contains("not signed by the cluster CA"), "{stderr}");
    assert_eq!(
        fs::read(&crl).expect("read"),
        before,
        "the list is unchanged"
    );
    fs::write(&crl, "garbage").expect("spoil the list");
    let stderr = fails(&["certs", "revoke", "--ca", path(&dir), "master"]);
    assert!(stderr.contains(path(&crl)), "{stderr}");
    assert_eq!(
        fs::read(&crl).expect("read"),
        b"garbage",
        "a spoilt list is not replaced"
    );
}
