//! Requests, answers and messages between two real endpoints on loopback.

mod quic_support;

use std::collections::HashSet;

use quic_support::*;
use replicast_testkit::payload::incompressible;
use replicast_transport::quic::{Incoming, LinkConfig, LinkError, Service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_concurrent_requests_are_each_matched_to_their_answer() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        serve(server.clone(), None);
        let server_addr = addr(&server);

        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..5_000u64 {
            let client = client.clone();
            tasks.spawn(async move {
                // Every task asks for the link itself: all must share the one connection.
                let link = client.link("storage-1", server_addr).await?;
                let Pong(answer) = link.request(&Request::Ping(n * 3 + 1)).await?;
                Ok::<_, LinkError>((n, answer))
            });
        }
        let mut seen = HashSet::new();
        while let Some(joined) = tasks.join_next().await {
            let (n, answer) = joined.expect("task").expect("request");
            assert_eq!(answer, n * 3 + 1, "answer of request {n}");
            assert!(seen.insert(n));
        }
        assert_eq!(seen.len(), 5_000);
        assert_eq!(
            client.stats().connections_dialed,
            1,
            "one connection per peer pair"
        );
        assert_eq!(server.stats().connections_accepted, 1);
        assert_eq!(server.stats().protocol_errors, 0);
    })
    .await;
}

#[tokio::test]
async fn an_error_answer_arrives_as_remote_and_the_link_stays_usable() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        serve(server.clone(), None);
        let link = client.link("storage-1", addr(&server)).await.unwrap();

        let failed = link
            .request::<_, Pong>(&Request::Fail("no such oid".into()))
            .await;
        match failed {
            Err(LinkError::Remote { peer, message }) => {
                assert_eq!(peer, "storage-1");
                assert_eq!(message, "no such oid");
            }
            other => panic!("expected a remote error, got {other:?}"),
        }
        assert_eq!(
            link.request::<_, Pong>(&Request::Ping(9)).await.unwrap(),
            Pong(9)
        );
        assert_eq!(link.peer(), "storage-1");
        assert_eq!(link.remote_address(), addr(&server));
        assert!(link.rtt().is_some());
    })
    .await;
}

#[tokio::test]
async fn an_answer_of_the_wrong_type_is_a_decode_error() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        serve(server.clone(), None);
        let link = client.link("storage-1", addr(&server)).await.unwrap();
        // Pong(300) is a varint of two bytes; a bool cannot decode from it.
        let wrong = link.request::<_, bool>(&Request::Ping(300)).await;
        assert!(matches!(wrong, Err(LinkError::Decode { .. })), "{wrong:?}");
    })
    .await;
}

#[tokio::test]
async fn messages_arrive_in_order_with_the_sender_name() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "master"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-7"), LinkConfig::default());
        let (messages_tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
        serve(server.clone(), Some(messages_tx));
        let link = client.link("master", addr(&server)).await.unwrap();
        for n in 0..10u64 {
            link.send_message(&Request::Ping(n)).await.unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..10 {
            let (peer, body) = messages.recv().await.expect("message");
            assert_eq!(peer, "client-7");
            got.push(postcard::from_bytes::<Request>(&body).unwrap());
        }
        // One channel per peer: in the order sent, by construction.
        assert_eq!(got, (0..10).map(Request::Ping).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test]
async fn the_accepting_side_reaches_the_dialer_over_the_same_connection() {
    bounded(async {
        let ca = ca("cluster");
        let storage = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        serve(client.clone(), None);

        // The client dials and sends a message; storage learns who it is from the certificate.
        let link = client.link("storage-1", addr(&storage)).await.unwrap();
        link.send_message(&Request::Ping(1)).await.unwrap();
        let Some(Incoming::Message(message)) = storage.accept().await else {
            panic!("expected a message");
        };
        assert_eq!(message.peer(), "client-1");

        // Storage answers by request on the accepted connection: no new connection.
        let back = storage.known_link("client-1").expect("the client is known");
        assert_eq!(
            back.request::<_, Pong>(&Request::Ping(5)).await.unwrap(),
            Pong(5)
        );
        assert_eq!(storage.stats().connections_dialed, 0);
        assert_eq!(client.stats().connections_accepted, 0);
        assert!(storage.known_link("nobody").is_none());
    })
    .await;
}

#[tokio::test]
async fn requests_and_objects_arrive_with_the_service_their_link_names() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        let plain = client.link("storage-1", addr(&server)).await.unwrap();
        assert_eq!(plain.service(), Service::DEFAULT);
        let other = plain.clone().for_service(Service::new(0xbeef));
        // The receiver answers every request and object with the service it arrived for.
        let serving = tokio::spawn(async move {
            for _ in 0..3 {
                let Some(incoming) = server.accept().await else {
                    panic!("the server runs");
                };
                let service = incoming.service().expect("requests and objects name one");
                let sent = match incoming {
                    Incoming::Request(request) => request.respond(&service.id()).await,
                    Incoming::Object(mut object) => {
                        object.receive().await.expect("the payload");
                        object.respond(&service.id()).await
                    }
                    other => panic!("a request or an object expected, got {other:?}"),
                };
                sent.expect("the answer goes out");
            }
            // Kept open until the answers arrived: dropping it closes the connection.
            server
        });
        // The same bytes, for two services.
        let first: u16 = plain.request(&Request::Ping(1)).await.unwrap();
        let second: u16 = other.request(&Request::Ping(1)).await.unwrap();
        let header = ObjectHeader { oid: 1 };
        let third: u16 = other
            .send_object(&header, incompressible(100, 1))
            .await
            .unwrap();
        assert_eq!((first, second, third), (0, 0xbeef, 0xbeef));
        let _server = serving.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_request_dropped_unanswered_resets_the_stream() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        let link = client.link("storage-1", addr(&server)).await.unwrap();
        let pending = tokio::spawn(async move { link.request::<_, Pong>(&Request::Ping(1)).await });
        let Some(Incoming::Request(request)) = server.accept().await else {
            panic!("expected a request");
        };
        drop(request);
        match pending.await.unwrap() {
            Err(LinkError::StreamReset { code, .. }) => {
                assert_eq!(
                    code,
                    replicast_transport::quic::codes::NO_REPLY.into_inner()
                )
            }
            other => panic!("expected a reset, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn accept_returns_none_after_close_and_calls_fail() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        let link = client.link("storage-1", addr(&server)).await.unwrap();
        server.close();
        assert!(server.accept().await.is_none());
        client.close();
        let after = link.request::<_, Pong>(&Request::Ping(1)).await;
        assert!(after.is_err(), "{after:?}");
    })
    .await;
}

#[tokio::test]
async fn dialing_a_silent_address_fails_with_the_peer_name_and_address() {
    bounded(async {
        let ca = ca("cluster");
        // A bound socket that never answers: the handshake can only time out.
        let silent = std::net::UdpSocket::bind(loopback()).unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let config = LinkConfig {
            keep_alive: None,
            idle_timeout: Some(std::time::Duration::from_millis(300)),
            ..LinkConfig::default()
        };
        let client = endpoint(&identity(&ca, "client-1"), config);
        match client.link("storage-9", silent_addr).await {
            Err(e @ LinkError::Connect { .. }) => {
                let text = e.to_string();
                assert!(text.contains("storage-9"), "{text}");
                assert!(text.contains(&silent_addr.to_string()), "{text}");
                assert!(e.is_connection_error());
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
        assert_eq!(client.stats().connections_dialed, 0);
    })
    .await;
}
