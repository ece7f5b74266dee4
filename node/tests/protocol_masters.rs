//! The masters' messages as bad input: raft's messages between masters
//! ([`Message::Consensus`]), a primary's orders ([`Message::FromPrimary`]), redirects
//! ([`Message::PrimaryIs`]) and [`Message::AskPrimary`]. Each round-trips; every truncation
//! and many corruptions of them are refused or decode to a message that round-trips (the
//! property of the `node_protocol` fuzz target, here on these messages' own bytes, in CI); an
//! order inside an order is refused however deep, without exhausting the stack.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use replicast_node::consensus::{Group, GroupSettings, RaftLog, raft_id};
use replicast_node::ids::Tid;
use replicast_node::protocol::{Message, Order, decode, encode};

/// Real raft messages: three masters electing a leader, which replicates a command.
fn consensus_messages() -> Vec<Message> {
    let names: Vec<String> = ["m1", "m2", "m3"].map(str::to_owned).to_vec();
    let ids: Vec<u64> = names.iter().map(|name| raft_id(name)).collect();
    let mut now = SystemTime::UNIX_EPOCH;
    let mut groups: BTreeMap<String, Group> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let settings = GroupSettings {
                election_ticks: 10 + 3 * i,
                max_election_ticks: 11 + 3 * i,
                ..GroupSettings::default()
            };
            let log = RaftLog::in_memory(&ids).expect("log");
            let group = Group::new(name, &names, log, settings, now).expect("group");
            (name.clone(), group)
        })
        .collect();
    let mut seen = Vec::new();
    let mut proposed = false;
    for _ in 0..200 {
        now += Duration::from_millis(50);
        for group in groups.values_mut() {
            group.tick(now).expect("tick");
        }
        if !proposed && let Some(leader) = groups.values_mut().find(|group| group.is_leader()) {
            leader.propose(b"a command".to_vec()).expect("propose");
            proposed = true;
        }
        for _ in 0..100 {
            let mut messages = Vec::new();
            for (name, group) in groups.iter_mut() {
                while let Some((to, message)) = group.poll_message() {
                    messages.push((name.clone(), to, message));
                }
            }
            if messages.is_empty() {
                break;
            }
            for (from, to, message) in messages {
                groups
                    .get_mut(&to)
                    .expect("a master")
                    .step(&from, &message)
                    .expect("step");
                seen.push(Message::Consensus(message));
            }
        }
        if proposed && seen.len() > 12 {
            break;
        }
    }
    assert!(proposed && seen.len() > 12, "an election and a replication");
    seen
}

fn samples() -> Vec<Message> {
    let mut samples = consensus_messages();
    samples.extend([
        Message::order(
            3,
            Message::TtidSpace {
                number: 1,
                clock: Tid(5),
            },
        ),
        Message::order(
            u64::MAX,
            Message::Finish {
                ttid: Tid(7),
                tid: Tid(9),
            },
        ),
        Message::PrimaryIs {
            primary: Some("m2".into()),
            address: Some("127.0.0.1:7000".parse().expect("an address")),
            term: 5,
        },
        Message::PrimaryIs {
            primary: None,
            address: None,
            term: 0,
        },
        Message::AskPrimary,
    ]);
    samples
}

/// Decoding `bytes` never panics; what decodes encodes back to the same bytes' message.
fn refused_or_sound(bytes: &[u8]) {
    if let Ok(message) = decode(bytes) {
        let again = decode(&encode(&message)).expect("an encoded message decodes");
        assert_eq!(message, again);
    }
}

#[test]
fn the_masters_messages_round_trip() {
    for message in samples() {
        assert_eq!(decode(&encode(&message)).expect("decodes"), message);
    }
}

#[test]
fn damaged_masters_messages_are_refused_or_sound() {
    for message in samples() {
        let bytes = encode(&message);
        for end in 0..bytes.len() {
            refused_or_sound(&bytes[..end]);
            assert!(decode(&bytes[..end]).is_err() || end == bytes.len());
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x40, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                refused_or_sound(&damaged);
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing bytes are refused");
    }
}

#[test]
fn an_order_inside_an_order_is_refused_however_deep() {
    let nested = Message::FromPrimary {
        term: 2,
        message: Order(Box::new(Message::order(
            1,
            Message::Begin {
                ttid: Tid(7),
                table_version: 1,
            },
        ))),
    };
    assert!(decode(&encode(&nested)).is_err());
    // A million levels, written by hand (the encoder would recurse): the decoder stops at
    // the second, whatever follows.
    let inner = encode(&Message::AskPrimary);
    let once = encode(&Message::order(1, Message::AskPrimary));
    let body = &inner[1..];
    let level = &once[1..once.len() - body.len()];
    let mut two = vec![inner[0]];
    two.extend_from_slice(level);
    two.extend_from_slice(level);
    two.extend_from_slice(body);
    let two_levels = Message::order(1, Message::order(1, Message::AskPrimary));
    let two_levels = Message::FromPrimary {
        term: 1,
        message: Order(Box::new(two_levels.into_order())),
    };
    assert_eq!(
        two,
        encode(&two_levels),
        "the levels are written as the encoder would"
    );
    let mut deep = vec![inner[0]];
    for _ in 0..1_000_000 {
        deep.extend_from_slice(level);
    }
    deep.extend_from_slice(body);
    assert!(decode(&deep).is_err());
    // The decoder is not left inside an order: the next one decodes.
    let order = Message::order(
        4,
        Message::Begin {
            ttid: Tid(7),
            table_version: 1,
        },
    );
    assert_eq!(decode(&encode(&order)).expect("decodes"), order);
}
