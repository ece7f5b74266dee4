//! Per-peer limits against a cluster of `replicast node` processes (a master and three
//! storages on 127.0.0.1, `[limits]` set low), flooded by peers holding client certificates.
//!
//! Each limit is reached and then exceeded many times over: transactions begun at the master,
//! transactions, stores and bytes of stores waiting for a lock at a storage, fan-out sessions,
//! What goes beyond a limit is refused (a typed refusal
//! counted per reason in `replicast status`, or the transport's refusal) and the node's
//! memory stays bounded: its peak resident set (`VmHWM`) grows far less than what the flood
//! sent. Once the flooders leave, the cluster commits as before.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use replicast_certs::NodeIdentity;
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::protocol::{Message, PeerLimit, RefusalReason, StoreKind, StoreResult};
use replicast_testkit::fanout::membership;
use replicast_testkit::process;
use replicast_testkit::process::peer::{Peer, bounded_exchange, peer_endpoint};
use replicast_testkit::process::{ClusterSpec, LocalCluster, WAIT, random_group};
use replicast_transport::fanout;
use replicast_transport::fanout::wire::{ControlAnswer, ControlRequest};
use replicast_transport::quic::{LinkConfig, LinkError};

/// `[limits]` of every node.
const OPEN_TRANSACTIONS: u64 = 8;
const PENDING_STORES: u64 = 200;
const PENDING_STORE_BYTES: u64 = 4 << 20;
const FANOUT_SESSIONS: u64 = 2;

fn limits() -> String {
    format!(
        "[limits]\nopen_transactions = {OPEN_TRANSACTIONS}\npending_stores = {PENDING_STORES}\n\
         pending_store_bytes = {PENDING_STORE_BYTES}\nfanout_sessions = {FANOUT_SESSIONS}\n"
    )
}

/// Bytes each flooding store carries.
const STORE_BYTES: usize = 64 << 10;
/// Bytes each flood sends in all: far beyond any limit, and beyond what may stay in memory.
const FLOOD_BYTES: usize = 384 << 20;
/// How much a node's peak resident set may grow during a flood of [`FLOOD_BYTES`]: its queue
/// of work in flight (1,024 messages of [`STORE_BYTES`]), QUIC's receive window (64 MiB), the
/// held stores and order gaps (4 and 8 MiB), not the flood.
const GROWTH_BOUND_KIB: u64 = 160 << 10;

/// The peak resident set of process `pid`, in KiB (`VmHWM` of `/proc/PID/status`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// The refusals `node` counted of `peer` for `reason`, as `replicast status` shows them.
fn refusals(config: &Path, node: &str, peer: &str, reason: &str) -> u64 {
    let json = process::replicast(&["status", "--json", "--config", path_arg(config)])
        .expect("replicast status answers");
    let status: serde_json::Value = serde_json::from_str(&json).expect("status is JSON");
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|entry| entry["name"] == node)
        .flat_map(|entry| entry["refusals"].as_array().into_iter().flatten())
        .filter(|refusal| refusal["peer"] == peer && refusal["reason"] == reason)
        .map(|refusal| refusal["count"].as_u64().expect("a count"))
        .sum()
}

/// Polls `status` until `node` counted at least `expected` refusals of `peer` for `reason`,
/// bounded by [`WAIT`]; returns the count.
fn wait_for_refusals(config: &Path, node: &str, peer: &str, reason: &str, expected: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let counted = refusals(config, node, peer, reason);
        if counted >= expected {
            return counted;
        }
        assert!(
            Instant::now() < deadline,
            "{node} counted {counted} refusals of {peer} for {reason:?}, not {expected}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn store(ttid: Tid, oid: u64, bytes: usize) -> Message {
    Message::Store {
        ttid,
        generation: 0,
        oid: Oid(oid),
        serial: Tid::ZERO,
        data: ObjectData::from(vec![0x5a; bytes]),
        kind: StoreKind::Checked,
    }
}

/// A transaction id older than any the master hands out now, so that it wins every lock.
const OLDEST: Tid = Tid(0x0100_0000_0000_0000);

#[test]
fn each_limit_refuses_a_flooding_peer_and_memory_stays_bounded() {
    let spec = ClusterSpec {
        extra_names: (1..=8).map(|i| format!("client-{i}")).collect(),
        storage_sections: limits(),
        master_sections: limits(),
        ..ClusterSpec::default()
    };
    let mut cluster = LocalCluster::start(&spec);
    let certs = cluster.root().join("certs");
    let master_config = cluster.config("master");
    let writer = cluster.client_config("client-1", "");
    let tid = process::put(&writer, 1, "kept");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let identity = |name: &str| NodeIdentity::load_dir(&certs, name).expect("an identity");
    let master_pid = cluster.master_node.child.id();
    let storage_pid = cluster.storage("storage-1").child.id();
    let storage_1 = cluster.storage_address("storage-1");

    // The master: transactions begun and never finished.
    let master_before = peak_rss_kib(master_pid);
    let begins = 20_000;
    runtime.block_on(async {
        let mut flooder = Peer::new(peer_endpoint(&identity("client-2"), LinkConfig::default()));
        let master = flooder.link("master", cluster.master).await;
        let mut ttids = flooder.hello(&master).await;
        for _ in 0..begins {
            let ttid = ttids.make(SystemTime::now()).expect("a ttid");
            flooder
                .send(
                    &master,
                    &Message::Begin {
                        ttid,
                        table_version: 1,
                    },
                )
                .await;
        }
        // The first ones are begun, the rest refused, typed, with the limit.
        let refusal = flooder
            .wait_for("master", |message| match message {
                Message::Refused(refusal) => Some(refusal.clone()),
                _ => None,
            })
            .await;
        assert_eq!(
            refusal.reason,
            RefusalReason::Limit {
                limit: PeerLimit::OpenTransactions,
                max: OPEN_TRANSACTIONS
            },
            "{refusal}"
        );
        // Kept open until the master counted them all (a closed link loses what is in flight).
        let label = "limit open_transactions";
        let refused = (begins - OPEN_TRANSACTIONS as usize) as u64;
        let counted = tokio::task::block_in_place(|| {
            wait_for_refusals(&master_config, "master", "client-2", label, refused)
        });
        assert_eq!(counted, refused);
        flooder.endpoint.close();
    });
    let growth = peak_rss_kib(master_pid).saturating_sub(master_before);
    eprintln!("master: peak RSS grew by {growth} KiB during {begins} Begin");
    assert!(growth < GROWTH_BOUND_KIB, "the master grew by {growth} KiB");

    // A storage, by three flooders. client-3: one transaction holds object 2's lock (kept
    // alive by a store now and then), another waits for it with ever more stores queued in
    // memory behind it: bytes held, bounded.
    let storage_before = peak_rss_kib(storage_pid);
    runtime.block_on(async {
        let mut flooder = Peer::new(peer_endpoint(&identity("client-3"), LinkConfig::default()));
        let link = flooder.link("storage-1", storage_1).await;
        flooder.send(&link, &store(OLDEST, 2, 1024)).await;
        let first = flooder
            .wait_for("storage-1", |message| match message {
                Message::AnswerStore { ttid, answers, .. } if *ttid == OLDEST => {
                    answers.first().map(|(_, result)| *result)
                }
                _ => None,
            })
            .await;
        assert_eq!(first, StoreResult::Stored);
        let waiting = Tid(OLDEST.0 + 1);
        let flood = (FLOOD_BYTES / STORE_BYTES) as u64;
        for i in 0..flood {
            flooder
                .send(&link, &store(waiting, 2 + i, STORE_BYTES))
                .await;
            if i % 256 == 0 {
                flooder.send(&link, &store(OLDEST, 100_000 + i, 16)).await;
            }
        }
        // The first refusal sent back is the first store beyond the bytes limit.
        let refusal = flooder
            .wait_for("storage-1", |message| match message {
                Message::Refused(refusal) => Some(refusal.clone()),
                _ => None,
            })
            .await;
        assert_eq!(
            refusal.reason,
            RefusalReason::Limit {
                limit: PeerLimit::PendingStoreBytes,
                max: PENDING_STORE_BYTES
            },
            "{refusal}"
        );
        // Answered in order: every store before it was handled.
        flooder.load(&link, Oid(1)).await;
        let counted = tokio::task::block_in_place(|| {
            wait_for_refusals(
                &master_config,
                "storage-1",
                "client-3",
                "limit pending_store_bytes",
                1,
            )
        });
        // Not all of them: once the waiting transaction idles out (30 s without a store taken),
        // the storage drops it with its queue and its later stores are no longer its.
        assert!(
            counted >= 100 && counted <= flood - PENDING_STORE_BYTES / STORE_BYTES as u64,
            "{counted} of {flood} stores refused for their bytes"
        );
        flooder.endpoint.close();
    });
    let growth = peak_rss_kib(storage_pid).saturating_sub(storage_before);
    eprintln!(
        "storage-1: peak RSS grew by {growth} KiB during {} MiB of stores queued for a lock",
        FLOOD_BYTES >> 20
    );
    assert!(growth < GROWTH_BOUND_KIB, "storage-1 grew by {growth} KiB");

    // client-7: one transaction storing ever more fresh objects (a store without a begin is
    // as good as any to a storage): counted, refused beyond the limit.
    // client-8: ever new transactions.
    runtime.block_on(async {
        let mut stores = Peer::new(peer_endpoint(&identity("client-7"), LinkConfig::default()));
        let mut transactions =
            Peer::new(peer_endpoint(&identity("client-8"), LinkConfig::default()));
        let stores_link = stores.link("storage-1", storage_1).await;
        let transactions_link = transactions.link("storage-1", storage_1).await;
        for i in 0..3 * PENDING_STORES {
            stores
                .send(&stores_link, &store(Tid(OLDEST.0 + 2), 1_000_000 + i, 16))
                .await;
        }
        let sent = 100;
        for i in 0..sent {
            transactions
                .send(
                    &transactions_link,
                    &store(Tid(OLDEST.0 + 10 + i), 2_000_000 + i, 16),
                )
                .await;
        }
        stores.load(&stores_link, Oid(1)).await;
        transactions.load(&transactions_link, Oid(1)).await;
        tokio::task::block_in_place(|| {
            for (peer, label, expected) in [
                ("client-7", "limit pending_stores", 2 * PENDING_STORES),
                (
                    "client-8",
                    "limit open_transactions",
                    sent - OPEN_TRANSACTIONS,
                ),
            ] {
                let counted = wait_for_refusals(&master_config, "storage-1", peer, label, expected);
                assert_eq!(counted, expected, "{peer}: {label}");
            }
        });
        stores.endpoint.close();
        transactions.endpoint.close();
    });

    // Fan-out sessions: two writers join storage-1, the third is refused until one leaves.
    runtime.block_on(async {
        let mut writers = Vec::new();
        for (i, name) in ["client-4", "client-5", "client-6"].into_iter().enumerate() {
            let peer = Peer::new(peer_endpoint(&identity(name), LinkConfig::default()));
            let link = peer
                .link("storage-1", storage_1)
                .await
                .for_service(fanout::SERVICE);
            let join = ControlRequest::Join(membership(random_group(), 100 + i as u64));
            let answer: Result<ControlAnswer, _> =
                bounded_exchange("a join", link.request(&join)).await;
            if (i as u64) < FANOUT_SESSIONS {
                assert_eq!(answer.ok(), Some(ControlAnswer::Joined), "{name}");
            } else {
                match answer {
                    Err(LinkError::Remote { message, .. }) => {
                        assert!(message.contains("limit of 2 fan-out sessions"), "{message}")
                    }
                    other => panic!("{name} joined beyond the limit: {other:?}"),
                }
            }
            writers.push((peer, link));
        }
        for (peer, _) in writers {
            peer.endpoint.close();
        }
    });

    // Once the flooders left (their transactions aborted), the cluster commits as before.
    assert_eq!(process::get(&writer, 1), (tid, "kept".to_owned()));
    let tid = process::put(&writer, 2, "after-the-floods");
    assert_eq!(
        process::get(&writer, 2),
        (tid, "after-the-floods".to_owned())
    );
    drop(runtime);
    cluster.stop();
}
