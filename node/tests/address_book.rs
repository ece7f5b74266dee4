//! The storages' address book, sans-IO: storages tell the master where they listen, the master
//! hands the addresses to clients before the partition table and sends later changes to the
//! clients it knows; a client keeps what the master told it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use replicast_node::client::{Client, ClientConfig, ClientEvent};
use replicast_node::engine::StartupState;
use replicast_node::ids::Tid;
use replicast_node::master::{Master, MasterConfig};
use replicast_node::partition::PartitionTable;
use replicast_node::protocol::{Message, ProtocolError, Transmit, decode, encode};
use replicast_node::storage::{Storage, StorageConfig};

fn master() -> Master {
    let table = PartitionTable::new(12, 2, &["s1".into(), "s2".into(), "s3".into()])
        .expect("partition table");
    Master::new(table, MasterConfig::default()).expect("a lone master")
}

fn address(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn transmits(master: &mut Master) -> Vec<Transmit> {
    std::iter::from_fn(|| master.poll_transmit())
        .map(|transmit| Transmit {
            to: transmit.to,
            message: transmit.message.into_order(),
        })
        .collect()
}

#[test]
fn storage_announces_its_address_to_its_master() {
    let mut storage = Storage::open(
        SystemTime::now(),
        "s1",
        "master",
        StartupState::default(),
        StorageConfig::default(),
    );
    storage.announce_address(address(7101));
    let sent: Vec<Transmit> = std::iter::from_fn(|| storage.poll_transmit()).collect();
    let announced: Vec<&Message> = sent
        .iter()
        .filter(|transmit| transmit.to == "master")
        .map(|transmit| &transmit.message)
        .collect();
    assert_eq!(
        announced,
        [
            &Message::StorageReady,
            &Message::StorageAddress {
                address: address(7101)
            }
        ]
    );
}

#[test]
fn master_hands_addresses_to_clients_before_the_table() {
    let now = SystemTime::now();
    let mut master = master();
    master
        .handle(now, "s1", Message::StorageReady)
        .expect("ready");
    master
        .handle(
            now,
            "s1",
            Message::StorageAddress {
                address: address(7101),
            },
        )
        .expect("address");
    transmits(&mut master);

    master
        .handle(now, "c1", Message::ClientHello)
        .expect("hello");
    let sent = transmits(&mut master);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(sent.iter().all(|transmit| transmit.to == "c1"));
    assert_eq!(
        sent[0].message,
        Message::StorageAddresses(vec![("s1".into(), address(7101))])
    );
    assert_eq!(sent[1].message, Message::LastTransaction { tid: Tid::ZERO });
    assert!(matches!(sent[2].message, Message::TtidSpace { .. }));
    assert!(matches!(sent[3].message, Message::PartitionTable(_)));

    // A storage that tells its address later (or a new one): known clients hear of it.
    master
        .handle(
            now,
            "s2",
            Message::StorageAddress {
                address: address(7102),
            },
        )
        .expect("address");
    // So do the running storages, which replicate from each other.
    let sent = transmits(&mut master);
    let mut peers: Vec<&str> = sent.iter().map(|transmit| transmit.to.as_str()).collect();
    peers.sort_unstable();
    assert_eq!(peers, ["c1", "s1"], "{sent:?}");
    assert!(sent.iter().all(|transmit| transmit.message
        == Message::StorageAddresses(vec![("s2".into(), address(7102))])));
    // The same address again changes nothing and is not sent again.
    master
        .handle(
            now,
            "s2",
            Message::StorageAddress {
                address: address(7102),
            },
        )
        .expect("address");
    assert!(transmits(&mut master).is_empty());
    assert_eq!(
        master.storage_addresses(),
        &BTreeMap::from([
            ("s1".to_owned(), address(7101)),
            ("s2".to_owned(), address(7102))
        ])
    );
}

#[test]
fn master_refuses_an_address_from_a_node_that_is_no_storage() {
    let now = SystemTime::now();
    let mut master = master();
    let error = master
        .handle(
            now,
            "c1",
            Message::StorageAddress {
                address: address(9999),
            },
        )
        .expect_err("a client is no storage");
    assert!(
        matches!(error, ProtocolError::Unexpected { .. }),
        "{error:?}"
    );
    assert!(master.storage_addresses().is_empty());
    assert!(transmits(&mut master).is_empty());
}

#[test]
fn client_keeps_the_addresses_its_master_told() {
    let now = SystemTime::now();
    let mut client = Client::new("c1", "master", ClientConfig::default());
    client.connect();
    client
        .handle(
            now,
            "master",
            Message::order(
                1,
                Message::StorageAddresses(vec![("s1".into(), address(7101))]),
            ),
        )
        .expect("address book");
    let table = PartitionTable::new(12, 2, &["s1".into(), "s2".into(), "s3".into()])
        .expect("partition table");
    client
        .handle(
            now,
            "master",
            Message::order(1, Message::PartitionTable(table)),
        )
        .expect("table");
    assert!(std::iter::from_fn(|| client.poll_event()).any(|event| event == ClientEvent::Ready));
    client
        .handle(
            now,
            "master",
            Message::order(
                1,
                Message::StorageAddresses(vec![("s2".into(), address(7102))]),
            ),
        )
        .expect("update");
    assert_eq!(
        client.storage_addresses(),
        &BTreeMap::from([
            ("s1".to_owned(), address(7101)),
            ("s2".to_owned(), address(7102))
        ])
    );

    // Only the master hands out addresses.
    assert!(
        client
            .handle(
                now,
                "s1",
                Message::StorageAddresses(vec![("s3".into(), address(6666))]),
            )
            .is_err()
    );
    assert_eq!(client.storage_addresses().len(), 2);
}

#[test]
fn address_messages_survive_the_codec() {
    for message in [
        Message::StorageAddress {
            address: "[::1]:7101".parse().expect("address"),
        },
        Message::StorageAddresses(vec![
            ("s1".into(), address(7101)),
            ("s2".into(), "[::1]:7102".parse().expect("address")),
        ]),
    ] {
        assert_eq!(decode(&encode(&message)).expect("decodes"), message);
    }
}
