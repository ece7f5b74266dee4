//! Handshakes that must be refused, each for its own reason, with real certificates.

mod quic_support;

use std::time::{Duration, SystemTime};

use quic_support::*;
use replicast_transport::quic::{Endpoint, EndpointConfig, LinkConfig, LinkError};

/// Dials `name` at the server and sends one request through whatever connection results: a
/// refusal may surface at the dial or, for a refused client certificate, on the first use.
async fn dial_and_request(
    client: &Endpoint,
    name: &str,
    server: &Endpoint,
) -> Result<Pong, LinkError> {
    let link = client.link(name, addr(server)).await?;
    link.request(&Request::Ping(1)).await
}

fn assert_refused(result: Result<Pong, LinkError>, expected_peer: &str) {
    match result {
        Err(LinkError::HandshakeRefused { peer, reason, .. }) => {
            assert_eq!(peer, expected_peer);
            assert!(!reason.is_empty());
        }
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    bounded(async {
        let ours = ca("cluster");
        let theirs = ca("cluster"); // Same name, different key: only the signature tells.
        let server = endpoint(&identity(&theirs, "storage-1"), LinkConfig::default());
        let client = endpoint(&identity(&ours, "client-1"), LinkConfig::default());
        serve(server.clone(), None);
        assert_refused(
            dial_and_request(&client, "storage-1", &server).await,
            "storage-1",
        );
        assert_eq!(server.stats().connections_accepted, 0);
    })
    .await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    bounded(async {
        let ours = ca("cluster");
        let theirs = ca("cluster");
        let server = endpoint(&identity(&ours, "storage-1"), LinkConfig::default());
        // The intruder trusts our CA (it knows the public certificate) but its own
        // certificate is signed by another CA.
        let intruder = identity(&theirs, "client-1");
        let client = Endpoint::bind(EndpointConfig {
            listen: loopback(),
            server_tls: intruder.server_config().unwrap(),
            client_tls: intruder_client_config(&ours, &intruder),
            link: LinkConfig::default(),
        })
        .unwrap();
        serve(server.clone(), None);
        assert_refused(
            dial_and_request(&client, "storage-1", &server).await,
            "storage-1",
        );
        assert_eq!(server.stats().connections_accepted, 0);
        assert_eq!(server.stats().handshake_failures, 1);
    })
    .await;
}

/// A client configuration presenting `intruder`'s certificate and trusting `ca`: the
/// certificates crate builds configurations trusting the node's own CA only, so this one is
/// assembled by hand from the intruder's saved key.
fn intruder_client_config(
    ca: &replicast_certs::ClusterCa,
    intruder: &replicast_certs::NodeIdentity,
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    intruder.save(dir.path(), false).unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.path().join(format!("{}.key", intruder.name())))
        .expect("the intruder's saved key");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.certificate_der()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![intruder.certificate_der()], key)
        .unwrap();
    config.alpn_protocols = vec![replicast_certs::ALPN.to_vec()];
    std::sync::Arc::new(config)
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let anonymous = Endpoint::bind(EndpointConfig {
            listen: loopback(),
            server_tls: identity(&ca, "anonymous").server_config().unwrap(),
            client_tls: replicast_certs::anonymous_client_config(&ca.certificate_der()).unwrap(),
            link: LinkConfig::default(),
        })
        .unwrap();
        serve(server.clone(), None);
        assert_refused(
            dial_and_request(&anonymous, "storage-1", &server).await,
            "storage-1",
        );
        assert_eq!(server.stats().connections_accepted, 0);
        assert_eq!(server.stats().handshake_failures, 1);
    })
    .await;
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    bounded(async {
        let ca = ca("cluster");
        let day = Duration::from_secs(86_400);
        let now = SystemTime::now();
        let expired = ca
            .issue_with_validity("storage-1", &[], now - 30 * day, now - day)
            .unwrap();
        let server = endpoint(&expired, LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        serve(server.clone(), None);
        let result = dial_and_request(&client, "storage-1", &server).await;
        match &result {
            Err(LinkError::HandshakeRefused { reason, .. }) => {
                assert!(reason.to_lowercase().contains("expired"), "{reason}")
            }
            other => panic!("expected a refused handshake, got {other:?}"),
        }
        assert_eq!(server.stats().connections_accepted, 0);
    })
    .await;
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    bounded(async {
        let ca = ca("cluster");
        let day = Duration::from_secs(86_400);
        let now = SystemTime::now();
        let expired = ca
            .issue_with_validity("client-1", &[], now - 30 * day, now - day)
            .unwrap();
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let client = endpoint(&expired, LinkConfig::default());
        serve(server.clone(), None);
        assert_refused(
            dial_and_request(&client, "storage-1", &server).await,
            "storage-1",
        );
        assert_eq!(server.stats().connections_accepted, 0);
        assert_eq!(server.stats().handshake_failures, 1);
    })
    .await;
}

#[tokio::test]
async fn a_certificate_for_another_node_name_is_refused() {
    bounded(async {
        let ca = ca("cluster");
        // A valid certificate of the cluster, but for storage-2, answering at the address
        // the client believes is storage-1.
        let server = endpoint(&identity(&ca, "storage-2"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        serve(server.clone(), None);
        let result = dial_and_request(&client, "storage-1", &server).await;
        match &result {
            Err(LinkError::HandshakeRefused { peer, reason, .. }) => {
                assert_eq!(peer, "storage-1");
                assert!(
                    reason.contains("NotValidForName") || reason.contains("name"),
                    "{reason}"
                );
            }
            other => panic!("expected a refused handshake, got {other:?}"),
        }
        // Dialing the name it does hold works.
        assert_eq!(
            dial_and_request(&client, "storage-2", &server)
                .await
                .unwrap(),
            Pong(1)
        );
    })
    .await;
}
