//! The two-phase commit over real QUIC links with mutual TLS on 127.0.0.1: one master, three
//! storages on redb (P = 12, R = 2), clients running concurrent transfers through the
//! `async` client API.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replicast_node::client::AbortReason;
use replicast_node::driver::{ClientError, ClientHandle, DriverConfig};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::partition::PartitionTable;
use replicast_node::protocol::StoreKind;
use replicast_node::protocol::{LoadResult, Message, RefusalReason, decode, encode};
use replicast_node::transaction::TransactionInfo;
use replicast_testkit::cluster::{Cluster, STORAGES, WAIT};
use replicast_testkit::endpoint::{endpoint, random_group};
use replicast_testkit::fanout::writer_config;
use replicast_testkit::workload::transfers::{balance, balance_data};
use replicast_transport::fanout::wire::{UnicastAck, UnicastHeader};
use replicast_transport::fanout::{self, Fanout, FanoutConfig, Strategy, Verification};
use replicast_transport::quic::{Channel, Endpoint, Incoming};

const ACCOUNTS: u32 = 10;
const INITIAL_BALANCE: i64 = 1_000;
/// Bounds a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(300);

/// The testkit's in-process cluster: storage-1..3 (P = 12, R = 2), each known to the
/// clients by its address (storages do not announce theirs to the master here).
async fn start_cluster() -> Cluster {
    Cluster::builder("cluster-quic-test")
        .announce_addresses(false)
        .start()
        .await
        .expect("the cluster starts and every storage announces itself")
}

/// Client `name` of `cluster`, storing inline over its QUIC links.
async fn client(cluster: &Cluster, name: &str) -> ClientHandle {
    cluster
        .client(name)
        .await
        .expect("client connects and gets the partition table")
}

/// One committed transfer: its TID and the change of each account.
#[derive(Debug)]
struct Commit {
    tid: Tid,
    deltas: Vec<(Oid, i64)>,
}

#[derive(Debug, Default)]
struct Worker {
    commits: Vec<Commit>,
    conflicts: u32,
    other_aborts: u32,
    /// Why the aborts other than conflicts happened, for the test's output.
    other_reasons: Vec<String>,
}

async fn create_accounts(client: &mut ClientHandle) -> (Vec<Oid>, Tid) {
    let accounts = client.new_oids(ACCOUNTS).await.expect("new oids");
    assert_eq!(accounts.len(), ACCOUNTS as usize);
    client.begin().await.expect("begin");
    for oid in &accounts {
        assert_eq!(
            client.load(*oid).await.expect("load"),
            None,
            "{oid:?} is new"
        );
        client
            .store(*oid, Tid::ZERO, balance_data(INITIAL_BALANCE))
            .await
            .expect("store");
    }
    client.vote(TransactionInfo::default()).await.expect("vote");
    let tid = client.finish().await.expect("finish");
    (accounts, tid)
}

/// One transfer attempt: moves a random amount between two random accounts.
async fn transfer(
    client: &mut ClientHandle,
    rng: &mut StdRng,
    accounts: &[Oid],
) -> Result<Commit, ClientError> {
    client.begin().await?;
    let from = rng.random_range(0..accounts.len());
    let to = (from + rng.random_range(1..accounts.len())) % accounts.len();
    let amount = rng.random_range(1..=10);
    let mut deltas = vec![(accounts[from], -amount), (accounts[to], amount)];
    if rng.random_bool(0.5) {
        // Both lock orders, so that wound-wait has work to do.
        deltas.reverse();
    }
    let mut reads = Vec::new();
    for (oid, _) in &deltas {
        let (serial, data) = client.load(*oid).await?.expect("accounts exist");
        reads.push((serial, balance(*oid, &data).expect("a balance")));
    }
    for ((oid, delta), (serial, value)) in deltas.iter().zip(reads) {
        client
            .store(*oid, serial, balance_data(value + delta))
            .await?;
    }
    client
        .vote(TransactionInfo {
            user: "transfer".into(),
            ..TransactionInfo::default()
        })
        .await?;
    let tid = client.finish().await?;
    Ok(Commit { tid, deltas })
}

async fn run_transfers(
    mut client: ClientHandle,
    accounts: Vec<Oid>,
    transfers: usize,
    seed: u64,
) -> (ClientHandle, Worker) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut worker = Worker::default();
    // Bounded: a transfer may need retries, but not unboundedly many.
    for _ in 0..transfers * 20 {
        if worker.commits.len() == transfers {
            break;
        }
        match transfer(&mut client, &mut rng, &accounts).await {
            Ok(commit) => worker.commits.push(commit),
            Err(ClientError::Aborted(AbortReason::Conflict {
                serial, current, ..
            })) => {
                assert_ne!(serial, current, "a conflict names two different serials");
                worker.conflicts += 1;
            }
            Err(ClientError::Conflicts(conflicts)) => {
                // The transaction stays open for resolution; this workload gives it up.
                for conflict in &conflicts {
                    assert_ne!(conflict.serial, conflict.current, "two different serials");
                }
                client.abort().await.expect("abort after a conflict");
                worker.conflicts += 1;
            }
            Err(ClientError::Aborted(reason)) => {
                worker.other_aborts += 1;
                worker.other_reasons.push(format!("{reason:?}"));
            }
            Err(ClientError::LoadFailed { .. }) => {
                // No replica answered (one was just stopped): give the transaction up.
                client.abort().await.expect("abort after a failed load");
                worker.other_aborts += 1;
                worker.other_reasons.push("load failed".into());
            }
            Err(other) => panic!("transfer failed: {other}"),
        }
    }
    assert_eq!(
        worker.commits.len(),
        transfers,
        "every transfer committed within the retry bound ({worker:?})"
    );
    (client, worker)
}

/// Each account's balance and last TID after the setup and the committed transfers.
fn expected_state(
    accounts: &[Oid],
    setup_tid: Tid,
    workers: &[&Worker],
) -> BTreeMap<Oid, (i64, Tid)> {
    let mut expected: BTreeMap<Oid, (i64, Tid)> = accounts
        .iter()
        .map(|oid| (*oid, (INITIAL_BALANCE, setup_tid)))
        .collect();
    let mut tids = vec![setup_tid];
    for commit in workers.iter().flat_map(|worker| &worker.commits) {
        tids.push(commit.tid);
        for (oid, delta) in &commit.deltas {
            let (value, last) = expected.get_mut(oid).expect("an account");
            *value += delta;
            *last = (*last).max(commit.tid);
        }
    }
    let commits = tids.len();
    tids.sort();
    tids.dedup();
    assert_eq!(tids.len(), commits, "every commit has a TID of its own");
    let sum: i64 = expected.values().map(|(value, _)| value).sum();
    assert_eq!(sum, INITIAL_BALANCE * i64::from(ACCOUNTS));
    expected
}

/// Through the client API: the sum is unchanged and every committed transfer is visible.
async fn check_loads(reader: &mut ClientHandle, expected: &BTreeMap<Oid, (i64, Tid)>) {
    let mut loaded_sum = 0;
    for (oid, (value, tid)) in expected {
        let (serial, data) = reader.load(*oid).await.expect("load").expect("account");
        let value_loaded = balance(*oid, &data).expect("a balance");
        assert_eq!((value_loaded, serial), (*value, *tid), "{oid:?}");
        loaded_sum += value_loaded;
    }
    assert_eq!(loaded_sum, INITIAL_BALANCE * i64::from(ACCOUNTS));
}

/// From every readable cell of the running storages: each holds exactly the committed state.
/// Returns the master's partition table.
async fn check_replicas(cluster: &Cluster, expected: &BTreeMap<Oid, (i64, Tid)>) -> PartitionTable {
    let table = cluster
        .master
        .call(|master, _| master.table().clone())
        .await
        .expect("master runs");
    for (name, storage) in &cluster.storages {
        let oids: Vec<Oid> = expected
            .keys()
            .copied()
            .filter(|oid| table.readable_cells(*oid).any(|cell| &cell.node == name))
            .collect();
        assert!(!oids.is_empty(), "{name} holds accounts");
        let revisions = storage
            .call(move |node, _| {
                oids.iter()
                    .map(|oid| (*oid, node.engine().load(*oid)))
                    .collect::<Vec<_>>()
            })
            .await
            .expect("storage runs");
        for (oid, revision) in revisions {
            let revision = revision.expect("redb reads").expect("committed revision");
            assert_eq!(
                (
                    balance(oid, &revision.data).expect("a balance"),
                    revision.tid
                ),
                expected[&oid],
                "{oid:?} on {name}"
            );
        }
    }
    for oid in expected.keys() {
        assert!(
            table.readable_cells(*oid).next().is_some(),
            "{oid:?} keeps a readable replica"
        );
    }
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_over_quic_keep_the_sum_on_every_replica() {
    tokio::time::timeout(TEST_LIMIT, concurrent_transfers())
        .await
        .expect("the test finished in time");
}

async fn concurrent_transfers() {
    let cluster = start_cluster().await;
    let mut setup = client(&cluster, "client-setup").await;
    let (accounts, setup_tid) = create_accounts(&mut setup).await;

    let alice = client(&cluster, "client-alice").await;
    let bob = client(&cluster, "client-bob").await;
    let (alice, bob) = tokio::join!(
        run_transfers(alice, accounts.clone(), 100, 1),
        run_transfers(bob, accounts.clone(), 100, 2),
    );
    let expected = expected_state(&accounts, setup_tid, &[&alice.1, &bob.1]);
    let mut reader = setup;
    check_loads(&mut reader, &expected).await;
    let table = check_replicas(&cluster, &expected).await;
    for (cells, partition) in table.partitions().zip(0..) {
        assert_eq!(
            cells.iter().filter(|cell| cell.is_readable()).count(),
            2,
            "partition {partition} kept both replicas"
        );
    }
    for (name, storage) in &cluster.storages {
        let stats = storage.stats();
        assert_eq!(
            (stats.peers_lost, stats.decode_errors),
            (0, 0),
            "{name}: {stats:?}"
        );
    }
    let stale: u64 = cluster
        .storages
        .iter()
        .map(|(_, storage)| storage.stats().stale)
        .sum();
    assert_eq!(
        stale, 0,
        "no channel was given up, so no message was dropped"
    );
    eprintln!(
        "transfers: alice {} conflicts / {:?}, bob {} / {:?}",
        alice.1.conflicts, alice.1.other_reasons, bob.1.conflicts, bob.1.other_reasons
    );
    for client in [&reader, &alice.0, &bob.0] {
        assert_eq!(client.stats().decode_errors, 0);
    }
    assert!(
        alice.0.invalidations() + bob.0.invalidations() > 0,
        "commits of one client invalidate objects at the other"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_go_on_when_a_storage_stops_mid_run() {
    tokio::time::timeout(TEST_LIMIT, storage_stopped_mid_run())
        .await
        .expect("the test finished in time");
}

async fn storage_stopped_mid_run() {
    let mut cluster = start_cluster().await;
    let mut setup = client(&cluster, "client-setup").await;
    let (accounts, setup_tid) = create_accounts(&mut setup).await;

    let alice = client(&cluster, "client-alice").await;
    let bob = client(&cluster, "client-bob").await;
    let bob_run = tokio::spawn(run_transfers(bob, accounts.clone(), 60, 2));
    let (alice, alice_before) = run_transfers(alice, accounts.clone(), 20, 1).await;
    // Bob is still transferring: the storage goes away under his transactions.
    let (stopped_name, stopped) = cluster.storages.pop().expect("three storages");
    let stopped = stopped.stop().await.expect("the storage driver stops");
    let (alice, alice_after) = run_transfers(alice, accounts.clone(), 40, 3).await;
    let (bob, bob_worker) = bob_run.await.expect("bob's transfers");

    let expected = expected_state(
        &accounts,
        setup_tid,
        &[&alice_before, &alice_after, &bob_worker],
    );
    let mut reader = setup;
    check_loads(&mut reader, &expected).await;
    let table = check_replicas(&cluster, &expected).await;
    for cells in table.partitions() {
        for cell in cells.iter().filter(|cell| cell.node == stopped_name) {
            assert!(
                !cell.is_readable(),
                "{stopped_name}'s cells are out of date"
            );
        }
    }
    // The stopped storage holds a prefix of the history: nothing it has is newer than the
    // last commit of the object.
    for (oid, (_, last)) in &expected {
        if let Some(revision) = stopped.engine().load(*oid).expect("redb reads") {
            assert!(revision.tid <= *last, "{oid:?} on {stopped_name}");
        }
    }
    let lost: u64 = [&alice.stats(), &bob.stats()]
        .iter()
        .map(|stats| stats.peers_lost)
        .sum();
    assert!(
        lost > 0,
        "the clients noticed the stopped storage ({:?}, {:?})",
        alice.stats(),
        bob.stats()
    );
    eprintln!(
        "with a storage stopped: alice {:?}/{:?}, bob {:?}",
        (alice_before.conflicts, &alice_before.other_reasons),
        (alice_after.conflicts, &alice_after.other_reasons),
        (bob_worker.conflicts, &bob_worker.other_reasons)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_an_authenticated_peer_is_counted_and_changes_nothing() {
    tokio::time::timeout(TEST_LIMIT, garbage_from_a_peer())
        .await
        .expect("the test finished in time");
}

/// The next protocol message `endpoint` receives, with its sender.
async fn next_message(endpoint: &Endpoint) -> (String, Message) {
    let incoming = tokio::time::timeout(WAIT, endpoint.accept())
        .await
        .expect("an answer in time")
        .expect("endpoint open");
    let Incoming::Message(message) = incoming else {
        panic!("expected a one-way message, got {incoming:?}");
    };
    let body = decode(message.body()).expect("a protocol message");
    (message.peer().to_owned(), body)
}

/// `answer` answers load request 7 of account `oid` with its initial balance, written by the
/// setup's commit `setup_tid`.
fn assert_untouched_balance(answer: &Message, oid: Oid, setup_tid: Tid) {
    let Message::AnswerLoad {
        request: 7,
        result: LoadResult::Found { tid, data },
        ..
    } = answer
    else {
        panic!("expected the answer to the load, got {answer:?}");
    };
    assert_eq!(
        (*tid, balance(oid, data).expect("a balance")),
        (setup_tid, INITIAL_BALANCE)
    );
}

async fn garbage_from_a_peer() {
    let cluster = start_cluster().await;
    let mut setup = client(&cluster, "client-setup").await;
    let (accounts, setup_tid) = create_accounts(&mut setup).await;
    let table_before = cluster
        .master
        .call(|master, _| master.table().clone())
        .await
        .expect("master runs");

    // Mallory holds a valid certificate and speaks the transport, but not the protocol.
    let mallory = endpoint(&cluster.ca, "client-mallory");
    let storage_name = STORAGES[0];
    let storage = mallory
        .link(storage_name, cluster.directory[storage_name])
        .await
        .expect("mallory dials the storage");
    let channel = storage.channel();
    channel
        .send(Bytes::from_static(&[0xff; 16]))
        .await
        .expect("not a message");
    channel
        .send(Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]))
        .await
        .expect("garbage");
    let finish = Message::Finish {
        ttid: setup_tid,
        tid: Tid(setup_tid.0 + 1),
    };
    channel
        .send(Bytes::from(encode(&finish)))
        .await
        .expect("a finish from a client");
    // Delivered in order after the two above: its answer proves they were handled.
    let oid = accounts[0];
    channel
        .send(Bytes::from(encode(&Message::Load { request: 7, oid })))
        .await
        .expect("a load");
    let (from, mut answer) = next_message(&mallory).await;
    assert_eq!(from, storage_name);
    // The finish may come back refused first (a client may not send it to a storage; refusals
    // are answered at the gate's pace, best effort), never anything else.
    if let Message::Refused(refusal) = &answer {
        assert_eq!(refusal.kind, "Finish", "{refusal:?}");
        assert!(
            matches!(refusal.reason, RefusalReason::Role { .. }),
            "{refusal:?}"
        );
        let (from, next) = next_message(&mallory).await;
        assert_eq!(from, storage_name);
        answer = next;
    }
    assert_untouched_balance(&answer, oid, setup_tid);
    // Fan-out objects that are not stores: garbage, and a well-formed finish.
    let fanout = storage.clone().for_service(fanout::SERVICE);
    for (object_id, body) in [(1u64, vec![0xde, 0xad]), (2, encode(&finish))] {
        let ack: UnicastAck = fanout
            .send_object(&UnicastHeader { object_id }, body.into())
            .await
            .expect("the fan-out receiver takes the object");
        assert_eq!(ack.object_id, object_id);
    }
    // The objects reach the driver on their own path: wait (bounded) until both are counted.
    let (_, storage_driver) = &cluster.storages[0];
    let counted = async {
        while storage_driver.stats().fanout_refused < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, counted)
        .await
        .expect("both fan-out objects are refused and counted");
    let stats = storage_driver.stats();
    assert_eq!(stats.fanout_stores, 0, "{stats:?}");
    assert!(stats.decode_errors >= 1, "{stats:?}");
    assert!(
        stats.unauthorized >= 1,
        "the finish from a client is refused by the storage's gate: {stats:?}"
    );

    // Nothing changed: same table, same data, and the cluster still commits.
    let table_after = cluster
        .master
        .call(|master, _| master.table().clone())
        .await
        .expect("master runs");
    assert_eq!(table_after, table_before);
    let alice = client(&cluster, "client-alice").await;
    let (_alice, worker) = run_transfers(alice, accounts.clone(), 5, 7).await;
    let expected = expected_state(&accounts, setup_tid, &[&worker]);
    check_loads(&mut setup, &expected).await;
    check_replicas(&cluster, &expected).await;
}

/// Sends load 7 of `oid` on `channel` (behind what `writer` sent on it before) and returns
/// `storage`'s answer.
async fn load_behind(writer: &Endpoint, channel: &Channel, storage: &str, oid: Oid) -> Message {
    channel
        .send(Bytes::from(encode(&Message::Load { request: 7, oid })))
        .await
        .expect("a load behind the place");
    let (from, answer) = next_message(writer).await;
    assert_eq!(from, storage);
    answer
}

/// A client names a store the group carries (`GroupStore`) and never sends its bytes nor
/// says the group missed it: the storage holds the place, and what the client sent after it,
/// only for its group wait, then drops the place and goes on with that client's channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_nobody_fills_is_dropped_after_the_group_wait() {
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = Cluster::builder("cluster-quic-place")
            .announce_addresses(false)
            .storage_driver(DriverConfig {
                group_wait: Duration::from_millis(300),
                ..DriverConfig::default()
            })
            .start()
            .await
            .expect("the cluster starts");
        let mut setup = client(&cluster, "client-setup").await;
        let (accounts, setup_tid) = create_accounts(&mut setup).await;
        let writer = endpoint(&cluster.ca, "client-silent");
        let storage_name = STORAGES[0];
        let channel = writer
            .link(storage_name, cluster.directory[storage_name])
            .await
            .expect("the client dials the storage")
            .channel();
        channel
            .send(Bytes::from(encode(&Message::GroupStore {
                object: 42,
                digest: [0; 32],
            })))
            .await
            .expect("a place");
        let oid = accounts[0];
        // The load waits behind the place: its answer comes only once the place is dropped.
        let answer = load_behind(&writer, &channel, storage_name, oid).await;
        let (_, storage_driver) = &cluster.storages[0];
        assert_eq!(storage_driver.stats().group_dropped, 1);
        assert_untouched_balance(&answer, oid, setup_tid);
    })
    .await
    .expect("the test finished in time");
}

/// The group brings bytes under a client's object that are not the store its place named
/// (any member of the group holds the key and may send under the session; here the writer
/// itself does): the storage does not take them, drops the place at once (not after the
/// group wait, 30 s here) and goes on with the client's channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_from_the_group_that_do_not_match_their_place_are_not_taken() {
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = Cluster::builder("cluster-quic-forged")
            .announce_addresses(false)
            .start()
            .await
            .expect("the cluster starts");
        let mut setup = client(&cluster, "client-setup").await;
        let (accounts, setup_tid) = create_accounts(&mut setup).await;
        let oid = accounts[0];
        let store = |data: &'static [u8]| {
            encode(&Message::Store {
                ttid: Tid(u64::MAX >> 1),
                generation: 0,
                oid,
                serial: setup_tid,
                data: ObjectData::from(data.to_vec()),
                kind: StoreKind::default(),
            })
        };
        let writer = endpoint(&cluster.ca, "client-forger");
        let config = FanoutConfig {
            verification: Verification::Application,
            ..writer_config(random_group(), 77, Strategy::Multicast)
        };
        let group = Fanout::bind(writer.clone(), config).expect("a group writer");
        let storage_name = STORAGES[0];
        let address = cluster.directory[storage_name];
        group
            .add_replica(storage_name, address)
            .await
            .expect("the storage joins the group");
        let channel = writer
            .link(storage_name, address)
            .await
            .expect("the client dials the storage")
            .channel();
        let named = Message::GroupStore {
            object: 42,
            digest: fanout::wire::digest(&store(b"named")),
        };
        channel
            .send(Bytes::from(encode(&named)))
            .await
            .expect("a place");
        let sent = group
            .send(42, Bytes::from(store(b"other")))
            .await
            .expect("sent to the group")
            .wait()
            .await;
        assert!(sent.all_delivered(), "{sent:?}");
        let answer = load_behind(&writer, &channel, storage_name, oid).await;
        let (_, storage_driver) = &cluster.storages[0];
        let stats = storage_driver.stats();
        assert_eq!(
            (stats.group_dropped, stats.group_forged),
            (1, 1),
            "{stats:?}"
        );
        assert_untouched_balance(&answer, oid, setup_tid);
    })
    .await
    .expect("the test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_after_one_that_timed_out_on_a_stalled_master_commits() {
    tokio::time::timeout(TEST_LIMIT, begin_after_a_timed_out_begin())
        .await
        .expect("the test finished in time");
}

/// A begin does not wait for the master: it completes while the master's driver stalls. A
/// restore's begin (at a chosen commit TID), which the master still answers, gives up on a
/// master that stalls (its driver busy for longer than the client's timeout, as a master
/// SIGSTOPped briefly); the master answers it afterwards, to no call. The next begin is not
/// refused for the transaction the first one left in the client role: it takes it over or
/// aborts it, and its transaction commits.
async fn begin_after_a_timed_out_begin() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let cluster = start_cluster().await;
    let client = ClientHandle::connect(
        replicast_node::client::Client::new(
            "client-1",
            replicast_testkit::cluster::MASTER,
            replicast_node::client::ClientConfig::default(),
        ),
        cluster.endpoint("client-1").expect("client endpoint"),
        replicast_node::driver::DriverConfig {
            directory: cluster.directory.clone(),
            ..replicast_node::driver::DriverConfig::default()
        },
        TIMEOUT,
    )
    .await
    .expect("client connects");
    let oid = client.new_oids(1).await.expect("new oid")[0];

    // The master's driver stalls (three timeouts long) once this says it began to.
    let stall_master = || {
        let (stalled, stalling) = tokio::sync::oneshot::channel();
        let stall = cluster.master.call(move |_, _| {
            let _ = stalled.send(());
            std::thread::sleep(TIMEOUT * 3);
        });
        (stall, stalling)
    };
    let (stall, stalling) = stall_master();
    let begin = async {
        stalling.await.expect("the master's driver stalls");
        let begun = tokio::time::timeout(TIMEOUT, client.begin()).await;
        let aborted = client.abort().await;
        (begun, aborted)
    };
    let (stalled, (begun, aborted)) = tokio::join!(stall, begin);
    stalled.expect("the master's driver runs again");
    begun
        .expect("a begin does not wait for the stalled master")
        .expect("begun");
    aborted.expect("aborted");

    // A commit TID after every TID the master handed out.
    let chosen = Tid::from_system_time(SystemTime::now() + Duration::from_secs(3600));
    let (stall, stalling) = stall_master();
    let begin = async {
        stalling.await.expect("the master's driver stalls");
        client.begin_at(Some(chosen)).await
    };
    let (stalled, begun) = tokio::join!(stall, begin);
    stalled.expect("the master's driver runs again");
    match begun {
        Err(ClientError::Timeout { .. }) => {}
        other => panic!("the begin times out on the stalled master, got {other:?}"),
    }

    // The master now answers the first begin; the next one works whenever that answer
    // arrives (before this call: the first transaction is aborted; after it: taken over).
    let ttid = client
        .begin_at(Some(chosen))
        .await
        .expect("a begin after one that gave up is not refused");
    client
        .store(oid, Tid::ZERO, balance_data(7))
        .await
        .expect("store");
    client.vote(TransactionInfo::default()).await.expect("vote");
    let tid = client.finish().await.expect("finish");
    assert_eq!(tid, chosen);
    assert!(tid >= ttid, "committed at {tid:?}, begun as {ttid:?}");
    let (serial, data) = client
        .load(oid)
        .await
        .expect("load")
        .expect("the object was committed");
    assert_eq!(serial, tid);
    assert_eq!(balance(oid, &data).expect("a balance"), 7);
    cluster.stop().await;
}
