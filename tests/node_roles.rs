//! A node's configured role must be one its certificate grants: `replicast node`,
//! `replicast client`, `replicast status` and `replicast admin` refuse to start otherwise, with
//! an error naming both roles and the certificate file, before they listen or dial.

use std::path::Path;
use std::process::Command;

use replicast_testkit::process;
use replicast_testkit::process::{binary, common_sections, free_port, output, write_config};

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// `replicast ARGS`, which must fail with exit status 1; returns its standard error.
fn fails(args: &[&str]) -> String {
    let outcome = output(
        Command::new(binary()).args(args),
        &format!("replicast {args:?}"),
    );
    assert_eq!(outcome.code, Some(1), "{args:?}: {}", outcome.stderr);
    assert!(!outcome.stderr.contains("panicked"), "{}", outcome.stderr);
    outcome.stderr
}

fn section(name: &str, role: &str, listen: &str, rest: &str) -> String {
    format!(
        "[node]\nname = \"{name}\"\nrole = \"{role}\"\nlisten = \"{listen}\"\n\n{}\n{rest}",
        common_sections(name)
    )
}

#[test]
fn a_role_the_certificate_does_not_grant_is_a_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // storage-1's certificate grants the client role; ops's the admin role.
    process::replicast(&[
        "certs",
        "init",
        "--out",
        path_arg(&root.join("certs")),
        "--node",
        "master,storage-1=client,client-1=storage,ops=admin",
    ])
    .expect("replicast certs init");
    let master = format!("127.0.0.1:{}", free_port());
    let to_master = format!("[master]\naddress = \"{master}\"\nname = \"master\"\n");

    let storage = write_config(
        root,
        "storage-1",
        &section(
            "storage-1",
            "storage",
            &format!("127.0.0.1:{}", free_port()),
            &format!("{to_master}\n[storage]\npath = \"data/storage-1.redb\"\n"),
        ),
    );
    let stderr = fails(&["node", "--config", path_arg(&storage)]);
    for expected in [
        "`node.role` is \"storage\"",
        "grants the role client",
        "storage-1.pem",
        "storage-1.toml",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing: {stderr}");
    }
    assert!(
        !root.join("data").exists(),
        "the storage refused before opening its database"
    );

    let client = write_config(
        root,
        "client-1",
        &section("client-1", "client", "127.0.0.1:0", &to_master),
    );
    let stderr = fails(&["client", "--config", path_arg(&client), "get", "1"]);
    assert!(
        stderr.contains("`node.role` is \"client\"") && stderr.contains("grants the role storage"),
        "{stderr}"
    );
    let stderr = fails(&["status", "--config", path_arg(&client)]);
    assert!(stderr.contains("grants the role storage"), "{stderr}");

    // An operator's identity with the master's role in its file, and one used as a daemon.
    let ops_as_master = write_config(
        root,
        "ops-master",
        &section(
            "ops",
            "master",
            &master,
            "[cluster]\npartitions = 4\nreplicas = 1\nstorages = [\"storage-1\"]\n",
        ),
    );
    let stderr = fails(&["node", "--config", path_arg(&ops_as_master)]);
    assert!(
        stderr.contains("`node.role` is \"master\"") && stderr.contains("grants the role admin"),
        "{stderr}"
    );
    let ops = write_config(
        root,
        "ops",
        &section("ops", "admin", "127.0.0.1:0", &to_master),
    );
    let stderr = fails(&["node", "--config", path_arg(&ops)]);
    assert!(stderr.contains("an admin is not a daemon"), "{stderr}");
}
