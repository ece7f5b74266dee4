//! The fan-out API on real sockets: QUIC with real certificates on 127.0.0.1, multicast on
//! the loopback interface (TTL 1), loss injected on the replicas' multicast receive paths and
//! on the writer's QUIC socket.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use replicast_certs::ClusterCa;
use replicast_testkit::endpoint::{EndpointSpec, endpoint, random_group};
use replicast_testkit::fanout::{Replica, membership, writer_config};
use replicast_transport::fanout::matching::MatcherLimits;
use replicast_transport::fanout::wire::{
    APPLICATION_ID_LIMIT, BUNDLE_BIT, Bundle, BundleFrame, ControlAnswer, ControlRequest,
    Expectation, Membership, UnicastAck, UnicastHeader, UnicastPart, Verdict, digest,
};
use replicast_transport::fanout::{
    DeliveredObject, DeliveryFailure, DeliveryPath, Fanout, FanoutConfig, FanoutError,
    FanoutReceiver, FanoutReceiverConfig, FanoutReport, ReceivedVia, ReplicaOutcome, SERVICE,
    Strategy, Verification,
};
use replicast_transport::multicast::driver::{
    ImpairmentConfig, MulticastReceiver, MulticastReceiverConfig, MulticastSender,
    MulticastSenderConfig, MulticastSocketConfig, Received,
};
use replicast_transport::multicast::proto::{GroupKey, RateLimit, ReceiverKey};
use replicast_transport::netem::{LinkConditions, NetemConfig, Probability, RandomLoss};
use replicast_transport::quic::{Endpoint, Incoming, Link, LinkError};

/// Bound on every test body.
const TEST_BOUND: Duration = Duration::from_secs(150);

async fn bounded<F: std::future::Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_BOUND, body)
        .await
        .expect("test exceeded its time bound")
}

/// A writer endpoint whose outgoing QUIC datagrams lose `loss` at random (seeded).
fn lossy_endpoint(ca: &ClusterCa, name: &str, loss: f32) -> Endpoint {
    let conditions = LinkConditions::new().with_default(
        NetemConfig::new()
            .loss(RandomLoss::new(Probability::new(loss)))
            .seed(11),
    );
    replicast_testkit::endpoint::bind(
        ca,
        name,
        &EndpointSpec::default().with_conditions(Some(conditions)),
    )
    .expect("bind endpoint")
}

/// Object `id` of the workload: sizes from empty to 1 MiB, contents derived from the id.
fn object(id: u64) -> Bytes {
    let mut rng = StdRng::seed_from_u64(id);
    let size = match rng.random_range(0..100) {
        0..5 => 0,
        5..45 => rng.random_range(1..1_500),
        45..85 => rng.random_range(1_500..64 * 1024),
        85..98 => rng.random_range(64 * 1024..512 * 1024),
        _ => 1 << 20,
    };
    let mut data = vec![0; size];
    rng.fill_bytes(&mut data);
    Bytes::from(data)
}

struct Cluster {
    writer: Fanout,
    replicas: Vec<(String, FanoutReceiver)>,
}

/// The writer's multicast session, unless a test names another.
const SESSION: u64 = 7;

async fn cluster(
    ca: &ClusterCa,
    writer_endpoint: Endpoint,
    strategy: Strategy,
    replica_loss: f64,
    expect_timeout: Duration,
) -> Cluster {
    let verification = Verification::Replica;
    let spec = (strategy, verification, replica_loss, expect_timeout);
    verified_cluster(ca, writer_endpoint, spec).await
}

/// A [`cluster`] whose writer checks the group's bytes as `verification` says.
async fn verified_cluster(
    ca: &ClusterCa,
    writer_endpoint: Endpoint,
    (strategy, verification, replica_loss, expect_timeout): (Strategy, Verification, f64, Duration),
) -> Cluster {
    let config = FanoutConfig {
        verification,
        ..writer_config(random_group(), SESSION, strategy)
    };
    let writer = Fanout::bind(writer_endpoint, config).expect("bind writer");
    let mut replicas = Vec::new();
    for index in 0..3u64 {
        let config = FanoutReceiverConfig {
            impairment: (replica_loss > 0.0)
                .then(|| ImpairmentConfig::loss(replica_loss, 100 + index)),
            expect_timeout,
            ..FanoutReceiverConfig::default()
        };
        let replica = Replica::added(&writer, ca, &format!("replica-{index}"), config).await;
        replicas.push((replica.name, replica.receiver));
    }
    Cluster { writer, replicas }
}

/// Sends objects `ids` with the writer's default strategy and waits for every report.
async fn send_all(
    writer: &Fanout,
    ids: impl Iterator<Item = u64>,
    payload: fn(u64) -> Bytes,
) -> Vec<FanoutReport> {
    let mut handles = Vec::new();
    for id in ids {
        handles.push(writer.send(id, payload(id)).await.expect("send"));
    }
    let mut reports = Vec::new();
    for handle in handles {
        reports.push(handle.wait().await);
    }
    reports
}

/// Checks that every one of `reports` reached `replica` over the group.
fn assert_by_multicast(reports: &[FanoutReport], replica: &str) {
    for report in reports {
        assert_eq!(
            report.path(replica),
            Some(DeliveryPath::Multicast),
            "{report:?}"
        );
    }
}

/// Everything each replica has been given so far, checked to arrive at most once.
fn drain(replica: &mut FanoutReceiver) -> BTreeMap<u64, (Bytes, ReceivedVia)> {
    let mut objects = BTreeMap::new();
    while let Some(object) = replica.try_recv() {
        keep_once(&mut objects, object);
    }
    objects
}

/// The first `count` objects `replica` is given, waiting for each (under application
/// verification the writer's outcome comes with the group's acknowledgement, which may be
/// sent before the replica's socket task queued the object), checked to arrive at most once.
async fn receive(
    replica: &mut FanoutReceiver,
    count: usize,
) -> BTreeMap<u64, (Bytes, ReceivedVia)> {
    let mut objects = BTreeMap::new();
    while objects.len() < count {
        keep_once(
            &mut objects,
            replica.recv().await.expect("the replica runs"),
        );
    }
    objects
}

/// Adds `object`, from the writer, to `objects`, which must not hold it yet.
fn keep_once(objects: &mut BTreeMap<u64, (Bytes, ReceivedVia)>, object: DeliveredObject) {
    assert_eq!(object.writer, "writer");
    let previous = objects.insert(object.object_id, (object.data, object.via));
    assert!(
        previous.is_none(),
        "object {} delivered twice",
        object.object_id
    );
}

async fn same_workload(strategy: Strategy) -> Vec<BTreeMap<u64, (Bytes, ReceivedVia)>> {
    let ca = ClusterCa::generate("fanout").expect("CA");
    let writer_endpoint = lossy_endpoint(&ca, "writer", 0.01);
    let mut cluster = cluster(
        &ca,
        writer_endpoint,
        strategy,
        0.02,
        Duration::from_secs(10),
    )
    .await;
    let reports = send_all(&cluster.writer, 0..200, object).await;
    for report in &reports {
        assert!(report.all_delivered(), "{strategy:?}: {report:?}");
    }
    let stats = cluster.writer.multicast_stats().await.expect("stats");
    match strategy {
        Strategy::Unicast => assert_eq!(stats.protocol.objects_sent, 0),
        // Small objects travel bundled: a multicast object carries one or more of them.
        Strategy::Multicast => assert!((1..=200).contains(&stats.protocol.objects_sent)),
        Strategy::Auto => assert!(stats.protocol.objects_sent > 0),
    }
    let mut received = Vec::new();
    for (_, replica) in &mut cluster.replicas {
        if strategy == Strategy::Multicast {
            // Every multicast object (a bundle or a single one) verified at every replica.
            let verified = replica.stats().matching.verified;
            assert_eq!(verified, stats.protocol.objects_sent);
        }
        let objects = drain(replica);
        assert_eq!(objects.len(), 200, "{strategy:?}");
        for (id, (data, _)) in &objects {
            assert_eq!(*data, object(*id), "{strategy:?}: object {id} differs");
        }
        received.push(objects);
    }
    received
}

/// The same 200 objects (0 B .. 1 MiB) through each strategy to 3 replicas, with 2% loss on
/// each replica's multicast receive path and 1% on the writer's QUIC socket: every replica
/// ends with the same bytes, each object delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_delivers_the_same_bytes_under_loss() {
    bounded(async {
        let unicast = same_workload(Strategy::Unicast).await;
        let multicast = same_workload(Strategy::Multicast).await;
        let auto = same_workload(Strategy::Auto).await;
        let bytes = |runs: &[BTreeMap<u64, (Bytes, ReceivedVia)>]| -> Vec<Vec<(u64, Bytes)>> {
            runs.iter()
                .map(|run| {
                    run.iter()
                        .map(|(id, (data, _))| (*id, data.clone()))
                        .collect()
                })
                .collect()
        };
        assert_eq!(bytes(&unicast), bytes(&multicast));
        assert_eq!(bytes(&unicast), bytes(&auto));
        assert!(
            unicast
                .iter()
                .flat_map(|run| run.values())
                .all(|(_, via)| *via == ReceivedVia::Unicast)
        );
        assert!(
            multicast
                .iter()
                .flat_map(|run| run.values())
                .all(|(_, via)| *via == ReceivedVia::Multicast)
        );
    })
    .await;
}

/// A burst of small objects, handed over back to back: every replica gets each once, and
/// what the writer says to a replica travels batched through its lane, in fewer announcement
/// requests (multicast) or object streams (unicast) than there are objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_small_objects_travels_batched() {
    bounded(async {
        const OBJECTS: u64 = 500;
        let ca = ClusterCa::generate("fanout").expect("CA");
        for strategy in [Strategy::Unicast, Strategy::Multicast] {
            let mut cluster = cluster(
                &ca,
                endpoint(&ca, "writer"),
                strategy,
                0.0,
                Duration::from_secs(10),
            )
            .await;
            let data: Vec<Bytes> = (0..OBJECTS)
                .map(|id| Bytes::from(format!("small object {id}").into_bytes()))
                .collect();
            let mut handles = Vec::new();
            for (id, bytes) in (0..OBJECTS).zip(&data) {
                handles.push(cluster.writer.send(id, bytes.clone()).await.expect("send"));
            }
            for handle in handles {
                let report = handle.wait().await;
                assert!(report.all_delivered(), "{strategy:?}: {report:?}");
            }
            for (name, replica) in &mut cluster.replicas {
                let stats = replica.stats();
                let (carriers, via) = match strategy {
                    Strategy::Multicast => (stats.announcement_requests, ReceivedVia::Multicast),
                    _ => (stats.unicast_streams, ReceivedVia::Unicast),
                };
                assert!(
                    (1..OBJECTS).contains(&carriers),
                    "{strategy:?}, {name}: {OBJECTS} objects in {carriers} requests or streams"
                );
                let objects = drain(replica);
                assert_eq!(objects.len() as u64, OBJECTS, "{strategy:?}, {name}");
                for (id, (bytes, path)) in objects {
                    assert_eq!((bytes, path), (data[id as usize].clone(), via));
                }
            }
        }
    })
    .await;
}

/// Small objects multicast in a burst leave bundled: far fewer multicast objects than objects,
/// each replica told of them in bundles, and every object delivered once over the group with
/// its exact bytes; the sender's counters agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_small_multicast_objects_travels_bundled() {
    bounded(async {
        const OBJECTS: u64 = 1000;
        let ca = ClusterCa::generate("fanout").expect("CA");
        let mut cluster = cluster(
            &ca,
            endpoint(&ca, "writer"),
            Strategy::Multicast,
            0.0,
            Duration::from_secs(10),
        )
        .await;
        let data: Vec<Bytes> = (0..OBJECTS)
            .map(|id| Bytes::from(vec![id as u8; 100 + (id as usize * 7) % 300]))
            .collect();
        let mut handles = Vec::new();
        for (id, bytes) in (0..OBJECTS).zip(&data) {
            handles.push(cluster.writer.send(id, bytes.clone()).await.expect("send"));
        }
        for handle in handles {
            let report = handle.wait().await;
            assert!(report.all_delivered(), "{report:?}");
            for name in ["replica-0", "replica-1", "replica-2"] {
                assert_eq!(report.path(name), Some(DeliveryPath::Multicast));
            }
        }
        let sent = cluster
            .writer
            .multicast_stats()
            .await
            .expect("sender stats");
        assert!(
            sent.protocol.objects_sent < OBJECTS / 2,
            "{OBJECTS} objects in {} multicast objects",
            sent.protocol.objects_sent
        );
        for (name, replica) in &mut cluster.replicas {
            let stats = replica.stats();
            assert!(stats.bundles >= 1, "{name}: no bundle");
            // Every multicast object (bundle or single) verified once, nothing by unicast.
            assert_eq!(
                stats.matching.verified, sent.protocol.objects_sent,
                "{name}"
            );
            assert_eq!(stats.unicast_objects, 0, "{name}");
            let objects = drain(replica);
            assert_eq!(objects.len() as u64, OBJECTS, "{name}");
            for (id, (bytes, path)) in objects {
                assert_eq!(
                    (bytes, path),
                    (data[id as usize].clone(), ReceivedVia::Multicast)
                );
            }
        }
    })
    .await;
}

/// Under `Auto`, a replica whose multicast path goes silent mid-run (it leaves the group
/// without telling anyone) gets every later object by unicast, the first ones by fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_serves_a_replica_by_unicast_once_multicast_stops_reaching_it() {
    auto_after_multicast_stops(Verification::Replica).await;
}

/// As [`auto_serves_a_replica_by_unicast_once_multicast_stops_reaching_it`], where no replica
/// answers announcements: the group's acknowledgement, which stops for the silent replica,
/// is what demotes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_under_application_verification_serves_a_replica_the_group_stopped_reaching() {
    auto_after_multicast_stops(Verification::Application).await;
}

async fn auto_after_multicast_stops(verification: Verification) {
    bounded(async {
        let ca = ClusterCa::generate("fanout").expect("CA");
        let spec = (
            Strategy::Auto,
            verification,
            0.0,
            Duration::from_millis(500),
        );
        let mut cluster = verified_cluster(&ca, endpoint(&ca, "writer"), spec).await;
        let first = send_all(&cluster.writer, 0..60, object).await;
        for report in &first {
            assert!(report.all_delivered(), "{report:?}");
        }
        for name in ["replica-0", "replica-1", "replica-2"] {
            assert!(
                first
                    .iter()
                    .any(|r| r.path(name) == Some(DeliveryPath::Multicast)),
                "{name} was never proven reachable on the group"
            );
        }

        cluster.replicas[1].1.stop_multicast();
        let second = send_all(&cluster.writer, 60..200, object).await;
        for report in &second {
            assert!(report.all_delivered(), "{report:?}");
            assert_ne!(report.path("replica-1"), Some(DeliveryPath::Multicast));
        }
        assert!(
            second
                .iter()
                .any(|r| r.path("replica-1") == Some(DeliveryPath::UnicastFallback)),
            "the silent replica was never served by fallback"
        );
        // Once demoted it is served by plain unicast, no longer waiting for a multicast.
        assert_eq!(
            second.last().and_then(|r| r.path("replica-1")),
            Some(DeliveryPath::Unicast)
        );
        // The others keep receiving the group.
        assert!(
            second
                .iter()
                .any(|r| r.path("replica-0") == Some(DeliveryPath::Multicast))
        );

        for (name, replica) in &mut cluster.replicas {
            let objects = receive(replica, 200).await;
            assert!(replica.try_recv().is_none(), "{name}: more than was sent");
            for (id, (data, _)) in &objects {
                assert_eq!(*data, object(*id), "{name}: object {id} differs");
            }
        }
    })
    .await;
}

/// A replica on a runtime of its own, which [`FrozenReplica::freeze`] stops the way SIGSTOP
/// stops a process: its sockets stay open, nothing reads them or answers.
struct FrozenReplica {
    addr: SocketAddr,
    freeze: Option<tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<()>>>,
    thaw: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FrozenReplica {
    fn start(ca: &ClusterCa, name: &str) -> Self {
        let config = replicast_testkit::endpoint::endpoint_config(ca, name);
        let (freeze, frozen) = tokio::sync::oneshot::channel::<tokio::sync::oneshot::Sender<()>>();
        let (thaw, thawed) = std::sync::mpsc::channel();
        let (bound, addr) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the replica's runtime");
            runtime.block_on(async move {
                let endpoint = Endpoint::bind(config).expect("bind the replica");
                bound
                    .send(endpoint.local_addr().expect("local address"))
                    .expect("the test waits for the address");
                let _receiver = FanoutReceiver::start(endpoint, FanoutReceiverConfig::default());
                if let Ok(ack) = frozen.await {
                    let _ = ack.send(());
                    // Blocks this thread, and with it every task of this runtime.
                    let _ = thawed.recv();
                }
            });
        });
        let addr = addr
            .recv_timeout(Duration::from_secs(10))
            .expect("the replica binds");
        Self {
            addr,
            freeze: Some(freeze),
            thaw,
            thread: Some(thread),
        }
    }

    async fn freeze(&mut self) {
        let (ack, frozen) = tokio::sync::oneshot::channel();
        if let Some(freeze) = self.freeze.take() {
            freeze.send(ack).expect("the replica runs");
        }
        frozen.await.expect("the replica freezes");
    }
}

impl Drop for FrozenReplica {
    fn drop(&mut self) {
        let _ = self.thaw.send(());
        drop(self.freeze.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Under `Auto`, a replica served by multicast that freezes fails its delivery once the
/// writer's link takes it for lost (the idle timeout), instead of being dialed again for a
/// unicast fallback, which would wait the whole connect timeout for a peer that does not
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_fails_a_frozen_replica_when_its_link_fails_instead_of_dialing_it_again() {
    bounded(async {
        let ca = ClusterCa::generate("fanout").expect("CA");
        let link = replicast_transport::quic::LinkConfig {
            keep_alive: Some(Duration::from_millis(100)),
            idle_timeout: Some(Duration::from_millis(600)),
            connect_timeout: Duration::from_secs(60),
            ..replicast_transport::quic::LinkConfig::default()
        };
        let writer_endpoint = replicast_testkit::endpoint::bind(
            &ca,
            "writer",
            &EndpointSpec::default().with_link(link),
        )
        .expect("bind the writer");
        let writer = Fanout::bind(
            writer_endpoint,
            writer_config(random_group(), SESSION, Strategy::Auto),
        )
        .expect("bind writer");
        let mut replica = FrozenReplica::start(&ca, "replica-0");
        writer
            .add_replica("replica-0", replica.addr)
            .await
            .expect("add replica");
        let mut proven = false;
        for id in 0..100 {
            let report = writer
                .send(id, object(id))
                .await
                .expect("send")
                .wait()
                .await;
            assert!(report.all_delivered(), "{report:?}");
            if report.path("replica-0") == Some(DeliveryPath::Multicast) {
                proven = true;
                break;
            }
        }
        assert!(
            proven,
            "the replica was never proven reachable on the group"
        );

        replica.freeze().await;
        let mut handle = writer.send(100, object(100)).await.expect("send");
        // Well within the connect timeout: a fallback that dials again would still wait.
        let outcome = tokio::time::timeout(Duration::from_secs(20), handle.next())
            .await
            .expect("the frozen replica's outcome comes once its link is lost");
        match outcome {
            Some((name, ReplicaOutcome::Failed { reason })) => {
                assert_eq!(name, "replica-0");
                assert!(
                    matches!(
                        reason,
                        DeliveryFailure::Link(LinkError::ConnectionLost { .. })
                    ),
                    "the lost link is the reason, not a new dial: {reason:?}"
                );
            }
            other => panic!("the frozen replica cannot have the object: {other:?}"),
        }
    })
    .await;
}

/// A replica's fan-out receiver, and a writer's endpoint with its link to the replica's
/// fan-out service.
async fn replica_and_link(config: FanoutReceiverConfig) -> (FanoutReceiver, Endpoint, Link) {
    let ca = ClusterCa::generate("fanout").expect("CA");
    let replica = Replica::start(&ca, "replica", config);
    let writer = endpoint(&ca, "writer");
    let link = writer.link("replica", replica.address).await.expect("link");
    (replica.receiver, writer, link.for_service(SERVICE))
}

/// Makes the replica behind `link` join session `session_id` of a new group (its group key
/// `group_secret`, the replica's own key `receiver_secret`, as receiver 1), and returns a
/// sender of that session: what a writer runs, or any member of the group, which holds the
/// group key too.
async fn joined_session(
    link: &Link,
    session_id: u64,
    (group_secret, receiver_secret): ([u8; 32], [u8; 32]),
    verification: Verification,
) -> MulticastSender {
    let group = random_group();
    let joined: ControlAnswer = link
        .request(&ControlRequest::Join(Membership {
            group_secret,
            receiver_secret,
            verification,
            ..membership(group, session_id)
        }))
        .await
        .expect("join");
    assert_eq!(joined, ControlAnswer::Joined);
    let sender = MulticastSender::bind(
        MulticastSenderConfig::new(MulticastSocketConfig::new(group), session_id),
        GroupKey {
            epoch: 1,
            secret: group_secret,
        },
    )
    .expect("bind a sender of the session");
    sender
        .add_receiver(ReceiverKey {
            receiver_id: 1,
            secret: receiver_secret,
        })
        .await
        .expect("add the replica as receiver");
    sender
}

/// A member that holds the group key can forge an object on the group; the replica refuses
/// bytes that do not match the digest the writer announced over QUIC, delivers nothing, and
/// takes the writer's bytes by unicast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_multicast_bytes_are_refused_and_replaced_by_unicast() {
    bounded(async {
        let (mut replica, _writer, link) = replica_and_link(FanoutReceiverConfig::default()).await;

        // The forger: a sender with the session's id and key, as any member could run.
        let forger = joined_session(&link, 9, ([3; 32], [4; 32]), Verification::Replica).await;
        let genuine = Bytes::from_static(b"the writer's bytes");
        let forged = Bytes::from_static(b"somebody else's bytes");
        let report = forger.send(1, forged).await.expect("forge").wait().await;
        assert!(
            report.all_delivered(),
            "the forged datagrams reached the replica"
        );

        let verdict: ControlAnswer = link
            .request(&ControlRequest::Expect(Expectation {
                session_id: 9,
                multicast_id: 1,
                object_id: 500,
                len: genuine.len() as u64,
                digest: digest(&genuine),
            }))
            .await
            .expect("announce");
        assert_eq!(verdict, ControlAnswer::Verdict(Verdict::Mismatch));
        assert!(replica.try_recv().is_none(), "forged bytes were delivered");
        assert_eq!(replica.stats().matching.mismatched, 1);

        let ack: UnicastAck = link
            .send_object(&UnicastHeader { object_id: 500 }, genuine.clone())
            .await
            .expect("unicast");
        assert_eq!(ack.object_id, 500);
        let delivered = replica.recv().await.expect("delivered");
        assert_eq!(
            (delivered.object_id, delivered.data, delivered.via),
            (500, genuine, ReceivedVia::Unicast)
        );
        assert!(replica.try_recv().is_none());
    })
    .await;
}

/// Under application verification nobody announces anything: small objects still leave
/// bundled (framed in their bytes) and large ones alone, every replica gets each object once
/// over the group with its exact bytes, and the writer's outcomes come from the group's own
/// acknowledgement, with no request on any replica's link. An id the group cannot carry is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_application_verification_the_group_acknowledgement_settles_each_object() {
    bounded(async {
        const SMALL: u64 = 300;
        let ca = ClusterCa::generate("fanout").expect("CA");
        let config = FanoutConfig {
            verification: Verification::Application,
            ..writer_config(random_group(), SESSION, Strategy::Multicast)
        };
        let writer = Fanout::bind(endpoint(&ca, "writer"), config).expect("bind writer");
        let mut replicas = Vec::new();
        for index in 0..3 {
            let name = format!("replica-{index}");
            let replica =
                Replica::added(&writer, &ca, &name, FanoutReceiverConfig::default()).await;
            replicas.push((replica.name, replica.receiver));
        }
        // Ids far apart, as an application's may be: the group carries them as they are.
        let id = |index: u64| (APPLICATION_ID_LIMIT - 1) - index * 1_000_003;
        let data: Vec<Bytes> = (0..SMALL + 2)
            .map(|index| match index {
                SMALL.. => Bytes::from(vec![index as u8; 600 << 10]),
                _ => Bytes::from(vec![index as u8; 50 + (index as usize * 13) % 900]),
            })
            .collect();
        let mut handles = Vec::new();
        for (index, bytes) in (0..).zip(&data) {
            handles.push(writer.send(id(index), bytes.clone()).await.expect("send"));
        }
        for handle in handles {
            let report = handle.wait().await;
            assert!(report.all_delivered(), "{report:?}");
            let report = [report];
            for name in ["replica-0", "replica-1", "replica-2"] {
                assert_by_multicast(&report, name);
            }
        }
        let sent = writer.multicast_stats().await.expect("sender stats");
        assert!(
            sent.protocol.objects_sent < SMALL / 2,
            "{} objects in {} multicast objects",
            data.len(),
            sent.protocol.objects_sent
        );
        for (name, replica) in &mut replicas {
            let objects = receive(replica, data.len()).await;
            assert!(replica.try_recv().is_none(), "{name}: more than was sent");
            let stats = replica.stats();
            assert_eq!(
                (
                    stats.announcement_requests,
                    stats.bundles,
                    stats.matching.verified
                ),
                (0, 0, 0),
                "{name}: nothing announced, nothing matched"
            );
            assert_eq!(stats.unannounced, data.len() as u64, "{name}");
            assert_eq!((stats.unicast_objects, stats.refused), (0, 0), "{name}");
            for (index, bytes) in (0..).zip(&data) {
                assert_eq!(
                    objects.get(&id(index)),
                    Some(&(bytes.clone(), ReceivedVia::Multicast)),
                    "{name}: object {index}"
                );
            }
        }
        let beyond = writer
            .send(APPLICATION_ID_LIMIT, Bytes::from_static(b"x"))
            .await;
        assert!(
            matches!(beyond, Err(FanoutError::ObjectId(APPLICATION_ID_LIMIT))),
            "{beyond:?}"
        );
    })
    .await;
}

/// Under application verification the replica delivers what a session's group brings as it
/// comes: a single object under its own id, a framed bundle as its parts, and a frame that
/// does not add up (any member of the group may send one) as nothing, counted refused. The
/// bytes are the application's to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unannounced_bundle_that_does_not_add_up_delivers_nothing() {
    bounded(async {
        let (mut replica, _writer, link) = replica_and_link(FanoutReceiverConfig::default()).await;
        let sender =
            joined_session(&link, 15, ([9; 32], [10; 32]), Verification::Application).await;
        let parts = [
            (80, Bytes::from_static(b"first")),
            (81, Bytes::from_static(b"second")),
        ];
        let framed = BundleFrame::encode(&parts);
        let cut = framed.slice(..framed.len() - 1);
        for (multicast_id, bytes) in [(BUNDLE_BIT | 1, cut), (BUNDLE_BIT | 2, framed)] {
            let report = sender.send(multicast_id, bytes).await.expect("send");
            assert!(report.wait().await.all_delivered());
        }
        for (object_id, bytes) in parts {
            let object = replica.recv().await.expect("delivered");
            // Its digest comes with it, for the application to check.
            assert_eq!(object.digest, Some(digest(&bytes)));
            assert_eq!(
                (
                    object.writer.as_str(),
                    object.object_id,
                    object.data,
                    object.via
                ),
                ("writer", object_id, bytes, ReceivedVia::Multicast)
            );
        }
        let single = Bytes::from_static(b"alone");
        let report = sender.send(82, single.clone()).await.expect("send");
        assert!(report.wait().await.all_delivered());
        let object = replica.recv().await.expect("delivered");
        assert_eq!((object.object_id, object.data), (82, single));
        let stats = replica.stats();
        assert_eq!((stats.refused, stats.unannounced), (1, 3));
        assert!(replica.try_recv().is_none());
    })
    .await;
}

/// A bundle is delivered only if its bytes match the digest announced for the whole of it: a
/// forged one (a member of the group may send any bytes under the session) delivers none of
/// its objects, a genuine one delivers each of them once, by their own ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_is_delivered_whole_or_not_at_all() {
    bounded(async {
        let (mut replica, _writer, link) = replica_and_link(FanoutReceiverConfig::default()).await;
        let sender = joined_session(&link, 11, ([5; 32], [6; 32]), Verification::Replica).await;

        let genuine = Bytes::from_static(b"firstsecondthird");
        let parts = vec![
            UnicastPart {
                object_id: 70,
                len: 5,
            },
            UnicastPart {
                object_id: 71,
                len: 6,
            },
            UnicastPart {
                object_id: 72,
                len: 5,
            },
        ];
        let bundle = |multicast_id| Bundle {
            session_id: 11,
            multicast_id,
            len: genuine.len() as u64,
            digest: digest(&genuine),
            parts: parts.clone(),
        };
        // Forged: one byte differs.
        let forged = Bytes::from_static(b"firstsecondthirD");
        let report = sender.send(1, forged).await.expect("forge").wait().await;
        assert!(
            report.all_delivered(),
            "the forged bytes reached the replica"
        );
        let verdicts: ControlAnswer = link
            .request(&ControlRequest::ExpectBundles(vec![bundle(1)]))
            .await
            .expect("announce the forged bundle");
        assert_eq!(verdicts, ControlAnswer::Verdicts(vec![Verdict::Mismatch]));
        assert!(replica.try_recv().is_none(), "a forged bundle delivered");

        // Object 71 then arrives by unicast (as a writer's fallback would send it) ...
        let ack: UnicastAck = link
            .send_object(&UnicastHeader { object_id: 71 }, genuine.slice(5..11))
            .await
            .expect("unicast");
        assert_eq!(ack.object_id, 71);
        let first = replica.recv().await.expect("delivered");
        assert_eq!((first.object_id, first.via), (71, ReceivedVia::Unicast));

        // ... and the genuine bundle, announced before its bytes arrive, delivers the other
        // two over the group.
        let second = ControlRequest::ExpectBundles(vec![bundle(2)]);
        let announced =
            tokio::spawn(async move { link.request::<_, ControlAnswer>(&second).await });
        let report = sender
            .send(2, genuine.clone())
            .await
            .expect("send")
            .wait()
            .await;
        assert!(report.all_delivered());
        let verdicts = announced.await.expect("task").expect("announce");
        assert_eq!(verdicts, ControlAnswer::Verdicts(vec![Verdict::Verified]));
        let mut delivered = BTreeMap::new();
        for _ in 0..2 {
            let object = replica.recv().await.expect("delivered");
            assert_eq!(object.via, ReceivedVia::Multicast);
            delivered.insert(object.object_id, object.data);
        }
        assert_eq!(
            delivered,
            BTreeMap::from([
                (70, Bytes::from_static(b"first")),
                (72, Bytes::from_static(b"third"))
            ])
        );
        assert!(replica.try_recv().is_none());
        let stats = replica.stats();
        assert_eq!(
            (
                stats.bundles,
                stats.matching.mismatched,
                stats.matching.duplicates
            ),
            (2, 1, 1)
        );
    })
    .await;
}

/// A replica that is removed keeps its old keys (as a hostile one would), yet cannot read
/// what is sent after: the writer rotated the group key and gave the new one to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_replica_cannot_decrypt_later_objects() {
    bounded(async {
        let ca = ClusterCa::generate("fanout").expect("CA");
        let writer = Fanout::bind(
            endpoint(&ca, "writer"),
            writer_config(random_group(), SESSION, Strategy::Multicast),
        )
        .expect("bind writer");
        let mut honest = Vec::new();
        for name in ["replica-a", "replica-b"] {
            let replica = Replica::added(&writer, &ca, name, FanoutReceiverConfig::default()).await;
            honest.push(replica.receiver);
        }

        // The hostile member: it answers the join by hand and keeps a raw receiver with the keys.
        let hostile = endpoint(&ca, "hostile");
        let hostile_addr = hostile.local_addr().expect("local address");
        let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
        let serve = tokio::spawn(async move {
            let mut joined_tx = Some(joined_tx);
            while let Some(incoming) = hostile.accept().await {
                let Incoming::Request(request) = incoming else {
                    continue;
                };
                match request.decode::<ControlRequest>().expect("fan-out request") {
                    ControlRequest::Join(m) => {
                        let receiver = MulticastReceiver::bind(
                            MulticastReceiverConfig::new(MulticastSocketConfig::new(m.group)),
                            ReceiverKey {
                                receiver_id: m.receiver_id,
                                secret: m.receiver_secret,
                            },
                        )
                        .expect("bind hostile receiver");
                        receiver
                            .add_session(
                                m.session_id,
                                GroupKey {
                                    epoch: m.epoch,
                                    secret: m.group_secret,
                                },
                            )
                            .await
                            .expect("add session");
                        request
                            .respond(&ControlAnswer::Joined)
                            .await
                            .expect("answer");
                        if let Some(tx) = joined_tx.take() {
                            let _ = tx.send(receiver);
                        }
                    }
                    _ => request.respond(&ControlAnswer::Left).await.expect("answer"),
                }
            }
        });
        writer
            .add_replica("hostile", hostile_addr)
            .await
            .expect("add hostile");
        let mut stolen = joined_rx.await.expect("hostile joined");

        let members = ["replica-a", "replica-b"];
        for id in 0..3 {
            let report = writer
                .send_to(id, object(id), &members, Strategy::Multicast)
                .await
                .expect("send")
                .wait()
                .await;
            assert!(report.all_delivered(), "{report:?}");
        }
        // While a member, the hostile replica reads the group.
        match stolen.recv().await.expect("hostile receiver running") {
            // Its ids are the writer's multicast numbering; the bytes are one of the objects.
            Received::Object(o) => assert!((0..3).any(|id| o.data == object(id))),
            Received::Lost { .. } => panic!("nothing is lost on a clean loopback"),
        }

        writer.remove_replica("hostile").await.expect("remove");
        assert_eq!(writer.epoch(), 2);
        let before = stolen
            .stats()
            .await
            .expect("stats")
            .protocol
            .objects_delivered;
        for id in 3..8 {
            let report = writer
                .send_to(id, object(id), &members, Strategy::Multicast)
                .await
                .expect("send")
                .wait()
                .await;
            assert!(
                report.all_delivered(),
                "the remaining replicas got the new key: {report:?}"
            );
            assert_eq!(report.path("replica-a"), Some(DeliveryPath::Multicast));
        }
        // The later objects reached the hostile socket but did not open: it has no key for
        // epoch 2. Its counters are read after its task drains what the socket holds, bounded.
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let stats = stolen.stats().await.expect("stats").protocol;
                if stats.dropped.unknown_epoch > 0 {
                    return stats;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the hostile receiver saw epoch-2 datagrams");
        assert_eq!(drained.objects_delivered, before, "decrypted after removal");
        serve.abort();
    })
    .await;
}

/// Writers that send to one group, each with a session of its own, and the replica they all
/// joined.
struct SharedGroup {
    replica: FanoutReceiver,
    replica_addr: SocketAddr,
    group: SocketAddr,
    /// Each writer's fan-out and own endpoint (for requests of its own to the replica);
    /// writer `index` is `writer-{index + 1}` with session `index + 1`.
    writers: Vec<(Fanout, Endpoint)>,
}

/// A writer named `name` with session `session_id` on `group`, by multicast.
fn group_writer(
    ca: &ClusterCa,
    name: &str,
    group: SocketAddr,
    session_id: u64,
) -> (Fanout, Endpoint) {
    let writer_endpoint = endpoint(ca, name);
    let config = writer_config(group, session_id, Strategy::Multicast);
    let writer = Fanout::bind(writer_endpoint.clone(), config).expect("bind writer");
    (writer, writer_endpoint)
}

/// `writers` writers on one new group, sessions 1 to `writers`, all joined to one replica.
async fn shared_group(ca: &ClusterCa, writers: u64) -> SharedGroup {
    let Replica {
        receiver: replica,
        address: replica_addr,
        ..
    } = Replica::start(ca, "replica", FanoutReceiverConfig::default());
    let group = random_group();
    let mut joined = Vec::new();
    for session_id in 1..=writers {
        let (writer, writer_endpoint) =
            group_writer(ca, &format!("writer-{session_id}"), group, session_id);
        writer
            .add_replica("replica", replica_addr)
            .await
            .expect("add replica");
        joined.push((writer, writer_endpoint));
    }
    SharedGroup {
        replica,
        replica_addr,
        group,
        writers: joined,
    }
}

impl SharedGroup {
    /// Writer `index` leaves its session, as a writer does that removes the replica; the
    /// replica has applied it when the answer comes.
    async fn leave(&self, index: usize) {
        let (_, endpoint) = &self.writers[index];
        let link = endpoint
            .link("replica", self.replica_addr)
            .await
            .expect("link")
            .for_service(SERVICE);
        let left: ControlAnswer = link
            .request(&ControlRequest::Leave {
                session_id: index as u64 + 1,
            })
            .await
            .expect("leave");
        assert_eq!(left, ControlAnswer::Left);
    }

    /// Every writer in `writers` sends objects `objects` at the same time, by multicast; every
    /// one is acknowledged over the group.
    async fn all_send(&self, writers: &[usize], objects: std::ops::Range<u64>) {
        let mut sends = tokio::task::JoinSet::new();
        for &index in writers {
            let writer = self.writers[index].0.clone();
            let ids: Vec<u64> = objects.clone().map(|n| object_of(index, n)).collect();
            sends.spawn(async move { send_all(&writer, ids.into_iter(), object).await });
        }
        while let Some(reports) = sends.join_next().await {
            assert_by_multicast(&reports.expect("a writer's sends"), "replica");
        }
    }
}

/// The object id writer `index` gives its `n`th object: the writer is in the id, so the
/// replica's delivery says whether it went to the right writer.
fn object_of(index: usize, n: u64) -> u64 {
    (index as u64 + 1) * 1_000 + n
}

/// The objects delivered so far, by writer: each checked to carry the bytes of its id, to
/// have come over the group (digest verified), to name the writer its id says, and to arrive
/// once.
fn drain_by_writer(replica: &mut FanoutReceiver) -> BTreeMap<String, Vec<u64>> {
    let mut by_writer: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    while let Some(delivered) = replica.try_recv() {
        let id = delivered.object_id;
        assert_eq!(delivered.via, ReceivedVia::Multicast, "object {id}");
        assert_eq!(delivered.data, object(id), "object {id}");
        assert_eq!(
            delivered.writer,
            format!("writer-{}", id / 1_000),
            "object {id} went to the wrong writer"
        );
        let ids = by_writer.entry(delivered.writer).or_default();
        assert!(!ids.contains(&id), "object {id} delivered twice");
        ids.push(id);
    }
    for ids in by_writer.values_mut() {
        ids.sort_unstable();
    }
    by_writer
}

/// Four writers on one group make the replica open one multicast socket, not four (each
/// socket joined to the group would get a copy of every writer's datagrams); every object of
/// every writer is delivered once, verified, to its own writer. A writer that leaves ends
/// only its session; the socket closes with the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_one_group_share_one_replica_socket() {
    bounded(async {
        const WRITERS: usize = 4;
        const OBJECTS: u64 = 12;
        let ca = ClusterCa::generate("fanout").expect("CA");
        let mut shared = shared_group(&ca, WRITERS as u64).await;
        let stats = shared.replica.stats();
        assert_eq!(
            (stats.sessions, stats.multicast_sockets),
            (WRITERS as u64, 1)
        );

        let everyone: Vec<usize> = (0..WRITERS).collect();
        shared.all_send(&everyone, 0..OBJECTS).await;
        let expected: BTreeMap<String, Vec<u64>> = (0..WRITERS)
            .map(|index| {
                let ids = (0..OBJECTS).map(|n| object_of(index, n)).collect();
                (format!("writer-{}", index + 1), ids)
            })
            .collect();
        assert_eq!(drain_by_writer(&mut shared.replica), expected);

        // The first writer leaves: the others keep the socket and their sessions on it.
        shared.leave(0).await;
        let stats = shared.replica.stats();
        assert_eq!(
            (stats.sessions, stats.multicast_sockets),
            (WRITERS as u64 - 1, 1)
        );
        let rest: Vec<usize> = (1..WRITERS).collect();
        shared.all_send(&rest, OBJECTS..OBJECTS + 2).await;
        let expected: BTreeMap<String, Vec<u64>> = rest
            .iter()
            .map(|&index| {
                let ids = (OBJECTS..OBJECTS + 2)
                    .map(|n| object_of(index, n))
                    .collect();
                (format!("writer-{}", index + 1), ids)
            })
            .collect();
        assert_eq!(drain_by_writer(&mut shared.replica), expected);

        for index in rest {
            shared.leave(index).await;
        }
        let stats = shared.replica.stats();
        assert_eq!((stats.sessions, stats.multicast_sockets), (0, 0));
    })
    .await;
}

/// Sessions on one socket are told apart by their ids alone: a writer asking for a session
/// id another writer holds is refused with an error that says so, and the first writer's
/// session goes on; a group no socket can be bound to is refused too, and leaves no session
/// or socket behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_id_of_another_writer_and_an_unbindable_group_are_refused() {
    bounded(async {
        let ca = ClusterCa::generate("fanout").expect("CA");
        let mut shared = shared_group(&ca, 1).await;

        let (intruder, intruder_endpoint) = group_writer(&ca, "intruder", shared.group, 1);
        let refused = intruder
            .add_replica("replica", shared.replica_addr)
            .await
            .expect_err("a session id of another writer");
        assert!(
            refused
                .to_string()
                .contains("session 1 belongs to another writer"),
            "{refused}"
        );
        let stats = shared.replica.stats();
        assert_eq!((stats.sessions, stats.multicast_sockets), (1, 1));
        shared.all_send(&[0], 0..3).await;
        assert_eq!(drain_by_writer(&mut shared.replica)["writer-1"].len(), 3);

        // A join whose group is no multicast address: nothing can be bound to it.
        let link = intruder_endpoint
            .link("replica", shared.replica_addr)
            .await
            .expect("link")
            .for_service(SERVICE);
        let unbindable: Result<ControlAnswer, LinkError> = link
            .request(&ControlRequest::Join(membership(
                "127.0.0.1:47000".parse().expect("address"),
                2,
            )))
            .await;
        let error = unbindable.expect_err("an unbindable group");
        assert!(
            error.to_string().contains("cannot join 127.0.0.1:47000"),
            "{error}"
        );
        let stats = shared.replica.stats();
        assert_eq!((stats.sessions, stats.multicast_sockets), (1, 1));
    })
    .await;
}

/// Objects of the slow-application test: 16 KiB each, so that eight fill its queue's bytes.
const SLOW_OBJECT: usize = 16 * 1024;

/// Object `id` of the slow tests: [`SLOW_OBJECT`] bytes, each `id` as a byte.
fn slow_object(id: u64) -> Bytes {
    Bytes::from(vec![id as u8; SLOW_OBJECT])
}

/// A replica whose application stops reading holds its writer back: with room for 8 objects
/// queued (by bytes), of 32 sent no more than 8 are reported delivered while nothing is
/// taken, the queue never holds more, and once the application reads, every object arrives
/// once and every report says delivered. `strategy` picks the path that must wait: the
/// unicast acknowledgement, or the multicast verdict.
async fn slow_application_holds_the_writer_back(strategy: Strategy) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let ca = ClusterCa::generate("slow-application").expect("CA");
    let writer = Fanout::bind(
        endpoint(&ca, "writer"),
        writer_config(random_group(), SESSION, strategy),
    )
    .expect("bind writer");
    let config = FanoutReceiverConfig {
        queue_bytes: 8 * SLOW_OBJECT,
        expect_timeout: Duration::from_secs(30),
        ..FanoutReceiverConfig::default()
    };
    let mut replica = Replica::added(&writer, &ca, "replica", config).await;
    let delivered = Arc::new(AtomicUsize::new(0));
    let reported = Arc::new(tokio::sync::Notify::new());
    let mut waits = Vec::new();
    for id in 0..32u64 {
        let handle = writer.send(id, slow_object(id)).await.expect("send");
        let (delivered, reported) = (delivered.clone(), reported.clone());
        waits.push(tokio::spawn(async move {
            let report = handle.wait().await;
            if report.all_delivered() {
                delivered.fetch_add(1, Ordering::SeqCst);
            }
            reported.notify_one();
            report
        }));
    }
    // The queue fills (bounded wait), then stays full: nothing the writer does moves it.
    let mut full = false;
    for _ in 0..1_000 {
        let stats = replica.receiver.stats();
        assert!(stats.queued_bytes <= 8 * SLOW_OBJECT as u64, "{stats:?}");
        if stats.queued_objects == 8 {
            full = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        full,
        "the queue never filled: {:?}",
        replica.receiver.stats()
    );
    // Not a synchronization: a window in which more reports than queued objects would be a
    // failure (before the bound, all 32 came at once).
    let window = tokio::time::Instant::now() + Duration::from_millis(500);
    while tokio::time::timeout_at(window, reported.notified())
        .await
        .is_ok()
    {}
    assert!(
        delivered.load(Ordering::SeqCst) <= 8,
        "{strategy:?}: {} reported delivered with 8 queued and none taken",
        delivered.load(Ordering::SeqCst)
    );
    let stats = replica.receiver.stats();
    assert_eq!(
        (stats.queued_objects, stats.queued_bytes),
        (8, 8 * SLOW_OBJECT as u64)
    );
    // The application reads: everything arrives once, and every report says delivered.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 32 {
        let object = replica.receiver.recv().await.expect("the replica runs");
        assert_eq!(object.data, slow_object(object.object_id));
        assert!(seen.insert(object.object_id), "{} twice", object.object_id);
    }
    for wait in waits {
        let report = wait.await.expect("report task");
        assert!(report.all_delivered(), "{strategy:?}: {report:?}");
    }
    assert_eq!(delivered.load(Ordering::SeqCst), 32);
    assert!(
        replica.receiver.try_recv().is_none(),
        "an object delivered twice"
    );
    assert_eq!(replica.receiver.stats().not_received, 0, "{strategy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_does_not_read_holds_its_unicast_writer_back() {
    bounded(slow_application_holds_the_writer_back(Strategy::Unicast)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_does_not_read_holds_its_multicast_writer_back() {
    bounded(slow_application_holds_the_writer_back(Strategy::Multicast)).await;
}

/// An announced object's expect timeout counts a silent session, not a slow one: a writer
/// paced at 1 MB/s announces 24 objects of 16 KiB at once, whose last leave the writer about
/// 0.4 s later, four of the replica's expect timeouts; since the session's objects keep
/// coming off the group meanwhile, every one arrives by multicast and none is answered not
/// received. (Before, each announcement was given up an expect timeout after it came, and
/// under `Strategy::Multicast` the writer failed the replica.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_keeps_coming_is_waited_for_past_the_expect_timeout() {
    bounded(async {
        const OBJECTS: u64 = 24;
        let ca = ClusterCa::generate("paced").expect("CA");
        let mut config = writer_config(random_group(), SESSION, Strategy::Multicast);
        config.multicast.protocol.rate_limit = Some(RateLimit {
            bytes_per_second: 1_000_000,
            burst: 16 * 1024,
        });
        let writer = Fanout::bind(endpoint(&ca, "writer"), config).expect("bind writer");
        let replica_config = FanoutReceiverConfig {
            expect_timeout: Duration::from_millis(100),
            ..FanoutReceiverConfig::default()
        };
        let mut replica = Replica::added(&writer, &ca, "replica", replica_config).await;
        assert_by_multicast(&send_all(&writer, 0..OBJECTS, slow_object).await, "replica");
        let delivered = drain(&mut replica.receiver);
        assert_eq!(delivered.len(), OBJECTS as usize);
        for (id, (data, via)) in delivered {
            assert_eq!(data, slow_object(id), "object {id}");
            assert_eq!(via, ReceivedVia::Multicast, "object {id}");
        }
        assert_eq!(replica.receiver.stats().not_received, 0);
    })
    .await;
}

/// A replica whose queue is full still takes a new writer on the group it reads: the group's
/// socket is not read while a delivery waits for room, but its sessions still change. (Before,
/// the join waited until the application read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_joins_a_group_whose_replica_queue_is_full() {
    bounded(async {
        let ca = ClusterCa::generate("full-queue-join").expect("CA");
        let config = FanoutReceiverConfig {
            queue_objects: 2,
            expect_timeout: Duration::from_secs(30),
            ..FanoutReceiverConfig::default()
        };
        let mut replica = Replica::start(&ca, "replica", config);
        let group = random_group();
        let (first, _first_endpoint) = group_writer(&ca, "writer-1", group, 1);
        first
            .add_replica("replica", replica.address)
            .await
            .expect("add replica");
        // Objects large enough to travel one by one (not bundled).
        let object = |id: u64| Bytes::from(vec![id as u8; 100 * 1024]);
        let mut waits = Vec::new();
        for id in 0..6u64 {
            let handle = first.send(id, object(id)).await.expect("send");
            waits.push(tokio::spawn(handle.wait()));
        }
        let full = async {
            while replica.receiver.stats().queued_objects < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), full)
            .await
            .expect("the queue fills");
        // A second writer joins the same group while the queue is full.
        let (second, _second_endpoint) = group_writer(&ca, "writer-2", group, 2);
        tokio::time::timeout(
            Duration::from_secs(20),
            second.add_replica("replica", replica.address),
        )
        .await
        .expect("the join does not wait for the application to read")
        .expect("add replica");
        let handle = second.send(100, object(100)).await.expect("send");
        waits.push(tokio::spawn(handle.wait()));
        // The application reads: every object of both writers arrives once.
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 7 {
            let delivered = replica.receiver.recv().await.expect("the replica runs");
            assert_eq!(delivered.data, object(delivered.object_id));
            assert!(
                seen.insert((delivered.writer.clone(), delivered.object_id)),
                "{} from {} twice",
                delivered.object_id,
                delivered.writer
            );
        }
        for wait in waits {
            let report = wait.await.expect("report task");
            assert!(report.all_delivered(), "{report:?}");
        }
    })
    .await;
}

/// A replica's configuration with room for two unclaimed objects of `size` bytes.
fn room_for_two(size: usize) -> FanoutReceiverConfig {
    FanoutReceiverConfig {
        limits: MatcherLimits {
            buffered_bytes: 2 * size,
            ..MatcherLimits::default()
        },
        ..FanoutReceiverConfig::default()
    }
}

/// Objects that reach a replica before their announcements (the group is faster than the
/// QUIC requests that announce them) wait for them, however small the replica's room for
/// unclaimed objects: the replica stops reading the group until the announcements claim what
/// came, instead of dropping the oldest, whose announcements then found nothing (before: the
/// dropped objects' announcements waited, under `multicast` they ended `NotReceived` and the
/// writer failed the replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_ahead_of_their_announcements_wait_for_them_instead_of_being_dropped() {
    bounded(async {
        const OBJECTS: u64 = 64;
        // Large enough to travel alone, not bundled.
        const SIZE: usize = 256 * 1024;
        let ca = ClusterCa::generate("ahead").expect("CA");
        let config = writer_config(random_group(), SESSION, Strategy::Multicast);
        let writer = Fanout::bind(endpoint(&ca, "writer"), config).expect("bind writer");
        let replica_config = room_for_two(SIZE);
        let mut replica = Replica::added(&writer, &ca, "replica", replica_config).await;
        let payload = |id: u64| Bytes::from(vec![id as u8; SIZE]);
        assert_by_multicast(&send_all(&writer, 0..OBJECTS, payload).await, "replica");
        let delivered = drain(&mut replica.receiver);
        assert_eq!(delivered.len(), OBJECTS as usize);
        let stats = replica.receiver.stats();
        assert_eq!(stats.matching.evicted, 0, "{stats:?}");
        assert_eq!(stats.not_received, 0, "{stats:?}");
    })
    .await;
}

/// Objects nobody announces (their writer died between sending and announcing) hold the room
/// for unclaimed objects only until the expect timeout: then the oldest are dropped, as lost,
/// and the group is read on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclaimed_objects_are_dropped_as_lost_after_the_expect_timeout() {
    bounded(async {
        const SIZE: usize = 1024;
        // One object fills half the room.
        let config = FanoutReceiverConfig {
            expect_timeout: Duration::from_millis(200),
            ..room_for_two(SIZE)
        };
        let (replica, _writer, link) = replica_and_link(config).await;
        let sender = joined_session(&link, 13, ([7; 32], [8; 32]), Verification::Replica).await;
        let orphan = Bytes::from(vec![1; SIZE]);
        let next = Bytes::from(vec![2; SIZE]);
        for (id, data) in [(1, &orphan), (2, &next)] {
            let report = sender
                .send(id, data.clone())
                .await
                .expect("send")
                .wait()
                .await;
            assert!(report.all_delivered(), "object {id} reached the replica");
        }
        let announce = |multicast_id: u64, data: &Bytes| Expectation {
            session_id: 13,
            multicast_id,
            object_id: 100 + multicast_id,
            len: data.len() as u64,
            digest: digest(data),
        };
        let verdict: ControlAnswer = link
            .request(&ControlRequest::Expect(announce(2, &next)))
            .await
            .expect("announce");
        assert_eq!(verdict, ControlAnswer::Verdict(Verdict::Verified));
        let verdict: ControlAnswer = link
            .request(&ControlRequest::Expect(announce(1, &orphan)))
            .await
            .expect("announce");
        assert_eq!(verdict, ControlAnswer::Verdict(Verdict::Lost));
        assert_eq!(replica.stats().matching.evicted, 1);
    })
    .await;
}
