//! Feeds arbitrary bytes to the multicast datagram decoders and to a Sender's and a
//! Receiver's `handle_datagram` (fixed keys, so a genuine session is set up around them).
//!
//! Nothing may panic, and a receiver may deliver only the object the genuine sender sent.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use replicast_transport::multicast::proto::wire::{Header, PacketType, decode_body};
use replicast_transport::multicast::proto::{
    FecConfig, GroupKey, Receiver, ReceiverConfig, ReceiverEvent, ReceiverKey, Sender,
    SenderConfig,
};

const SESSION: u64 = 0x5e55;

fn group_key() -> GroupKey {
    GroupKey {
        epoch: 1,
        secret: [7; 32],
    }
}

fn receiver_key() -> ReceiverKey {
    ReceiverKey {
        receiver_id: 1,
        secret: [9; 32],
    }
}

fuzz_target!(|data: &[u8]| {
    // The decoders alone: the header, then the rest as the plaintext body of every type.
    let _ = Header::decode(data);
    for packet_type in [
        PacketType::Data,
        PacketType::Repair,
        PacketType::Tail,
        PacketType::Parity,
        PacketType::Nack,
        PacketType::Status,
    ] {
        let _ = decode_body(packet_type, data);
    }

    // The state machines: a genuine sender and receiver, with the fuzz input cut into
    // datagrams (a 0xff byte separates them) and interleaved with genuine ones.
    let now = Instant::now();
    let from: SocketAddr = "127.0.0.1:5000".parse().expect("literal address");
    // Proactive parity, so the parity paths run on genuine datagrams beside the hostile ones.
    let config = SenderConfig {
        fec: Some(FecConfig {
            max_block: 8,
            proactive: 0.25,
        }),
        ..SenderConfig::default()
    };
    let Ok(mut sender) = Sender::new(config, SESSION, group_key(), now) else {
        return;
    };
    sender.add_receiver(receiver_key());
    let mut receiver = Receiver::new(ReceiverConfig::default(), receiver_key(), now);
    receiver.add_session(SESSION, group_key());
    let object: Vec<u8> = data.iter().rev().copied().collect();
    if sender.send_object(1, object.clone().into(), now).is_err() {
        return;
    }
    let mut hostile = data.split(|&b| b == 0xff);
    let mut clock = now;
    for _ in 0..64 {
        clock += Duration::from_millis(1);
        if let Some(datagram) = hostile.next() {
            receiver.handle_datagram(clock, from, datagram);
            sender.handle_datagram(clock, from, datagram);
        }
        sender.handle_timeout(clock);
        receiver.handle_timeout(clock);
        while let Some(transmit) = sender.poll_transmit(clock) {
            receiver.handle_datagram(clock, from, &transmit.payload);
        }
        while let Some(transmit) = receiver.poll_transmit(clock) {
            sender.handle_datagram(clock, from, &transmit.payload);
        }
        while let Some(event) = receiver.poll_event() {
            if let ReceiverEvent::Object { object_id, data, .. } = event {
                assert_eq!(object_id, 1, "only the genuine object exists");
                assert_eq!(&data[..], &object[..], "delivered bytes differ from those sent");
            }
        }
        while sender.poll_event().is_some() {}
    }
});
