//! Mutual TLS between nodes, driven in memory: rustls connections pumped through buffers.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use replicast_certs::{ALPN, ClusterCa, NodeIdentity, anonymous_client_config, node_name_of};
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, ClientConnection, ServerConfig, ServerConnection};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Which side refused the handshake, and why.
#[derive(Debug)]
enum Refused {
    ByClient(rustls::Error),
    ByServer(rustls::Error),
}

/// Runs a handshake to completion or to the first error; bounded in rounds.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    server_name: &str,
) -> Result<(ClientConnection, ServerConnection), Refused> {
    let name = ServerName::try_from(server_name.to_owned()).expect("test server name is valid");
    let mut client = ClientConnection::new(client, name).map_err(Refused::ByClient)?;
    let mut server = ServerConnection::new(server).map_err(Refused::ByServer)?;
    for _ in 0..16 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client
                .write_tls(&mut buf)
                .expect("writing to a Vec cannot fail");
        }
        let mut input = &buf[..];
        while !input.is_empty() {
            server
                .read_tls(&mut input)
                .expect("reading from a slice cannot fail");
            server.process_new_packets().map_err(Refused::ByServer)?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server
                .write_tls(&mut buf)
                .expect("writing to a Vec cannot fail");
        }
        let mut input = &buf[..];
        while !input.is_empty() {
            client
                .read_tls(&mut input)
                .expect("reading from a slice cannot fail");
            client.process_new_packets().map_err(Refused::ByClient)?;
        }
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            return Ok((client, server));
        }
    }
    panic!("handshake did not finish in 16 rounds");
}

fn mutual(client: &NodeIdentity, server: &NodeIdentity) -> Result<(), Refused> {
    handshake(
        client.client_config().expect("client config"),
        server.server_config().expect("server config"),
        server.name(),
    )
    .map(drop)
}

fn cluster() -> (ClusterCa, NodeIdentity, NodeIdentity) {
    let ca = ClusterCa::generate("test").expect("generate CA");
    let a = ca.issue("node-a", &[]).expect("issue node-a");
    let b = ca.issue("node-b", &[]).expect("issue node-b");
    (ca, a, b)
}

fn is_certificate_error(err: &rustls::Error, wanted: fn(&CertificateError) -> bool) -> bool {
    matches!(err, rustls::Error::InvalidCertificate(e) if wanted(e))
}

#[test]
fn nodes_of_one_ca_authenticate_each_other_by_name() {
    let (_ca, a, b) = cluster();
    let (client, server) = handshake(
        a.client_config().expect("client config"),
        b.server_config().expect("server config"),
        "node-b",
    )
    .expect("handshake between nodes of one CA");

    assert_eq!(client.alpn_protocol(), Some(ALPN));
    assert_eq!(server.alpn_protocol(), Some(ALPN));
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let client_chain = server
        .peer_certificates()
        .expect("server saw a client certificate");
    let server_chain = client
        .peer_certificates()
        .expect("client saw a server certificate");
    assert_eq!(
        node_name_of(&client_chain[0]).expect("client CN").as_str(),
        "node-a"
    );
    assert_eq!(
        node_name_of(&server_chain[0]).expect("server CN").as_str(),
        "node-b"
    );
}

/// A client that trusts the cluster CA (so it gets as far as presenting its certificate) but
/// presents `identity`, whatever CA signed it.
fn client_trusting(ca: &ClusterCa, identity: &NodeIdentity) -> Arc<ClientConfig> {
    identity
        .client_config_trusting(&ca.certificate_der())
        .expect("client config")
}

#[test]
fn server_refuses_client_of_another_ca() {
    let (ca, _a, b) = cluster();
    let intruder = ClusterCa::generate("other").expect("generate other CA");
    let mallory = intruder.issue("node-a", &[]).expect("issue");
    let result = handshake(
        client_trusting(&ca, &mallory),
        b.server_config().expect("server config"),
        "node-b",
    );
    match result {
        Err(Refused::ByServer(e)) => assert!(
            is_certificate_error(&e, |c| matches!(c, CertificateError::UnknownIssuer)),
            "{e}"
        ),
        other => panic!("expected the server to refuse, got {other:?}"),
    }
}

#[test]
fn client_refuses_server_of_another_ca() {
    let (_ca, a, _b) = cluster();
    let intruder = ClusterCa::generate("other").expect("generate other CA");
    let mallory = intruder.issue("node-b", &[]).expect("issue");
    match mutual(&a, &mallory) {
        Err(Refused::ByClient(e)) => assert!(
            is_certificate_error(&e, |c| matches!(c, CertificateError::UnknownIssuer)),
            "{e}"
        ),
        other => panic!("expected the client to refuse, got {other:?}"),
    }
}

#[test]
fn server_refuses_anonymous_client() {
    let (ca, _a, b) = cluster();
    let result = handshake(
        anonymous_client_config(&ca.certificate_der()).expect("anonymous config"),
        b.server_config().expect("server config"),
        "node-b",
    );
    match result {
        Err(Refused::ByServer(e)) => {
            assert!(matches!(e, rustls::Error::NoCertificatesPresented), "{e}")
        }
        other => panic!("expected the server to refuse, got {other:?}"),
    }
}

#[test]
fn anonymous_client_still_verifies_the_server() {
    let (_ca, _a, b) = cluster();
    let intruder = ClusterCa::generate("other").expect("generate other CA");
    let result = handshake(
        anonymous_client_config(&intruder.certificate_der()).expect("anonymous config"),
        b.server_config().expect("server config"),
        "node-b",
    );
    assert!(matches!(result, Err(Refused::ByClient(_))), "{result:?}");
}

fn expired(ca: &ClusterCa, node: &str) -> NodeIdentity {
    let now = SystemTime::now();
    ca.issue_with_validity(node, &[], now - 10 * DAY, now - DAY)
        .expect("issue expired")
}

fn not_yet_valid(ca: &ClusterCa, node: &str) -> NodeIdentity {
    let now = SystemTime::now();
    ca.issue_with_validity(node, &[], now + DAY, now + 10 * DAY)
        .expect("issue not yet valid")
}

fn is_expired(c: &CertificateError) -> bool {
    matches!(
        c,
        CertificateError::Expired | CertificateError::ExpiredContext { .. }
    )
}

fn is_not_yet_valid(c: &CertificateError) -> bool {
    matches!(
        c,
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
    )
}

#[test]
fn server_refuses_expired_client_certificate() {
    let (ca, _a, b) = cluster();
    let result = handshake(
        client_trusting(&ca, &expired(&ca, "node-a")),
        b.server_config().expect("server config"),
        "node-b",
    );
    match result {
        Err(Refused::ByServer(e)) => assert!(is_certificate_error(&e, is_expired), "{e}"),
        other => panic!("expected the server to refuse, got {other:?}"),
    }
}

#[test]
fn client_refuses_expired_server_certificate() {
    let (ca, a, _b) = cluster();
    match mutual(&a, &expired(&ca, "node-b")) {
        Err(Refused::ByClient(e)) => assert!(is_certificate_error(&e, is_expired), "{e}"),
        other => panic!("expected the client to refuse, got {other:?}"),
    }
}

#[test]
fn client_refuses_not_yet_valid_server_certificate() {
    let (ca, a, _b) = cluster();
    match mutual(&a, &not_yet_valid(&ca, "node-b")) {
        Err(Refused::ByClient(e)) => assert!(is_certificate_error(&e, is_not_yet_valid), "{e}"),
        other => panic!("expected the client to refuse, got {other:?}"),
    }
}

#[test]
fn client_refuses_server_with_another_name() {
    let (ca, a, b) = cluster();
    let _c = ca.issue("node-c", &[]).expect("issue node-c");
    // Dialing node-c, but node-b answers: a valid certificate of the cluster, wrong node.
    let result = handshake(
        a.client_config().expect("client config"),
        b.server_config().expect("server config"),
        "node-c",
    );
    match result {
        Err(Refused::ByClient(e)) => assert!(
            is_certificate_error(&e, |c| matches!(
                c,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )),
            "{e}"
        ),
        other => panic!("expected the client to refuse, got {other:?}"),
    }
}

#[test]
fn extra_sans_are_accepted_as_server_names() {
    let ca = ClusterCa::generate("test").expect("generate CA");
    let a = ca.issue("node-a", &[]).expect("issue node-a");
    let b = ca
        .issue("node-b", &["127.0.0.1".into(), "b.example.org".into()])
        .expect("issue node-b");
    for name in ["node-b", "127.0.0.1", "b.example.org"] {
        handshake(
            a.client_config().expect("client config"),
            b.server_config().expect("server config"),
            name,
        )
        .unwrap_or_else(|e| panic!("dialing {name}: {e:?}"));
    }
}

/// Server and client configurations of `identity` checking `list`, and their revocation.
fn with_list(
    identity: &NodeIdentity,
    list: Option<replicast_certs::RevocationList>,
) -> replicast_certs::TlsConfigs {
    identity.tls_configs(list).expect("TLS configurations")
}

#[test]
fn revoked_peers_are_refused_in_both_directions_once_the_list_is_replaced() {
    let ca = ClusterCa::generate("test").expect("generate CA");
    let roles = replicast_certs::Role::Storage.into();
    let a = ca.issue_with_roles("node-a", roles, &[]).expect("issue");
    let b = ca.issue_with_roles("node-b", roles, &[]).expect("issue");
    let c = ca.issue_with_roles("node-c", roles, &[]).expect("issue");
    let empty = ca.revocation_list(None, &[]).expect("an empty list");
    let a_tls = with_list(&a, Some(empty.clone()));
    let b_tls = with_list(&b, Some(empty.clone()));
    let c_tls = with_list(&c, Some(empty.clone()));
    handshake(a_tls.client.clone(), b_tls.server.clone(), "node-b").expect("before revocation");
    handshake(c_tls.client.clone(), b_tls.server.clone(), "node-b").expect("before revocation");

    // node-a is revoked; b and c load the new list into the configurations they already use.
    let list = ca
        .revocation_list(Some(&empty), &[a.certificate_der()])
        .expect("a list revoking node-a");
    assert_eq!(list.number(), 2);
    for tls in [&b_tls, &c_tls] {
        let generation = tls.revocation.generation();
        tls.revocation.replace(Some(list.clone())).expect("replace");
        assert_ne!(tls.revocation.generation(), generation);
        assert!(tls.revocation.is_revoked(&a.certificate_der()));
        assert!(!tls.revocation.is_revoked(&c.certificate_der()));
    }
    let is_revoked =
        |e: &rustls::Error| is_certificate_error(e, |c| matches!(c, CertificateError::Revoked));
    // b, as a server, refuses a's client certificate...
    match handshake(a_tls.client.clone(), b_tls.server.clone(), "node-b") {
        Err(Refused::ByServer(e)) => assert!(is_revoked(&e), "{e}"),
        other => panic!("expected the server to refuse a revoked client, got {other:?}"),
    }
    // ... and c, as a client, refuses a's server certificate.
    match handshake(c_tls.client.clone(), a_tls.server.clone(), "node-a") {
        Err(Refused::ByClient(e)) => assert!(is_revoked(&e), "{e}"),
        other => panic!("expected the client to refuse a revoked server, got {other:?}"),
    }
    // The others are undisturbed.
    handshake(c_tls.client.clone(), b_tls.server.clone(), "node-b").expect("c to b");
    handshake(b_tls.client.clone(), c_tls.server.clone(), "node-c").expect("b to c");

    // Without a list again, a is let in.
    b_tls.revocation.replace(None).expect("no list");
    handshake(a_tls.client.clone(), b_tls.server.clone(), "node-b").expect("no list");
}

/// Writes `identity`'s certificate and key into `dir`; returns their paths.
fn save(
    identity: &NodeIdentity,
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    identity.save(dir, false).expect("save a node's files");
    let name = replicast_certs::NodeName::new(identity.name()).expect("a node name");
    NodeIdentity::file_paths(dir, &name)
}

#[test]
fn while_a_ca_is_rotated_nodes_of_both_cas_meet_and_each_cas_list_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let roles = replicast_certs::Role::Storage.into();
    let old = ClusterCa::generate("test").expect("the old CA");
    let new = ClusterCa::generate("test").expect("the new CA");
    let a = old.issue_with_roles("node-a", roles, &[]).expect("issue");
    let b = new.issue_with_roles("node-b", roles, &[]).expect("issue");
    let (a_cert, a_key) = save(&a, dir.path());
    let (b_cert, b_key) = save(&b, dir.path());
    let both = dir.path().join("both-ca.pem");
    std::fs::write(
        &both,
        old.certificate_pem() + new.certificate_pem().as_str(),
    )
    .expect("write the CA bundle");
    let old_list = old.revocation_list(None, &[]).expect("a list");
    let new_list = new.revocation_list(None, &[]).expect("a list");
    let lists = dir.path().join("both-crl.pem");
    std::fs::write(&lists, old_list.pem() + new_list.pem().as_str()).expect("write the lists");

    let a = NodeIdentity::load(&a_cert, &a_key, &both).expect("node-a trusting both");
    let b = NodeIdentity::load(&b_cert, &b_key, &both).expect("node-b trusting both");
    assert_eq!(a.trusted_cas().len(), 2);
    let list = replicast_certs::RevocationList::load(&lists, a.trusted_cas()).expect("both lists");
    let a_tls = with_list(&a, Some(list.clone()));
    let b_tls = with_list(&b, Some(list.clone()));
    handshake(a_tls.client.clone(), b_tls.server.clone(), "node-b").expect("old to new");
    handshake(b_tls.client.clone(), a_tls.server.clone(), "node-a").expect("new to old");

    // A list lacking one CA's is refused, naming the file.
    let lacking = dir.path().join("one-crl.pem");
    std::fs::write(&lacking, old_list.pem()).expect("write one list");
    let error = replicast_certs::RevocationList::load(&lacking, a.trusted_cas())
        .expect_err("a trusted CA without its list");
    assert!(error.to_string().contains("one-crl.pem"), "{error}");

    // node-a revoked on the old CA's list: refused, though its serial is not on the new's.
    let revoked = old
        .revocation_list(Some(&old_list), &[a.certificate_der()])
        .expect("revoke node-a");
    let combined = replicast_certs::RevocationList::combine(vec![revoked, new_list.clone()])
        .expect("the two lists");
    assert!(combined.is_revoked(&a.certificate_der()));
    assert!(!combined.is_revoked(&b.certificate_der()));
    b_tls.revocation.replace(Some(combined)).expect("replace");
    match handshake(a_tls.client.clone(), b_tls.server.clone(), "node-b") {
        Err(Refused::ByServer(e)) => assert!(
            is_certificate_error(&e, |c| matches!(c, CertificateError::Revoked)),
            "{e}"
        ),
        other => panic!("expected the server to refuse a revoked client, got {other:?}"),
    }

    // Once the new CA alone is trusted, a certificate of the old one is refused.
    let new_only = dir.path().join("new-ca.pem");
    std::fs::write(&new_only, new.certificate_pem()).expect("write the new CA");
    let b_alone = NodeIdentity::load(&b_cert, &b_key, &new_only).expect("node-b, new CA only");
    let b_alone_tls = with_list(&b_alone, Some(new_list));
    match handshake(a_tls.client.clone(), b_alone_tls.server.clone(), "node-b") {
        Err(Refused::ByServer(e)) => assert!(
            is_certificate_error(&e, |c| matches!(c, CertificateError::UnknownIssuer)),
            "{e}"
        ),
        other => panic!("expected the server to refuse the old CA's client, got {other:?}"),
    }
    let error = NodeIdentity::load(&a_cert, &a_key, &new_only)
        .expect_err("node-a's certificate is of none of the trusted CAs");
    assert!(error.to_string().contains("node-a.pem"), "{error}");
}
