//! Revocation against a cluster of `replicast node` processes (a master and three storages on
//! 127.0.0.1, P = 12, R = 2, every node loading `certs/crl.pem`).
//!
//! A client (in this process, connected) and a storage (a running process) are revoked with
//! `replicast certs revoke`, and the nodes get SIGHUP: each loads the new list, closes the
//! revoked peers' connections, and refuses them at the handshake from then on, in both
//! directions; the rest of the cluster goes on committing, and `replicast status` shows the
//! new list's number on every node. A list that cannot be read on SIGHUP leaves the one in
//! force. A missing or corrupt list, or one revoking the node itself, is a startup error
//! naming the file.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use replicast_certs::{NodeIdentity, RevocationList};
use replicast_node::client::{Client, ClientConfig};
use replicast_node::driver::ClientHandle;
use replicast_node::ids::Oid;
use replicast_testkit::process;
use replicast_testkit::process::{
    CALL_WAIT, ClusterSpec, LocalCluster, NodeProcess, WAIT, binary, client_driver_config,
    client_endpoint, common_sections, free_port, output, write_config,
};
use replicast_transport::quic::{Endpoint, EndpointConfig, LinkConfig, LinkError};

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// `replicast status --json` with the configuration at `config`.
fn status(config: &Path) -> serde_json::Value {
    let json = process::replicast(&["status", "--json", "--config", path_arg(config)])
        .expect("replicast status answers");
    serde_json::from_str(&json).expect("status is JSON")
}

fn node<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|node| node["name"] == name)
}

/// Polls `status` until `done` holds of it, bounded by [`WAIT`].
fn wait_for_status(config: &Path, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = status(config);
        if done(&status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {WAIT:?}: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGHUP to `node`; returns the peers it closed, from its `crl NUMBER closed NAMES` line,
/// which must name `number`.
fn reload(node: &NodeProcess, number: u64) -> Vec<String> {
    node.signal("-HUP");
    let prefix = format!("crl {number} closed");
    node.wait_for(&format!("line {prefix:?}"), |line| {
        line.strip_prefix(&prefix).map(|names| {
            names
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        })
    })
}

/// An endpoint presenting `name`'s certificate from `certs/`, checking peers against the
/// revocation list there (as a node with `tls.crl` does).
fn endpoint_with_crl(certs: &Path, name: &str) -> Endpoint {
    let identity = NodeIdentity::load_dir(certs, name).expect("an identity");
    let list = RevocationList::load(&certs.join("crl.pem"), identity.trusted_cas())
        .expect("the revocation list");
    let tls = identity
        .tls_configs(Some(list))
        .expect("TLS configurations");
    Endpoint::bind(EndpointConfig {
        listen: (Ipv4Addr::LOCALHOST, 0).into(),
        server_tls: tls.server,
        client_tls: tls.client,
        link: LinkConfig::default(),
    })
    .expect("bind an endpoint")
}

/// Dials `peer` at `address` from `endpoint` and asks it something; the handshake must fail.
async fn refused(endpoint: &Endpoint, peer: &str, address: SocketAddr) -> String {
    let result = async {
        let link = endpoint.link(peer, address).await?;
        // A refused client certificate may only show on the first use of the connection.
        link.request::<_, Vec<u8>>(&[0u8]).await
    };
    match tokio::time::timeout(WAIT, result).await {
        Ok(Err(LinkError::HandshakeRefused { reason, .. })) => reason,
        other => panic!("{peer} at {address} let a revoked peer in: {other:?}"),
    }
}

#[test]
fn a_revoked_client_and_storage_are_shut_out_after_sighup_and_the_rest_goes_on() {
    let cluster = LocalCluster::start(&ClusterSpec::default());
    let certs = cluster.root().join("certs");
    let master_config = cluster.config("master");
    let writer = cluster.client_config("client-1", "");
    let tid = process::put(&writer, 1, "before");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");

    // client-2 connects and reads, as a running application would.
    let client_2 = runtime.block_on(async { client_endpoint(&certs, "client-2") });
    let handle = runtime.block_on(async {
        let handle = ClientHandle::connect(
            Client::new("client-2", "master", ClientConfig::default()),
            client_2.clone(),
            client_driver_config(cluster.master),
            CALL_WAIT,
        )
        .await
        .expect("client-2 connects");
        let loaded = handle.load(Oid(1)).await.expect("client-2 reads");
        assert_eq!(
            loaded.map(|(tid, _)| format!("{:016x}", tid.0)),
            Some(tid.clone())
        );
        handle
    });
    wait_for_status(&master_config, "every node on list number 1", |status| {
        ["master", "storage-1", "storage-2", "storage-3"]
            .iter()
            .all(|name| node(status, name).is_some_and(|n| n["crl"]["number"] == 1))
    });

    for name in ["client-2", "storage-3"] {
        let revoked = process::replicast(&["certs", "revoke", "--ca", path_arg(&certs), name])
            .expect("replicast certs revoke");
        assert!(revoked.contains(&format!("revoked {name}")), "{revoked}");
    }
    let shown = process::replicast(&["certs", "show", path_arg(&certs.join("crl.pem"))])
        .expect("replicast certs show crl.pem");
    assert!(
        shown.contains("CRL number: 3") && shown.contains("revoked:    2"),
        "{shown}"
    );

    let mut cluster = cluster;
    let closed = reload(&cluster.master_node, 3);
    assert!(
        closed.contains(&"client-2".to_owned()) && closed.contains(&"storage-3".to_owned()),
        "the master closes the revoked peers' connections: {closed:?}"
    );
    for name in ["storage-1", "storage-2", "storage-3"] {
        let closed = reload(cluster.storage(name), 3);
        assert!(
            !closed.iter().any(|peer| peer.starts_with("storage-1")),
            "{closed:?}"
        );
    }

    runtime.block_on(async {
        // client-2's live connection to the master is gone, and it cannot come back.
        let master = client_2
            .known_link("master")
            .expect("client-2 knew the master");
        let deadline = Instant::now() + WAIT;
        while master.is_connected() {
            assert!(Instant::now() < deadline, "client-2 kept its connection");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reason = refused(&client_2, "master", cluster.master).await;
        assert!(reason.to_lowercase().contains("revoked"), "{reason}");
        let storage_1 = cluster.storage_address("storage-1");
        refused(&client_2, "storage-1", storage_1).await;
        // storage-3's certificate opens nothing either.
        let storage_3 = client_endpoint(&certs, "storage-3");
        refused(&storage_3, "master", cluster.master).await;
        storage_3.close();
        // And in the other direction: a node with the list refuses storage-3 as a server.
        let checking = endpoint_with_crl(&certs, "client-1");
        let reason = refused(&checking, "storage-3", cluster.storage_address("storage-3")).await;
        assert!(reason.to_lowercase().contains("revoked"), "{reason}");
        checking.close();
    });
    // The driver notices at its next link check (the connection closed at the reload).
    let deadline = Instant::now() + WAIT;
    while handle.stats().peers_lost == 0 {
        assert!(
            Instant::now() < deadline,
            "client-2's driver saw its master go: {:?}",
            handle.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The rest goes on: storage-3 is down, the others commit and serve, all on list 3.
    wait_for_status(
        &master_config,
        "storage-3 down, the rest on list 3",
        |status| {
            node(status, "storage-3").is_some_and(|n| n["state"] == "down")
                && ["master", "storage-1", "storage-2"]
                    .iter()
                    .all(|name| node(status, name).is_some_and(|n| n["crl"]["number"] == 3))
        },
    );
    let tid = process::put(&writer, 2, "after");
    assert_eq!(process::get(&writer, 2), (tid, "after".to_owned()));
    let status = status(&master_config);
    assert_eq!(status["operational"], true, "{status:#}");
    for name in ["storage-1", "storage-2"] {
        assert_eq!(
            node(&status, name).map(|n| &n["state"]),
            Some(&"running".into())
        );
    }

    // A list that cannot be read on SIGHUP leaves the one in force; the next good one is taken.
    let crl = certs.join("crl.pem");
    let good = std::fs::read(&crl).expect("read the list");
    std::fs::write(&crl, "garbage").expect("spoil the list");
    cluster.master_node.signal("-HUP");
    std::fs::write(&crl, &good).expect("restore the list");
    reload(&cluster.master_node, 3);
    assert!(cluster.master_node.is_running());
    runtime.block_on(async {
        refused(&client_2, "master", cluster.master).await;
    });

    runtime.block_on(async {
        // Its driver keeps trying; closing it is all that is left.
        let _ = tokio::time::timeout(WAIT, handle.close()).await;
    });
    drop(runtime);
    cluster.stop();
}

/// `replicast node` with `tls.crl` missing, corrupt, of another CA, or revoking the node
/// itself: exit 1 before listening, with an error naming the file.
#[test]
fn an_unusable_revocation_list_is_a_startup_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let certs = root.join("certs");
    process::replicast(&[
        "certs",
        "init",
        "--out",
        path_arg(&certs),
        "--node",
        "master,storage-1,client-1",
    ])
    .expect("replicast certs init");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        root,
        "master",
        &format!(
            "[node]\nname = \"master\"\nrole = \"master\"\nlisten = \"{listen}\"\n\n{}\n\
             [cluster]\npartitions = 4\nreplicas = 1\nstorages = [\"storage-1\"]\n",
            common_sections("master")
        ),
    );
    let crl = certs.join("crl.pem");
    let start = || {
        output(
            Command::new(binary()).args(["node", "--config", path_arg(&config)]),
            "replicast node",
        )
    };
    let good = std::fs::read(&crl).expect("certs init wrote the list");

    std::fs::remove_file(&crl).expect("remove the list");
    let outcome = start();
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains(path_arg(&crl)) && outcome.stderr.contains("not found"),
        "{}",
        outcome.stderr
    );

    for (what, bytes) in [
        ("garbage", b"garbage".to_vec()),
        (
            "a cut list",
            b"-----BEGIN X509 CRL-----\nMAMCAQA=\n-----END X509 CRL-----\n".to_vec(),
        ),
    ] {
        std::fs::write(&crl, &bytes).expect("write the list");
        let outcome = start();
        assert_eq!(outcome.code, Some(1), "{what}: {}", outcome.stderr);
        assert!(
            outcome.stderr.contains(path_arg(&crl)) && outcome.stderr.contains("tls.crl"),
            "{what}: {}",
            outcome.stderr
        );
    }

    // Another CA's list.
    let other = root.join("other");
    process::replicast(&[
        "certs",
        "init",
        "--out",
        path_arg(&other),
        "--node",
        "master",
    ])
    .expect("another CA");
    std::fs::copy(other.join("crl.pem"), &crl).expect("copy the other list");
    let outcome = start();
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains(path_arg(&crl)) && outcome.stderr.contains("not signed"),
        "{}",
        outcome.stderr
    );

    // A list revoking the node itself.
    std::fs::write(&crl, &good).expect("restore the list");
    process::replicast(&["certs", "revoke", "--ca", path_arg(&certs), "master"])
        .expect("revoke the master");
    let outcome = start();
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("master.pem is revoked by") && outcome.stderr.contains("crl.pem"),
        "{}",
        outcome.stderr
    );
}
