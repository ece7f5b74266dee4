//! The storage role without a disk: its writes and reads are completed by hand, in the order
//! and at the moment each test chooses.

use std::time::{Duration, SystemTime};

use super::{
    Backlog, Persist, Read, ReadResult, Storage, StorageConfig, StorageEvent, Write, Written,
};
use crate::engine::{
    EngineError, ObjectCursor, PackStep, ReplicatedObject, ReplicationProgress, Revision,
    StartupState,
};
use crate::ids::{Oid, Tid};
use crate::object::{Digest, ObjectData};
use crate::partition::PartitionTable;
use crate::protocol::{
    LoadBefore, LoadResult, Message, StorageAnswer, StorageAsk, StoreKind, StoreResult,
    TransactionOutcome, VoteRefusal, VoteResult,
};
use crate::transaction::{CommittedTransaction, TransactionInfo};

const MASTER: &str = "master";

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

fn storage(config: StorageConfig) -> Storage {
    let mut storage = Storage::open(at(0), "s1", MASTER, StartupState::default(), config);
    sent(&mut storage);
    storage
}

/// `message` as the primary of term 1 orders it (how the master's messages arrive).
fn order(message: Message) -> Message {
    Message::order(1, message)
}

/// Every message the role sent since the last call, as (peer, message).
fn sent(storage: &mut Storage) -> Vec<(String, Message)> {
    std::iter::from_fn(|| storage.poll_transmit())
        .map(|transmit| (transmit.to, transmit.message))
        .collect()
}

fn writes(storage: &mut Storage) -> Vec<Persist> {
    std::iter::from_fn(|| storage.poll_persist()).collect()
}

/// What each of `persists` writes, to compare with the writes a test expects.
fn kinds(persists: &[Persist]) -> Vec<&Write> {
    persists.iter().map(|persist| &persist.write).collect()
}

fn events(storage: &mut Storage) -> Vec<StorageEvent> {
    std::iter::from_fn(|| storage.poll_event()).collect()
}

fn data(bytes: &[u8]) -> ObjectData {
    ObjectData::from(bytes.to_vec())
}

fn store(storage: &mut Storage, client: &str, ttid: Tid, oid: Oid, bytes: &[u8]) {
    store_kind(
        storage,
        client,
        ttid,
        oid,
        Tid::ZERO,
        bytes,
        StoreKind::Checked,
    );
}

fn store_kind(
    storage: &mut Storage,
    client: &str,
    ttid: Tid,
    oid: Oid,
    serial: Tid,
    bytes: &[u8],
    kind: StoreKind,
) {
    let store = Message::Store {
        ttid,
        generation: 0,
        oid,
        serial,
        data: data(bytes),
        kind,
    };
    storage.handle(at(1), client, store).expect("store taken");
}

/// A table of one partition where `s1` is up to date.
fn table_here(storage: &mut Storage) {
    let table = PartitionTable::new(1, 1, &["s1".to_owned()]).expect("table");
    storage
        .handle(at(1), MASTER, order(Message::PartitionTable(table)))
        .expect("table taken");
    sent(storage);
}

fn vote(storage: &mut Storage, client: &str, ttid: Tid, oids: &[Oid]) {
    vote_in(storage, client, ttid, 0, oids);
}

/// `client` votes for `ttid`'s `generation`, covering one store of each of `oids`.
fn vote_in(storage: &mut Storage, client: &str, ttid: Tid, generation: u32, oids: &[Oid]) {
    let vote = Message::Vote {
        ttid,
        generation,
        oids: oids.to_vec(),
        info: TransactionInfo::default(),
    };
    storage.handle(at(2), client, vote).expect("vote taken");
}

/// What a replicating partition 0 asks its source, `"source"`: the transactions after `after`
/// up to TID 100.
fn asked_from_source(after: Tid) -> (String, Message) {
    (
        "source".to_owned(),
        Message::AskTransactions {
            partition: 0,
            after,
            up_to: Tid(100),
        },
    )
}

fn persist_all(storage: &mut Storage, persists: Vec<Persist>) {
    for persist in persists {
        storage
            .persisted(at(3), persist.id, Ok(()))
            .expect("a write in flight");
    }
}

/// Persists every write, and those they led to, until none is left (a vote is written once
/// the stagings it covers were executed).
fn persist_until_idle(storage: &mut Storage) {
    for _ in 0..16 {
        let persists = writes(storage);
        if persists.is_empty() {
            return;
        }
        persist_all(storage, persists);
    }
    panic!("writes kept coming");
}

/// A transaction of `client` that stored `oid` and voted yes, everything persisted.
fn voted(storage: &mut Storage, client: &str, ttid: Tid, oid: Oid) {
    store(storage, client, ttid, oid, b"v");
    vote(storage, client, ttid, &[oid]);
    persist_until_idle(storage);
    let answers = sent(storage);
    assert!(
        answers.iter().any(|(_, message)| matches!(
            message,
            Message::AnswerVote {
                result: VoteResult::Yes,
                ..
            }
        )),
        "{answers:?}"
    );
}

#[test]
fn a_store_is_staged_with_its_serial_checked_and_answered_once_executed() {
    let mut storage = storage(StorageConfig::default());
    store(&mut storage, "c1", Tid(10), Oid(1), b"hello");
    assert!(
        sent(&mut storage).is_empty(),
        "not answered before the check"
    );
    let staged = writes(&mut storage);
    assert_eq!(
        kinds(&staged),
        [&Write::Stage {
            ttid: Tid(10),
            oid: Oid(1),
            serial: Tid::ZERO,
            data: data(b"hello"),
            check: true,
        }]
    );
    persist_all(&mut storage, staged);
    assert_eq!(
        sent(&mut storage),
        [(
            "c1".to_owned(),
            Message::AnswerStore {
                ttid: Tid(10),
                generation: 0,
                answers: vec![(Oid(1), StoreResult::Stored)],
            }
        )]
    );
}

#[test]
fn a_conflict_at_the_store_is_answered_with_the_committed_serial_and_resolved() {
    let mut storage = storage(StorageConfig::default());
    store(&mut storage, "c1", Tid(10), Oid(1), b"v");
    let staged = writes(&mut storage);
    let conflict = EngineError::Conflict {
        oid: Oid(1),
        expected: Tid::ZERO,
        current: Tid(5),
    };
    storage
        .persisted(at(2), staged[0].id, Err(conflict))
        .expect("staging in flight");
    assert_eq!(
        sent(&mut storage),
        [(
            "c1".to_owned(),
            Message::AnswerStore {
                ttid: Tid(10),
                generation: 0,
                answers: vec![(Oid(1), StoreResult::Conflict { current: Tid(5) })],
            }
        )]
    );
    assert!(events(&mut storage).is_empty(), "a conflict is no failure");
    // Nothing was staged: the vote answers the conflict, and nothing is written for it.
    vote(&mut storage, "c1", Tid(10), &[Oid(1)]);
    assert_eq!(
        sent(&mut storage),
        [(
            "c1".to_owned(),
            Message::AnswerVote {
                ttid: Tid(10),
                result: VoteResult::Conflict {
                    oid: Oid(1),
                    expected: Tid::ZERO,
                    current: Tid(5)
                }
            }
        )]
    );
    assert!(writes(&mut storage).is_empty(), "not voted");
    // The client resolves and stores again on top of the committed serial: the lock is still
    // its own, so the store is staged at once.
    store_kind(
        &mut storage,
        "c1",
        Tid(10),
        Oid(1),
        Tid(5),
        b"w",
        StoreKind::Checked,
    );
    let staged = writes(&mut storage);
    assert!(matches!(
        kinds(&staged)[..],
        [Write::Stage {
            serial: Tid(5),
            check: true,
            ..
        }]
    ));
    persist_all(&mut storage, staged);
    sent(&mut storage);
    vote(&mut storage, "c1", Tid(10), &[Oid(1)]);
    let persists = writes(&mut storage);
    assert!(matches!(
        kinds(&persists)[..],
        [Write::Vote { oids, .. }] if oids == &[Oid(1)]
    ));
}

#[test]
fn checks_undos_and_restores_are_writes_of_their_own_kind() {
    let mut storage = storage(StorageConfig::default());
    let ttid = Tid(10);
    store_kind(
        &mut storage,
        "c1",
        ttid,
        Oid(1),
        Tid(4),
        b"",
        StoreKind::CheckCurrent,
    );
    store_kind(
        &mut storage,
        "c1",
        ttid,
        Oid(2),
        Tid(6),
        b"",
        StoreKind::Undo(Tid(3)),
    );
    store_kind(
        &mut storage,
        "c1",
        ttid,
        Oid(3),
        Tid(7),
        b"r",
        StoreKind::Unchecked,
    );
    let staged = writes(&mut storage);
    assert_eq!(
        kinds(&staged),
        [
            &Write::CheckSerial {
                ttid,
                oid: Oid(1),
                serial: Tid(4)
            },
            &Write::StageUndo {
                ttid,
                oid: Oid(2),
                serial: Tid(6),
                restore: Tid(3),
                check: true
            },
            &Write::Stage {
                ttid,
                oid: Oid(3),
                serial: Tid(7),
                data: data(b"r"),
                check: false
            },
        ]
    );
    // A stale read: the check is answered with the serial that replaced it.
    let stale = EngineError::Conflict {
        oid: Oid(1),
        expected: Tid(4),
        current: Tid(8),
    };
    storage
        .persisted(at(2), staged[0].id, Err(stale))
        .expect("check in flight");
    persist_all(&mut storage, staged[1..].to_vec());
    // The three outcomes, persisted together, are answered in one message.
    let messages = sent(&mut storage);
    assert!(
        matches!(
            &messages[..],
            [(_, Message::AnswerStore { answers, .. })]
                if answers.len() == 3
                    && answers[0] == (Oid(1), StoreResult::Conflict { current: Tid(8) })
        ),
        "{messages:?}"
    );
    // The client checks the object again at the serial it now reads: the read conflict is
    // gone (a vote would answer it otherwise).
    store_kind(
        &mut storage,
        "c1",
        ttid,
        Oid(1),
        Tid(8),
        b"",
        StoreKind::CheckCurrent,
    );
    persist_until_idle(&mut storage);
    sent(&mut storage);
    // The vote lists the written objects only, and does not check the restore's serial.
    vote(&mut storage, "c1", ttid, &[Oid(2), Oid(3)]);
    assert!(matches!(
        kinds(&writes(&mut storage))[..],
        [Write::Vote { oids, unchecked, .. }] if oids == &[Oid(2), Oid(3)] && unchecked == &[Oid(3)]
    ));
}

#[test]
fn questions_are_read_and_packs_answered_once_persisted() {
    let mut storage = storage(StorageConfig::default());
    let ask = StorageAsk::LoadBefore {
        oid: Oid(1),
        before: Tid(9),
    };
    // No table yet: nothing here is readable.
    storage
        .handle(
            at(1),
            "c1",
            Message::Ask {
                request: 1,
                ask: ask.clone(),
                open: None,
            },
        )
        .expect("ask");
    assert_eq!(
        sent(&mut storage),
        [(
            "c1".to_owned(),
            Message::Answer {
                request: 1,
                answer: StorageAnswer::Unavailable
            }
        )]
    );
    table_here(&mut storage);
    storage
        .handle(
            at(1),
            "c1",
            Message::Ask {
                request: 2,
                ask: ask.clone(),
                open: None,
            },
        )
        .expect("ask");
    let fetch = storage.poll_fetch().expect("a read");
    assert_eq!(
        fetch.read,
        Read::Ask {
            ask,
            num_partitions: 1
        }
    );
    assert!(sent(&mut storage).is_empty());
    let answer = StorageAnswer::Load(LoadBefore::Missing);
    storage
        .fetched(at(2), fetch.id, ReadResult::Ask(Ok(answer.clone())))
        .expect("a read in flight");
    assert_eq!(
        sent(&mut storage),
        [("c1".to_owned(), Message::Answer { request: 2, answer })]
    );
    let pack = StorageAsk::Pack {
        tid: Tid(9),
        after: None,
    };
    storage
        .handle(
            at(3),
            "c1",
            Message::Ask {
                request: 3,
                ask: pack,
                open: None,
            },
        )
        .expect("pack");
    let persists = writes(&mut storage);
    assert!(matches!(
        kinds(&persists)[..],
        [Write::Pack {
            tid: Tid(9),
            after: None,
            ..
        }]
    ));
    assert!(sent(&mut storage).is_empty(), "not before it is persisted");
    let step = PackStep {
        resume: Some(Oid(4)),
        removed: 2,
    };
    storage
        .persisted_with(at(4), persists[0].id, Ok(Written::Packed(step)))
        .expect("a write in flight");
    assert_eq!(
        sent(&mut storage),
        [(
            "c1".to_owned(),
            Message::Answer {
                request: 3,
                answer: StorageAnswer::Packed {
                    resume: Some(Oid(4)),
                    removed: 2
                }
            }
        )]
    );
}

#[test]
fn a_vote_is_answered_only_once_persisted() {
    let mut storage = storage(StorageConfig::default());
    store(&mut storage, "c1", Tid(10), Oid(1), b"v");
    vote(&mut storage, "c1", Tid(10), &[Oid(1)]);
    sent(&mut storage);
    // The vote waits for the staging it covers to be executed (its serial check).
    let staging = writes(&mut storage);
    assert!(matches!(kinds(&staging)[..], [Write::Stage { .. }]));
    persist_all(&mut storage, staging);
    assert!(matches!(
        sent(&mut storage)[..],
        [(_, Message::AnswerStore { .. })]
    ));
    let vote = writes(&mut storage);
    assert!(matches!(
        kinds(&vote)[..],
        [Write::Vote { ttid: Tid(10), oids, unchecked, .. }]
            if oids == &[Oid(1)] && unchecked.is_empty()
    ));
    assert!(
        sent(&mut storage).is_empty(),
        "not answered before the fsync"
    );
    persist_all(&mut storage, vote);
    assert_eq!(
        sent(&mut storage),
        [(
            "c1".to_owned(),
            Message::AnswerVote {
                ttid: Tid(10),
                result: VoteResult::Yes
            }
        )]
    );
}

#[test]
fn a_conflict_found_by_the_vote_is_answered_with_its_serials() {
    let mut storage = storage(StorageConfig::default());
    store(&mut storage, "c1", Tid(10), Oid(1), b"v");
    vote(&mut storage, "c1", Tid(10), &[Oid(1)]);
    sent(&mut storage);
    let staging = writes(&mut storage);
    persist_all(&mut storage, staging);
    sent(&mut storage);
    let vote = writes(&mut storage);
    let conflict = EngineError::Conflict {
        oid: Oid(1),
        expected: Tid::ZERO,
        current: Tid(5),
    };
    storage
        .persisted(at(3), vote[0].id, Err(conflict))
        .expect("vote in flight");
    assert_eq!(
        sent(&mut storage),
        [(
            "c1".to_owned(),
            Message::AnswerVote {
                ttid: Tid(10),
                result: VoteResult::Conflict {
                    oid: Oid(1),
                    expected: Tid::ZERO,
                    current: Tid(5)
                }
            }
        )]
    );
}

#[test]
fn a_failed_staging_fails_the_vote() {
    let mut storage = storage(StorageConfig::default());
    store(&mut storage, "c1", Tid(10), Oid(1), b"v");
    sent(&mut storage);
    let staged = writes(&mut storage);
    storage
        .persisted(at(2), staged[0].id, Err(EngineError::BatchSpoiled))
        .expect("staging in flight");
    assert!(matches!(
        events(&mut storage)[..],
        [StorageEvent::EngineError { ttid: Tid(10), .. }]
    ));
    assert!(matches!(
        &sent(&mut storage)[..],
        [(
            _,
            Message::AnswerStore { answers, .. }
        )] if answers[..] == [(Oid(1), StoreResult::Failed)]
    ));
    vote(&mut storage, "c1", Tid(10), &[Oid(1)]);
    assert!(writes(&mut storage).is_empty(), "nothing to write for it");
    assert_eq!(
        sent(&mut storage),
        [(
            "c1".to_owned(),
            Message::AnswerVote {
                ttid: Tid(10),
                result: VoteResult::No(VoteRefusal::StorageFailed)
            }
        )]
    );
}

#[test]
fn a_finish_is_acknowledged_once_persisted_and_as_often_as_asked() {
    let mut storage = storage(StorageConfig::default());
    voted(&mut storage, "c1", Tid(10), Oid(1));
    let finish = Message::Finish {
        ttid: Tid(10),
        tid: Tid(20),
    };
    storage
        .handle(at(4), MASTER, order(finish.clone()))
        .expect("finish");
    let persists = writes(&mut storage);
    assert_eq!(
        kinds(&persists),
        [&Write::Finish {
            ttid: Tid(10),
            tid: Tid(20),
            durable: false
        }]
    );
    // The master asks again (its finish crossed our question): owed once more.
    storage.handle(at(4), MASTER, order(finish)).expect("again");
    assert!(sent(&mut storage).is_empty(), "not before it is committed");
    persist_all(&mut storage, persists);
    let finished = (
        MASTER.to_owned(),
        Message::Finished {
            ttid: Tid(10),
            tid: Tid(20),
        },
    );
    assert_eq!(sent(&mut storage), [finished.clone(), finished]);
    assert_eq!(
        events(&mut storage),
        [StorageEvent::Committed {
            ttid: Tid(10),
            tid: Tid(20)
        }]
    );
}

#[test]
fn a_durable_finish_is_asked_for_when_configured() {
    let mut storage = storage(StorageConfig {
        durable_finish: true,
        ..StorageConfig::default()
    });
    voted(&mut storage, "c1", Tid(10), Oid(1));
    let outcome = Message::Outcome {
        ttid: Tid(10),
        outcome: TransactionOutcome::Committed(Tid(20)),
    };
    storage
        .handle(at(4), MASTER, order(outcome))
        .expect("outcome");
    assert!(matches!(
        writes(&mut storage)[..],
        [Persist {
            write: Write::Finish { durable: true, .. },
            ..
        }]
    ));
}

#[test]
fn a_voting_transaction_is_not_wounded_and_the_older_one_waits() {
    let mut storage = storage(StorageConfig::default());
    let (older, younger) = (Tid(10), Tid(20));
    store(&mut storage, "young", younger, Oid(1), b"y");
    vote(&mut storage, "young", younger, &[Oid(1)]);
    let staging = writes(&mut storage);
    persist_all(&mut storage, staging);
    let young_vote = writes(&mut storage);
    sent(&mut storage);
    // The older one wants the object while the younger's vote is being written: it waits,
    // its client is told so, and the younger's client that an older one waits for it, once
    // (it may be waiting elsewhere for the older one: see `vote.rs`).
    store(&mut storage, "old", older, Oid(1), b"o");
    store(&mut storage, "other", Tid(15), Oid(1), b"p");
    assert_eq!(
        sent(&mut storage),
        [
            ("old".to_owned(), Message::Waits { ttid: older }),
            ("young".to_owned(), Message::OlderWaits { ttid: younger }),
            ("other".to_owned(), Message::Waits { ttid: Tid(15) }),
        ],
        "no restart for the voting one, no answer for the waiting ones"
    );
    assert!(writes(&mut storage).is_empty());
    persist_all(&mut storage, young_vote);
    sent(&mut storage);
    storage
        .handle(
            at(5),
            MASTER,
            order(Message::Finish {
                ttid: younger,
                tid: Tid(30),
            }),
        )
        .expect("finish");
    // The finish released the lock: the older one's store is staged after the commit.
    let after = writes(&mut storage);
    assert!(matches!(
        kinds(&after)[..],
        [Write::Finish { .. }, Write::Stage { ttid, .. }] if *ttid == older
    ));
    persist_all(&mut storage, after);
    assert!(sent(&mut storage).iter().any(|(to, message)| to == "old"
        && matches!(message, Message::AnswerStore { ttid, .. } if *ttid == older)));
}

#[test]
fn a_vote_whose_transaction_ended_while_it_was_written_is_not_answered() {
    let mut storage = storage(StorageConfig::default());
    store(&mut storage, "c1", Tid(10), Oid(1), b"v");
    vote(&mut storage, "c1", Tid(10), &[Oid(1)]);
    let staging = writes(&mut storage);
    persist_all(&mut storage, staging);
    sent(&mut storage);
    storage
        .handle(at(3), "c1", Message::AbortTransaction { ttid: Tid(10) })
        .expect("abort");
    let persists = writes(&mut storage);
    assert!(matches!(
        kinds(&persists)[..],
        [Write::Vote { .. }, Write::Abort { ttid: Tid(10) }]
    ));
    persist_all(&mut storage, persists);
    assert!(sent(&mut storage).is_empty(), "{:?}", sent(&mut storage));
    assert_eq!(
        events(&mut storage),
        [StorageEvent::Aborted { ttid: Tid(10) }]
    );
}

#[test]
fn a_load_is_answered_once_read() {
    let mut storage = storage(StorageConfig::default());
    storage
        .handle(
            at(1),
            "c1",
            Message::Load {
                request: 7,
                oid: Oid(3),
            },
        )
        .expect("load");
    assert!(sent(&mut storage).is_empty());
    let fetch = storage.poll_fetch().expect("a read");
    assert_eq!(fetch.read, Read::Load { oid: Oid(3) });
    let revision = Revision {
        oid: Oid(3),
        tid: Tid(9),
        data: data(b"x"),
        digest: Digest::of(&data(b"x")),
    };
    storage
        .fetched(at(1), fetch.id, ReadResult::Load(Ok(Some(revision))))
        .expect("a read in flight");
    assert_eq!(
        sent(&mut storage),
        [(
            "c1".to_owned(),
            Message::AnswerLoad {
                request: 7,
                oid: Oid(3),
                result: LoadResult::Found {
                    tid: Tid(9),
                    data: data(b"x")
                }
            }
        )]
    );
}

#[test]
fn reads_of_a_voted_transaction_wait_until_its_outcome_is_applied() {
    let mut storage = storage(StorageConfig::default());
    table_here(&mut storage);
    voted(&mut storage, "c1", Tid(10), Oid(1));
    let load = |oid, request| Message::Load {
        request,
        oid: Oid(oid),
    };
    let history = Message::Ask {
        request: 3,
        ask: StorageAsk::UndoLog {
            partition: 0,
            before: Tid::MAX,
            count: 10,
        },
        open: None,
    };
    // The master may have told a reader of the commit already: a read of what the voted
    // transaction wrote, or of the transaction log, waits; another object is read at once.
    storage.handle(at(3), "c2", load(1, 1)).expect("load");
    storage.handle(at(3), "c2", history).expect("ask");
    storage.handle(at(3), "c2", load(2, 2)).expect("load");
    let fetches: Vec<Read> = std::iter::from_fn(|| storage.poll_fetch())
        .map(|fetch| fetch.read)
        .collect();
    assert_eq!(fetches, [Read::Load { oid: Oid(2) }]);
    let finish = Message::Finish {
        ttid: Tid(10),
        tid: Tid(20),
    };
    storage
        .handle(at(4), MASTER, order(finish))
        .expect("finish");
    assert!(storage.poll_fetch().is_none(), "not before it is visible");
    let persists = writes(&mut storage);
    persist_all(&mut storage, persists);
    let fetches: Vec<Read> = std::iter::from_fn(|| storage.poll_fetch())
        .map(|fetch| fetch.read)
        .collect();
    assert_eq!(fetches.len(), 2, "{fetches:?}");
    assert_eq!(fetches[0], Read::Load { oid: Oid(1) });
    assert!(matches!(fetches[1], Read::Ask { .. }), "{fetches:?}");

    // An abort releases the reads at once: nothing of it becomes visible.
    voted(&mut storage, "c1", Tid(30), Oid(1));
    storage.handle(at(5), "c2", load(1, 4)).expect("load");
    assert!(storage.poll_fetch().is_none());
    // Its own client's question inside the transaction (naming it open) does not wait for it.
    let own = Message::Ask {
        request: 5,
        ask: StorageAsk::UndoLog {
            partition: 0,
            before: Tid::MAX,
            count: 10,
        },
        open: Some(Tid(30)),
    };
    storage.handle(at(5), "c1", own).expect("ask");
    let fetch = storage.poll_fetch().expect("the question, at once");
    assert!(matches!(fetch.read, Read::Ask { .. }), "{:?}", fetch.read);
    storage
        .handle(at(5), "c1", Message::AbortTransaction { ttid: Tid(30) })
        .expect("abort");
    let fetch = storage.poll_fetch().expect("the load, released");
    assert_eq!(fetch.read, Read::Load { oid: Oid(1) });
}

#[test]
fn loads_beyond_the_bound_fail_at_once() {
    let mut storage = storage(StorageConfig {
        max_pending_reads: 1,
        ..StorageConfig::default()
    });
    for request in [1, 2] {
        storage
            .handle(
                at(1),
                "c1",
                Message::Load {
                    request,
                    oid: Oid(3),
                },
            )
            .expect("load");
    }
    assert_eq!(
        sent(&mut storage),
        [(
            "c1".to_owned(),
            Message::AnswerLoad {
                request: 2,
                oid: Oid(3),
                result: LoadResult::Failed
            }
        )]
    );
    assert_eq!(storage.backlog().reads, 1);
}

#[test]
fn stores_stop_being_taken_while_too_many_bytes_wait_for_the_disk() {
    let mut storage = storage(StorageConfig {
        max_unpersisted_bytes: 10_000,
        ..StorageConfig::default()
    });
    assert!(storage.takes_stores());
    store(&mut storage, "c1", Tid(10), Oid(1), &[0; 6_000]);
    assert!(storage.takes_stores(), "under the bound");
    store(&mut storage, "c1", Tid(10), Oid(2), &[0; 6_000]);
    assert!(!storage.takes_stores(), "over the bound");
    let Backlog {
        writes: waiting,
        write_bytes,
        ..
    } = storage.backlog();
    assert_eq!(waiting, 2);
    assert!(write_bytes >= 12_000, "{write_bytes}");
    let persists = writes(&mut storage);
    persist_all(&mut storage, persists);
    assert!(storage.takes_stores(), "the disk caught up");
    assert_eq!(storage.backlog(), Backlog::default());
}

#[test]
fn outcomes_of_writes_not_in_flight_are_refused() {
    let mut storage = storage(StorageConfig::default());
    assert!(storage.persisted(at(1), 99, Ok(())).is_err());
    assert!(
        storage
            .fetched(at(1), 99, ReadResult::Load(Ok(None)))
            .is_err()
    );
    storage
        .handle(
            at(1),
            "c1",
            Message::Load {
                request: 1,
                oid: Oid(3),
            },
        )
        .expect("load");
    let fetch = storage.poll_fetch().expect("a read");
    assert!(
        storage
            .fetched(at(1), fetch.id, ReadResult::Revision(Ok(None)))
            .is_err(),
        "a result of another kind"
    );
}

/// A storage feeding partition 0 of a one-partition table from `source`, asked to replicate
/// up to `Tid(100)`; what it sent is drained.
fn feeding_from_source() -> Storage {
    feeding_from_source_with(StorageConfig::default())
}

/// [`feeding_from_source`] with `config`.
fn feeding_from_source_with(config: StorageConfig) -> Storage {
    let names = ["source".to_owned(), "s1".to_owned()];
    let mut table = PartitionTable::new(1, 2, &names).expect("a table");
    table.mark_out_of_date("s1").expect("s1 in the table");
    table.start_feeding("s1").expect("s1 in the table");
    let mut storage = storage(config);
    storage
        .handle(at(1), MASTER, order(Message::PartitionTable(table)))
        .expect("table");
    storage
        .handle(
            at(1),
            MASTER,
            order(Message::Replicate {
                up_to: Tid(100),
                partitions: vec![(0, Tid::ZERO)],
            }),
        )
        .expect("replicate");
    assert_eq!(sent(&mut storage), [asked_from_source(Tid::ZERO)]);
    storage
}

/// The source's batch of transactions after `after`, holding `tid`, up to `resume`.
fn transactions_batch(after: Tid, tid: Tid, resume: Option<Tid>) -> Message {
    Message::AnswerTransactions {
        partition: 0,
        after,
        up_to: Tid(100),
        transactions: vec![CommittedTransaction {
            tid,
            oids: vec![Oid(1)],
            info: TransactionInfo::default(),
        }],
        resume,
    }
}

/// Where the revisions of a new cell start: nothing up to TID 0 is missing.
fn no_revisions() -> ObjectCursor {
    ReplicationProgress::complete_to(Tid::ZERO).objects
}

/// The events the storage emitted since last drained.
fn drain_events(storage: &mut Storage) -> Vec<StorageEvent> {
    std::iter::from_fn(|| storage.poll_event()).collect()
}

/// The progress each import write records.
fn imported_to(persists: &[Persist]) -> Vec<ReplicationProgress> {
    persists
        .iter()
        .map(|persist| match &persist.write {
            Write::ImportTransactions { progress, .. } | Write::ImportObjects { progress, .. } => {
                *progress
            }
            other => panic!("an import expected, got {other:?}"),
        })
        .collect()
}

/// A storage feeding from `source` that took its first batch (transactions up to TID 50,
/// more to come) and is writing it: the storage, and the write.
fn importing_first_batch() -> (Storage, Vec<Persist>) {
    let mut storage = feeding_from_source();
    storage
        .handle(
            at(2),
            "source",
            transactions_batch(Tid::ZERO, Tid(10), Some(Tid(50))),
        )
        .expect("answer");
    let first = writes(&mut storage);
    (storage, first)
}

#[test]
fn replication_asks_for_the_next_batch_while_the_last_is_imported_and_writes_it_after() {
    let (mut storage, first) = importing_first_batch();
    assert_eq!(
        imported_to(&first),
        [ReplicationProgress {
            transactions: Tid(50),
            objects: no_revisions()
        }]
    );
    // The next batch is asked at once, from where the batch being imported ends.
    assert_eq!(sent(&mut storage), [asked_from_source(Tid(50))]);
    // It arrives before the first is on disk: held, not written, and nothing more asked.
    storage
        .handle(at(2), "source", transactions_batch(Tid(50), Tid(60), None))
        .expect("answer");
    assert!(
        writes(&mut storage).is_empty(),
        "written only after the last"
    );
    assert!(sent(&mut storage).is_empty(), "one batch ahead at most");
    persist_all(&mut storage, first);
    let second = writes(&mut storage);
    assert_eq!(
        imported_to(&second),
        [ReplicationProgress {
            transactions: Tid(100),
            objects: no_revisions()
        }]
    );
    // The transactions are all here or on their way to disk: the revisions are asked now.
    assert_eq!(
        sent(&mut storage),
        [(
            "source".to_owned(),
            Message::AskObjects {
                partition: 0,
                after: no_revisions(),
                up_to: Tid(100)
            }
        )]
    );
    persist_all(&mut storage, second);
    assert!(
        sent(&mut storage).is_empty(),
        "the revisions' question is out"
    );
}

/// Whether each import write is made durable.
fn durable_imports(persists: &[Persist]) -> Vec<bool> {
    persists
        .iter()
        .map(|persist| match &persist.write {
            Write::ImportTransactions { durable, .. } | Write::ImportObjects { durable, .. } => {
                *durable
            }
            other => panic!("an import expected, got {other:?}"),
        })
        .collect()
}

#[test]
fn imports_are_durable_once_per_sync_bytes_and_when_the_round_completes() {
    // Each batch of transactions below lists one object: 8 bytes.
    let mut storage = feeding_from_source_with(StorageConfig {
        replication_sync_bytes: 20,
        ..StorageConfig::default()
    });
    let mut durable = Vec::new();
    for (after, tid, resume) in [
        (Tid::ZERO, Tid(10), Some(Tid(50))),
        (Tid(50), Tid(60), Some(Tid(70))),
        (Tid(70), Tid(75), Some(Tid(80))),
        (Tid(80), Tid(90), None),
    ] {
        storage
            .handle(at(2), "source", transactions_batch(after, tid, resume))
            .expect("answer");
        let import = writes(&mut storage);
        durable.extend(durable_imports(&import));
        persist_all(&mut storage, import);
        sent(&mut storage);
    }
    // 8, 16, then 24 bytes since the last durable import: the third is durable; the fourth
    // has all the transactions, but the round goes on with the revisions.
    assert_eq!(durable, [false, false, true, false]);
    let data = data(b"v");
    storage
        .handle(
            at(2),
            "source",
            Message::AnswerObjects {
                partition: 0,
                after: no_revisions(),
                up_to: Tid(100),
                objects: vec![ReplicatedObject {
                    oid: Oid(1),
                    tid: Tid(10),
                    digest: data.digest(),
                    data,
                }],
                resume: None,
            },
        )
        .expect("answer");
    let last = writes(&mut storage);
    assert_eq!(
        durable_imports(&last),
        [true],
        "the import that completes the round is on disk before it is reported"
    );
    assert!(
        !sent(&mut storage)
            .iter()
            .any(|(_, message)| matches!(message, Message::Replicated { .. })),
        "not reported before it is persisted"
    );
    persist_all(&mut storage, last);
    assert!(
        sent(&mut storage)
            .iter()
            .any(|(_, message)| matches!(message, Message::Replicated { partition: 0, .. })),
        "reported once it is"
    );
}

#[test]
fn a_failed_import_drops_what_came_after_it_and_asks_again_from_the_disk() {
    let (mut storage, first) = importing_first_batch();
    persist_all(&mut storage, first);
    drain_events(&mut storage);
    sent(&mut storage);
    storage
        .handle(
            at(3),
            "source",
            transactions_batch(Tid(50), Tid(60), Some(Tid(70))),
        )
        .expect("answer");
    let failing = writes(&mut storage);
    assert_eq!(failing.len(), 1);
    assert!(matches!(
        sent(&mut storage)[..],
        [(_, Message::AskTransactions { after: Tid(70), .. })]
    ));
    storage
        .handle(at(3), "source", transactions_batch(Tid(70), Tid(80), None))
        .expect("answer");
    assert!(writes(&mut storage).is_empty(), "held behind the import");
    storage
        .persisted(at(3), failing[0].id, Err(EngineError::BatchSpoiled))
        .expect("a write in flight");
    assert!(
        writes(&mut storage).is_empty(),
        "the batch after a failed one is never written: its progress would pass the gap"
    );
    assert!(
        drain_events(&mut storage)
            .iter()
            .any(|event| matches!(event, StorageEvent::ReplicationFailed { partition: 0, .. })),
        "the failure is reported"
    );
    // The only source failed: it is asked again after the retry wait, from what is on disk.
    assert!(sent(&mut storage).is_empty());
    let retry = storage.poll_timeout().expect("a retry is due");
    storage.handle_timeout(retry).expect("timeout");
    assert_eq!(sent(&mut storage), [asked_from_source(Tid(50))]);
    // A late answer to a question dropped on the way (after 70, past the gap) is not taken
    // for the answer of this one.
    storage
        .handle(retry, "source", transactions_batch(Tid(70), Tid(80), None))
        .expect("ignored");
    assert!(writes(&mut storage).is_empty(), "not the question's answer");
    storage
        .handle(retry, "source", transactions_batch(Tid(50), Tid(60), None))
        .expect("answer");
    assert_eq!(
        imported_to(&writes(&mut storage)),
        [ReplicationProgress {
            transactions: Tid(100),
            objects: no_revisions()
        }]
    );
}

#[test]
fn an_inspection_is_read_and_answered_on_its_request_and_refused_where_not_readable() {
    use crate::protocol::{InspectAnswer, InspectAsk, OidRange, RangeDigest};
    let mut storage = storage(StorageConfig::default());
    let ask = InspectAsk::Digest {
        partition: 0,
        range: OidRange::ALL,
        up_to: Tid(9),
    };
    let request = |ask: &InspectAsk| Message::AskInspect {
        request: 5,
        ask: ask.clone(),
    };
    // Without a table, nothing is readable here: answered at once.
    assert_eq!(
        storage
            .answer_or_defer(at(1), "admin", request(&ask), 11)
            .expect("an inspection"),
        Some(Message::AnswerInspect {
            request: 5,
            answer: InspectAnswer::Unavailable
        })
    );
    table_here(&mut storage);
    sent(&mut storage);
    assert_eq!(
        storage
            .answer_or_defer(at(1), "admin", request(&ask), 12)
            .expect("an inspection"),
        None,
        "deferred until read"
    );
    assert!(storage.poll_answer().is_none());
    let fetch = storage.poll_fetch().expect("a read");
    assert_eq!(
        fetch.read,
        Read::Inspect {
            ask,
            num_partitions: 1
        }
    );
    let digest = RangeDigest {
        records: 3,
        digest: Digest([7; 16]),
    };
    storage
        .fetched(
            at(1),
            fetch.id,
            ReadResult::Inspect(Ok(InspectAnswer::Digest(digest))),
        )
        .expect("a read in flight");
    let (token, answer) = storage.poll_answer().expect("the answer");
    assert_eq!(token, 12);
    assert_eq!(
        answer.expect("answered"),
        Message::AnswerInspect {
            request: 5,
            answer: InspectAnswer::Digest(digest)
        }
    );
    assert!(sent(&mut storage).is_empty(), "the answer is the request's");
    // Only inspections come this way.
    assert!(
        storage
            .answer_or_defer(
                at(1),
                "admin",
                Message::Begin {
                    ttid: Tid(1),
                    table_version: 1
                },
                13
            )
            .is_err()
    );
}

#[test]
fn a_cell_that_was_whole_and_goes_out_of_date_forgets_what_replication_brought() {
    use crate::engine::{ObjectCursor, ReplicationProgress};
    let progress = ReplicationProgress {
        transactions: Tid(50),
        objects: ObjectCursor {
            tid: Tid(50),
            oid: Oid(u64::MAX),
        },
    };
    let state = StartupState {
        replication: [(0, progress)].into(),
        ..StartupState::default()
    };
    let mut storage = Storage::open(at(0), "s1", MASTER, state, StorageConfig::default());
    let mut table = PartitionTable::new(1, 2, &["s1".to_owned(), "s2".to_owned()]).expect("table");
    storage
        .handle(at(1), MASTER, order(Message::PartitionTable(table.clone())))
        .expect("table");
    table.mark_cell_out_of_date(0, "s1").expect("a cell");
    storage
        .handle(at(2), MASTER, order(Message::PartitionTable(table)))
        .expect("table");
    assert!(
        sent(&mut storage)
            .iter()
            .any(|(to, message)| to == MASTER && *message == Message::AskCatchUp)
    );
    // Forgotten on disk too, before any import of the next round (writes run in order).
    let forgotten = writes(&mut storage);
    assert_eq!(kinds(&forgotten), [&Write::ForgetProgress { partition: 0 }]);
    persist_all(&mut storage, forgotten);
    // The master says it holds nothing whole: the partition is copied from the start.
    storage
        .handle(
            at(3),
            MASTER,
            order(Message::Replicate {
                up_to: Tid(90),
                partitions: vec![(0, Tid::ZERO)],
            }),
        )
        .expect("replicate");
    assert!(storage.catching_up().contains(&0));
    let asked = sent(&mut storage);
    assert!(
        asked.iter().any(|(to, message)| to == "s2"
            && *message
                == Message::AskTransactions {
                    partition: 0,
                    after: Tid::ZERO,
                    up_to: Tid(90)
                }),
        "{asked:?}"
    );
}

#[test]
fn a_voted_transaction_asks_its_outcome_later_the_more_it_staged() {
    // 3 s, plus 1 s per MiB staged: the 2 MiB voted at second 3 are asked about at second 8.
    let mut storage = storage(StorageConfig {
        outcome_bytes_per_second: 1 << 20,
        ..StorageConfig::default()
    });
    table_here(&mut storage);
    let (ttid, oid) = (Tid(10), Oid(1));
    store(&mut storage, "c1", ttid, oid, &vec![7; 2 << 20]);
    vote(&mut storage, "c1", ttid, &[oid]);
    persist_until_idle(&mut storage);
    sent(&mut storage);
    let asked = |storage: &mut Storage| {
        sent(storage)
            .iter()
            .any(|(to, message)| to == MASTER && matches!(message, Message::AskOutcome { .. }))
    };
    storage.handle_timeout(at(7)).expect("timers");
    assert!(
        !asked(&mut storage),
        "the other voters may still be writing"
    );
    storage.handle_timeout(at(8)).expect("timers");
    assert!(
        asked(&mut storage),
        "asked once the deadline for its bytes passed"
    );
}

/// A voter killed after it committed, before its acknowledgement left: the next primary
/// finishes the decision again, and the restarted storage, which knows nothing of the
/// transaction, acknowledges it if its store holds the commit (else the finish waited for
/// it forever), and refuses it if not.
#[test]
fn a_finish_resent_after_a_restart_is_acknowledged_if_the_commit_is_held() {
    let mut storage = storage(StorageConfig::default());
    table_here(&mut storage);
    for (ttid, tid, held) in [(Tid(10), Tid(11), true), (Tid(20), Tid(21), false)] {
        storage
            .handle(at(1), MASTER, order(Message::Finish { ttid, tid }))
            .expect("a finish of an unknown transaction is looked up, not refused at once");
        assert!(
            sent(&mut storage).is_empty(),
            "nothing before the store answers"
        );
        let fetch = storage.poll_fetch().expect("the store is asked");
        assert_eq!(fetch.read, Read::Committed { tid });
        let answered = storage.fetched(at(1), fetch.id, ReadResult::Committed(Ok(held)));
        if held {
            answered.expect("acknowledged");
            assert_eq!(
                sent(&mut storage),
                vec![(MASTER.to_owned(), Message::Finished { ttid, tid })]
            );
        } else {
            assert!(
                answered.is_err(),
                "a commit not held here is not acknowledged"
            );
            assert!(sent(&mut storage).is_empty());
        }
    }
}

/// A round that ends before its first answer came, and the next round that asks from the same
/// point: the late answer, complete up to the first round's bound, is not taken for the second
/// round's (which recorded the partition's transactions complete up to the later bound, lost
/// the ones between the two bounds for good, and failed every import of their revisions).
#[test]
fn a_late_answer_of_an_earlier_round_is_not_taken_for_the_next_rounds() {
    let mut storage = feeding_from_source();
    let names = ["source".to_owned(), "s1".to_owned()];
    let mut out_of_date = PartitionTable::new(1, 2, &names).expect("a table");
    out_of_date.mark_out_of_date("s1").expect("s1 in the table");
    storage
        .handle(
            at(2),
            MASTER,
            order(Message::PartitionTable(out_of_date.clone())),
        )
        .expect("out of date");
    let mut feeding = out_of_date;
    feeding.start_feeding("s1").expect("s1 in the table");
    storage
        .handle(at(2), MASTER, order(Message::PartitionTable(feeding)))
        .expect("feeding again");
    storage
        .handle(
            at(2),
            MASTER,
            order(Message::Replicate {
                up_to: Tid(200),
                partitions: vec![(0, Tid::ZERO)],
            }),
        )
        .expect("replicate");
    let asked: Vec<_> = sent(&mut storage)
        .into_iter()
        .filter(|(_, message)| matches!(message, Message::AskTransactions { .. }))
        .collect();
    let again = Message::AskTransactions {
        partition: 0,
        after: Tid::ZERO,
        up_to: Tid(200),
    };
    assert_eq!(asked, [("source".to_owned(), again)]);

    // The first round's answer: complete up to TID 100 only.
    storage
        .handle(
            at(3),
            "source",
            transactions_batch(Tid::ZERO, Tid(50), None),
        )
        .expect("a late answer is no error");
    assert!(
        writes(&mut storage).is_empty(),
        "the late answer is dropped"
    );

    let answer = Message::AnswerTransactions {
        partition: 0,
        after: Tid::ZERO,
        up_to: Tid(200),
        transactions: vec![CommittedTransaction {
            tid: Tid(150),
            oids: vec![Oid(1)],
            info: TransactionInfo::default(),
        }],
        resume: None,
    };
    storage
        .handle(at(3), "source", answer)
        .expect("the round's own answer");
    let imports = writes(&mut storage);
    assert_eq!(imported_to(&imports)[0].transactions, Tid(200));
}

#[test]
fn a_vote_sent_with_its_stores_waits_until_they_are_staged() {
    let mut storage = storage(StorageConfig::default());
    let ttid = Tid(10);
    store(&mut storage, "c1", ttid, Oid(1), b"x");
    store(&mut storage, "c1", ttid, Oid(2), b"y");
    // The vote comes right behind its stores, before their stagings were executed.
    vote_in(&mut storage, "c1", ttid, 0, &[Oid(1), Oid(2)]);
    let staging = writes(&mut storage);
    assert!(matches!(
        kinds(&staging)[..],
        [
            Write::Stage { oid: Oid(1), .. },
            Write::Stage { oid: Oid(2), .. }
        ]
    ));
    assert!(
        !sent(&mut storage)
            .iter()
            .any(|(_, message)| matches!(message, Message::AnswerVote { .. })),
        "no vote before the stagings"
    );
    persist_all(&mut storage, staging);
    let vote = writes(&mut storage);
    assert!(matches!(
        kinds(&vote)[..],
        [Write::Vote { oids, .. }] if oids == &[Oid(1), Oid(2)]
    ));
}

#[test]
fn a_vote_that_lists_a_store_that_never_came_is_refused() {
    let mut storage = storage(StorageConfig::default());
    let ttid = Tid(10);
    store(&mut storage, "c1", ttid, Oid(1), b"x");
    // The store of object 2 was dropped on the way (the group missed it).
    vote_in(&mut storage, "c1", ttid, 0, &[Oid(1), Oid(2)]);
    persist_until_idle(&mut storage);
    assert!(
        sent(&mut storage).contains(&(
            "c1".to_owned(),
            Message::AnswerVote {
                ttid,
                result: VoteResult::No(VoteRefusal::MissingStores)
            }
        )),
        "the vote says what is missing instead of waiting for it"
    );
}

#[test]
fn a_wound_drops_the_held_vote_and_the_next_generation_votes_again() {
    let mut storage = storage(StorageConfig::default());
    let (older, younger) = (Tid(10), Tid(20));
    store(&mut storage, "young", younger, Oid(1), b"y");
    vote_in(&mut storage, "young", younger, 0, &[Oid(1), Oid(2)]);
    // Not voted: the older transaction wounds it.
    store(&mut storage, "old", older, Oid(1), b"o");
    assert!(sent(&mut storage).iter().any(|(to, message)| to == "young"
        && *message
            == Message::Restart {
                ttid: younger,
                generation: 1
            }));
    persist_until_idle(&mut storage);
    // The next generation's vote is taken, not refused as a second one.
    vote_in(&mut storage, "young", younger, 1, &[Oid(1), Oid(2)]);
}

#[test]
fn a_transaction_the_primary_aborts_is_reported_to_its_client() {
    let mut storage = storage(StorageConfig::default());
    let ttid = Tid(10);
    store(&mut storage, "c1", ttid, Oid(1), b"x");
    // Held: the store's staging is not executed yet.
    vote_in(&mut storage, "c1", ttid, 0, &[Oid(1)]);
    sent(&mut storage);
    storage
        .handle(at(3), MASTER, order(Message::AbortTransaction { ttid }))
        .expect("aborted by the primary");
    assert_eq!(
        sent(&mut storage),
        [("c1".to_owned(), Message::Aborted { ttid })],
        "the held vote is never answered: the client hears of the abort instead"
    );
}
