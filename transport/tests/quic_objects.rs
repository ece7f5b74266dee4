//! Objects of every size between two real endpoints on loopback, byte-exact.

mod quic_support;

use bytes::Bytes;
use quic_support::*;
use replicast_testkit::payload::{compressible, incompressible};
use replicast_transport::quic::{Endpoint, Incoming, Link, LinkConfig, LinkError};

const MIB: usize = 1 << 20;

/// `storage-1` serving objects with `server`'s configuration, and a link to it from `client-1`
/// with `client`'s: the server's endpoint, the client's (kept for the link's lifetime) and the
/// link.
async fn served(server: LinkConfig, client: LinkConfig) -> (Endpoint, Endpoint, Link) {
    let ca = ca("cluster");
    let server = endpoint(&identity(&ca, "storage-1"), server);
    let client = endpoint(&identity(&ca, "client-1"), client);
    serve(server.clone(), None);
    let link = client.link("storage-1", addr(&server)).await.unwrap();
    (server, client, link)
}

async fn round_trip(payloads: Vec<(&'static str, Bytes)>) {
    bounded(async {
        let (server, _client, link) = served(LinkConfig::default(), LinkConfig::default()).await;
        for (oid, (what, payload)) in payloads.into_iter().enumerate() {
            let expected = Ack {
                oid: oid as u64,
                len: payload.len() as u64,
                sha256: sha256(&payload),
            };
            let ack: Ack = link
                .send_object(&ObjectHeader { oid: oid as u64 }, payload)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(ack, expected, "{what}");
        }
        assert_eq!(server.stats().protocol_errors, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_round_trip_byte_exact() {
    round_trip(vec![
        ("0 B", Bytes::new()),
        ("1 B", Bytes::from_static(b"x")),
        ("1 MiB compressible", compressible(MIB)),
        ("1 MiB incompressible", incompressible(MIB, 1)),
        ("1 MiB + 1 compressible", compressible(MIB + 1)),
        ("3 bytes under the threshold", compressible(4093)),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_compressible_object_round_trips_byte_exact() {
    round_trip(vec![("64 MiB compressible", compressible(64 * MIB))]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_incompressible_object_round_trips_byte_exact() {
    round_trip(vec![("64 MiB incompressible", incompressible(64 * MIB, 7))]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_object_round_trips_byte_exact() {
    round_trip(vec![(
        "256 MiB incompressible",
        incompressible(256 * MIB, 8),
    )])
    .await;
}

#[tokio::test]
async fn objects_round_trip_without_compression_and_with_odd_chunk_sizes() {
    bounded(async {
        let link_config = LinkConfig {
            chunk_size: 1000,
            compression_threshold: None,
            ..LinkConfig::default()
        };
        let (_server, _client, link) = served(LinkConfig::default(), link_config).await;
        for (oid, payload) in [
            compressible(12_345),
            incompressible(999, 2),
            compressible(1000),
        ]
        .into_iter()
        .enumerate()
        {
            let ack: Ack = link
                .send_object(&ObjectHeader { oid: oid as u64 }, payload.clone())
                .await
                .unwrap();
            assert_eq!(ack.len, payload.len() as u64);
            assert_eq!(ack.sha256, sha256(&payload));
        }
    })
    .await;
}

#[tokio::test]
async fn an_object_sent_in_parts_arrives_as_their_concatenation() {
    bounded(async {
        // Parts longer than a chunk, shorter, empty, compressible and not, some tried with
        // zstd (threshold 100) and some not.
        let link_config = LinkConfig {
            chunk_size: 1000,
            compression_threshold: Some(100),
            ..LinkConfig::default()
        };
        let (_server, _client, link) = served(LinkConfig::default(), link_config).await;
        let parts = vec![
            compressible(2_500),
            Bytes::new(),
            incompressible(999, 4),
            compressible(40),
            incompressible(3_001, 5),
        ];
        let whole: Bytes = parts.concat().into();
        let ack: Ack = link
            .send_object_parts(&ObjectHeader { oid: 7 }, parts)
            .await
            .unwrap();
        assert_eq!(ack.len, whole.len() as u64);
        assert_eq!(ack.sha256, sha256(&whole));
    })
    .await;
}

#[tokio::test]
async fn an_object_above_the_receivers_limit_is_refused_before_its_payload() {
    bounded(async {
        let server_config = LinkConfig {
            max_object_size: 1000,
            ..LinkConfig::default()
        };
        let (server, _client, link) = served(server_config, LinkConfig::default()).await;

        let refused = link
            .send_object::<_, Ack>(&ObjectHeader { oid: 1 }, incompressible(1001, 3))
            .await;
        match refused {
            Err(LinkError::Rejected { peer, message }) => {
                assert_eq!(peer, "storage-1");
                assert!(
                    message.contains("object of 1001 bytes exceeds"),
                    "{message}"
                );
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(server.stats().protocol_errors, 1);
        // The connection goes on: an object at the limit passes.
        let ack: Ack = link
            .send_object(&ObjectHeader { oid: 2 }, incompressible(1000, 3))
            .await
            .unwrap();
        assert_eq!(ack.len, 1000);
    })
    .await;
}

#[tokio::test]
async fn the_receiver_can_refuse_an_object_by_its_header() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        let link = client.link("storage-1", addr(&server)).await.unwrap();
        let payload = incompressible(8 * MIB, 4);
        let sending = tokio::spawn(async move {
            link.send_object::<_, Ack>(&ObjectHeader { oid: 13 }, payload)
                .await
        });
        let Some(Incoming::Object(object)) = server.accept().await else {
            panic!("expected an object");
        };
        assert_eq!(
            object.header::<ObjectHeader>().unwrap(),
            ObjectHeader { oid: 13 }
        );
        assert_eq!(object.len(), 8 * MIB as u64);
        assert_eq!(object.peer(), "client-1");
        object
            .respond_err("partition not served here")
            .await
            .unwrap();
        match sending.await.unwrap() {
            Err(LinkError::Remote { message, .. }) => {
                assert_eq!(message, "partition not served here")
            }
            other => panic!("expected a remote error, got {other:?}"),
        }
    })
    .await;
}
