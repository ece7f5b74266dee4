//! Tail probes (`LinkConfig::tail_probe`), over real QUIC on 127.0.0.1: when the only packet of
//! a message is lost, the empty datagram that follows the pause in writes gets it declared
//! lost and sent again without QUIC's probe timeout; without tail probes, the timeout's probe
//! (a packet with an IMMEDIATE_ACK frame, in quinn) is what finds it. With copies on, a lost
//! message, request or small object is taken from its copy in the probe.
//!
//! The sender's socket drops exactly the first datagrams above a size only the message's
//! packet reaches: the message's packet (and, in one test, its retransmission too). Nothing here is timed: the probe timeout is told apart by the
//! frames the sender sent (quinn counts IMMEDIATE_ACK frames, which it sends in timeout
//! probes and MTU probes only; MTU discovery is off here).

mod quic_support;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use quic_support::*;
use quinn::AsyncUdpSocket;
use quinn::udp::Transmit;
use replicast_testkit::endpoint as testkit;
use replicast_transport::quic::{Endpoint, EndpointStats, Link, LinkConfig};
use replicast_transport::wrapped_socket::{SocketWrapper, WrappedSocket};

/// Datagrams above this size are the message's: ACKs, probes and stream openings are far
/// smaller, and MTU probes are off.
const DROP_ABOVE: usize = 400;
/// The message: its packet is the only one above [`DROP_ABOVE`] (and its copy's).
const MESSAGE_LEN: usize = 600;

/// Runs of a copy scenario until the socket dropped the original, not the copy. Under load
/// the copy often leaves first (the connection's task runs after the probe's pause): all 5 of
/// an earlier bound were once the copy's drop, in a full parallel test run.
const ATTEMPTS: u32 = 20;

/// A quinn socket that sends everything, except the first `armed` datagrams above
/// [`DROP_ABOVE`] bytes once armed: the loss of one message's only packet (and of its
/// retransmissions).
struct DropSome {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Datagrams above the size still to drop.
    armed: AtomicU32,
    /// Datagrams dropped.
    dropped: AtomicU32,
}

impl fmt::Debug for DropSome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropSome").finish_non_exhaustive()
    }
}

impl SocketWrapper for DropSome {
    fn inner(&self) -> &Arc<dyn AsyncUdpSocket> {
        &self.inner
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // Segmentation offload is off: one transmit is one datagram.
        if transmit.contents.len() > DROP_ABOVE
            && self
                .armed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
        {
            self.dropped.fetch_add(1, Ordering::AcqRel);
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }
}

/// Links with nothing sent unasked: no keep-alives (the connection stays open on its idle
/// timeout meanwhile), no MTU probes (`mtu_upper_bound` at QUIC's minimum), no segmentation
/// offload; tail probes as given, without copies of the messages (the probe alone is tested,
/// see [`a_lost_message_is_delivered_from_its_copy_in_the_tail_probe`] for the copies).
fn quiet_link(tail_probe: Option<Duration>) -> LinkConfig {
    LinkConfig {
        keep_alive: None,
        idle_timeout: Some(Duration::from_secs(60)),
        mtu_upper_bound: 1200,
        segmentation_offload: false,
        tail_probe,
        message_copies: false,
        ..LinkConfig::default()
    }
}

/// What the sender saw when one message's only packet was lost.
struct LostMessage {
    /// Packets the sender's QUIC declared lost.
    declared_lost: u64,
    /// IMMEDIATE_ACK frames sent meanwhile: probe timeouts.
    probe_timeouts: u64,
    /// Tail probes the sender sent meanwhile.
    tail_probes: u64,
}

/// A storage sends a master two channel messages; its socket loses the second one's only
/// packet, `drops` times (the first send, then its retransmissions). Returns what the
/// storage's connection counted from just before the second message until the master read
/// it.
async fn lose_one_message(tail_probe: Option<Duration>, drops: u32) -> LostMessage {
    lose_one_message_with(quiet_link(tail_probe), drops).await.0
}

/// [`quiet_link`] with tail probes after 1 ms that carry copies of the messages.
fn copying_link() -> LinkConfig {
    LinkConfig {
        message_copies: true,
        ..quiet_link(Some(Duration::from_millis(1)))
    }
}

/// An endpoint named `name` whose socket drops datagrams above [`DROP_ABOVE`] bytes once
/// armed (see [`DropSome`]).
fn dropping_endpoint(
    ca: &replicast_certs::ClusterCa,
    name: &str,
    link: LinkConfig,
) -> (Endpoint, Arc<WrappedSocket<DropSome>>) {
    let std_socket = std::net::UdpSocket::bind(loopback()).expect("a UDP socket");
    let inner = quinn::default_runtime()
        .expect("a tokio runtime")
        .wrap_udp_socket(std_socket)
        .expect("a quinn socket");
    let socket = WrappedSocket::new(DropSome {
        inner,
        armed: AtomicU32::new(0),
        dropped: AtomicU32::new(0),
    });
    let config =
        testkit::config(&identity(ca, name), loopback(), link).expect("an endpoint configuration");
    let endpoint = Endpoint::bind_with_socket(config, socket.clone()).expect("an endpoint");
    (endpoint, socket)
}

/// [`lose_one_message`] on links of `link`; also returns the master's endpoint counters once
/// it read the message.
async fn lose_one_message_with(link: LinkConfig, drops: u32) -> (LostMessage, EndpointStats) {
    let tail_probe = link.tail_probe;
    let link_copies = link.message_copies;
    let ca = ca("cluster");
    let master = endpoint(&identity(&ca, "master"), link.clone());
    let (messages_tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let _serving = serve(master.clone(), Some(messages_tx));

    let (storage, socket) = dropping_endpoint(&ca, "storage-1", LinkConfig { tail_probe, ..link });
    let link = storage.link("master", addr(&master)).await.expect("a link");

    // The first message opens the channel; the second one is the channel's next packet.
    link.send_message(&vec![1u8; MESSAGE_LEN])
        .await
        .expect("queued");
    let (_, first) = messages.recv().await.expect("the first message");
    assert_eq!(decode(&first), vec![1u8; MESSAGE_LEN]);

    let before = link.connection_stats().expect("connected");
    let probes_before = storage.stats().tail_probes;
    socket.armed.store(drops, Ordering::Release);
    link.send_message(&vec![2u8; MESSAGE_LEN])
        .await
        .expect("queued");
    let (_, second) = messages.recv().await.expect("the second message");
    let after = link.connection_stats().expect("connected");
    assert_eq!(decode(&second), vec![2u8; MESSAGE_LEN]);
    assert_eq!(
        socket.dropped.load(Ordering::Acquire),
        drops,
        "the socket lost the message's packet {drops} times"
    );
    let lost = LostMessage {
        declared_lost: after.path.lost_packets - before.path.lost_packets,
        probe_timeouts: after.frame_tx.immediate_ack - before.frame_tx.immediate_ack,
        tail_probes: storage.stats().tail_probes - probes_before,
    };
    // A third message: the channel goes on in order after the lost one.
    link.send_message(&vec![3u8; MESSAGE_LEN])
        .await
        .expect("queued");
    let (_, third) = messages.recv().await.expect("the third message");
    assert_eq!(decode(&third), vec![3u8; MESSAGE_LEN]);
    // With copies on, the third's copy leaves with the probe after it (bounded wait); then a
    // fourth message, small: nothing came between (no message twice).
    if link_copies {
        let copies_left = async {
            while storage.stats().message_copies_sent < 3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), copies_left)
            .await
            .expect("the tail probes carry copies");
    }
    link.send_message(&4u8).await.expect("queued");
    let (_, fourth) = messages.recv().await.expect("the fourth message");
    assert_eq!(postcard::from_bytes::<u8>(&fourth).expect("a byte"), 4);
    let master_stats = master.stats();
    storage.close();
    master.close();
    (lost, master_stats)
}

fn decode(message: &[u8]) -> Vec<u8> {
    postcard::from_bytes(message).expect("a message of bytes")
}

/// A master serving on 127.0.0.1 and a storage whose socket drops on demand, both with copies
/// on, linked; a first request was answered (it opened the connection's streams).
struct Pair {
    master: Endpoint,
    _serving: tokio::task::JoinHandle<()>,
    storage: Endpoint,
    socket: Arc<WrappedSocket<DropSome>>,
    link: Link,
}

async fn copying_pair() -> Pair {
    let config = copying_link();
    let ca = ca("cluster");
    let master = endpoint(&identity(&ca, "master"), config.clone());
    let _serving = serve(master.clone(), None);
    let (storage, socket) = dropping_endpoint(&ca, "storage-1", config);
    let link = storage.link("master", addr(&master)).await.expect("a link");
    let pong: Pong = link.request(&Request::Ping(1)).await.expect("answered");
    assert_eq!(pong, Pong(1));
    Pair {
        master,
        _serving,
        storage,
        socket,
        link,
    }
}

impl Pair {
    /// Runs `exchange(attempt)` for attempts 1, 2, ... up to [`ATTEMPTS`], each with the next
    /// packet above the size dropped (checked), until `from_copies` of the master's counters
    /// says something was taken from its copy: true then, false if no attempt got there (an
    /// attempt whose copy left before the original loses the copy instead).
    async fn lose_until_copied<F, Fut>(
        &self,
        from_copies: fn(&EndpointStats) -> u64,
        mut exchange: F,
    ) -> bool
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        for attempt in 1..=ATTEMPTS {
            self.socket.armed.store(1, Ordering::Release);
            exchange(attempt).await;
            assert_eq!(
                self.socket.dropped.load(Ordering::Acquire),
                attempt,
                "one packet lost"
            );
            if from_copies(&self.master.stats()) >= 1 {
                return true;
            }
        }
        false
    }

    fn close(&self) {
        self.storage.close();
        self.master.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_last_packet_is_found_by_the_tail_probe_not_the_probe_timeout() {
    bounded(async {
        let lost = lose_one_message(Some(Duration::from_millis(1)), 1).await;
        // The master could only read the message after QUIC declared its packet lost.
        assert!(lost.declared_lost >= 1, "the loss was declared");
        assert!(lost.tail_probes >= 1, "a tail probe followed the message");
        assert_eq!(
            lost.probe_timeouts, 0,
            "declared lost on the probe's acknowledgement, before any probe timeout"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tail_probes_the_probe_timeout_finds_a_lost_last_packet() {
    bounded(async {
        let lost = lose_one_message(None, 1).await;
        assert!(lost.declared_lost >= 1, "the loss was declared");
        assert_eq!(lost.tail_probes, 0, "no tail probes configured");
        assert!(
            lost.probe_timeouts >= 1,
            "nothing else followed the lost packet: the probe timeout had to find it"
        );
    })
    .await;
}

#[test]
fn a_zero_tail_probe_delay_is_refused() {
    let config = LinkConfig {
        tail_probe: Some(Duration::ZERO),
        ..LinkConfig::default()
    };
    assert!(config.validate().is_err());
    assert!(quiet_link(None).validate().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_retransmission_is_found_by_another_tail_probe() {
    bounded(async {
        // The message's packet and its retransmission are both lost: the retransmission,
        // the connection's last packet, is followed by a probe of its own.
        let lost = lose_one_message(Some(Duration::from_millis(1)), 2).await;
        assert!(lost.declared_lost >= 2, "both losses were declared");
        assert!(
            lost.tail_probes >= 2,
            "a probe followed the message and one its retransmission"
        );
        assert_eq!(
            lost.probe_timeouts, 0,
            "both declared lost on a probe's acknowledgement, before any probe timeout"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_message_is_delivered_from_its_copy_in_the_tail_probe() {
    bounded(async {
        let link = copying_link();
        // The message's packet is lost once; the probe after it carries its copy. On a
        // loaded machine the copy may leave before the message's own packet (quinn sends
        // datagrams first when both wait) and be the one the socket drops: then the stream
        // brings the message, and the scenario runs again (a few times at most).
        let mut taken_from_copy = None;
        for _ in 0..ATTEMPTS {
            let (lost, master) = lose_one_message_with(link.clone(), 1).await;
            assert!(lost.tail_probes >= 1, "a tail probe followed the message");
            // (A message not lost may come from its copy too, when the copy's task runs
            // before the stream's reader: either way once, in order, as
            // lose_one_message_with checks.)
            if master.messages_from_copies >= 1 {
                taken_from_copy = Some(lost);
                break;
            }
        }
        let lost = taken_from_copy.expect("the master took the lost message from its copy");
        assert_eq!(
            lost.probe_timeouts, 0,
            "nothing waited for QUIC's probe timeout"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_loss_copies_deliver_nothing_twice() {
    bounded(async {
        let link = copying_link();
        // Each message arrives twice (its packet, its copy): the master reads 1 to 4 once
        // each, in order (lose_one_message_with checks each, the fourth after the copies of
        // the ones before it left).
        let (_, master) = lose_one_message_with(link, 0).await;
        assert_eq!(master.protocol_errors, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_request_is_served_from_its_copy_and_answered_on_its_stream() {
    bounded(async {
        let pair = copying_pair().await;
        // Requests whose first packet above the size is lost: the request's own, unless its
        // copy left first (a loaded machine, see the test above), then the next attempt.
        let text = "x".repeat(MESSAGE_LEN);
        let link = &pair.link;
        // (A request not lost may be served from its copy too, when the copy comes before the
        // master accepted its stream: either way once.)
        let copied = pair
            .lose_until_copied(
                |stats| stats.requests_from_copies,
                |_| {
                    let text = text.clone();
                    async move {
                        let answer = link.request::<_, Pong>(&Request::Fail(text.clone())).await;
                        let error =
                            answer.expect_err("the master answers this request with an error");
                        assert!(error.to_string().contains(&text), "its own answer: {error}");
                    }
                },
            )
            .await;
        assert!(copied, "the master served a lost request from its copy");
        // The next request goes its usual way.
        let pong: Pong = link.request(&Request::Ping(2)).await.expect("answered");
        assert_eq!(pong, Pong(2));
        pair.close();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_small_object_is_taken_from_its_copy_and_answered_on_its_stream() {
    bounded(async {
        let pair = copying_pair().await;
        // An object whose whole stream is one packet above the size: that packet is lost,
        // unless its copy left first (then the next attempt).
        let payload = bytes::Bytes::from(
            (0..MESSAGE_LEN)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<_>>(),
        );
        let link = &pair.link;
        let payload = &payload;
        let copied = pair
            .lose_until_copied(
                |stats| stats.objects_from_copies,
                |attempt| async move {
                    let header = ObjectHeader {
                        oid: u64::from(attempt),
                    };
                    let ack: Ack = link
                        .send_object(&header, payload.clone())
                        .await
                        .expect("acknowledged");
                    let sent = Ack {
                        oid: u64::from(attempt),
                        len: MESSAGE_LEN as u64,
                        sha256: sha256(payload),
                    };
                    assert_eq!(ack, sent, "the object as sent");
                },
            )
            .await;
        assert!(copied, "the master took a lost object from its copy");
        assert_eq!(pair.master.stats().protocol_errors, 0);
        pair.close();
    })
    .await;
}
