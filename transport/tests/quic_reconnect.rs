//! Connections dropped in the middle of a 64 MiB transfer: the caller gets an error and the
//! next call dials again and succeeds.

mod quic_support;

use quic_support::*;
use replicast_testkit::payload::{compressible, incompressible};
use replicast_transport::quic::{Incoming, LinkConfig, LinkError};

const OBJECT_LEN: usize = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_dropping_the_connection_mid_object_fails_the_send_and_the_next_request_reconnects()
 {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        let link = client.link("storage-1", addr(&server)).await.unwrap();

        let sender = link.clone();
        let sending = tokio::spawn(async move {
            sender
                .send_object::<_, Ack>(&ObjectHeader { oid: 1 }, incompressible(OBJECT_LEN, 5))
                .await
        });
        // The header has arrived and nobody reads the payload: the sender is stuck on flow
        // control well before 64 MiB, so this close lands mid-transfer.
        let Some(Incoming::Object(object)) = server.accept().await else {
            panic!("expected an object");
        };
        assert_eq!(object.len(), OBJECT_LEN as u64);
        server
            .known_link("client-1")
            .expect("the client is known")
            .disconnect("dropped by the test");
        match sending.await.unwrap() {
            Err(e @ LinkError::ConnectionLost { .. }) => assert!(e.is_connection_error()),
            other => panic!("expected a lost connection, got {other:?}"),
        }
        drop(object);

        serve(server.clone(), None);
        assert_eq!(
            link.request::<_, Pong>(&Request::Ping(2)).await.unwrap(),
            Pong(2)
        );
        assert_eq!(
            client.stats().connections_dialed,
            2,
            "the request dialed again"
        );
        // And a whole object passes on the new connection.
        let payload = incompressible(OBJECT_LEN, 6);
        let ack: Ack = link
            .send_object(&ObjectHeader { oid: 3 }, payload.clone())
            .await
            .unwrap();
        assert_eq!(ack.sha256, sha256(&payload));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_dropping_its_connection_mid_object_fails_the_send_and_the_receiver_sees_an_error()
 {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        let link = client.link("storage-1", addr(&server)).await.unwrap();

        let sender = link.clone();
        let sending = tokio::spawn(async move {
            sender
                .send_object::<_, Ack>(&ObjectHeader { oid: 1 }, compressible(OBJECT_LEN))
                .await
        });
        let Some(Incoming::Object(mut object)) = server.accept().await else {
            panic!("expected an object");
        };
        link.disconnect("dropped by the test");
        assert!(sending.await.unwrap().unwrap_err().is_connection_error());
        let received = object.receive().await;
        assert!(
            matches!(received, Err(LinkError::ConnectionLost { .. })),
            "{received:?}"
        );
        // Not the peer's fault: nothing counted as a protocol error.
        assert_eq!(server.stats().protocol_errors, 0);

        serve(server.clone(), None);
        assert_eq!(
            link.request::<_, Pong>(&Request::Ping(3)).await.unwrap(),
            Pong(3)
        );
        assert!(link.is_connected());
        assert_eq!(client.stats().connections_dialed, 2);
    })
    .await;
}
