//! A peer with a valid certificate sends oversized and garbage frames on raw quinn streams:
//! each stream gets a typed refusal, nothing panics, and the same connection still serves a
//! good request afterwards.

mod quic_support;

use std::sync::Arc;

use quic_support::*;
use replicast_transport::quic::frame::{StreamKind, decode_frame, encode_frame};
use replicast_transport::quic::hello::{Hello, Welcome};
use replicast_transport::quic::wire::{ObjectHead, Reply};
use replicast_transport::quic::{Endpoint, LinkConfig, Service, codes};

const MAX_FRAME: u32 = 64 << 10;

/// A raw quinn client connection to `server`, authenticated as `client-1`, without a hello.
async fn unintroduced_connection(
    ca: &replicast_certs::ClusterCa,
    server: &Endpoint,
) -> quinn::Connection {
    let tls = identity(ca, "client-1").client_config().unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut raw = quinn::Endpoint::client(loopback()).unwrap();
    raw.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    raw.connect(addr(server), "storage-1")
        .unwrap()
        .await
        .unwrap()
}

/// A raw quinn client connection to `server`, authenticated as `client-1`, its hello
/// welcomed.
async fn raw_connection(ca: &replicast_certs::ClusterCa, server: &Endpoint) -> quinn::Connection {
    let connection = unintroduced_connection(ca, server).await;
    let mut hello = vec![StreamKind::Hello.as_byte()];
    let body = postcard::to_stdvec(&Hello {
        session: 1,
        shared: false,
    })
    .unwrap();
    encode_frame(&body, MAX_FRAME, &mut hello).unwrap();
    match exchange(&connection, &hello).await {
        Ok(OwnedReply::Ok(welcome)) => {
            Welcome::decode(&welcome).expect("a welcome");
        }
        other => panic!("the hello was not welcomed: {other:?}"),
    }
    connection
}

/// Sends `bytes` on a new bidirectional stream and returns the decoded reply, or the reset
/// code if the server reset the stream without a reply.
async fn exchange(connection: &quinn::Connection, bytes: &[u8]) -> Result<OwnedReply, u64> {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    // The server may stop the stream before reading all of it; that is part of the test.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    match recv.read_to_end(1 << 20).await {
        Ok(reply) => {
            let (body, used) = decode_frame(&reply, MAX_FRAME)
                .unwrap()
                .expect("a whole frame");
            assert_eq!(used, reply.len(), "exactly one reply frame");
            Ok(OwnedReply::from(Reply::decode(body).unwrap()))
        }
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => Err(code.into_inner()),
        Err(e) => panic!("unexpected read error: {e}"),
    }
}

#[derive(Debug, PartialEq)]
enum OwnedReply {
    Ok(Vec<u8>),
    AppError(String),
    Rejected(String),
}

impl From<Reply<'_>> for OwnedReply {
    fn from(reply: Reply<'_>) -> Self {
        match reply {
            Reply::Ok(b) => Self::Ok(b.to_vec()),
            Reply::AppError(t) => Self::AppError(t.to_owned()),
            Reply::Rejected(t) => Self::Rejected(t.to_owned()),
        }
    }
}

/// The start of a request or object stream: its kind, then the service it is for.
fn opening(kind: StreamKind) -> Vec<u8> {
    let mut bytes = vec![kind.as_byte()];
    bytes.extend_from_slice(&Service::DEFAULT.id().to_be_bytes());
    bytes
}

fn good_request(n: u64) -> Vec<u8> {
    let mut bytes = opening(StreamKind::Request);
    encode_frame(
        &postcard::to_stdvec(&Request::Ping(n)).unwrap(),
        MAX_FRAME,
        &mut bytes,
    )
    .unwrap();
    bytes
}

fn assert_rejected(reply: Result<OwnedReply, u64>, expected: &str) {
    match reply {
        Ok(OwnedReply::Rejected(text)) => {
            assert!(text.contains(expected), "{text:?} lacks {expected:?}")
        }
        other => panic!("expected a rejection mentioning {expected:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_streams_are_refused_one_by_one_and_the_connection_goes_on() {
    bounded(async {
        let ca = ca("cluster");
        let config = LinkConfig {
            max_frame_len: MAX_FRAME,
            chunk_size: 1 << 14,
            max_object_size: 1 << 20,
            ..LinkConfig::default()
        };
        let server = endpoint(&identity(&ca, "storage-1"), config);
        serve(server.clone(), None);
        let connection = raw_connection(&ca, &server).await;

        let ok = exchange(&connection, &good_request(1)).await;
        assert_eq!(
            ok,
            Ok(OwnedReply::Ok(postcard::to_stdvec(&Pong(1)).unwrap()))
        );

        // A length prefix of 4 GiB - 1: refused from the prefix alone.
        let mut oversized = opening(StreamKind::Request);
        oversized.extend_from_slice(&u32::MAX.to_be_bytes());
        oversized.extend_from_slice(&[0xAB; 100]);
        assert_rejected(
            exchange(&connection, &oversized).await,
            "exceeds the limit of 65536",
        );

        // One byte over the limit, with the whole body actually sent.
        let mut just_over = opening(StreamKind::Request);
        just_over.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
        just_over.extend(std::iter::repeat_n(0u8, MAX_FRAME as usize + 1));
        assert_rejected(
            exchange(&connection, &just_over).await,
            "65537 bytes exceeds",
        );

        // Unknown stream kinds, a channel kind and a second hello on a bidirectional stream.
        assert_rejected(
            exchange(&connection, &[0x00, 1, 2, 3]).await,
            "unknown stream kind 0x00",
        );
        assert_rejected(
            exchange(&connection, &[0xFF]).await,
            "unknown stream kind 0xff",
        );
        assert_rejected(
            exchange(&connection, &[StreamKind::Channel.as_byte(), 0, 0, 0, 0]).await,
            "unknown stream kind 0x02",
        );
        assert_rejected(
            exchange(&connection, &[StreamKind::Hello.as_byte(), 0, 0, 0, 0]).await,
            "unknown stream kind 0x04",
        );

        // Truncated in the service: the kind byte and one byte of two.
        assert_rejected(
            exchange(&connection, &[StreamKind::Request.as_byte(), 0]).await,
            "truncated service",
        );

        // Truncated: a prefix promising 10 bytes, then the end of the stream.
        let mut truncated = opening(StreamKind::Request);
        truncated.extend_from_slice(&10u32.to_be_bytes());
        truncated.extend_from_slice(b"abc");
        assert_rejected(exchange(&connection, &truncated).await, "truncated");

        // A well-framed request whose body is not a `Request`: the application answers.
        let mut garbage_body = opening(StreamKind::Request);
        encode_frame(&[0xFF; 12], MAX_FRAME, &mut garbage_body).unwrap();
        assert!(matches!(
            exchange(&connection, &garbage_body).await,
            Ok(OwnedReply::AppError(_))
        ));

        // Objects: a garbage head, an oversized announcement, a chunk past the announced
        // length, a bad tag, a bogus compressed chunk, a wrong digest.
        let mut bad_head = opening(StreamKind::Object);
        encode_frame(&[0xFF; 11], MAX_FRAME, &mut bad_head).unwrap();
        assert_rejected(
            exchange(&connection, &bad_head).await,
            "malformed object head",
        );

        let object = |len: u64, frames: &[&[u8]]| {
            let mut bytes = opening(StreamKind::Object);
            let header = postcard::to_stdvec(&ObjectHeader { oid: 1 }).unwrap();
            let head = postcard::to_stdvec(&ObjectHead {
                len,
                header: &header,
            })
            .unwrap();
            encode_frame(&head, MAX_FRAME, &mut bytes).unwrap();
            for frame in frames {
                encode_frame(frame, MAX_FRAME, &mut bytes).unwrap();
            }
            bytes
        };
        assert_rejected(
            exchange(&connection, &object(u64::MAX, &[])).await,
            "object of 18446744073709551615 bytes exceeds",
        );
        assert_rejected(
            exchange(&connection, &object(3, &[b"\x00abcd"])).await,
            "4 bytes where only 3",
        );
        assert_rejected(
            exchange(&connection, &object(3, &[b"\x07abc"])).await,
            "unknown tag 7",
        );
        assert_rejected(
            exchange(&connection, &object(3, &[b"\x01\x00\x00\x00\x03junk"])).await,
            "compressed chunk",
        );
        assert_rejected(
            exchange(&connection, &object(3, &[b"\x00abc", &[2; 17]])).await,
            "checksum does not match",
        );
        assert_rejected(
            exchange(&connection, &object(3, &[b"\x00abc", &[2; 5]])).await,
            "object end",
        );

        // Unidirectional garbage: stopped, no reply possible. The stream is left open so the
        // stop is observable (a finished, fully delivered stream cannot be stopped anymore).
        let mut uni = connection.open_uni().await.unwrap();
        uni.write_all(&[0x09, 0, 0]).await.unwrap();
        assert_eq!(
            uni.stopped().await.unwrap(),
            Some(codes::PROTOCOL_ERROR),
            "the server stops a bad unidirectional stream"
        );

        // The very same connection still serves good requests.
        let ok = exchange(&connection, &good_request(2)).await;
        assert_eq!(
            ok,
            Ok(OwnedReply::Ok(postcard::to_stdvec(&Pong(2)).unwrap()))
        );
        assert!(connection.close_reason().is_none());
        // Eight request streams, seven object streams, one unidirectional stream.
        assert_eq!(server.stats().protocol_errors, 16);
        assert_eq!(server.stats().connections_accepted, 1);
    })
    .await;
}

#[tokio::test]
async fn a_connection_without_a_hello_is_closed() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        serve(server.clone(), None);
        // A request where the hello belongs: the connection, not just the stream, is refused.
        let connection = unintroduced_connection(&ca, &server).await;
        let (mut send, _recv) = connection.open_bi().await.unwrap();
        let _ = send.write_all(&good_request(1)).await;
        let _ = send.finish();
        let reason = connection.closed().await;
        assert!(
            matches!(
                &reason,
                quinn::ConnectionError::ApplicationClosed(close)
                    if close.error_code == codes::PROTOCOL_ERROR
            ),
            "{reason:?}"
        );
        assert_eq!(server.stats().connections_accepted, 0);
        assert_eq!(server.stats().handshake_failures, 1);
    })
    .await;
}
