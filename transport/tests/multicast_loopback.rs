//! The multicast driver on real sockets: loopback multicast, with emulated links (loss,
//! delay) at the receivers and the sender.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use replicast_transport::multicast::driver::{
    BindError, DeliveryOutcome, DeliveryReport, ImpairmentConfig, MulticastInterface,
    MulticastReceiver, MulticastReceiverConfig, MulticastSender, MulticastSenderConfig,
    MulticastSocketConfig, Received,
};
use replicast_transport::multicast::proto::{GroupKey, ReceiverKey};
use replicast_transport::netem::{NetemConfig, Probability, RandomLoss};

/// Upper bound on a whole test run: a hang fails instead of blocking the suite.
const TEST_BOUND: Duration = Duration::from_secs(180);

/// A fresh IPv4 group and port per test, so tests running in parallel never share a group.
fn random_v4_group() -> SocketAddr {
    let mut rng = rand::rng();
    let group = Ipv4Addr::new(239, 255, rng.random_range(1..255), rng.random_range(1..255));
    SocketAddr::new(IpAddr::V4(group), rng.random_range(20_000..60_000))
}

fn group_key(epoch: u32) -> GroupKey {
    GroupKey {
        epoch,
        secret: [epoch as u8 ^ 0x5a; 32],
    }
}

fn receiver_key(receiver_id: u32) -> ReceiverKey {
    ReceiverKey {
        receiver_id,
        secret: [receiver_id as u8 ^ 0xa5; 32],
    }
}

/// The bytes of object `object_id`: a size from a mix of empty, small, datagram-sized, and
/// large up to 256 KiB, and contents derived from the id, so a receiver can check them alone.
fn object(object_id: u64) -> Bytes {
    let mut rng = StdRng::seed_from_u64(object_id);
    let size = match rng.random_range(0..100) {
        0..5 => 0,
        5..40 => rng.random_range(1..200),
        40..80 => rng.random_range(200..4_000),
        80..95 => rng.random_range(4_000..64 * 1024),
        95..99 => rng.random_range(64 * 1024..256 * 1024),
        _ => 256 * 1024,
    };
    let mut data = vec![0; size];
    rng.fill_bytes(&mut data);
    Bytes::from(data)
}

struct Group {
    sender: MulticastSender,
    receivers: Vec<MulticastReceiver>,
}

async fn start_group(
    sender: MulticastSenderConfig,
    receivers: &[(u32, MulticastReceiverConfig)],
) -> Group {
    let session_id = sender.session_id;
    let sender = MulticastSender::bind(sender, group_key(1)).expect("sender socket");
    let mut bound = Vec::new();
    for (receiver_id, config) in receivers {
        let receiver =
            MulticastReceiver::bind(config.clone(), receiver_key(*receiver_id)).expect("receiver");
        receiver
            .add_session(session_id, group_key(1))
            .await
            .expect("receiver running");
        sender
            .add_receiver(receiver_key(*receiver_id))
            .await
            .expect("sender running");
        bound.push(receiver);
    }
    Group {
        sender,
        receivers: bound,
    }
}

/// Reads `count` objects, failing on a loss report or a duplicate. Returns the receiver too:
/// it must keep running until the sender has heard its last acknowledgement.
async fn receive_all(
    mut receiver: MulticastReceiver,
    count: usize,
) -> (HashMap<u64, Bytes>, MulticastReceiver) {
    let mut objects = HashMap::new();
    while objects.len() < count {
        match receiver.recv().await.expect("receiver stopped early") {
            Received::Object(object) => {
                let again = objects.insert(object.object_id, object.data);
                assert!(
                    again.is_none(),
                    "object {} delivered twice",
                    object.object_id
                );
            }
            Received::Lost { object_id, .. } => panic!("object {object_id} reported lost"),
        }
    }
    let stats = receiver.stats().await.expect("receiver running");
    eprintln!("receiver: {stats:?}");
    (objects, receiver)
}

/// Sends `count` objects (waiting on the window as needed) and then every delivery report.
async fn send_all(
    sender: &MulticastSender,
    count: u64,
    object: fn(u64) -> Bytes,
) -> Vec<DeliveryReport> {
    let mut handles = Vec::new();
    for object_id in 0..count {
        handles.push(
            sender
                .send(object_id, object(object_id))
                .await
                .expect("accepted"),
        );
    }
    let mut reports = Vec::new();
    for handle in handles {
        reports.push(handle.wait().await);
    }
    reports
}

async fn fan_out_byte_exact(sender: MulticastSenderConfig, count: u64, loss: f64) {
    let socket = sender.socket.clone();
    let receivers: Vec<(u32, MulticastReceiverConfig)> = (1..=3)
        .map(|id| {
            let mut config = MulticastReceiverConfig::new(socket.clone());
            config.impairment = Some(ImpairmentConfig::loss(loss, 1_000 + u64::from(id)));
            (id, config)
        })
        .collect();
    let Group { sender, receivers } = start_group(sender, &receivers).await;
    let readers: Vec<_> = receivers
        .into_iter()
        .map(|receiver| tokio::spawn(receive_all(receiver, count as usize)))
        .collect();
    let reports = send_all(&sender, count, object).await;
    let mut receivers = Vec::new();
    for reader in readers {
        let (objects, receiver) = reader.await.expect("reader task");
        receivers.push(receiver);
        assert_eq!(objects.len(), count as usize);
        for (object_id, data) in objects {
            assert!(data == object(object_id), "object {object_id} differs");
        }
    }
    for report in &reports {
        assert!(report.all_delivered(), "{report:?}");
        assert_eq!(report.receivers, vec![1, 2, 3]);
    }
    let stats = sender.close().await.expect("sender running");
    eprintln!("sender: {stats:?}");
    if loss > 0.0 {
        let repairs = stats.protocol.repairs_multicast + stats.protocol.repairs_unicast;
        assert!(repairs > 0, "loss was injected, so repairs were needed");
    }
    assert_eq!(stats.outstanding_objects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_receivers_get_two_thousand_objects_byte_exact_through_two_percent_loss() {
    let socket = MulticastSocketConfig::new(random_v4_group());
    let sender = MulticastSenderConfig::new(socket, rand::rng().random());
    tokio::time::timeout(TEST_BOUND, fan_out_byte_exact(sender, 2_000, 0.02))
        .await
        .expect("finished within the bound");
}

/// Reads `count` objects and notes when each arrived.
async fn arrival_times(
    mut receiver: MulticastReceiver,
    count: usize,
) -> (HashMap<u64, (Instant, Bytes)>, MulticastReceiver) {
    let mut arrivals = HashMap::new();
    while arrivals.len() < count {
        match receiver.recv().await.expect("receiver stopped early") {
            Received::Object(object) => {
                let again = arrivals.insert(object.object_id, (Instant::now(), object.data));
                assert!(
                    again.is_none(),
                    "object {} delivered twice",
                    object.object_id
                );
            }
            Received::Lost { object_id, .. } => panic!("object {object_id} reported lost"),
        }
    }
    (arrivals, receiver)
}

/// The emulated links are time-based and sit on both sides: 15 ms on the sender's own link
/// (with 2% loss, one queue for every destination) and 10 ms on each receiver's, so no object
/// can arrive sooner than 25 ms after it was handed over, and the sender-side loss is repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_links_delay_every_datagram_and_sender_link_loss_is_repaired() {
    const SENDER_LINK: Duration = Duration::from_millis(15);
    const RECEIVER_LINK: Duration = Duration::from_millis(10);
    const COUNT: u64 = 200;
    let socket = MulticastSocketConfig::new(random_v4_group());
    let mut sender = MulticastSenderConfig::new(socket.clone(), rand::rng().random());
    sender.impairment = Some(
        ImpairmentConfig::none().with_send(
            NetemConfig::new()
                .latency(SENDER_LINK)
                .loss(RandomLoss::new(Probability::new(0.02)))
                .seed(9),
        ),
    );
    let receivers: Vec<(u32, MulticastReceiverConfig)> = (1..=2)
        .map(|id| {
            let mut config = MulticastReceiverConfig::new(socket.clone());
            config.impairment = Some(
                ImpairmentConfig::none().with_receive(
                    NetemConfig::new()
                        .latency(RECEIVER_LINK)
                        .seed(u64::from(id)),
                ),
            );
            (id, config)
        })
        .collect();
    let run = async {
        let Group { sender, receivers } = start_group(sender, &receivers).await;
        let readers: Vec<_> = receivers
            .into_iter()
            .map(|receiver| tokio::spawn(arrival_times(receiver, COUNT as usize)))
            .collect();
        let mut handed_over = Vec::new();
        let mut handles = Vec::new();
        for object_id in 0..COUNT {
            handed_over.push(Instant::now());
            handles.push(
                sender
                    .send(object_id, object(object_id))
                    .await
                    .expect("accepted"),
            );
        }
        let mut receivers = Vec::new();
        for reader in readers {
            let (arrivals, receiver) = reader.await.expect("reader task");
            for (object_id, (arrived, data)) in &arrivals {
                assert!(data == &object(*object_id), "object {object_id} differs");
                let took = *arrived - handed_over[*object_id as usize];
                assert!(
                    took >= SENDER_LINK + RECEIVER_LINK,
                    "object {object_id} arrived after {took:?}, sooner than both links allow"
                );
            }
            let stats = receiver.stats().await.expect("receiver running");
            assert!(stats.socket.impairment.released > 0, "{stats:?}");
            receivers.push(receiver);
        }
        for handle in handles {
            assert!(handle.wait().await.all_delivered());
        }
        let stats = sender.close().await.expect("sender running");
        let link = stats.socket.impairment;
        assert!(
            link.dropped() > 0,
            "the sender's link lost nothing: {link:?}"
        );
        let repairs = stats.protocol.repairs_multicast + stats.protocol.repairs_unicast;
        assert!(
            repairs > 0,
            "loss on the sender's link was not repaired: {stats:?}"
        );
    };
    tokio::time::timeout(TEST_BOUND, run)
        .await
        .expect("finished within the bound");
}

/// IPv6 multicast needs an interface with the MULTICAST flag. This machine's `lo` lacks it
/// (the kernel then has no route for ff00::/8 on `lo`), so the test uses an interface-local
/// group (ff01::/16): Linux never puts interface-local multicast on a wire, whatever the
/// interface, so it stays on this host like loopback traffic does.
fn ipv6_test_interface() -> String {
    const IFF_UP: u32 = 0x1;
    const IFF_MULTICAST: u32 = 0x1000;
    let mut candidates: Vec<(bool, String)> = std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net lists interfaces")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/flags")).ok()?;
            let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
            let usable = flags & IFF_UP != 0 && flags & IFF_MULTICAST != 0;
            usable.then_some((name != "lo", name))
        })
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .next()
        .map(|(_, name)| name)
        .expect("an interface that is up and multicast-capable, for the IPv6 group")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_interface_local_group_delivers_byte_exact() {
    let mut rng = rand::rng();
    let group = Ipv6Addr::new(0xff01, 0, 0, 0, 0, 0, rng.random(), rng.random());
    let socket = MulticastSocketConfig::new(SocketAddr::new(
        IpAddr::V6(group),
        rng.random_range(20_000..60_000),
    ))
    .with_interface(MulticastInterface::Name(ipv6_test_interface()));
    let mut sender = MulticastSenderConfig::new(socket, rng.random());
    // Datagrams are sent unfragmented (don't-fragment, as QUIC does), so they must fit the
    // interface's MTU, which is not loopback's here: 1280, the IPv6 minimum, minus headers.
    sender.protocol.max_datagram_size = 1280 - 40 - 8;
    tokio::time::timeout(TEST_BOUND, fan_out_byte_exact(sender, 200, 0.02))
        .await
        .expect("finished within the bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_stops_reading_is_abandoned_while_the_others_get_everything() {
    let socket = MulticastSocketConfig::new(random_v4_group());
    let stalled_id = 3;
    let receivers: Vec<(u32, MulticastReceiverConfig)> = (1..=3)
        .map(|id| {
            let mut config = MulticastReceiverConfig::new(socket.clone());
            if id == stalled_id {
                // One object fills its queue; then it stops reading the group.
                config.queue_capacity = 1;
            }
            (id, config)
        })
        .collect();
    let mut sender = MulticastSenderConfig::new(socket, rand::rng().random());
    // The bound after which a silent receiver is given up on.
    sender.protocol.delivery_timeout = Duration::from_secs(3);
    let count = 200;
    let run = async {
        let Group {
            sender,
            mut receivers,
        } = start_group(sender, &receivers).await;
        // Kept alive but never read.
        let stalled = receivers.pop().expect("three receivers");
        let readers: Vec<_> = receivers
            .into_iter()
            .map(|receiver| tokio::spawn(receive_all(receiver, count as usize)))
            .collect();
        // Many datagrams, so the stalled receiver cannot have read them all before it stops.
        let reports = send_all(&sender, count, |_| Bytes::from(vec![7; 64 * 1024])).await;
        let mut kept = Vec::new();
        for reader in readers {
            let (objects, receiver) = reader.await.expect("reader task");
            assert_eq!(objects.len(), count as usize);
            kept.push(receiver);
        }
        let mut abandoned = 0;
        for report in &reports {
            assert_eq!(
                report.outcomes[&1],
                DeliveryOutcome::Delivered,
                "{report:?}"
            );
            assert_eq!(
                report.outcomes[&2],
                DeliveryOutcome::Delivered,
                "{report:?}"
            );
            match report.outcomes[&stalled_id] {
                DeliveryOutcome::Abandoned => abandoned += 1,
                DeliveryOutcome::Delivered => {}
                DeliveryOutcome::Removed => panic!("never removed: {report:?}"),
            }
        }
        // The stalled receiver can have taken the first objects before its queue filled, but
        // not the last ones.
        assert!(abandoned > 0);
        assert_eq!(
            reports.last().expect("objects").outcomes[&stalled_id],
            DeliveryOutcome::Abandoned
        );
        let stats = sender.close().await.expect("sender running");
        eprintln!("sender: {stats:?}");
        drop((stalled, kept));
    };
    tokio::time::timeout(TEST_BOUND, run)
        .await
        .expect("finished within the bound");
}

#[tokio::test]
async fn datagrams_larger_than_the_interface_mtu_are_refused_at_bind() {
    let interface = MulticastInterface::Name(ipv6_test_interface());
    let mtu = interface.mtu().expect("the interface's MTU is readable");
    let socket = MulticastSocketConfig::new("[ff01::1:2]:40000".parse().expect("literal address"))
        .with_interface(interface);
    let mut config = MulticastSenderConfig::new(socket, 1);
    config.protocol.max_datagram_size = mtu;
    match MulticastSender::bind(config, group_key(1)) {
        Err(BindError::DatagramTooLarge {
            needed, mtu: got, ..
        }) => {
            assert_eq!(got, mtu);
            assert_eq!(needed, mtu + 48);
        }
        other => panic!("expected DatagramTooLarge, got {other:?}"),
    }
}
