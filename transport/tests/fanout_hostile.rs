//! Hostile input to the fan-out API over real QUIC with real certificates on 127.0.0.1 and
//! multicast on the loopback interface (TTL 1).
//!
//! Mallory holds a valid cluster certificate, so the replica accepts her connection; what she
//! sends is not what a writer sends: undecodable control requests and object headers, unicast
//! objects whose head lies about their length, announcements for sessions she does not own,
//! membership changes for the writer's session. Each is refused with a typed error and
//! counted, nothing reaches the application, and the genuine writer's next object still
//! arrives. The other way round, a replica that answers nonsense fails the writer's calls
//! with typed errors and does not hold back the honest replicas.
//!
//! (`fanout_loopback.rs` covers forged multicast bytes under a genuine session and a removed
//! replica's old key; this file does not repeat them.)

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use replicast_certs::ClusterCa;
use replicast_testkit::endpoint::{address, endpoint, identity, random_group};
use replicast_testkit::fanout::{Replica, membership, writer_config};
use replicast_transport::fanout::wire::{
    Bundle, ControlAnswer, ControlRequest, Expectation, MAX_BUNDLE_BATCH, MAX_BUNDLE_PARTS,
    MAX_EXPECT_BATCH, MAX_UNICAST_BATCH, Membership, UnicastAck, UnicastBatchAck,
    UnicastBatchHeader, UnicastHeader, UnicastPart, Verdict, digest,
};
use replicast_transport::fanout::{
    DeliveryFailure, DeliveryPath, Fanout, FanoutError, FanoutReceiver, FanoutReceiverConfig,
    ReceivedVia, ReplicaOutcome, SERVICE, Strategy,
};
use replicast_transport::quic::frame::{StreamKind, decode_frame, encode_frame};
use replicast_transport::quic::hello::{Hello, Welcome};
use replicast_transport::quic::wire::{ObjectHead, Reply, encode_object_stream};
use replicast_transport::quic::{
    Endpoint, Incoming, Link, LinkConfig, LinkError, SERVICE_LEN, Service,
};

/// Bound on every test body.
const TEST_BOUND: Duration = Duration::from_secs(120);
/// The writer's multicast session id (`writer_config`).
const SESSION: u64 = 7;

async fn bounded<F: std::future::Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_BOUND, body)
        .await
        .expect("test exceeded its time bound")
}

/// A genuine writer with one genuine replica; `replica_endpoint` is a handle on the
/// replica's endpoint, for its counters.
struct Setup {
    ca: ClusterCa,
    writer: Fanout,
    replica: FanoutReceiver,
    replica_endpoint: Endpoint,
}

async fn setup(strategy: Strategy) -> Setup {
    let ca = ClusterCa::generate("fanout-hostile").expect("CA");
    let writer = Fanout::bind(
        endpoint(&ca, "writer"),
        writer_config(random_group(), SESSION, strategy),
    )
    .expect("bind the writer");
    let Replica {
        receiver: replica,
        endpoint: replica_endpoint,
        ..
    } = Replica::added(&writer, &ca, "replica", FanoutReceiverConfig::default()).await;
    Setup {
        ca,
        writer,
        replica,
        replica_endpoint,
    }
}

impl Setup {
    /// The writer sends object `id` with `strategy`; the replica must get exactly it, by the
    /// expected path, and nothing else must have been delivered before it.
    async fn genuine_object_arrives(&mut self, id: u64, strategy: Strategy, via: ReceivedVia) {
        let data = Bytes::from(format!("genuine object {id}").into_bytes());
        let report = self
            .writer
            .send_to(id, data.clone(), &["replica"], strategy)
            .await
            .expect("send")
            .wait()
            .await;
        assert!(report.all_delivered(), "{report:?}");
        let delivered = self.replica.recv().await.expect("the replica runs");
        assert_eq!(delivered.writer, "writer");
        assert_eq!(
            (delivered.object_id, delivered.data, delivered.via),
            (id, data, via)
        );
        assert!(self.replica.try_recv().is_none(), "delivered only once");
    }

    /// Mallory: a peer with a valid cluster certificate that is not the writer, linked to
    /// the replica's fan-out service (her endpoint, kept alive with the link).
    async fn mallory(&self) -> (Endpoint, Link) {
        let mallory = endpoint(&self.ca, "mallory");
        let link = mallory
            .link("replica", address(&self.replica_endpoint))
            .await
            .expect("Mallory's certificate is valid");
        (mallory, link.for_service(SERVICE))
    }

    fn refused(&self) -> u64 {
        self.replica.stats().refused
    }
}

/// A request's error must be the replica's typed refusal mentioning `text`.
fn assert_remote<T: std::fmt::Debug>(result: Result<T, LinkError>, text: &str) {
    match result {
        Err(LinkError::Remote { peer, message }) => {
            assert_eq!(peer, "replica");
            assert!(message.contains(text), "{message:?} lacks {text:?}");
        }
        other => panic!("expected a refusal mentioning {text:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_control_requests_and_headers_are_refused_and_counted() {
    bounded(async {
        let mut setup = setup(Strategy::Multicast).await;
        let (_mallory, link) = setup.mallory().await;

        // Not a control request at all: an unterminated varint, a variant index beyond the
        // enum, an empty body.
        let garbage: Result<ControlAnswer, _> = link.request(&[0xffu8; 8]).await;
        assert_remote(garbage, "not a fan-out request");
        let unknown_variant: Result<ControlAnswer, _> = link.request(&[0x7fu8]).await;
        assert_remote(unknown_variant, "not a fan-out request");
        let empty: Result<ControlAnswer, _> = link.request(&()).await;
        assert_remote(empty, "not a fan-out request");
        let join = ControlRequest::Join(membership(random_group(), 99));
        // A genuine join, for another service than the fan-out's: not served, whatever its
        // bytes.
        let other_service = link.clone().for_service(Service::DEFAULT);
        let not_for_the_fanout: Result<ControlAnswer, _> = other_service.request(&join).await;
        assert_remote(not_for_the_fanout, "it is for service 0");
        assert_eq!(setup.replica.stats().sessions, 1, "the writer's only");
        // A join cut short in its group key.
        let join = postcard::to_stdvec(&join).expect("encode a join");
        let mut truncated = [0u8; 16];
        truncated.copy_from_slice(&join[..16]);
        let truncated_join: Result<ControlAnswer, _> = link.request(&truncated).await;
        assert_remote(truncated_join, "not a fan-out request");
        // A join to an address that is no multicast group.
        let not_a_group: Result<ControlAnswer, _> = link
            .request(&ControlRequest::Join(membership(
                (Ipv4Addr::LOCALHOST, 9).into(),
                99,
            )))
            .await;
        assert!(not_a_group.is_err(), "{not_a_group:?}");
        assert_eq!(setup.refused(), 6);

        // An object whose header is not a fan-out header; a genuine one for another service.
        let object: Result<UnicastAck, _> = link
            .send_object(&[0xffu8; 4], Bytes::from_static(b"payload"))
            .await;
        assert_remote(object, "not a fan-out object");
        let header = UnicastHeader { object_id: 5 };
        let payload = Bytes::from_static(b"payload");
        let object: Result<UnicastAck, _> = other_service.send_object(&header, payload).await;
        assert_remote(object, "it is for service 0");
        assert_eq!(setup.refused(), 8);
        assert!(setup.replica.try_recv().is_none(), "nothing delivered");
        assert_eq!(setup.replica.stats().unicast_objects, 0);

        // The writer's session is untouched: an object still arrives over the group.
        setup
            .genuine_object_arrives(1, Strategy::Multicast, ReceivedVia::Multicast)
            .await;
    })
    .await;
}

/// The bytes of a unicast object stream for `payload` under `header` whose head announces
/// `announced` bytes instead of the payload's length (chunks and end frame as genuine).
fn lying_object_stream(header: &[u8], payload: &Bytes, announced: u64) -> Vec<u8> {
    let config = LinkConfig::default();
    let genuine =
        encode_object_stream(SERVICE, header, payload, &config).expect("encode an object");
    // The kind byte and the service.
    let opening = 1 + SERVICE_LEN;
    let (_, head_len) = decode_frame(&genuine[opening..], config.max_frame_len)
        .expect("a head frame")
        .expect("a whole head frame");
    let lying_head = postcard::to_stdvec(&ObjectHead {
        len: announced,
        header,
    })
    .expect("encode a head");
    let mut stream = genuine[..opening].to_vec();
    encode_frame(&lying_head, config.max_frame_len, &mut stream).expect("frame the head");
    stream.extend_from_slice(&genuine[opening + head_len..]);
    stream
}

/// A raw quinn connection to `server` as `name` (a valid certificate), for streams the
/// transport's own `Link` would never write.
async fn raw_connection(ca: &ClusterCa, name: &str, server: SocketAddr) -> quinn::Connection {
    let tls = identity(ca, name)
        .expect("issue node certificate")
        .client_config()
        .expect("client config");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut raw = quinn::Endpoint::client((Ipv4Addr::LOCALHOST, 0).into()).expect("bind");
    raw.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connection = raw
        .connect(server, "replica")
        .expect("connect")
        .await
        .expect("handshake");
    // Every connection opens with the dialer's hello (its session); the replica answers with
    // a welcome before it serves any other stream.
    let mut hello = vec![StreamKind::Hello.as_byte()];
    let body = postcard::to_stdvec(&Hello {
        session: 0x006d_616c_6c6f_7279,
        shared: false,
    })
    .expect("hello");
    encode_frame(&body, LinkConfig::default().max_frame_len, &mut hello).expect("frame");
    let (mut send, mut recv) = connection.open_bi().await.expect("open the hello stream");
    send.write_all(&hello).await.expect("send the hello");
    let _ = send.finish();
    let reply = recv.read_to_end(1 << 16).await.expect("a welcome");
    let (body, _) = decode_frame(&reply, LinkConfig::default().max_frame_len)
        .expect("a welcome frame")
        .expect("a whole welcome frame");
    match Reply::decode(body).expect("a reply") {
        Reply::Ok(welcome) => {
            Welcome::decode(welcome).expect("a welcome");
        }
        other => panic!("the hello was refused: {other:?}"),
    }
    connection
}

/// Sends `stream` on a new bidirectional stream; the replica's refusal text, or its reset
/// code when it reset the stream without one.
async fn refusal(connection: &quinn::Connection, stream: &[u8]) -> Result<String, u64> {
    let (mut send, mut recv) = connection.open_bi().await.expect("open a stream");
    // The replica may stop the stream before reading all of it.
    let _ = send.write_all(stream).await;
    let _ = send.finish();
    match recv.read_to_end(1 << 20).await {
        Ok(reply) => {
            let (body, _) = decode_frame(&reply, LinkConfig::default().max_frame_len)
                .expect("a reply frame")
                .expect("a whole reply frame");
            match Reply::decode(body).expect("a reply") {
                Reply::Rejected(text) | Reply::AppError(text) => Ok(text.to_owned()),
                Reply::Ok(answer) => panic!("a lying object was acknowledged: {answer:?}"),
            }
        }
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => Err(code.into_inner()),
        Err(e) => panic!("unexpected read error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_objects_with_a_lying_length_are_refused_and_never_delivered() {
    bounded(async {
        let mut setup = setup(Strategy::Unicast).await;
        let connection =
            raw_connection(&setup.ca, "mallory", address(&setup.replica_endpoint)).await;
        let header = postcard::to_stdvec(&UnicastHeader { object_id: 66 }).expect("header");
        let payload = Bytes::from(vec![0x42u8; 10_000]);
        let actual = payload.len() as u64;
        let lies = [
            ("longer than sent", actual + 100),
            ("shorter than sent", actual - 100),
            ("empty", 0),
            ("beyond the limit", u64::MAX),
        ];
        for (index, (lie, announced)) in lies.into_iter().enumerate() {
            let stream = lying_object_stream(&header, &payload, announced);
            let answer = refusal(&connection, &stream).await;
            let errors = setup.replica_endpoint.stats().protocol_errors;
            assert!(
                errors > index as u64,
                "{lie}: the replica's endpoint counts the refused stream ({errors}): {answer:?}"
            );
            if let Ok(text) = &answer {
                assert!(!text.is_empty(), "{lie}: a refusal says why");
            }
        }
        assert_eq!(setup.replica_endpoint.stats().protocol_errors, 4);
        assert!(setup.replica.try_recv().is_none(), "nothing delivered");
        assert_eq!(setup.replica.stats().unicast_objects, 0);

        // The same connection still carries a well-formed object: the connection was not
        // the problem, the lies were.
        let honest = lying_object_stream(&header, &payload, actual);
        let (mut send, mut recv) = connection.open_bi().await.expect("open a stream");
        send.write_all(&honest)
            .await
            .expect("send an honest object");
        let _ = send.finish();
        let reply = recv.read_to_end(1 << 20).await.expect("an acknowledgement");
        let (body, _) = decode_frame(&reply, LinkConfig::default().max_frame_len)
            .expect("a reply frame")
            .expect("a whole reply frame");
        let Reply::Ok(ack) = Reply::decode(body).expect("a reply") else {
            panic!("the honest object was refused");
        };
        let ack: UnicastAck = postcard::from_bytes(ack).expect("an ack");
        assert_eq!(ack.object_id, 66);
        let delivered = setup.replica.recv().await.expect("the replica runs");
        assert_eq!(
            (
                delivered.writer.as_str(),
                delivered.object_id,
                &delivered.data
            ),
            ("mallory", 66, &payload)
        );

        // And the genuine writer's objects still arrive.
        setup
            .genuine_object_arrives(2, Strategy::Unicast, ReceivedVia::Unicast)
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_and_membership_from_a_peer_that_is_not_the_writer_are_refused() {
    bounded(async {
        let mut setup = setup(Strategy::Multicast).await;
        let (_mallory, link) = setup.mallory().await;
        let bytes = Bytes::from_static(b"never sent");
        let expectation = |session_id| Expectation {
            session_id,
            multicast_id: 1,
            object_id: 1000,
            len: bytes.len() as u64,
            digest: digest(&bytes),
        };

        // Announcements for a session nobody runs, and for the writer's session.
        for session_id in [SESSION + 1, SESSION] {
            let verdict: ControlAnswer = link
                .request(&ControlRequest::Expect(expectation(session_id)))
                .await
                .expect("an announcement is answered");
            assert_eq!(verdict, ControlAnswer::Verdict(Verdict::NotMember));
        }
        assert_eq!(setup.refused(), 2);

        // Membership of the writer's session: a new key, taking the session over, leaving it.
        let rekey: Result<ControlAnswer, _> = link
            .request(&ControlRequest::Rekey {
                session_id: SESSION,
                epoch: 2,
                group_secret: [6; 32],
            })
            .await;
        assert_remote(rekey, "not a member");
        let hijack: Result<ControlAnswer, _> = link
            .request(&ControlRequest::Join(Membership {
                epoch: 9,
                group_secret: [6; 32],
                receiver_secret: [7; 32],
                ..membership(random_group(), SESSION)
            }))
            .await;
        assert_remote(hijack, "another writer");
        assert_eq!(setup.refused(), 4);
        // Leaving is answered alike whether or not the session was the asker's (it reveals
        // nothing), but only the writer's own leave ends a session.
        let leave: ControlAnswer = link
            .request(&ControlRequest::Leave {
                session_id: SESSION,
            })
            .await
            .expect("a leave is answered");
        assert_eq!(leave, ControlAnswer::Left);
        assert!(setup.replica.try_recv().is_none(), "nothing delivered");

        // The session still runs with the writer's key: an object arrives over the group,
        // verified against the writer's announcement.
        setup
            .genuine_object_arrives(3, Strategy::Multicast, ReceivedVia::Multicast)
            .await;
        assert_eq!(setup.replica.stats().matching.verified, 1);
    })
    .await;
}

/// Batches from a peer that is not the writer, or batches that lie: announcements of the
/// writer's session in a batch are refused one by one, a batch without announcements or with
/// too many is refused whole, and a unicast batch whose parts do not add up to its payload is
/// refused before anything is delivered. The genuine writer's batches still go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_batches_are_refused_with_typed_errors() {
    bounded(async {
        let mut setup = setup(Strategy::Multicast).await;
        let (_mallory, link) = setup.mallory().await;
        let bytes = Bytes::from_static(b"never sent");
        let expectation = |session_id, multicast_id| Expectation {
            session_id,
            multicast_id,
            object_id: 1000 + multicast_id,
            len: bytes.len() as u64,
            digest: digest(&bytes),
        };

        // The writer's session and one nobody runs: each announcement refused, in order.
        let verdicts: ControlAnswer = link
            .request(&ControlRequest::ExpectBatch(vec![
                expectation(SESSION, 1),
                expectation(SESSION + 1, 2),
                expectation(SESSION, 3),
            ]))
            .await
            .expect("a batch is answered");
        assert_eq!(
            verdicts,
            ControlAnswer::Verdicts(vec![Verdict::NotMember; 3])
        );
        assert_eq!(setup.refused(), 3);

        // Empty, and one too many.
        let empty: Result<ControlAnswer, _> =
            link.request(&ControlRequest::ExpectBatch(Vec::new())).await;
        assert_remote(empty, "batch of 0");
        let too_many = vec![expectation(SESSION, 9); MAX_EXPECT_BATCH + 1];
        let too_many: Result<ControlAnswer, _> =
            link.request(&ControlRequest::ExpectBatch(too_many)).await;
        assert_remote(too_many, "1 to 1024");
        assert_eq!(setup.refused(), 5);

        // Unicast batches whose parts claim more, or fewer, bytes than the payload holds,
        // and one with too many parts.
        let part = |object_id, len| UnicastPart { object_id, len };
        for parts in [
            vec![part(1, 4), part(2, 4)],
            vec![part(1, 4), part(2, 1)],
            vec![part(1, u64::MAX), part(2, 3)],
        ] {
            let sent: Result<UnicastBatchAck, _> = link
                .send_object(
                    &UnicastBatchHeader { parts },
                    Bytes::from_static(b"seven b"),
                )
                .await;
            assert_remote(sent, "add up");
        }
        let parts = (0..=MAX_UNICAST_BATCH as u64)
            .map(|id| part(id, 0))
            .collect();
        let sent: Result<UnicastBatchAck, _> = link
            .send_object(&UnicastBatchHeader { parts }, Bytes::new())
            .await;
        assert_remote(sent, "1 to 1024");
        assert_eq!(setup.refused(), 9);
        assert!(setup.replica.try_recv().is_none(), "nothing delivered");
        assert_eq!(setup.replica.stats().unicast_objects, 0);

        // A batch that adds up is Mallory's own objects, delivered under her name.
        let ack: UnicastBatchAck = link
            .send_object(
                &UnicastBatchHeader {
                    parts: vec![part(1, 3), part(2, 4)],
                },
                Bytes::from_static(b"onetwo!"),
            )
            .await
            .expect("a batch that adds up is taken");
        assert_eq!(ack.objects, 2);
        for (id, data) in [(1, &b"one"[..]), (2, &b"two!"[..])] {
            let delivered = setup.replica.recv().await.expect("the replica runs");
            assert_eq!(
                (
                    delivered.writer.as_str(),
                    delivered.object_id,
                    &delivered.data[..]
                ),
                ("mallory", id, data)
            );
        }

        // The writer's own objects, many at once, still arrive over the group.
        setup
            .genuine_object_arrives(3, Strategy::Multicast, ReceivedVia::Multicast)
            .await;
        setup
            .genuine_object_arrives(4, Strategy::Unicast, ReceivedVia::Unicast)
            .await;
    })
    .await;
}

/// Bundle announcements that lie about their parts, or come in batches too large or empty,
/// are refused whole with typed errors and counted; those naming a session the peer does not
/// hold are answered `NotMember`, bundle by bundle; nothing is delivered, and the writer's own
/// bundles still arrive over the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_bundles_are_refused_with_typed_errors() {
    bounded(async {
        let mut setup = setup(Strategy::Multicast).await;
        let (_mallory, link) = setup.mallory().await;
        let part = |object_id, len| UnicastPart { object_id, len };
        let bytes = Bytes::from_static(b"onetwo");
        let bundle = |session_id, multicast_id, parts: Vec<UnicastPart>| Bundle {
            session_id,
            multicast_id,
            len: bytes.len() as u64,
            digest: digest(&bytes),
            parts,
        };
        let honest = || vec![part(1, 3), part(2, 3)];

        // The writer's session and one nobody runs: each bundle refused, in order.
        let verdicts: ControlAnswer = link
            .request(&ControlRequest::ExpectBundles(vec![
                bundle(SESSION, 1, honest()),
                bundle(SESSION + 1, 2, honest()),
            ]))
            .await
            .expect("a batch of bundles is answered");
        assert_eq!(
            verdicts,
            ControlAnswer::Verdicts(vec![Verdict::NotMember; 2])
        );
        assert_eq!(setup.refused(), 2);

        // Parts that add up to more, or fewer, bytes than the bundle has, or overflow.
        for parts in [
            vec![part(1, 3), part(2, 4)],
            vec![part(1, 3), part(2, 2)],
            vec![part(1, u64::MAX), part(2, 7)],
        ] {
            let lying: Result<ControlAnswer, _> = link
                .request(&ControlRequest::ExpectBundles(vec![
                    bundle(SESSION, 3, honest()),
                    bundle(SESSION, 4, parts),
                ]))
                .await;
            assert_remote(lying, "add up");
        }
        // No parts, too many parts; no bundles, too many bundles.
        let empty: Result<ControlAnswer, _> = link
            .request(&ControlRequest::ExpectBundles(vec![Bundle {
                len: 0,
                ..bundle(SESSION, 5, Vec::new())
            }]))
            .await;
        assert_remote(empty, "a bundle of 0 objects");
        let too_many_parts = (0..=MAX_BUNDLE_PARTS as u64)
            .map(|id| part(id, 0))
            .collect();
        let too_many_parts: Result<ControlAnswer, _> = link
            .request(&ControlRequest::ExpectBundles(vec![Bundle {
                len: 0,
                ..bundle(SESSION, 6, too_many_parts)
            }]))
            .await;
        assert_remote(too_many_parts, "1 to 1024");
        let none: Result<ControlAnswer, _> = link
            .request(&ControlRequest::ExpectBundles(Vec::new()))
            .await;
        assert_remote(none, "a batch of 0 bundles");
        let too_many = vec![bundle(SESSION, 7, honest()); MAX_BUNDLE_BATCH + 1];
        let too_many: Result<ControlAnswer, _> =
            link.request(&ControlRequest::ExpectBundles(too_many)).await;
        assert_remote(too_many, "1 to 64");
        assert_eq!(setup.refused(), 9);
        // Only the first request's two bundles (refused one by one) were taken as announced.
        assert_eq!(setup.replica.stats().bundles, 2);
        assert!(setup.replica.try_recv().is_none(), "nothing delivered");

        // The writer's own small objects, many at once, travel bundled and arrive.
        let objects: Vec<Bytes> = (0..50u64)
            .map(|id| Bytes::from(format!("genuine small object {id}").into_bytes()))
            .collect();
        let mut handles = Vec::new();
        for (id, data) in (100..).zip(&objects) {
            handles.push(
                setup
                    .writer
                    .send_to(id, data.clone(), &["replica"], Strategy::Multicast)
                    .await
                    .expect("send"),
            );
        }
        for handle in handles {
            let report = handle.wait().await;
            assert!(report.all_delivered(), "{report:?}");
        }
        // Each once, in whatever order the announcements settled.
        let mut delivered = std::collections::BTreeMap::new();
        for _ in &objects {
            let object = setup.replica.recv().await.expect("the replica runs");
            assert_eq!(object.writer, "writer");
            assert!(delivered.insert(object.object_id, object.data).is_none());
        }
        let sent: std::collections::BTreeMap<u64, Bytes> = (100..).zip(objects).collect();
        assert_eq!(delivered, sent);
        assert!(setup.replica.stats().bundles > 2, "the burst was bundled");
        assert_eq!(setup.refused(), 9);
    })
    .await;
}

/// How a lying replica answers a join; every other request and object it answers with bytes
/// that decode as nothing.
#[derive(Clone, Copy)]
enum JoinAnswer {
    /// An answer that decodes, but to another request.
    Wrong,
    /// Bytes that decode as nothing.
    Garbage,
    /// The proper answer.
    Joined,
}

/// Serves `endpoint` as a replica that answers joins per `join` and everything else with
/// garbage.
fn serve_lies(endpoint: Endpoint, join: JoinAnswer) {
    const GARBAGE: [u8; 4] = [0xff; 4];
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            match incoming {
                Incoming::Request(request) => {
                    let is_join = matches!(
                        request.decode::<ControlRequest>(),
                        Ok(ControlRequest::Join(_))
                    );
                    let _ = match (is_join, join) {
                        (true, JoinAnswer::Wrong) => request.respond(&ControlAnswer::Left).await,
                        (true, JoinAnswer::Joined) => request.respond(&ControlAnswer::Joined).await,
                        _ => request.respond(&GARBAGE).await,
                    };
                }
                Incoming::Object(mut object) => {
                    let _ = object.receive().await;
                    let _ = object.respond(&GARBAGE).await;
                }
                Incoming::Message(_) | Incoming::ChannelEnded(_) => {}
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answering_nonsense_gets_typed_errors_and_holds_back_no_one() {
    bounded(async {
        let mut setup = setup(Strategy::Multicast).await;

        // Joins answered with the wrong answer, or with garbage: the replica is not added.
        let wrong = endpoint(&setup.ca, "liar-1");
        let wrong_address = address(&wrong);
        serve_lies(wrong, JoinAnswer::Wrong);
        match setup.writer.add_replica("liar-1", wrong_address).await {
            Err(FanoutError::UnexpectedAnswer { replica, what }) => {
                assert_eq!((replica.as_str(), what), ("liar-1", "join"));
            }
            other => panic!("expected an unexpected answer, got {other:?}"),
        }
        let garbage = endpoint(&setup.ca, "liar-2");
        let garbage_address = address(&garbage);
        serve_lies(garbage, JoinAnswer::Garbage);
        match setup.writer.add_replica("liar-2", garbage_address).await {
            Err(FanoutError::Link {
                replica,
                source: LinkError::Decode { .. },
            }) => assert_eq!(replica, "liar-2"),
            other => panic!("expected an undecodable answer, got {other:?}"),
        }
        assert_eq!(setup.writer.replicas(), vec!["replica".to_owned()]);

        // A replica that joins, then answers announcements and objects with garbage: its
        // deliveries fail with the decoding error, by either path; the honest replica's
        // succeed.
        let liar = endpoint(&setup.ca, "liar-3");
        let liar_address = address(&liar);
        serve_lies(liar, JoinAnswer::Joined);
        setup
            .writer
            .add_replica("liar-3", liar_address)
            .await
            .expect("the liar answers its join properly");
        for (id, strategy, path) in [
            (10, Strategy::Multicast, DeliveryPath::Multicast),
            (11, Strategy::Unicast, DeliveryPath::Unicast),
        ] {
            let data = Bytes::from(vec![id as u8; 3000]);
            let report = setup
                .writer
                .send_to(id, data.clone(), &["replica", "liar-3"], strategy)
                .await
                .expect("send")
                .wait()
                .await;
            assert_eq!(report.path("replica"), Some(path), "{report:?}");
            match &report.outcomes["liar-3"] {
                ReplicaOutcome::Failed {
                    reason: DeliveryFailure::Link(LinkError::Decode { .. }),
                } => {}
                other => panic!("{strategy:?}: the liar's outcome is {other:?}"),
            }
            let delivered = setup.replica.recv().await.expect("the replica runs");
            assert_eq!((delivered.object_id, delivered.data), (id, data));
        }

        // A burst of small objects travels bundled: the liar's garbage answers to the
        // bundles' announcements fail its deliveries the same way.
        let mut handles = Vec::new();
        for id in 20..60u64 {
            let data = Bytes::from(vec![id as u8; 100]);
            handles.push(
                setup
                    .writer
                    .send_to(id, data, &["replica", "liar-3"], Strategy::Multicast)
                    .await
                    .expect("send"),
            );
        }
        for handle in handles {
            let report = handle.wait().await;
            assert_eq!(
                report.path("replica"),
                Some(DeliveryPath::Multicast),
                "{report:?}"
            );
            match &report.outcomes["liar-3"] {
                ReplicaOutcome::Failed {
                    reason: DeliveryFailure::Link(LinkError::Decode { .. }),
                } => {}
                other => panic!("a bundled object's outcome at the liar is {other:?}"),
            }
        }
        assert!(setup.replica.stats().bundles >= 1, "the burst was bundled");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_holds_one_session_however_many_it_opens() {
    bounded(async {
        let mut setup = setup(Strategy::Multicast).await;
        assert_eq!(setup.replica.stats().sessions, 1, "the writer's session");
        let (_mallory, link) = setup.mallory().await;
        // Each join names a new session: each replaces Mallory's previous one, so she never
        // holds more than one socket and task on the replica.
        for session_id in 1_000..1_020 {
            let answer: ControlAnswer = link
                .request(&ControlRequest::Join(membership(
                    random_group(),
                    session_id,
                )))
                .await
                .expect("a join of her own session is accepted");
            assert!(matches!(answer, ControlAnswer::Joined), "{answer:?}");
            let stats = setup.replica.stats();
            assert_eq!(stats.sessions, 2, "the writer's and Mallory's latest");
            assert_eq!(
                stats.multicast_sockets, 2,
                "the sockets of the writer's group and of Mallory's latest: the others closed"
            );
        }
        // The writer's session is untouched.
        setup
            .genuine_object_arrives(1, Strategy::Multicast, ReceivedVia::Multicast)
            .await;
    })
    .await;
}
