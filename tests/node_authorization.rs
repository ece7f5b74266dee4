//! Roles against a cluster of `replicast node` processes (a master and three storages on
//! 127.0.0.1, P = 12, R = 2, objects written with `replicast client put`).
//!
//! For each role (client, storage, master, admin) a peer holding a certificate of that role,
//! made by `replicast certs init` like any other, sends the master and a storage one message of
//! every kind its role may not send, as a one-way message and (to the master) as a request. The
//! master answers each request with a typed refusal naming the roles needed, a refused message
//! is answered with one too, every refusal is counted per peer and reason in
//! `replicast status`, a fan-out session or object from a writer that is not a client is
//! refused, and nothing changes: every storage serves the same revisions, the last TID and the
//! table are the same, and after the cluster stops every transaction and revision in every
//! storage's file is one of the test's own commits. `replicast admin` with a client's
//! certificate is refused with an error naming the role it needs; with an admin's it reaches the
//! master.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use replicast_certs::{NodeIdentity, Role, Roles};
use replicast_node::consensus::{ConsensusKind, ConsensusMessage};
use replicast_node::engine::{Engine, ObjectCursor, ReplicatedObject};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::partition::PartitionTable;
use replicast_node::protocol::{
    BackupReport, BackupState, ChangeOutcome, Changed, ClusterStatus, InspectAnswer, InspectAsk,
    LoadResult, Message, NodeReport, ObjectPart, OidRange, Order, RangeDigest, Refusal,
    RefusalReason, StorageAnswer, StorageAsk, StorageChange, StoreKind, StoreResult,
    TransactionOutcome, VoteResult, encode, rule,
};
use replicast_node::transaction::{CommittedTransaction, TransactionInfo};
use replicast_testkit::fanout::membership;
use replicast_testkit::process;
use replicast_testkit::process::peer::{Peer, ask, bounded_exchange, peer_endpoint};
use replicast_testkit::process::{ClusterSpec, LocalCluster, WAIT, binary, output};
use replicast_transport::fanout;
use replicast_transport::fanout::wire::{ControlAnswer, ControlRequest, UnicastAck, UnicastHeader};
use replicast_transport::quic::{LinkConfig, LinkError};

/// The objects written before the attacks: oids 1..=OBJECTS.
const OBJECTS: u64 = 6;
/// The attackers: one certificate per role, none of them a node of the cluster.
const ATTACKERS: [(&str, Role); 4] = [
    ("client-3", Role::Client),
    ("storage-x", Role::Storage),
    ("master-x", Role::Master),
    ("admin", Role::Admin),
];
/// A well-behaved client that reads every replica before and after.
const INSPECTOR: &str = "client-2";
/// The storage attacked besides the master.
const TARGET: &str = "storage-1";
/// A transaction id the master never handed out.
const NEVER_BEGUN: Tid = Tid(0x0100_0000_0000_0001);
/// Revisions forged by the attackers: later than any real commit.
const FORGED: Tid = Tid(u64::MAX - 1);

/// How many kinds of message the protocol has; [`kind_index`] numbers them.
const KINDS: usize = 60;

/// The index of `message`'s kind. The match has no catch-all arm: a new kind of message does
/// not compile here until it has an index and a sample in [`samples`].
fn kind_index(message: &Message) -> usize {
    match message {
        Message::ClientHello => 0,
        Message::StorageReady => 1,
        Message::PartitionTable(_) => 2,
        Message::Begin { .. } => 3,
        Message::AnswerBegin { .. } => 4,
        Message::AskNewOids { .. } => 5,
        Message::AnswerNewOids { .. } => 6,
        Message::Store { .. } => 7,
        Message::AnswerStore { .. } => 8,
        Message::Restart { .. } => 9,
        Message::Vote { .. } => 10,
        Message::AnswerVote { .. } => 11,
        Message::AskFinish { .. } => 12,
        Message::AnswerFinish { .. } => 13,
        Message::Invalidate { .. } => 14,
        Message::AbortTransaction { .. } => 15,
        Message::Aborted { .. } => 16,
        Message::Finish { .. } => 17,
        Message::Finished { .. } => 18,
        Message::AskOutcome { .. } => 19,
        Message::Outcome { .. } => 20,
        Message::Load { .. } => 21,
        Message::AnswerLoad { .. } => 22,
        Message::StorageAddress { .. } => 23,
        Message::StorageAddresses(_) => 24,
        Message::NodeReport(_) => 25,
        Message::Replicate { .. } => 26,
        Message::AskCatchUp => 27,
        Message::Replicated { .. } => 28,
        Message::AskTransactions { .. } => 29,
        Message::AnswerTransactions { .. } => 30,
        Message::AskObjects { .. } => 31,
        Message::AnswerObjects { .. } => 32,
        Message::AskObjectPart { .. } => 33,
        Message::AnswerObjectPart(_) => 34,
        Message::ReplicationUnavailable { .. } => 35,
        Message::AskStatus { .. } => 36,
        Message::AnswerStatus { .. } => 37,
        Message::AskChangeStorage { .. } => 38,
        Message::AnswerChangeStorage { .. } => 39,
        Message::Refused(_) => 40,
        Message::Consensus(_) => 41,
        Message::FromPrimary { .. } => 42,
        Message::PrimaryIs { .. } => 43,
        Message::AskPrimary => 44,
        Message::AskBeginAt { .. } => 45,
        Message::BeginRefused { .. } => 46,
        Message::LastTransaction { .. } => 47,
        Message::AskLastTransaction { .. } => 48,
        Message::AnswerLastTransaction { .. } => 49,
        Message::Ask { .. } => 50,
        Message::Answer { .. } => 51,
        Message::AskInspect { .. } => 52,
        Message::AnswerInspect { .. } => 53,
        Message::ReportBackup { .. } => 54,
        Message::TtidSpace { .. } => 55,
        Message::OlderWaits { .. } => 56,
        Message::Waits { .. } => 57,
        Message::GroupStore { .. } => 58,
        Message::GroupMissed { .. } => 59,
    }
}

/// One message of every kind, each as harmful as it can be: forged revisions newer than any
/// commit, transactions never begun, a table and an address book of the attacker's.
fn samples() -> Vec<Message> {
    let forged = ObjectData::from(b"forged".to_vec());
    let table = PartitionTable::new(12, 1, &["storage-x".to_owned()]).expect("a table");
    let evil: SocketAddr = "127.0.0.1:9".parse().expect("an address");
    let store = Message::Store {
        ttid: NEVER_BEGUN,
        generation: 0,
        oid: Oid(1),
        serial: Tid::ZERO,
        data: forged.clone(),
        kind: StoreKind::Unchecked,
    };
    vec![
        Message::ClientHello,
        Message::StorageReady,
        Message::PartitionTable(table.clone()),
        Message::Begin {
            ttid: NEVER_BEGUN,
            table_version: 1,
        },
        Message::AnswerBegin { ttid: NEVER_BEGUN },
        Message::AskNewOids { count: 1000 },
        Message::AnswerNewOids {
            first: Oid(1),
            count: 10,
        },
        store.clone(),
        Message::AnswerStore {
            ttid: NEVER_BEGUN,
            generation: 0,
            answers: vec![(Oid(1), StoreResult::Stored)],
        },
        Message::Restart {
            ttid: NEVER_BEGUN,
            generation: 1,
        },
        Message::Vote {
            ttid: NEVER_BEGUN,
            generation: 0,
            oids: vec![Oid(1)],
            info: TransactionInfo::default(),
        },
        Message::AnswerVote {
            ttid: NEVER_BEGUN,
            result: VoteResult::Yes,
        },
        Message::AskFinish {
            ttid: NEVER_BEGUN,
            oids: vec![Oid(1)],
            voters: vec![TARGET.to_owned()],
            failed: Vec::new(),
        },
        Message::AnswerFinish {
            ttid: NEVER_BEGUN,
            outcome: TransactionOutcome::Committed(FORGED),
        },
        Message::Invalidate {
            commits: vec![Changed {
                tid: FORGED,
                oids: vec![Oid(1)],
            }],
        },
        Message::AbortTransaction { ttid: NEVER_BEGUN },
        Message::Aborted { ttid: NEVER_BEGUN },
        Message::Finish {
            ttid: NEVER_BEGUN,
            tid: FORGED,
        },
        Message::Finished {
            ttid: NEVER_BEGUN,
            tid: FORGED,
        },
        Message::AskOutcome { ttid: NEVER_BEGUN },
        Message::Outcome {
            ttid: NEVER_BEGUN,
            outcome: TransactionOutcome::Committed(FORGED),
        },
        Message::Load {
            request: 1,
            oid: Oid(1),
        },
        Message::AnswerLoad {
            request: 1,
            oid: Oid(1),
            result: LoadResult::Found {
                tid: FORGED,
                data: forged.clone(),
            },
        },
        Message::StorageAddress { address: evil },
        Message::StorageAddresses(vec![(TARGET.to_owned(), evil)]),
        Message::NodeReport(NodeReport::default()),
        Message::Replicate {
            up_to: FORGED,
            partitions: vec![(1, Tid::ZERO)],
        },
        Message::AskCatchUp,
        Message::Replicated {
            partition: 1,
            up_to: FORGED,
        },
        Message::AskTransactions {
            partition: 1,
            after: Tid::ZERO,
            up_to: FORGED,
        },
        Message::AnswerTransactions {
            partition: 1,
            after: Tid::ZERO,
            up_to: FORGED,
            transactions: vec![CommittedTransaction {
                tid: FORGED,
                oids: vec![Oid(1)],
                info: TransactionInfo::default(),
            }],
            resume: None,
        },
        Message::AskObjects {
            partition: 1,
            after: ObjectCursor::START,
            up_to: FORGED,
        },
        Message::AnswerObjects {
            partition: 1,
            after: ObjectCursor::START,
            up_to: FORGED,
            objects: vec![ReplicatedObject {
                oid: Oid(1),
                tid: FORGED,
                data: forged.clone(),
                digest: forged.digest(),
            }],
            resume: None,
        },
        Message::AskObjectPart {
            partition: 1,
            oid: Oid(1),
            tid: FORGED,
            offset: 0,
        },
        Message::AnswerObjectPart(ObjectPart {
            partition: 1,
            after: Some(ObjectCursor::START),
            oid: Oid(1),
            tid: FORGED,
            digest: forged.digest(),
            total: 6,
            offset: 0,
            bytes: b"forged".to_vec(),
        }),
        Message::ReplicationUnavailable { partition: 1 },
        Message::AskStatus { request: 1 },
        Message::AnswerStatus {
            request: 1,
            status: Box::new(ClusterStatus {
                master: "master-x".to_owned(),
                operational: true,
                last_tid: FORGED.0,
                complete_tid: FORGED.0,
                nodes: Vec::new(),
                partition_table: table,
                backups: Vec::new(),
                term: FORGED.0,
                masters: Vec::new(),
            }),
        },
        Message::AskChangeStorage {
            request: 1,
            change: StorageChange::Remove(TARGET.to_owned()),
        },
        Message::AnswerChangeStorage {
            request: 1,
            outcome: ChangeOutcome::Done { version: 99 },
        },
        Message::Refused(Refusal {
            kind: "Store".to_owned(),
            reason: RefusalReason::Revoked,
        }),
        // A vote request of a later term than any real one: a master that took it would stand
        // down.
        Message::Consensus(ConsensusMessage {
            kind: ConsensusKind::RequestVote,
            term: FORGED.0,
            log_term: FORGED.0,
            index: FORGED.0,
            entries: Vec::new(),
            commit: 0,
            commit_term: 0,
            snapshot: None,
            request_snapshot: 0,
            reject: false,
            reject_hint: 0,
            context: Default::default(),
            priority: 0,
        }),
        // An order of a term later than any real one: a forged commit.
        Message::FromPrimary {
            term: FORGED.0,
            message: Order(Box::new(Message::Finish {
                ttid: NEVER_BEGUN,
                tid: FORGED,
            })),
        },
        Message::PrimaryIs {
            primary: Some("master-x".to_owned()),
            address: Some(evil),
            term: FORGED.0,
        },
        Message::AskPrimary,
        // A transaction that would commit at a TID later than any real one.
        Message::AskBeginAt { tid: FORGED },
        Message::BeginRefused {
            tid: FORGED,
            last: FORGED,
        },
        Message::LastTransaction { tid: FORGED },
        Message::AskLastTransaction { request: 1 },
        Message::AnswerLastTransaction {
            request: 1,
            tid: FORGED,
        },
        // A pack at a TID later than any commit: every revision but the last would go.
        Message::Ask {
            request: 1,
            ask: StorageAsk::Pack {
                tid: FORGED,
                after: None,
            },
            open: None,
        },
        Message::Answer {
            request: 1,
            answer: StorageAnswer::Packed {
                resume: None,
                removed: 0,
            },
        },
        Message::AskInspect {
            request: 1,
            ask: InspectAsk::Records {
                partition: 0,
                range: OidRange::ALL,
                up_to: Tid::MAX,
                after: None,
                max: u32::MAX,
            },
        },
        Message::AnswerInspect {
            request: 1,
            answer: InspectAnswer::Digest(RangeDigest {
                records: 0,
                digest: replicast_node::object::Digest([0; 16]),
            }),
        },
        // A backup that claims to hold every commit, which the operator would trust.
        Message::ReportBackup {
            request: 1,
            report: BackupReport {
                directory: "/backups/forged".to_owned(),
                backup_tid: FORGED.0,
                state: BackupState::Following,
                interval_millis: 1,
                rate: None,
                rounds: 1,
                last_round_bytes: 0,
                error: None,
            },
        },
        // A number and a clock of the attacker's, for the temporary TIDs a client makes.
        Message::TtidSpace {
            number: 0,
            clock: FORGED,
        },
        Message::OlderWaits { ttid: NEVER_BEGUN },
        Message::Waits { ttid: NEVER_BEGUN },
        Message::GroupStore {
            object: 1,
            digest: [0; 32],
        },
        Message::GroupMissed {
            object: 1,
            store: encode(&store).into(),
        },
    ]
}

#[test]
fn the_samples_cover_every_kind_of_message() {
    let indices: Vec<usize> = samples().iter().map(kind_index).collect();
    assert_eq!(indices, (0..KINDS).collect::<Vec<_>>());
    // Every role may send something, and none may send everything.
    for role in Role::ALL {
        let allowed = samples()
            .iter()
            .filter(|message| rule(message).senders.contains(role))
            .count();
        assert!(allowed > 0 && allowed < KINDS, "{role}: {allowed}");
    }
}

/// Every revision every storage serves for the test's objects.
type Snapshot = BTreeMap<(String, u64), LoadResult>;

async fn snapshot(
    inspector: &mut Peer,
    storages: &[(String, replicast_transport::quic::Link)],
) -> Snapshot {
    let mut snapshot = BTreeMap::new();
    for (name, link) in storages {
        for oid in 1..=OBJECTS {
            snapshot.insert((name.clone(), oid), inspector.load(link, Oid(oid)).await);
        }
    }
    snapshot
}

/// `replicast status --json` with the configuration at `config`.
fn status(config: &Path) -> serde_json::Value {
    let json = process::replicast(&["status", "--json", "--config", path_arg(config)])
        .expect("replicast status answers");
    serde_json::from_str(&json).expect("status is JSON")
}

/// The refusals `node` counted of `peer`, summed over the reasons, as `status` shows them;
/// each reason must be one of `reasons`.
fn refusals_of(status: &serde_json::Value, node: &str, peer: &str, reasons: &[String]) -> u64 {
    let nodes = status["nodes"].as_array().expect("nodes");
    let Some(node) = nodes.iter().find(|entry| entry["name"] == node) else {
        return 0;
    };
    node["refusals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|refusal| refusal["peer"] == peer)
        .map(|refusal| {
            let reason = refusal["reason"].as_str().expect("a reason");
            assert!(
                reasons.iter().any(|expected| expected == reason),
                "{peer} refused at {node} for {reason:?}, expected one of {reasons:?}",
                node = node["name"]
            );
            refusal["count"].as_u64().expect("a count")
        })
        .sum()
}

/// Polls `status` until `node` counted `expected` refusals of `peer` (storages report about
/// once a second), bounded by [`WAIT`].
fn wait_for_refusals(config: &Path, node: &str, peer: &str, expected: u64, reasons: &[String]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let counted = refusals_of(&status(config), node, peer, reasons);
        assert!(
            counted <= expected,
            "{node} counted {counted} refusals of {peer}, more than {expected}"
        );
        if counted == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{node} counted {counted} refusals of {peer}, not {expected}, within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// The label a role refusal of `message` is counted under.
fn role_label(message: &Message) -> String {
    format!("role (needs {})", rule(message).senders)
}

#[test]
fn every_role_is_refused_what_it_may_not_send_and_nothing_changes() {
    let spec = ClusterSpec {
        extra_names: ["client-1", INSPECTOR]
            .into_iter()
            .chain(ATTACKERS.map(|(name, _)| name))
            .map(str::to_owned)
            .collect(),
        ..ClusterSpec::default()
    };
    let cluster = LocalCluster::start(&spec);
    let client = cluster.client_config("client-1", "");
    let master_config = cluster.config("master");
    let mut commits = BTreeSet::new();
    for oid in 1..=OBJECTS {
        let tid = process::put(&client, oid, &format!("object-{oid}"));
        commits.insert(tid);
    }
    let before = status(&master_config);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let certs = cluster.root().join("certs");
    let storages: Vec<(String, SocketAddr)> = spec
        .storages
        .iter()
        .map(|name| (name.clone(), cluster.storage_address(name)))
        .collect();
    let (snapshot_before, mut inspector, inspector_links) = runtime.block_on(async {
        let identity = NodeIdentity::load_dir(&certs, INSPECTOR).expect("the inspector");
        let mut inspector = Peer::new(peer_endpoint(&identity, LinkConfig::default()));
        let mut links = Vec::new();
        for (name, address) in &storages {
            links.push((name.clone(), inspector.link(name, *address).await));
        }
        (snapshot(&mut inspector, &links).await, inspector, links)
    });

    for (name, role) in ATTACKERS {
        let identity = NodeIdentity::load_dir(&certs, name).expect("the attacker's identity");
        assert_eq!(identity.roles(), Roles::from(role), "{name}");
        let forbidden: Vec<Message> = samples()
            .into_iter()
            .filter(|message| !rule(message).senders.contains(role))
            .collect();
        let target = cluster.storage_address(TARGET);
        let fanout_refused = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(120),
                attack(&identity, cluster.master, target, &forbidden),
            )
            .await
        });
        let (peer, fanout_refused) = fanout_refused.expect("the attack ended in time");
        let mut reasons: Vec<String> = forbidden.iter().map(role_label).collect();
        reasons.push("role (needs client)".to_owned());
        let sent = forbidden.len() as u64;
        // The master refused each as a request and as a message, the storage as a message
        // (and the fan-out work of a writer that is not a client).
        wait_for_refusals(&master_config, "master", name, 2 * sent, &reasons);
        wait_for_refusals(
            &master_config,
            TARGET,
            name,
            sent + fanout_refused,
            &reasons,
        );
        // Closed only now: messages still in flight would be lost with the connection.
        peer.endpoint.close();
    }

    // The human form lists the refusals too.
    let text = process::replicast(&["status", "--config", path_arg(&master_config)])
        .expect("replicast status");
    assert!(text.contains("REFUSED"), "{text}");
    assert!(text.contains("role (needs storage)"), "{text}");

    // Nothing changed: the same revisions everywhere, the same last commit and table.
    let snapshot_after = runtime.block_on(snapshot(&mut inspector, &inspector_links));
    assert_eq!(snapshot_after, snapshot_before);
    let after = status(&master_config);
    assert_eq!(after["last_tid"], before["last_tid"]);
    assert_eq!(after["partition_table"], before["partition_table"]);
    assert_eq!(after["operational"], true);
    inspector.endpoint.close();
    drop(inspector_links);
    drop(runtime);

    operators(&cluster, &client);

    // The cluster still commits; then every storage's file holds the test's commits only.
    let tid = process::put(&client, 100, "after-the-attacks");
    commits.insert(tid);
    assert_eq!(
        process::get(&client, 1),
        (before_tid(&snapshot_before, 1), "object-1".to_owned())
    );
    // Stopped one by one: the cluster's directory goes with it.
    let mut cluster = cluster;
    for name in &spec.storages {
        cluster.storage(name).stop();
    }
    cluster.master_node.stop();
    for name in &spec.storages {
        let database = cluster.database(name);
        let store = Engine::open(&database).expect("open the storage's file");
        for partition in 0..12 {
            let transactions = store
                .partition_transactions(partition, 12, Tid::ZERO, Tid::MAX, usize::MAX)
                .expect("read the transactions");
            for transaction in &transactions.transactions {
                assert!(
                    commits.contains(&format!("{:016x}", transaction.tid.0)),
                    "{name}: transaction {:?} is none of the test's commits",
                    transaction.tid
                );
            }
            let objects = store
                .partition_objects(partition, 12, ObjectCursor::START, Tid::MAX, usize::MAX)
                .expect("read the revisions");
            for object in &objects.objects {
                assert!(
                    commits.contains(&format!("{:016x}", object.tid.0)),
                    "{name}: revision {:?} of {:?} is none of the test's commits",
                    object.tid,
                    object.oid
                );
            }
        }
    }
}

/// The TID object `oid` had on the first storage holding it before the attacks, as `get`
/// prints it.
fn before_tid(snapshot: &Snapshot, oid: u64) -> String {
    snapshot
        .iter()
        .find_map(|((_, o), result)| match result {
            LoadResult::Found { tid, .. } if *o == oid => Some(format!("{:016x}", tid.0)),
            _ => None,
        })
        .expect("the object was written")
}

/// Sends the master and `target` every `forbidden` message (to the master also as a request),
/// and a writer's fan-out work to `target`; checks the typed refusals that come back. Returns
/// the attacker (its connections open) and how much fan-out work `target` refused.
async fn attack(
    identity: &NodeIdentity,
    master: SocketAddr,
    target: SocketAddr,
    forbidden: &[Message],
) -> (Peer, u64) {
    let name = identity.name();
    let mut peer = Peer::new(peer_endpoint(identity, LinkConfig::default()));
    let master_link = peer.link("master", master).await;
    let storage_link = peer.link(TARGET, target).await;
    let kinds: BTreeSet<&str> = forbidden.iter().map(Message::kind).collect();
    for message in forbidden {
        match ask(&master_link, message).await {
            Ok(Message::Refused(refusal)) => {
                assert_eq!(refusal.kind, message.kind(), "{name}");
                assert_eq!(
                    refusal.roles_needed(),
                    Some(rule(message).senders),
                    "{name}: {refusal}"
                );
                assert!(
                    refusal
                        .to_string()
                        .contains(&format!("certificate grants {}", identity.roles())),
                    "{refusal}"
                );
            }
            other => panic!(
                "the master did not refuse {} from {name}: {other:?}",
                message.kind()
            ),
        }
        peer.send(&master_link, message).await;
        peer.send(&storage_link, message).await;
    }
    // A refused message is answered with the refusal, typed.
    for node in ["master", TARGET] {
        let refusal = peer
            .wait_for(node, |message| match message {
                Message::Refused(refusal) => Some(refusal.clone()),
                _ => None,
            })
            .await;
        assert!(
            kinds.contains(refusal.kind.as_str()),
            "{node} to {name}: {refusal}"
        );
    }

    let mut fanout_refused = 0;
    if !identity.roles().contains(Role::Client) {
        // Only clients open fan-out sessions: a join and a unicast store are refused.
        let join =
            ControlRequest::Join(membership("239.255.1.1:7200".parse().expect("a group"), 7));
        let fanout_link = storage_link.clone().for_service(fanout::SERVICE);
        let joined: Result<ControlAnswer, _> =
            bounded_exchange("a join", fanout_link.request(&join)).await;
        assert_fanout_refused(name, joined);
        let store = encode(&Message::Store {
            ttid: NEVER_BEGUN,
            generation: 0,
            oid: Oid(2),
            serial: Tid::ZERO,
            data: ObjectData::from(b"forged by fan-out".to_vec()),
            kind: StoreKind::Unchecked,
        });
        let sent: Result<UnicastAck, _> = bounded_exchange(
            "an object",
            fanout_link.send_object(&UnicastHeader { object_id: 1 }, store.into()),
        )
        .await;
        assert_fanout_refused(name, sent);
        fanout_refused = 2;
    }
    (peer, fanout_refused)
}

fn assert_fanout_refused<T: std::fmt::Debug>(name: &str, result: Result<T, LinkError>) {
    match result {
        Err(LinkError::Remote { message, .. }) => {
            assert!(
                message.contains("fan-out needs the role client"),
                "{name}: {message}"
            );
        }
        other => panic!("{TARGET} took fan-out work from {name}: {other:?}"),
    }
}

/// `replicast admin` needs an admin's certificate (or the master's): a client's is refused
/// with the role it needs, an admin's reaches the master, and `replicast status` answers both.
fn operators(cluster: &LocalCluster, client: &Path) {
    let outcome = output(
        Command::new(binary()).args([
            "admin",
            "--config",
            path_arg(client),
            "add-storage",
            "storage-4",
        ]),
        "replicast admin with a client's certificate",
    );
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("AskChangeStorage needs the role master or admin")
            && outcome.stderr.contains("grants client"),
        "{}",
        outcome.stderr
    );

    let admin = cluster.admin_config();
    let outcome = output(
        Command::new(binary()).args([
            "admin",
            "--config",
            path_arg(&admin),
            "remove-storage",
            "storage-9",
        ]),
        "replicast admin with an admin's certificate",
    );
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("storage-9 is not in the partition table"),
        "the master's role, not its gate, answered: {}",
        outcome.stderr
    );
    for config in [&admin, client] {
        let status = status(config);
        assert_eq!(status["operational"], true);
    }
}
