//! Hostile peers against a cluster of `replicast node` processes (a master and three storages
//! on 127.0.0.1, P = 12, R = 2, objects written with `replicast client put`).
//!
//! Mallory holds a valid cluster certificate (made by `replicast certs init --node` like any
//! other) and speaks the transport, but not the protocol: garbage on its message channel,
//! truncated and undecodable messages, a large garbage message, messages out of protocol
//! order (answers nobody asked for, a store and a vote without a begin, a finish for a
//! transaction never begun, replication batches nobody asked for), requests the nodes do not
//! answer (the master answers only an operator's status and storage changes) and object
//! streams they do not serve, objects the storages' fan-out takes whose bytes are no store,
//! and a message announced beyond the nodes' limit, which ends the sender's channel (the next
//! message opens another, which is served). Each is refused or ignored and nothing changes:
//! every replica serves the same revisions afterwards, new transactions commit, the nodes
//! keep running and exit cleanly, and none of them panicked (their standard error is kept and
//! checked).
//!
//! Peers without a valid certificate (one of another CA, or none at all) get no connection.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use replicast_certs::{NodeIdentity, Role, anonymous_client_config, load_ca_certificate};
use replicast_node::engine::{ObjectCursor, ReplicatedObject};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::protocol::{
    LoadResult, Message, NodeReport, PROTOCOL_VERSION, StoreKind, StoreResult, TransactionOutcome,
    VoteRefusal, VoteResult, encode,
};
use replicast_node::transaction::{CommittedTransaction, TransactionInfo};
use replicast_testkit::process;
use replicast_testkit::process::peer::{Peer, ask, bounded_exchange, peer_endpoint};
use replicast_testkit::process::{ClusterSpec, LocalCluster, WAIT};
use replicast_transport::fanout;
use replicast_transport::fanout::wire::{UnicastAck, UnicastHeader};
use replicast_transport::quic::{Endpoint, EndpointConfig, Link, LinkConfig, LinkError};

const STORAGES: [&str; 3] = ["storage-1", "storage-2", "storage-3"];
/// The objects written before the attack: oids 1..=OBJECTS.
const OBJECTS: u64 = 6;
/// The hostile peer's name; its certificate is as valid as any client's.
const MALLORY: &str = "mallory";
/// A peer that announces a message beyond a storage's limit.
const FLOODER: &str = "flooder";
/// A well-behaved peer that reads every replica before and after the attack.
const INSPECTOR: &str = "inspector";
/// The largest frame a node accepts (`LinkConfig::default().max_frame_len`; the test
/// cluster's configurations do not change it).
fn node_frame_limit() -> usize {
    LinkConfig::default().max_frame_len as usize
}
/// The largest message a node accepts on a channel (`LinkConfig::default().max_message_len`).
const NODE_MESSAGE_LIMIT: usize = 1 << 30;

/// A cluster whose nodes' standard error goes to files, so that the test can tell that no
/// node panicked (a panic in a task of a node's runtime does not end the process).
fn start_cluster() -> LocalCluster {
    // Mallory, the flooder and the inspector hold client certificates.
    let mut extra_names = vec!["client-1".to_owned()];
    extra_names.extend([MALLORY, FLOODER, INSPECTOR].map(|name| format!("{name}=client")));
    LocalCluster::start(&ClusterSpec {
        partitions: 12,
        replicas: 2,
        storages: STORAGES.map(str::to_owned).to_vec(),
        spare_storages: Vec::new(),
        extra_names,
        storage_sections: String::new(),
        stderr_to_files: true,
        ..ClusterSpec::default()
    })
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Every revision every storage serves for the test's objects.
type Snapshot = BTreeMap<(String, u64), LoadResult>;

async fn snapshot(peer: &mut Peer, storages: &[(String, Link)]) -> Snapshot {
    let mut snapshot = BTreeMap::new();
    for (name, link) in storages {
        for oid in 1..=OBJECTS {
            snapshot.insert((name.clone(), oid), peer.load(link, Oid(oid)).await);
        }
    }
    snapshot
}

/// The storages that hold a committed revision of `oid`, with it.
fn replicas(snapshot: &Snapshot, oid: u64) -> Vec<(String, Tid, ObjectData)> {
    snapshot
        .iter()
        .filter_map(|((name, o), result)| match result {
            LoadResult::Found { tid, data } if *o == oid => {
                Some((name.clone(), *tid, data.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The TID of revisions Mallory forges: later than any real commit, so that a forged revision
/// taken by a storage would be the one its loads return.
const FORGED_REVISION: Tid = Tid(u64::MAX - 1);

/// Garbage, truncated and undecodable messages, and a large garbage message, to `link`'s
/// node. None of it reaches the node's role as a message, and the channel goes on.
async fn send_malformed(peer: &mut Peer, link: &Link) {
    // Not a message: 0xff is a varint that never ends.
    peer.send_body(link, vec![0xff; 16]).await;
    let mut truncated = encode(&Message::Load {
        request: 1,
        oid: Oid(1),
    });
    truncated.truncate(3);
    peer.send_body(link, truncated).await;
    peer.send_body(link, vec![0xde, 0xad, 0xbe, 0xef]).await;
    let mut other_version = encode(&Message::ClientHello);
    other_version[0] = (PROTOCOL_VERSION + 1) as u8;
    peer.send_body(link, other_version).await;
    let mut trailing = encode(&Message::Begin {
        ttid: Tid(1),
        table_version: 1,
    });
    trailing.push(0);
    peer.send_body(link, trailing).await;
    peer.send_body(link, Vec::new()).await;
    // A variant index far beyond the enum.
    let mut unknown_variant = encode(&Message::ClientHello);
    unknown_variant.truncate(1);
    unknown_variant.push(0x7f);
    peer.send_body(link, unknown_variant).await;
    // Garbage larger than any frame of a request: read whole, refused as undecodable.
    peer.send_body(link, vec![0xab; node_frame_limit() + 1024])
        .await;
}

/// The refusal text of a request the node refused with an error, or a panic.
fn refusal<T: std::fmt::Debug>(what: &str, result: Result<T, LinkError>) -> String {
    match result {
        Err(LinkError::Remote { message, .. }) => message,
        other => panic!("the master did not refuse {what} with an error: {other:?}"),
    }
}

/// The master answers status requests from anyone with a certificate, apart from the
/// two-phase commit's messages; requests the sender's role may not send are refused with a
/// typed refusal, every other request and garbage with an error, and it takes no object
/// stream.
async fn send_requests_and_objects(link: &Link) {
    let garbage: Result<Vec<u8>, _> =
        bounded_exchange("a request", link.request(&[0xffu8; 8])).await;
    let text = refusal("a garbage request", garbage);
    assert!(text.contains("not a request"), "{text}");
    // A message in postcard without the protocol's framing (no version, not bytes).
    let unframed: Result<Vec<u8>, _> = bounded_exchange(
        "a request",
        link.request(&Message::Begin {
            ttid: Tid(1),
            table_version: 1,
        }),
    )
    .await;
    refusal("an unframed request", unframed);
    let mut other_version = encode(&Message::AskStatus { request: 1 });
    other_version[0] = (PROTOCOL_VERSION + 1) as u8;
    let result: Result<Vec<u8>, _> =
        bounded_exchange("a request", link.request(&other_version)).await;
    let text = refusal("a request of another protocol version", result);
    assert!(text.contains("version"), "{text}");
    // Requests a client may send but the master does not answer as requests.
    for message in [
        Message::Begin {
            ttid: Tid(1),
            table_version: 1,
        },
        Message::ClientHello,
    ] {
        let kind = message.kind();
        let text = refusal(kind, ask(link, &message).await);
        assert!(text.contains(&format!("unexpected {kind}")), "{text}");
    }
    // Requests of a storage's: the master's gate answers with a typed refusal.
    for message in [
        Message::StorageReady,
        Message::AskOutcome {
            ttid: Tid(0x0100_0000_0000_0001),
        },
    ] {
        let kind = message.kind();
        match ask(link, &message).await {
            Ok(Message::Refused(refusal)) => {
                assert_eq!(refusal.kind, kind);
                assert_eq!(refusal.roles_needed(), Some(Role::Storage.into()));
            }
            other => panic!("the master did not refuse {kind} from a client: {other:?}"),
        }
    }
    // Asking is allowed to anyone with a certificate, and makes nobody a client.
    match ask(link, &Message::AskStatus { request: 41 }).await {
        Ok(Message::AnswerStatus { request, status }) => {
            assert_eq!(request, 41, "the answer names the request");
            assert!(
                !status.nodes.iter().any(|node| node.name == MALLORY),
                "the asker is no node of the cluster: {status:?}"
            );
        }
        other => panic!("the master does not answer AskStatus: {other:?}"),
    }

    let object: Result<Vec<u8>, _> = bounded_exchange(
        "an object",
        link.send_object(&UnicastHeader { object_id: 1 }, vec![0x5a; 64 << 10].into()),
    )
    .await;
    assert!(
        matches!(
            object,
            Err(LinkError::StreamReset { .. }
                | LinkError::Remote { .. }
                | LinkError::Rejected { .. })
        ),
        "the master took an object stream: {object:?}"
    );
}

/// A storage serves requests and objects of the fan-out's service (stored objects arrive that
/// way): requests that are no fan-out request and objects whose header is no fan-out header
/// are refused; an object the fan-out takes but whose bytes are no store is acknowledged by
/// the fan-out and refused by the storage's driver (checked by the caller: nothing changes).
async fn send_fanout_garbage(link: &Link) {
    let link = &link.clone().for_service(fanout::SERVICE);
    let request: Result<Vec<u8>, _> =
        bounded_exchange("a request", link.request(&[0xffu8; 8])).await;
    assert!(
        matches!(&request, Err(LinkError::Remote { message, .. }) if message.contains("fan-out")),
        "{}: {request:?}",
        link.peer()
    );
    let object: Result<UnicastAck, _> = bounded_exchange(
        "an object",
        link.send_object(&[0xffu8; 4], vec![0x5a; 64 << 10].into()),
    )
    .await;
    assert!(
        matches!(&object, Err(LinkError::Remote { message, .. }) if message.contains("fan-out")),
        "{}: {object:?}",
        link.peer()
    );
    let not_a_store: Result<UnicastAck, _> = bounded_exchange(
        "an object",
        link.send_object(
            &UnicastHeader { object_id: 77 },
            vec![0x5a; 64 << 10].into(),
        ),
    )
    .await;
    let ack = not_a_store.unwrap_or_else(|error| panic!("{}: {error}", link.peer()));
    assert_eq!(ack.object_id, 77);
}

#[test]
fn hostile_peers_change_nothing_and_crash_no_node() {
    let mut cluster = start_cluster();
    let client = cluster.client_config("client-1", "");
    let mut written = BTreeMap::new();
    for oid in 1..=OBJECTS {
        let data = format!("object-{oid}");
        let tid = process::put(&client, oid, &data);
        written.insert(oid, (tid, data));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let attacked_oid = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(240), attack(&cluster, &written))
            .await
            .expect("the attack finished in time")
    });

    // New transactions commit, on a new object and on the one Mallory stored to.
    let tid = process::put(&client, 100, "after-the-attack");
    assert_eq!(
        process::get(&client, 100),
        (tid, "after-the-attack".to_owned())
    );
    let tid = process::put(&client, attacked_oid, "overwritten");
    assert_eq!(
        process::get(&client, attacked_oid),
        (tid, "overwritten".to_owned())
    );
    for oid in (1..=OBJECTS).filter(|oid| *oid != attacked_oid) {
        let (tid, data) = &written[&oid];
        assert_eq!(&process::get(&client, oid), &(tid.clone(), data.clone()));
    }

    // Peers without a valid certificate get no connection at all.
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), intruders(&cluster))
            .await
            .expect("the intruders were refused in time")
    });
    let tid = process::put(&client, 101, "after-the-intruders");
    assert_eq!(
        process::get(&client, 101),
        (tid, "after-the-intruders".to_owned())
    );
    drop(runtime);

    let names: Vec<String> = std::iter::once("master".to_owned())
        .chain(cluster.storages.keys().cloned())
        .collect();
    for name in &names {
        let node = cluster.node(name);
        assert!(node.is_running(), "{} still runs", node.name);
    }
    for name in &names {
        cluster.node(name).stop();
        let stderr = cluster.stderr(name);
        assert!(!stderr.contains("panicked"), "{name} panicked:\n{stderr}");
    }
}

/// Mallory's attack on the master and on every storage; returns the object Mallory stored
/// to without a begin.
async fn attack(cluster: &LocalCluster, written: &BTreeMap<u64, (String, String)>) -> u64 {
    let inspector = peer_endpoint(&cluster.identity(INSPECTOR), LinkConfig::default());
    let mut inspector = Peer::new(inspector);
    let mut inspector_links = Vec::new();
    for (name, address) in cluster.storage_addresses() {
        inspector_links.push((name.clone(), inspector.link(name, *address).await));
    }
    let before = snapshot(&mut inspector, &inspector_links).await;
    for (oid, (tid, data)) in written {
        let replicas = replicas(&before, *oid);
        assert_eq!(replicas.len(), 2, "R = 2 replicas of {oid}: {replicas:?}");
        for (name, found_tid, found) in replicas {
            assert_eq!(format!("{:016x}", found_tid.0), *tid, "{oid} on {name}");
            assert_eq!(found, ObjectData::from(data.clone().into_bytes()));
        }
    }

    // Mallory's frames may be larger than the nodes accept.
    let mallory_link = LinkConfig {
        max_frame_len: 16 << 20,
        ..LinkConfig::default()
    };
    let mut mallory = Peer::new(peer_endpoint(&cluster.identity(MALLORY), mallory_link));
    let master = mallory.link("master", cluster.master).await;
    let mut storages = Vec::new();
    for (name, address) in cluster.storage_addresses() {
        storages.push((name.clone(), mallory.link(name, *address).await));
    }

    // The master: malformed input, then messages out of protocol order.
    send_malformed(&mut mallory, &master).await;
    send_requests_and_objects(&master).await;
    let never_begun = Tid(0x0100_0000_0000_0001);
    for message in [
        Message::AnswerBegin { ttid: never_begun },
        Message::Begin {
            ttid: never_begun,
            table_version: 1,
        }, // before any hello: Mallory is not a client yet
        Message::Finished {
            ttid: never_begun,
            tid: Tid(never_begun.0 + 1),
        },
        Message::StorageReady,
        Message::AskOutcome { ttid: never_begun },
        Message::Store {
            ttid: never_begun,
            generation: 0,
            oid: Oid(1),
            serial: Tid::ZERO,
            data: ObjectData::from(b"to the master".to_vec()),
            kind: StoreKind::Checked,
        },
        Message::NodeReport(NodeReport::default()),
        Message::Replicated {
            partition: 1,
            up_to: Tid(never_begun.0 + 1),
        },
    ] {
        mallory.send(&master, &message).await;
    }
    mallory.hello(&master).await;
    // As a client now: a finish and an abort for a transaction never begun.
    mallory
        .send(
            &master,
            &Message::AskFinish {
                ttid: never_begun,
                oids: vec![Oid(1)],
                voters: STORAGES.iter().map(|s| s.to_string()).collect(),
                failed: Vec::new(),
            },
        )
        .await;
    mallory
        .send(&master, &Message::AbortTransaction { ttid: never_begun })
        .await;
    mallory.hello(&master).await;

    // Every storage: malformed input, then messages out of protocol order.
    let forged_data = ObjectData::from(b"forged by replication".to_vec());
    for (_, link) in &storages {
        send_malformed(&mut mallory, link).await;
        send_fanout_garbage(link).await;
        for message in [
            Message::Finish {
                ttid: never_begun,
                tid: Tid(never_begun.0 + 1),
            },
            Message::Outcome {
                ttid: never_begun,
                outcome: TransactionOutcome::Committed(Tid(never_begun.0 + 1)),
            },
            Message::AnswerBegin { ttid: never_begun },
            Message::Finished {
                ttid: never_begun,
                tid: Tid(never_begun.0 + 1),
            },
            Message::AbortTransaction { ttid: never_begun },
            Message::Vote {
                ttid: never_begun,
                generation: 0,
                oids: vec![Oid(1)],
                info: TransactionInfo::default(),
            },
            Message::Store {
                ttid: Tid(never_begun.0 + 7),
                generation: 3, // a restart generation never handed out
                oid: Oid(1),
                serial: Tid::ZERO,
                data: ObjectData::from(b"generation 3".to_vec()),
                kind: StoreKind::Checked,
            },
            // Replication nobody asked for: a catch-up order from a peer that is not the
            // master, and history batches, newer than anything committed, from a peer that is
            // not the source the storage asked (it asked none).
            Message::Replicate {
                up_to: FORGED_REVISION,
                partitions: vec![(1, Tid::ZERO)],
            },
            Message::AnswerTransactions {
                partition: 1,
                after: Tid::ZERO,
                up_to: FORGED_REVISION,
                transactions: vec![CommittedTransaction {
                    tid: FORGED_REVISION,
                    oids: vec![Oid(1)],
                    info: TransactionInfo::default(),
                }],
                resume: None,
            },
            Message::AnswerObjects {
                partition: 1,
                after: ObjectCursor::START,
                up_to: FORGED_REVISION,
                objects: vec![ReplicatedObject {
                    oid: Oid(1),
                    tid: FORGED_REVISION,
                    data: forged_data.clone(),
                    digest: forged_data.digest(),
                }],
                resume: None,
            },
            Message::ReplicationUnavailable { partition: 1 },
        ] {
            mallory.send(link, &message).await;
        }
        // A vote naming no object for a transaction never begun is answered: unknown. (The
        // vote above counted a store: a vote may overtake its stores, so it opened
        // `never_begun` there, to be dropped when idle; this one names another.)
        let empty = Tid(never_begun.0 + 5);
        mallory
            .send(
                link,
                &Message::Vote {
                    ttid: empty,
                    generation: 0,
                    oids: Vec::new(),
                    info: TransactionInfo::default(),
                },
            )
            .await;
        let refusal = mallory
            .wait_for(link.peer(), |message| match message {
                Message::AnswerVote { ttid, result } if *ttid == empty => Some(*result),
                _ => None,
            })
            .await;
        assert!(
            matches!(refusal, VoteResult::No(VoteRefusal::UnknownTransaction)),
            "{refusal:?}"
        );
    }

    // A store and a vote without a begin, on a replica of an object: the storage cannot
    // tell (it does not know which transactions the master began), so it takes them, but
    // the master never began the transaction and nothing of it becomes visible.
    let attacked_oid = 1;
    let (replica, serial, _) = replicas(&before, attacked_oid)
        .into_iter()
        .next()
        .expect("object 1 has a replica");
    let link = &storages
        .iter()
        .find(|(name, _)| *name == replica)
        .expect("Mallory dialed every storage")
        .1;
    let forged = Tid(never_begun.0 + 2);
    mallory
        .send(
            link,
            &Message::Store {
                ttid: forged,
                generation: 0,
                oid: Oid(attacked_oid),
                serial,
                data: ObjectData::from(b"forged".to_vec()),
                kind: StoreKind::Checked,
            },
        )
        .await;
    let stored = mallory
        .wait_for(&replica, |message| match message {
            Message::AnswerStore { ttid, answers, .. } if *ttid == forged => {
                answers.first().map(|(_, result)| *result)
            }
            _ => None,
        })
        .await;
    assert_eq!(stored, StoreResult::Stored);
    mallory
        .send(
            link,
            &Message::Vote {
                ttid: forged,
                generation: 0,
                oids: vec![Oid(attacked_oid)],
                info: TransactionInfo::default(),
            },
        )
        .await;
    mallory
        .wait_for(&replica, |message| match message {
            Message::AnswerVote { ttid, .. } if *ttid == forged => Some(()),
            _ => None,
        })
        .await;
    // Voted is not visible. The storage cannot tell whether the master decided the
    // transaction (it announces commits before the voters apply them), so it holds reads of
    // the object, answering them as failed past `held_read_timeout`, until it asks the master
    // (after its outcome timeout) and hears the transaction was never begun: then the load
    // answers what was there before. Never the forged data.
    let mut loads = 0;
    loop {
        loads += 1;
        let loaded = mallory.load(link, Oid(attacked_oid)).await;
        if loaded == before[&(replica.clone(), attacked_oid)] {
            break;
        }
        assert_eq!(
            loaded,
            LoadResult::Failed,
            "a held load fails, nothing else"
        );
        assert!(
            loads < 30,
            "the forged vote stays in doubt after {loads} loads"
        );
    }
    // The master refuses to finish what it never began (Mallory is a client by now).
    mallory
        .send(
            &master,
            &Message::AskFinish {
                ttid: forged,
                oids: vec![Oid(attacked_oid)],
                voters: vec![replica.clone()],
                failed: Vec::new(),
            },
        )
        .await;
    mallory.hello(&master).await;

    // A message announced beyond the storage's limit: the storage refuses it from its
    // length alone and ends the sender's channel (so it counts the sender lost); the sender's
    // next message opens a new channel, which is served.
    let (target, _) = &storages[0];
    let unlimited = LinkConfig {
        max_message_len: u32::MAX,
        ..LinkConfig::default()
    };
    let mut flooder = Peer::new(peer_endpoint(&cluster.identity(FLOODER), unlimited));
    let flood_link = flooder.link(target, cluster.storage_address(target)).await;
    assert_eq!(
        flooder.load(&flood_link, Oid(1)).await,
        before[&(target.clone(), 1)]
    );
    let channel = flood_link.channel();
    // Zeroed by the allocator, not touched: only what flow control lets out is ever read.
    let oversized = Bytes::from(vec![0u8; NODE_MESSAGE_LIMIT + 1]);
    channel.send(oversized).await.expect("queued");
    let reason = tokio::time::timeout(WAIT, channel.closed())
        .await
        .unwrap_or_else(|_| panic!("{target} kept a channel announcing an oversized message"));
    assert!(
        matches!(reason, LinkError::StreamReset { .. }),
        "{target} stopped the channel: {reason:?}"
    );
    assert_eq!(
        flooder.load(&flood_link, Oid(1)).await,
        before[&(target.clone(), 1)]
    );
    flooder.endpoint.close();

    // Every storage still serves exactly what it served before.
    let after = snapshot(&mut inspector, &inspector_links).await;
    assert_eq!(after, before);
    let stderr = cluster.stderr(STORAGES[0]);
    assert!(
        stderr.contains("undecodable"),
        "the storage reports the undecodable input:\n{stderr}"
    );
    mallory.endpoint.close();
    inspector.endpoint.close();
    attacked_oid
}

/// Peers whose certificate is not from the cluster CA, or who present none, are refused at
/// the handshake by the master and by a storage.
async fn intruders(cluster: &LocalCluster) {
    let rogue_dir = cluster.root().join("rogue");
    process::replicast(&[
        "certs",
        "init",
        "--out",
        path_arg(&rogue_dir),
        "--node",
        "client-1",
    ])
    .expect("a CA of the intruder's own");
    let cluster_ca =
        load_ca_certificate(&cluster.root().join("certs").join("ca.pem")).expect("cluster CA");
    // Named like a genuine client; only the signature tells it apart.
    let rogue = NodeIdentity::load_dir(&rogue_dir, "client-1").expect("the rogue identity");
    let rogue_tls = rogue
        .client_config_trusting(&cluster_ca)
        .expect("a client config trusting the cluster");
    let anonymous_tls = anonymous_client_config(&cluster_ca).expect("an anonymous config");
    let (storage, storage_address) = cluster
        .storage_addresses()
        .iter()
        .next()
        .expect("the cluster has storages");
    for client_tls in [rogue_tls, anonymous_tls] {
        let intruder = Endpoint::bind(EndpointConfig {
            listen: (Ipv4Addr::LOCALHOST, 0).into(),
            server_tls: rogue.server_config().expect("server config"),
            client_tls,
            link: LinkConfig::default(),
        })
        .expect("bind the intruder");
        for (node, address) in [
            ("master", cluster.master),
            (storage.as_str(), *storage_address),
        ] {
            // A refusal may surface at the dial or, for a refused client certificate, on the
            // first use of the connection.
            let result = async {
                let link = intruder.link(node, address).await?;
                link.request::<_, Vec<u8>>(&Message::Begin {
                    ttid: Tid(1),
                    table_version: 1,
                })
                .await
            }
            .await;
            match result {
                Err(LinkError::HandshakeRefused { peer, .. }) => assert_eq!(peer, node),
                other => panic!("{node} let an intruder in: {other:?}"),
            }
        }
        intruder.close();
    }
}
