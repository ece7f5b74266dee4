//! Hostile input to the multicast protocol core: each kind of bad datagram is dropped and
//! counted, never panics, and never makes bad data look delivered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use replicast_transport::multicast::proto::crypto::PacketKey;
use replicast_transport::multicast::proto::wire::{Body, Header, PacketType, SeqRange};
use replicast_transport::multicast::proto::{
    Destination, GroupKey, RateLimit, Receiver, ReceiverConfig, ReceiverEvent, ReceiverKey, Sender,
    SenderConfig, Transmit,
};

const SESSION: u64 = 77;

fn sender_address() -> SocketAddr {
    "127.0.0.1:7000".parse().expect("literal address")
}

fn receiver_address() -> SocketAddr {
    "127.0.0.2:7001".parse().expect("literal address")
}

fn group_key(epoch: u32) -> GroupKey {
    GroupKey {
        epoch,
        secret: [epoch as u8; 32],
    }
}

fn member_key() -> ReceiverKey {
    ReceiverKey {
        receiver_id: 9,
        secret: [0xAB; 32],
    }
}

fn object(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A sender with `member_key()` as member and a receiver for it, both on `group_key(1)`.
fn pair(now: Instant) -> (Sender, Receiver) {
    let mut sender =
        Sender::new(SenderConfig::default(), SESSION, group_key(1), now).expect("default config");
    sender.add_receiver(member_key());
    let mut receiver = Receiver::new(ReceiverConfig::default(), member_key(), now);
    receiver.add_session(SESSION, group_key(1));
    (sender, receiver)
}

fn drain(sender: &mut Sender, now: Instant) -> Vec<Transmit> {
    std::iter::from_fn(|| sender.poll_transmit(now)).collect()
}

fn objects_of(receiver: &mut Receiver) -> Vec<(u64, Bytes)> {
    std::iter::from_fn(|| receiver.poll_event())
        .filter_map(|event| match event {
            ReceiverEvent::Object {
                object_id, data, ..
            } => Some((object_id, data)),
            ReceiverEvent::Lost { .. } => None,
        })
        .collect()
}

#[test]
fn truncated_datagrams_are_dropped_and_counted() {
    let now = Instant::now();
    let (mut sender, mut receiver) = pair(now);
    sender
        .send_object(1, object(3000), now)
        .expect("window has room");
    sender.handle_timeout(now); // a tail too
    let datagrams = drain(&mut sender, now);
    assert!(datagrams.len() >= 3);
    let mut fed = 0;
    for transmit in &datagrams {
        for len in 0..transmit.payload.len() {
            receiver.handle_datagram(now, sender_address(), &transmit.payload[..len]);
            fed += 1;
        }
    }
    let dropped = receiver.stats().dropped;
    assert_eq!(dropped.truncated + dropped.wrong_key, fed, "{dropped:?}");
    assert!(dropped.truncated > 0 && dropped.wrong_key > 0);
    assert_eq!(receiver.stats().datagrams_accepted, 0);
    assert!(receiver.poll_event().is_none());

    // The whole datagrams still deliver the object.
    for transmit in &datagrams {
        receiver.handle_datagram(now, sender_address(), &transmit.payload);
    }
    assert_eq!(objects_of(&mut receiver), vec![(1, object(3000))]);

    // The sender treats truncated control datagrams the same way.
    let status = receiver.poll_transmit(now).expect("a status report");
    for len in 0..status.payload.len() {
        sender.handle_datagram(now, receiver_address(), &status.payload[..len]);
    }
    let dropped = sender.stats().dropped;
    assert_eq!(
        dropped.truncated + dropped.wrong_key,
        status.payload.len() as u64
    );
    assert_eq!(sender.stats().status_received, 0);
}

#[test]
fn wrong_key_datagrams_are_dropped_and_counted() {
    let now = Instant::now();
    let (_, mut receiver) = pair(now);
    let impostor_key = GroupKey {
        epoch: 1,
        secret: [0xEE; 32],
    };
    let mut impostor =
        Sender::new(SenderConfig::default(), SESSION, impostor_key, now).expect("default config");
    impostor.send_object(1, object(5000), now).expect("room");
    let datagrams = drain(&mut impostor, now);
    for transmit in &datagrams {
        receiver.handle_datagram(now, sender_address(), &transmit.payload);
    }
    assert_eq!(receiver.stats().dropped.wrong_key, datagrams.len() as u64);
    assert!(receiver.poll_event().is_none());

    // Flipped bits in a genuine datagram fail authentication the same way.
    let (mut sender, _) = pair(now);
    sender.send_object(2, object(100), now).expect("room");
    let genuine = drain(&mut sender, now).remove(0).payload;
    for bit in [
        0usize,
        8 * 3,
        8 * 12,
        8 * 22,
        8 * 40,
        8 * (genuine.len() - 1),
    ] {
        let mut altered = genuine.clone();
        altered[bit / 8] ^= 1 << (bit % 8);
        receiver.handle_datagram(now, sender_address(), &altered);
    }
    let dropped = receiver.stats().dropped;
    let counted =
        dropped.wrong_key + dropped.malformed + dropped.unknown_session + dropped.unknown_epoch;
    assert_eq!(counted, datagrams.len() as u64 + 6, "{dropped:?}");
    assert!(receiver.poll_event().is_none());

    // A NACK sealed with a key that is not the member's is refused by the sender.
    let wrong = PacketKey::receiver(
        SESSION,
        &ReceiverKey {
            receiver_id: member_key().receiver_id,
            secret: [0x11; 32],
        },
    );
    let nack = seal_nack(&wrong, 0, 0, 10);
    sender.handle_datagram(now, receiver_address(), &nack);
    assert_eq!(sender.stats().dropped.wrong_key, 1);
    assert_eq!(sender.stats().nacks_received, 0);
}

#[test]
fn forged_session_datagrams_are_dropped_and_counted() {
    let now = Instant::now();
    let (mut sender, mut receiver) = pair(now);
    receiver.add_session(SESSION + 1, group_key(1));
    sender.send_object(1, object(2000), now).expect("room");
    let datagrams = drain(&mut sender, now);
    for transmit in &datagrams {
        // To a session the receiver does not know, and to one it knows under the same secret:
        // the session id is bound into the key and the associated data.
        for forged in [SESSION + 100, SESSION + 1] {
            let mut payload = transmit.payload.clone();
            payload[2..10].copy_from_slice(&forged.to_be_bytes());
            receiver.handle_datagram(now, sender_address(), &payload);
        }
    }
    let dropped = receiver.stats().dropped;
    assert_eq!(dropped.unknown_session, datagrams.len() as u64);
    assert_eq!(dropped.wrong_key, datagrams.len() as u64);
    assert!(receiver.poll_event().is_none());

    // A NACK from a receiver id that is not a member, and one for another session.
    let stranger = ReceiverKey {
        receiver_id: 1234,
        secret: [3; 32],
    };
    sender.handle_datagram(
        now,
        receiver_address(),
        &seal_nack(&PacketKey::receiver(SESSION, &stranger), 0, 0, 1),
    );
    sender.handle_datagram(
        now,
        receiver_address(),
        &seal_nack(&PacketKey::receiver(SESSION + 1, &member_key()), 0, 0, 1),
    );
    // A genuine member's NACK re-addressed to another session.
    let mut readdressed = seal_nack(&PacketKey::receiver(SESSION, &member_key()), 1, 0, 1);
    readdressed[2..10].copy_from_slice(&(SESSION + 1).to_be_bytes());
    sender.handle_datagram(now, receiver_address(), &readdressed);
    let dropped = sender.stats().dropped;
    // The first names no member; the second is sealed for another session's key.
    assert_eq!(
        (
            dropped.unknown_receiver,
            dropped.wrong_key,
            dropped.wrong_session
        ),
        (1, 1, 1)
    );
    assert_eq!(sender.stats().nacks_received, 0);
}

#[test]
fn replayed_datagrams_are_dropped_and_counted() {
    let now = Instant::now();
    let (mut sender, mut receiver) = pair(now);
    sender.send_object(1, object(10_000), now).expect("room");
    let datagrams = drain(&mut sender, now);
    for transmit in datagrams.iter().chain(&datagrams) {
        receiver.handle_datagram(now, sender_address(), &transmit.payload);
    }
    assert_eq!(receiver.stats().dropped.replayed, datagrams.len() as u64);
    assert_eq!(objects_of(&mut receiver), vec![(1, object(10_000))]);
    // Replaying the whole stream later delivers nothing again.
    for transmit in &datagrams {
        receiver.handle_datagram(now, sender_address(), &transmit.payload);
    }
    assert_eq!(
        receiver.stats().dropped.replayed,
        2 * datagrams.len() as u64
    );
    assert!(receiver.poll_event().is_none());

    // A replayed status report is refused by the sender.
    let status = receiver.poll_transmit(now).expect("a status report");
    sender.handle_datagram(now, receiver_address(), &status.payload);
    sender.handle_datagram(now, receiver_address(), &status.payload);
    assert_eq!(sender.stats().status_received, 1);
    assert_eq!(sender.stats().dropped.replayed, 1);
}

fn seal_nack(key: &PacketKey, packet_number: u64, first: u64, len: u32) -> Vec<u8> {
    let header = Header {
        packet_type: PacketType::Nack,
        session_id: SESSION,
        key_id: key.key_id(),
        packet_number,
    };
    key.seal(&header, &Body::Nack(vec![SeqRange { first, len }]))
        .expect("a small datagram seals")
}

#[test]
fn a_nack_flood_stays_under_the_per_receiver_repair_limit() {
    let start = Instant::now();
    let limit = RateLimit {
        bytes_per_second: 1_000_000,
        burst: 100_000,
    };
    let config = SenderConfig {
        repair_rate_per_receiver: limit,
        ..SenderConfig::default()
    };
    let mut sender = Sender::new(config.clone(), SESSION, group_key(1), start).expect("valid");
    sender.add_receiver(member_key());
    sender
        .send_object(1, object(2_000_000), start)
        .expect("room");
    let sent = drain(&mut sender, start).len() as u32;
    let attacker = PacketKey::receiver(SESSION, &member_key());

    // 10,000 authenticated NACKs for everything, over one second.
    let mut now = start;
    let mut repair_bytes = 0u64;
    for packet_number in 0..10_000u64 {
        now = start + Duration::from_micros(packet_number * 100);
        sender.handle_datagram(
            now,
            receiver_address(),
            &seal_nack(&attacker, packet_number, 0, sent),
        );
        if sender.poll_timeout().is_some_and(|at| at <= now) {
            sender.handle_timeout(now);
        }
        for transmit in drain(&mut sender, now) {
            if transmit.payload[1] == PacketType::Repair as u8 {
                assert_eq!(
                    transmit.destination,
                    Destination::Unicast(receiver_address())
                );
                repair_bytes += transmit.payload.len() as u64;
            }
        }
    }
    let elapsed = now - start;
    let allowed = limit.burst + (limit.bytes_per_second as f64 * elapsed.as_secs_f64()) as u64;
    // Each repair is charged its payload and data header; the seal adds 38 bytes per datagram.
    let stats = sender.stats();
    let repairs = stats.repairs_unicast + stats.repairs_multicast;
    assert!(repairs > 0, "some repairs are granted");
    assert!(
        repair_bytes <= allowed + repairs * 38,
        "{repair_bytes} repair bytes for a limit of {allowed}"
    );
    assert!(stats.repairs_rate_limited > 0);
    assert_eq!(stats.nacks_received, 10_000);
    // The flood did not amplify: far fewer repair bytes than NACKed bytes.
    assert!(repair_bytes < stats.nacked_datagrams * 1400 / 10);
}

#[test]
fn retired_epoch_datagrams_are_dropped_and_counted() {
    let now = Instant::now();
    let (mut sender, mut receiver) = pair(now);
    sender.send_object(1, object(4000), now).expect("room");
    let epoch_one = drain(&mut sender, now);

    // Epoch 2 installed on both: epoch 1 still drains.
    sender.install_key(group_key(2));
    receiver.add_session(SESSION, group_key(2));
    sender.send_object(2, object(4000), now).expect("room");
    let epoch_two = drain(&mut sender, now);
    for transmit in epoch_one.iter().chain(&epoch_two) {
        receiver.handle_datagram(now, sender_address(), &transmit.payload);
    }
    assert_eq!(
        objects_of(&mut receiver),
        vec![(1, object(4000)), (2, object(4000))]
    );

    // Epoch 3 retires epoch 1: its datagrams are refused, even ones never seen.
    receiver.add_session(SESSION, group_key(3));
    let (mut old_sender, _) = pair(now);
    old_sender.send_object(1, object(4000), now).expect("room");
    let stale: Vec<Transmit> = drain(&mut old_sender, now);
    for transmit in &stale {
        let mut payload = transmit.payload.clone();
        // Fresh packet numbers, so that only the epoch can be the reason.
        payload[14..22].copy_from_slice(&(1_000_000u64).to_be_bytes());
        receiver.handle_datagram(now, sender_address(), &payload);
    }
    assert_eq!(receiver.stats().dropped.retired_epoch, stale.len() as u64);
    // Re-adding the retired key does not bring it back.
    receiver.add_session(SESSION, group_key(1));
    receiver.handle_datagram(now, sender_address(), &stale[0].payload);
    assert_eq!(
        receiver.stats().dropped.retired_epoch,
        stale.len() as u64 + 1
    );
    assert!(receiver.poll_event().is_none());

    // A sender ignores a key that is not newer, so packet numbers never repeat under a key.
    sender.install_key(group_key(1));
    sender.send_object(3, object(10), now).expect("room");
    let after = drain(&mut sender, now);
    assert!(
        after
            .iter()
            .all(|t| t.payload[10..14] == 2u32.to_be_bytes())
    );
}
