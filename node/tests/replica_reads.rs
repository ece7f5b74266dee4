//! A reader never sees half of a committed transaction (ZODB's race tests, P7 of issue 12).
//!
//! One master, three storages on real redb stores (P = 12, R = 2) and one client, wired by a
//! router that delivers every message in order at once, on a virtual clock. One storage is
//! out of date; another one votes for a transaction but its answer comes too late, so the
//! client counts it as failed and commits with the remaining voter. Loads made after the
//! commit, at its TID, then go to the failed storage first (it has the lowest round-trip
//! time): it must not be readable there any more where the transaction wrote, or the reader
//! sees one object of the transaction and the other one's previous revision.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use replicast_node::client::{AskTarget, Client, ClientConfig, ClientEvent};
use replicast_node::engine::Engine;
use replicast_node::ids::{Oid, Tid};
use replicast_node::master::{Master, MasterConfig};
use replicast_node::object::ObjectData;
use replicast_node::partition::PartitionTable;
use replicast_node::persist::InlineStorage;
use replicast_node::protocol::{LoadBefore, Message, StorageAnswer, StorageAsk};
use replicast_node::storage::StorageConfig;
use replicast_node::transaction::TransactionInfo;
use replicast_testkit::sim::sent_in_order;

const MASTER: &str = "master";
const CLIENT: &str = "c1";
const STORAGES: [&str; 3] = ["s1", "s2", "s3"];
/// The most messages one [`Router::settle`] delivers.
const MAX_DELIVERIES: usize = 10_000;

/// The roles and the messages between them.
struct Router {
    now: SystemTime,
    master: Master,
    storages: BTreeMap<String, InlineStorage>,
    client: Client,
    queue: VecDeque<(String, String, Message)>,
    /// Nodes whose messages are dropped (a storage the master counts as lost).
    down: BTreeSet<String>,
    /// Messages held back while `hold` says so, delivered by [`Router::release`].
    held: Vec<(String, String, Message)>,
    hold: fn(&str, &str, &Message) -> bool,
    events: Vec<ClientEvent>,
    _dir: tempfile::TempDir,
}

impl Router {
    fn new() -> Self {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let dir = tempfile::tempdir().expect("tempdir");
        let names: Vec<String> = STORAGES.iter().map(|name| name.to_string()).collect();
        let table = PartitionTable::new(12, 2, &names).expect("table");
        let master = Master::new(table, MasterConfig::default()).expect("a lone master");
        let storages = STORAGES
            .iter()
            .map(|name| {
                let engine = Engine::open(dir.path().join(format!("{name}.redb"))).expect("open");
                let storage =
                    InlineStorage::open(now, name, MASTER, engine, StorageConfig::default())
                        .expect("storage");
                (name.to_string(), storage)
            })
            .collect();
        let mut client = Client::new(CLIENT, MASTER, ClientConfig::default());
        client.connect();
        let mut router = Self {
            now,
            master,
            storages,
            client,
            queue: VecDeque::new(),
            down: BTreeSet::new(),
            held: Vec::new(),
            hold: |_, _, _| false,
            events: Vec::new(),
            _dir: dir,
        };
        // The storages announce themselves; the client says hello.
        router.settle();
        assert!(router.take_events().contains(&ClientEvent::Ready));
        router
    }

    /// Takes what every role has to send into the queue.
    fn collect(&mut self) {
        while let Some(transmit) = self.master.poll_transmit() {
            self.queue
                .push_back((MASTER.into(), transmit.to, transmit.message));
        }
        for (name, storage) in &mut self.storages {
            while let Some(transmit) = storage.poll_transmit() {
                self.queue
                    .push_back((name.clone(), transmit.to, transmit.message));
            }
            while storage.poll_event().is_some() {}
        }
        for (transmit, fanout) in sent_in_order(&mut self.client) {
            if let Some(id) = fanout {
                // Delivered as soon as sent, as the driver says of stores sent on a channel:
                // the storage's answer deadline starts now.
                self.client.fanout_delivered(self.now, id, &transmit.to);
            }
            self.queue
                .push_back((CLIENT.into(), transmit.to, transmit.message));
        }
        self.events
            .extend(std::iter::from_fn(|| self.client.poll_event()));
    }

    /// Delivers messages until none is left (bounded).
    fn settle(&mut self) {
        for _ in 0..MAX_DELIVERIES {
            self.collect();
            let Some((from, to, message)) = self.queue.pop_front() else {
                return;
            };
            if self.down.contains(&from) || self.down.contains(&to) {
                continue;
            }
            if (self.hold)(&from, &to, &message) {
                self.held.push((from, to, message));
                continue;
            }
            self.deliver(&from, &to, message);
        }
        panic!("messages still flow after {MAX_DELIVERIES} deliveries");
    }

    fn deliver(&mut self, from: &str, to: &str, message: Message) {
        let now = self.now;
        // A refused message (e.g. a late answer) is the receiver's business: it stays up.
        let _ = if to == MASTER {
            self.master.handle(now, from, message)
        } else if to == CLIENT {
            self.client.handle(now, from, message)
        } else {
            self.storages
                .get_mut(to)
                .expect("a storage")
                .handle(now, from, message)
        };
    }

    /// Delivers what was held back.
    fn release(&mut self) {
        self.hold = |_, _, _| false;
        for (from, to, message) in std::mem::take(&mut self.held) {
            self.deliver(&from, &to, message);
        }
        self.settle();
    }

    /// Moves the clock to the client's next timer and fires it.
    fn client_timer(&mut self) {
        let at = self
            .client
            .poll_timeout()
            .expect("the client waits for something");
        self.now = self.now.max(at);
        self.client.handle_timeout(self.now);
        self.settle();
    }

    fn take_events(&mut self) -> Vec<ClientEvent> {
        self.collect();
        std::mem::take(&mut self.events)
    }

    /// Commits `value` into every object of `oids`, each stored on top of `serials`; the TID.
    fn commit(&mut self, oids: &[Oid], serials: &BTreeMap<Oid, Tid>, value: u8) -> Tid {
        self.client.begin(self.now).expect("begin");
        self.settle();
        for oid in oids {
            let serial = serials.get(oid).copied().unwrap_or(Tid::ZERO);
            let data = ObjectData::from(vec![value; 4]);
            self.client
                .store(self.now, *oid, serial, data)
                .expect("store");
        }
        self.settle();
        self.client
            .vote(self.now, TransactionInfo::default())
            .expect("vote");
        self.settle();
        // A storage whose vote is held back fails the vote after the vote timeout.
        for _ in 0..4 {
            if self
                .take_events()
                .iter()
                .any(|event| matches!(event, ClientEvent::Voted { .. }))
            {
                self.client.finish().expect("finish");
                self.settle();
                let committed = self
                    .take_events()
                    .into_iter()
                    .find_map(|event| match event {
                        ClientEvent::Committed { tid, .. } => Some(tid),
                        _ => None,
                    });
                return committed.expect("committed");
            }
            self.client_timer();
        }
        panic!("the transaction did not vote");
    }

    /// `oid` as of just before `before`, read by the client: the revision's TID.
    fn load_before(&mut self, oid: Oid, before: Tid) -> (Tid, String) {
        let request = self
            .client
            .ask(
                self.now,
                StorageAsk::LoadBefore { oid, before },
                &AskTarget::Object(oid),
            )
            .expect("ask");
        self.settle();
        let answer = self
            .take_events()
            .into_iter()
            .find_map(|event| match event {
                ClientEvent::Answered {
                    request: answered,
                    answer,
                    from,
                    ..
                } if answered == request => Some((answer, from)),
                _ => None,
            });
        match answer {
            Some((StorageAnswer::Load(LoadBefore::Found { serial, .. }), Some(from))) => {
                (serial, from)
            }
            other => panic!("no revision of {oid} before {before}: {other:?}"),
        }
    }
}

/// An object of the partition whose cells are exactly `nodes`.
fn oid_on(table: &PartitionTable, nodes: [&str; 2]) -> Oid {
    (1..64)
        .map(Oid)
        .find(|oid| {
            let mut cells: Vec<&str> = table
                .cells(table.partition_of(*oid))
                .expect("a partition")
                .iter()
                .map(|cell| cell.node.as_str())
                .collect();
            cells.sort_unstable();
            cells == nodes
        })
        .expect("every pair of storages shares a partition")
}

#[test]
fn a_storage_that_failed_a_vote_serves_no_half_of_the_commit() {
    let mut router = Router::new();
    let table = router.client.table().expect("a table").clone();
    // obj1 lives on s1 and s2, obj2 on s1 and s3.
    let obj1 = oid_on(&table, ["s1", "s2"]);
    let obj2 = oid_on(&table, ["s1", "s3"]);
    // s3 is lost: its cells go out of date, and s2 holds the last readable copy of the
    // partitions it shares with s3.
    router.down.insert("s3".into());
    router.master.peer_lost(router.now, "s3").expect("lost");
    router.settle();

    let first = router.commit(&[obj1, obj2], &BTreeMap::new(), 1);
    let serials = BTreeMap::from([(obj1, first), (obj2, first)]);

    // s2 votes yes, but its answer is late: the client commits with s1 alone.
    router.hold = |from, to, message| {
        from == "s2" && to == CLIENT && matches!(message, Message::AnswerVote { .. })
    };
    let second = router.commit(&[obj1, obj2], &serials, 2);
    assert!(second > first);

    // The reader prefers s2 (lowest round-trip time) and reads as of the commit.
    router
        .client
        .set_link_rtt("s2", Some(Duration::from_millis(1)));
    router
        .client
        .set_link_rtt("s1", Some(Duration::from_millis(10)));
    let before = Tid(second.0 + 1);
    let (serial2, _) = router.load_before(obj2, before);
    assert_eq!(
        serial2, second,
        "obj2 is read from s1, the only readable copy"
    );
    let (serial1, from1) = router.load_before(obj1, before);
    assert_eq!(
        serial1, second,
        "obj1 read from {from1} misses the commit that obj2 shows: a torn read"
    );

    // The late answer arrives; the storage learns the outcome in its own time.
    router.release();
}
