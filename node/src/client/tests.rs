//! Unit tests of the client role, without a network or a disk.

use std::time::Duration;

use super::*;
use crate::protocol::{LoadResult, StoreResult, TransactionOutcome};

/// `message` as the primary of term 1 sends it.
fn order(message: Message) -> Message {
    Message::FromPrimary {
        term: 1,
        message: crate::protocol::Order(Box::new(message)),
    }
}

fn ready_client() -> (Client, PartitionTable) {
    let mut client = Client::new("c1", "master", ClientConfig::default());
    client.connect();
    let storages = ["s1".to_owned(), "s2".to_owned(), "s3".to_owned()];
    let table = PartitionTable::new(3, 3, &storages).expect("table");
    client
        .handle(SystemTime::UNIX_EPOCH, "master", welcome_number(1))
        .expect("number accepted");
    client
        .handle(
            SystemTime::UNIX_EPOCH,
            "master",
            order(Message::PartitionTable(table.clone())),
        )
        .expect("table accepted");
    // Unwrapped, the same answer is refused: only orders of a primary count.
    assert!(
        client
            .handle(
                SystemTime::UNIX_EPOCH,
                "master",
                Message::PartitionTable(table.clone()),
            )
            .is_err()
    );
    while client.poll_transmit().is_some() {}
    (client, table)
}

/// The primary's welcome numbering the client `number`, its clock at the epoch.
fn welcome_number(number: u16) -> Message {
    order(Message::TtidSpace {
        number,
        clock: Tid::from_system_time(SystemTime::UNIX_EPOCH),
    })
}

#[test]
fn a_begin_makes_its_ttid_and_tells_the_master_without_waiting() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, _) = ready_client();
    client.begin(now).expect("begin");
    let ttid = client.current_transaction().expect("begun at once");
    assert_eq!(ttid.0 & 0xffff, 1, "the client's number");
    let sent: Vec<_> = std::iter::from_fn(|| client.poll_transmit()).collect();
    assert_eq!(sent.len(), 1);
    let table_version = client.table().map(PartitionTable::version);
    assert_eq!(
        Some(sent[0].message.clone()),
        table_version.map(|table_version| Message::Begin {
            ttid,
            table_version
        })
    );
    assert_eq!(client.poll_event(), Some(ClientEvent::Ready));
    assert_eq!(client.poll_event(), Some(ClientEvent::Begun { ttid }));
    assert_eq!(client.pending_begin(), None);
    // A second transaction, after this one, is younger.
    client.abort().expect("abort");
    client.begin(now).expect("begin");
    assert!(client.current_transaction() > Some(ttid));
}

#[test]
fn a_begin_while_the_client_announces_itself_again_waits_for_its_new_number() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, _) = ready_client();
    client.peer_lost(now, "master");
    let retry = now + ClientConfig::default().master_retry;
    client.handle_timeout(retry);
    while client.poll_transmit().is_some() {}
    // The old number was the lost link's: the begin waits for the welcome.
    client.begin(retry).expect("begin");
    assert_eq!(client.pending_begin(), Some(None));
    assert!(client.poll_transmit().is_none());
    client
        .handle(retry, "master", welcome_number(4))
        .expect("the welcome");
    let ttid = client.current_transaction().expect("begun");
    assert_eq!(ttid.0 & 0xffff, 4, "the new number");
    let sent: Vec<_> = std::iter::from_fn(|| client.poll_transmit())
        .map(|transmit| transmit.message)
        .collect();
    let table_version = client.table().map_or(0, PartitionTable::version);
    assert_eq!(
        sent,
        [Message::Begin {
            ttid,
            table_version
        }]
    );
}

#[test]
fn a_begin_unanswered_when_the_master_link_drops_is_asked_again_with_the_hello() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, _) = ready_client();
    // A restore's begin, at a chosen commit TID: the primary answers it.
    client.begin_at(now, Some(Tid(5))).expect("begin");
    while client.poll_transmit().is_some() {}
    // The link drops before the answer: it went with the link, and the master forgot
    // this client and what it had open.
    client.peer_lost(now, "master");
    let retry = now + ClientConfig::default().master_retry;
    client.handle_timeout(retry);
    let sent: Vec<(String, &'static str)> = std::iter::from_fn(|| client.poll_transmit())
        .map(|transmit| (transmit.to, transmit.message.kind()))
        .filter(|(_, kind)| *kind != "AskPrimary")
        .collect();
    assert_eq!(
        sent,
        [
            ("master".to_owned(), "ClientHello"),
            ("master".to_owned(), "AskBeginAt")
        ]
    );
    assert_eq!(client.pending_begin(), Some(Some(Tid(5))));
    client
        .handle(
            retry,
            "master",
            order(Message::AnswerBegin { ttid: Tid(9) }),
        )
        .expect("the begin is answered");
    assert_eq!(client.current_transaction(), Some(Tid(9)));
}

/// Begins, votes with nothing stored and asks the finish of the transaction; its ttid.
fn finishing(client: &mut Client, now: SystemTime) -> Tid {
    client.begin(now).expect("begin");
    let ttid = client.current_transaction().expect("begun");
    client.vote(now, TransactionInfo::default()).expect("vote");
    client.finish().expect("finish");
    while client.poll_transmit().is_some() {}
    ttid
}

/// The primary answers the finish of `ttid` aborted: the reason the client reports.
fn finish_aborted(client: &mut Client, now: SystemTime, ttid: Tid) -> Option<AbortReason> {
    let answer = order(Message::AnswerFinish {
        ttid,
        outcome: TransactionOutcome::Aborted,
    });
    client.handle(now, "master", answer).expect("answer");
    std::iter::from_fn(|| client.poll_event()).find_map(|event| match event {
        ClientEvent::Aborted { reason, .. } => Some(reason),
        _ => None,
    })
}

#[test]
fn an_aborted_finish_after_the_primary_was_lost_is_the_failover_not_a_refusal() {
    let now = SystemTime::UNIX_EPOCH;
    let refused = Some(AbortReason::FinishRefused(TransactionOutcome::Aborted));
    // The primary that began it answers: a refusal.
    let (mut client, _) = ready_client();
    let ttid = finishing(&mut client, now);
    assert_eq!(finish_aborted(&mut client, now, ttid), refused);
    // The link to the primary dropped before the answer: the master forgot the client
    // and aborted what it had open; the finish asked again says so.
    let ttid = finishing(&mut client, now);
    client.peer_lost(now, "master");
    let retry = now + ClientConfig::default().master_retry;
    client.handle_timeout(retry);
    let asked: Vec<&'static str> = std::iter::from_fn(|| client.poll_transmit())
        .map(|transmit| transmit.message.kind())
        .filter(|kind| *kind != "AskPrimary")
        .collect();
    assert_eq!(asked, ["ClientHello", "AskFinish"]);
    assert_eq!(
        finish_aborted(&mut client, retry, ttid),
        Some(AbortReason::MasterLost)
    );
    // The next transaction starts clean, once the primary's welcome numbered the client.
    client
        .handle(retry, "master", welcome_number(1))
        .expect("the welcome");
    let ttid = finishing(&mut client, retry);
    assert_eq!(finish_aborted(&mut client, retry, ttid), refused);
}

/// The first `Loaded` event the client has to report (the others before it are taken).
fn loaded_event(client: &mut Client) -> Option<ClientEvent> {
    std::iter::from_fn(|| client.poll_event())
        .find(|event| matches!(event, ClientEvent::Loaded { .. }))
}

fn next_load_target(client: &mut Client) -> Option<String> {
    std::iter::from_fn(|| client.poll_transmit())
        .find(|transmit| matches!(transmit.message, Message::Load { .. }))
        .map(|transmit| transmit.to)
}

#[test]
fn loads_try_replicas_by_rtt_then_fall_through() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, _) = ready_client();
    client.set_link_rtt("s1", Some(Duration::from_millis(30)));
    client.set_link_rtt("s2", Some(Duration::from_millis(5)));
    // s3 is not measured: it comes last.
    let request = client.load(now, Oid(1)).expect("load");
    assert_eq!(next_load_target(&mut client).as_deref(), Some("s2"));
    // A failed answer: the next lowest RTT.
    let failed = Message::AnswerLoad {
        request,
        oid: Oid(1),
        result: LoadResult::Failed,
    };
    client.handle(now, "s2", failed).expect("answer");
    assert_eq!(next_load_target(&mut client).as_deref(), Some("s1"));
    // No answer in time: the unmeasured replica.
    let later = now + ClientConfig::default().load_timeout;
    assert_eq!(client.poll_timeout(), Some(later), "{:?}", client.awaiting);
    client.handle_timeout(later);
    assert_eq!(next_load_target(&mut client).as_deref(), Some("s3"));
    // It answers: the event names it.
    let found = Message::AnswerLoad {
        request,
        oid: Oid(1),
        result: LoadResult::Missing,
    };
    client.handle(later, "s3", found).expect("answer");
    let loaded = loaded_event(&mut client);
    assert_eq!(
        loaded,
        Some(ClientEvent::Loaded {
            request,
            oid: Oid(1),
            result: LoadResult::Missing,
            from: Some("s3".to_owned()),
            failures: vec![
                ("s2".to_owned(), ReadFailure::Unavailable),
                ("s1".to_owned(), ReadFailure::Timeout),
            ],
        })
    );
}

#[test]
fn a_load_waits_while_its_replica_sends_and_moves_on_when_it_falls_silent() {
    let now = SystemTime::UNIX_EPOCH;
    let config = ClientConfig::default();
    let (mut client, _) = ready_client();
    client.set_link_rtt("s1", Some(Duration::from_millis(1)));
    client.set_link_received("s1", Some(1_000));
    let request = client.load(now, Oid(1)).expect("load");
    assert_eq!(next_load_target(&mut client).as_deref(), Some("s1"));
    assert_eq!(client.reading_from(), ["s1"]);
    // A large answer is on its way: s1 sent a lot since it was asked.
    let first = now + config.load_timeout;
    client.set_link_received("s1", Some(1_000 + 4 * config.load_progress_bytes));
    client.handle_timeout(first);
    assert_eq!(
        next_load_target(&mut client),
        None,
        "the load stays with s1"
    );
    assert_eq!(client.poll_timeout(), Some(first + config.load_timeout));
    // Then only keep-alives: s1 counts as silent, the next replica is asked.
    let second = first + config.load_timeout;
    client.set_link_received("s1", Some(1_000 + 4 * config.load_progress_bytes + 200));
    client.handle_timeout(second);
    let next = next_load_target(&mut client).expect("the load moves on");
    assert_ne!(next, "s1");
    client
        .handle(
            second,
            &next,
            Message::AnswerLoad {
                request,
                oid: Oid(1),
                result: LoadResult::Missing,
            },
        )
        .expect("answer");
    let loaded = loaded_event(&mut client);
    assert_eq!(
        loaded,
        Some(ClientEvent::Loaded {
            request,
            oid: Oid(1),
            result: LoadResult::Missing,
            from: Some(next),
            failures: vec![("s1".to_owned(), ReadFailure::Timeout)],
        })
    );
}

#[test]
fn a_lost_replica_passes_the_load_on_and_the_last_failure_is_reported() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, _) = ready_client();
    client.set_link_rtt("s3", Some(Duration::from_millis(1)));
    client.set_link_rtt("s1", Some(Duration::from_millis(2)));
    client.set_link_rtt("s2", Some(Duration::from_millis(3)));
    let request = client.load(now, Oid(2)).expect("load");
    for node in ["s3", "s1", "s2"] {
        assert_eq!(next_load_target(&mut client).as_deref(), Some(node));
        client.peer_lost(now, node);
    }
    let loaded = loaded_event(&mut client);
    assert_eq!(
        loaded,
        Some(ClientEvent::Loaded {
            request,
            oid: Oid(2),
            result: LoadResult::Failed,
            from: None,
            failures: ["s3", "s1", "s2"]
                .map(|node| (node.to_owned(), ReadFailure::Lost))
                .to_vec(),
        })
    );
}

fn storing_client() -> (Client, Tid) {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, _) = ready_client();
    client.begin(now).expect("begin");
    let ttid = client.current_transaction().expect("begun");
    while client.poll_transmit().is_some() {}
    (client, ttid)
}

/// Stores `x` as object 4 in `client`'s transaction: the one fan-out it makes.
fn store_x(client: &mut Client, now: SystemTime) -> FanoutStore {
    client
        .store(now, Oid(4), Tid::ZERO, ObjectData::from(b"x".to_vec()))
        .expect("store");
    client.poll_fanout().expect("one fan-out")
}

/// A storage's answer that object 4 of `ttid` is stored.
fn stored_x(ttid: Tid) -> Message {
    Message::AnswerStore {
        ttid,
        generation: 0,
        answers: vec![(Oid(4), StoreResult::Stored)],
    }
}

#[test]
fn a_store_is_one_fanout_for_every_writable_replica() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, ttid) = storing_client();
    let data = ObjectData::from(b"x".to_vec());
    client
        .store(now, Oid(4), Tid::ZERO, data.clone())
        .expect("store");
    assert!(
        client.poll_transmit().is_none(),
        "no store goes out as a message"
    );
    let fanout = client.poll_fanout().expect("one fan-out");
    assert_eq!(fanout.replicas, ["s1", "s2", "s3"]);
    assert_eq!(
        fanout.message,
        Message::Store {
            ttid,
            generation: 0,
            oid: Oid(4),
            serial: Tid::ZERO,
            data,
            kind: StoreKind::Checked,
        }
    );
    assert!(client.poll_fanout().is_none());

    // A delivery that failed makes that storage failed for the transaction.
    client.fanout_failed(now, fanout.id, "s2");
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(events.contains(&ClientEvent::StorageFailed { node: "s2".into() }));
    // An unknown fan-out changes nothing.
    client.fanout_failed(now, fanout.id + 100, "s1");
    assert!(client.poll_event().is_none());
}

#[test]
fn one_answer_counts_every_store_it_answers_or_none_of_them() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, ttid) = storing_client();
    for oid in [Oid(4), Oid(5)] {
        client
            .store(now, oid, Tid::ZERO, ObjectData::from(b"x".to_vec()))
            .expect("store");
    }
    let answer = |oids: &[u64]| Message::AnswerStore {
        ttid,
        generation: 0,
        answers: oids
            .iter()
            .map(|oid| (Oid(*oid), StoreResult::Stored))
            .collect(),
    };
    // One answer too many (object 4 was stored once, 6 never), or none: refused whole.
    for wrong in [&[4, 6][..], &[4, 4, 5][..], &[][..]] {
        assert!(
            client.handle(now, "s1", answer(wrong)).is_err(),
            "{wrong:?}"
        );
    }
    for node in ["s1", "s2", "s3"] {
        client
            .handle(now, node, answer(&[4, 5]))
            .expect("both stores answered at once");
    }
    assert!(
        events(&mut client).contains(&ClientEvent::StoresAnswered {
            ttid,
            conflicts: Vec::new()
        }),
        "nothing of the refused answers counted, and each store of the others did"
    );
    assert!(
        client.handle(now, "s1", answer(&[4])).is_err(),
        "answered already"
    );
}

#[test]
fn a_store_being_delivered_has_no_deadline_then_the_storage_has_its_timeout() {
    let now = SystemTime::UNIX_EPOCH;
    let timeout = ClientConfig::default().storage_timeout;
    let (mut client, _) = storing_client();
    let fanout = store_x(&mut client, now);
    // A large object may take long to arrive: no storage fails while it travels.
    assert_eq!(client.poll_timeout(), None);
    let late = now + timeout * 3;
    client.handle_timeout(late);
    assert!(
        !std::iter::from_fn(|| client.poll_event())
            .any(|event| matches!(event, ClientEvent::StorageFailed { .. }))
    );
    // Delivered to s1: from now on s1 has the storage timeout to answer.
    client.fanout_delivered(late, fanout.id, "s1");
    assert_eq!(client.poll_timeout(), Some(late + timeout));
    client.handle_timeout(late + timeout);
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(events.contains(&ClientEvent::StorageFailed { node: "s1".into() }));
    assert!(!events.contains(&ClientEvent::StorageFailed { node: "s2".into() }));
}

#[test]
fn a_table_without_a_storage_stops_the_transaction_waiting_for_it() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, ttid) = storing_client();
    let fanout = store_x(&mut client, now);
    for node in ["s1", "s2"] {
        client.fanout_delivered(now, fanout.id, node);
        client.handle(now, node, stored_x(ttid)).expect("stored");
    }
    // s3 froze: its delivery neither ends nor fails, and its link has not told yet.
    assert_eq!(client.stores_answered(), None);
    // The master's link noticed first: s3 is out of date in the next table.
    let mut table = client.table().cloned().expect("a table");
    table.mark_out_of_date("s3").expect("s3 is in the table");
    client
        .handle(now, "master", order(Message::PartitionTable(table)))
        .expect("a newer table");
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(
        events.contains(&ClientEvent::StorageFailed { node: "s3".into() }),
        "{events:?}"
    );
    assert!(
        events.contains(&ClientEvent::StoresAnswered {
            ttid,
            conflicts: Vec::new()
        }),
        "the transaction goes on on s1 and s2: {events:?}"
    );
    assert_eq!(client.stores_answered(), Some(Vec::new()));
}

#[test]
fn a_storage_the_transaction_goes_on_without_is_told_to_abort_it() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, ttid) = storing_client();
    let fanout = store_x(&mut client, now);
    // s2 may be alive, holding the object's lock: it must not keep it until its idle
    // timeout while the transaction commits on s1 and s3.
    client.fanout_failed(now, fanout.id, "s2");
    let sent: Vec<(String, Message)> = std::iter::from_fn(|| client.poll_transmit())
        .map(|transmit| (transmit.to, transmit.message))
        .collect();
    assert_eq!(
        sent,
        [("s2".to_owned(), Message::AbortTransaction { ttid })]
    );
    // The store reached it after all: its answer gets another abort, and changes nothing.
    let late = stored_x(ttid);
    client.handle(now, "s2", late).expect("a late answer");
    let transmit = client.poll_transmit().expect("an abort goes back");
    assert_eq!(
        (transmit.to.as_str(), transmit.message),
        ("s2", Message::AbortTransaction { ttid })
    );
    // Its own abort of the transaction concerns it alone.
    client
        .handle(now, "s2", Message::Aborted { ttid })
        .expect("s2 gave up");
    assert_eq!(client.current_transaction(), Some(ttid));
    assert!(client.poll_transmit().is_none());
}

#[test]
fn a_late_store_answer_of_an_aborted_transaction_is_answered_with_an_abort() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, ttid) = storing_client();
    client
        .store(now, Oid(4), Tid::ZERO, ObjectData::from(b"x".to_vec()))
        .expect("store");
    client.abort().expect("abort");
    while client.poll_output().is_some() {}
    let late = stored_x(ttid);
    client
        .handle(now, "s3", late)
        .expect("a late answer is expected");
    let transmit = client.poll_transmit().expect("an abort goes back");
    assert_eq!(transmit.to, "s3");
    assert_eq!(transmit.message, Message::AbortTransaction { ttid });
}

/// The votes sent since the last look: (storage, generation, objects listed).
fn votes_sent(client: &mut Client) -> Vec<(String, u32, usize)> {
    std::iter::from_fn(|| client.poll_transmit())
        .filter_map(|transmit| match transmit.message {
            Message::Vote {
                generation, oids, ..
            } => Some((transmit.to, generation, oids.len())),
            _ => None,
        })
        .collect()
}

fn events(client: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| client.poll_event()).collect()
}

/// A storage's answer that the store of object 4 met revision 9.
fn store_conflicted(ttid: Tid) -> Message {
    Message::AnswerStore {
        ttid,
        generation: 0,
        answers: vec![(Oid(4), StoreResult::Conflict { current: Tid(9) })],
    }
}

/// A storage's answer to the vote: object 4's store met revision 9.
fn vote_conflicted(ttid: Tid) -> Message {
    Message::AnswerVote {
        ttid,
        result: VoteResult::Conflict {
            oid: Oid(4),
            expected: Tid::ZERO,
            current: Tid(9),
        },
    }
}

/// Object 4 conflicted at `node`: the store's answer, then the vote's.
fn conflict_at(client: &mut Client, now: SystemTime, node: &str, ttid: Tid) {
    client
        .handle(now, node, store_conflicted(ttid))
        .expect("store answered");
    client
        .handle(now, node, vote_conflicted(ttid))
        .expect("vote answered");
}

fn yes(ttid: Tid) -> Message {
    Message::AnswerVote {
        ttid,
        result: VoteResult::Yes,
    }
}

/// A transaction that stored object 4 and sent its votes, before any answer.
fn voting_client(now: SystemTime) -> (Client, Tid) {
    let (mut client, ttid) = storing_client();
    store_x(&mut client, now);
    client.vote(now, TransactionInfo::default()).expect("vote");
    (client, ttid)
}

#[test]
fn the_votes_go_out_with_the_stores_listing_them() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, ttid) = voting_client(now);
    let expected: Vec<(String, u32, usize)> = ["s1", "s2", "s3"]
        .iter()
        .map(|node| (node.to_string(), 0, 1))
        .collect();
    assert_eq!(
        votes_sent(&mut client),
        expected,
        "before any store's answer"
    );
    for node in ["s1", "s2", "s3"] {
        client.handle(now, node, stored_x(ttid)).expect("stored");
        client.handle(now, node, yes(ttid)).expect("voted");
    }
    assert!(events(&mut client).contains(&ClientEvent::Voted { ttid }));
}

#[test]
fn a_conflict_withdraws_the_vote_and_the_resolved_store_votes_again() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, ttid) = voting_client(now);
    votes_sent(&mut client);
    for node in ["s1", "s2", "s3"] {
        conflict_at(&mut client, now, node, ttid);
    }
    let conflict = Conflict {
        oid: Oid(4),
        serial: Tid::ZERO,
        current: Tid(9),
        kind: ConflictKind::Write,
    };
    assert!(events(&mut client).contains(&ClientEvent::VoteHeld {
        ttid,
        conflicts: vec![conflict],
    }));
    // Resolved on top of the committed revision: stored again, and voted again, each
    // vote covering both stores of the generation.
    client
        .store(now, Oid(4), Tid(9), ObjectData::from(b"y".to_vec()))
        .expect("store again");
    assert!(client.poll_fanout().is_some(), "no vote outstanding: sent");
    client.vote(now, TransactionInfo::default()).expect("vote");
    assert_eq!(votes_sent(&mut client).len(), 3);
    assert_eq!(client.resolved(), [Oid(4)]);
}

#[test]
fn a_resolved_store_waits_for_an_outstanding_vote_of_its_storage() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, ttid) = voting_client(now);
    for node in ["s1", "s2"] {
        conflict_at(&mut client, now, node, ttid);
    }
    client
        .handle(now, "s3", store_conflicted(ttid))
        .expect("store answered");
    events(&mut client);
    client
        .store(now, Oid(4), Tid(9), ObjectData::from(b"y".to_vec()))
        .expect("store again");
    // s3 is still writing or refusing its vote: a store now could meet it voted.
    let stores = |client: &mut Client| {
        std::iter::from_fn(|| client.poll_output())
            .filter(|output| matches!(output, Output::Store(_)))
            .count()
    };
    assert_eq!(stores(&mut client), 0, "held back");
    client
        .handle(now, "s3", vote_conflicted(ttid))
        .expect("vote answered");
    assert_eq!(stores(&mut client), 1, "sent once s3 did not vote");
}

#[test]
fn a_store_again_where_a_storage_voted_yes_starts_the_transaction_over() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, ttid) = voting_client(now);
    conflict_at(&mut client, now, "s1", ttid);
    // s2 and s3 do not check serials (catching up): they voted yes.
    for node in ["s2", "s3"] {
        client.handle(now, node, stored_x(ttid)).expect("stored");
        client.handle(now, node, yes(ttid)).expect("voted");
    }
    events(&mut client);
    client
        .store(now, Oid(4), Tid(9), ObjectData::from(b"y".to_vec()))
        .expect("the store call itself is fine");
    let reason = AbortReason::StoreAfterVote {
        node: "s2".into(),
        oid: Oid(4),
    };
    assert!(
        events(&mut client).contains(&ClientEvent::Aborted { ttid, reason }),
        "a voted storage takes no more stores"
    );
}

#[test]
fn a_restart_while_voting_stores_and_votes_again() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, ttid) = voting_client(now);
    votes_sent(&mut client);
    client
        .handle(
            now,
            "s1",
            Message::Restart {
                ttid,
                generation: 1,
            },
        )
        .expect("restart");
    let sent: Vec<Transmit> = std::iter::from_fn(|| client.poll_transmit()).collect();
    assert!(
        matches!(
            &sent[..],
            [
                Transmit { to: first, message: Message::Store { generation: 1, .. } },
                Transmit { to: second, message: Message::Vote { generation: 1, .. } },
            ] if first == "s1" && second == "s1"
        ),
        "{sent:?}"
    );
    assert!(
        !events(&mut client)
            .iter()
            .any(|event| matches!(event, ClientEvent::Aborted { .. })),
        "not a failure: the primary breaks a cycle of waits if one closes"
    );
}

#[test]
fn an_older_transaction_waiting_aborts_one_that_waits_somewhere_before_its_votes_are_in() {
    let now = SystemTime::UNIX_EPOCH;
    let reason = AbortReason::Wounded { node: "s1".into() };
    let older_waits = |client: &mut Client, ttid| {
        let told = client.handle(now, "s1", Message::OlderWaits { ttid });
        told.expect("an older one waits at s1");
    };
    let waits = |client: &mut Client, ttid| {
        let told = client.handle(now, "s2", Message::Waits { ttid });
        told.expect("it waits at s2");
    };

    // Told that an older one waits, then that it waits itself.
    let (mut client, ttid) = voting_client(now);
    client.handle(now, "s1", stored_x(ttid)).expect("stored");
    client.handle(now, "s1", yes(ttid)).expect("voted");
    events(&mut client);
    older_waits(&mut client, ttid);
    assert!(
        events(&mut client).is_empty(),
        "s2 and s3 have not voted, but it waits nowhere: their votes are on their way"
    );
    waits(&mut client, ttid);
    assert!(
        events(&mut client).contains(&ClientEvent::Aborted {
            ttid,
            reason: reason.clone()
        }),
        "it waits at s2, perhaps for the older one: a cycle could close"
    );

    // The same told the other way round.
    let (mut client, ttid) = voting_client(now);
    waits(&mut client, ttid);
    client.handle(now, "s1", stored_x(ttid)).expect("stored");
    client.handle(now, "s1", yes(ttid)).expect("voted");
    older_waits(&mut client, ttid);
    assert!(events(&mut client).contains(&ClientEvent::Aborted {
        ttid,
        reason: reason.clone()
    }));

    // A wait that ended (its storage answered the vote) is no reason.
    let (mut client, ttid) = voting_client(now);
    waits(&mut client, ttid);
    for node in ["s1", "s2"] {
        client.handle(now, node, stored_x(ttid)).expect("stored");
        client.handle(now, node, yes(ttid)).expect("voted");
    }
    events(&mut client);
    older_waits(&mut client, ttid);
    assert!(events(&mut client).is_empty(), "s2 voted: it waits nowhere");

    // Voted everywhere, it waits for nothing and goes on.
    let (mut client, ttid) = voting_client(now);
    for node in ["s1", "s2", "s3"] {
        client.handle(now, node, stored_x(ttid)).expect("stored");
        client.handle(now, node, yes(ttid)).expect("voted");
    }
    events(&mut client);
    older_waits(&mut client, ttid);
    assert!(
        events(&mut client).is_empty(),
        "voted everywhere: it waits for nothing"
    );
    client
        .finish()
        .expect("the caller was told it voted: it finishes");
}

#[test]
fn a_vote_sent_with_its_stores_has_its_deadline_from_their_last_answer() {
    let now = SystemTime::UNIX_EPOCH;
    let (mut client, ttid) = storing_client();
    let fanout = store_x(&mut client, now);
    for node in ["s1", "s2", "s3"] {
        client.fanout_delivered(now, fanout.id, node);
    }
    client.vote(now, TransactionInfo::default()).expect("vote");
    events(&mut client);
    // The stores may wait for locks: the vote's short deadline does not run yet.
    let vote_timeout = client.config().vote_timeout;
    let later = now + vote_timeout * 2;
    client.handle_timeout(later);
    assert!(
        !events(&mut client)
            .iter()
            .any(|event| matches!(event, ClientEvent::StorageFailed { .. })),
        "no storage failed while its stores are unanswered"
    );
    // Stored at s1: from now on its vote has the vote's deadline.
    client.handle(later, "s1", stored_x(ttid)).expect("stored");
    client.handle_timeout(later + vote_timeout * 2);
    assert!(
        events(&mut client).contains(&ClientEvent::StorageFailed { node: "s1".into() }),
        "s1 stored and then did not vote in time"
    );
}
