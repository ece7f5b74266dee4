//! The client API a ZODB storage builds on, against an in-process cluster on real QUIC links
//! (a master and three storages on redb, P = 12, R = 2): TimeStamp TIDs, new oids, past
//! revisions, `last_transaction` and `sync`, a handle shared by tasks (reads while a
//! transaction votes, one transaction at a time), conflicts reported and resolved, checks of
//! the current serial, caller-chosen TIDs, and bad calls answered with typed errors.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use replicast_node::client::{AbortReason, ClientConfig, Conflict, ConflictKind};
use replicast_node::driver::{ClientError, ClientHandle, Invalidation};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::protocol::{LoadBefore, ProtocolError, TransactionOutcome};
use replicast_testkit::zodb::{cluster, commit, connect, data, info, relaxed, run};

#[test]
fn tids_are_timestamps_and_new_oids_skip_the_root() {
    run(async {
        let cluster = cluster().await;
        let client = connect(&cluster, "client-zodb").await;
        assert_eq!(client.last_transaction(), Tid::ZERO, "an empty cluster");
        let oids = client.new_oids(5).await.expect("new oids");
        assert!(!oids.is_empty());
        assert!(!oids.contains(&Oid(0)), "oid 0 is ZODB's root: {oids:?}");

        let before = SystemTime::now();
        let tid = commit(&client, &[(Oid(0), Tid::ZERO, data("root"))]).await;
        let after = SystemTime::now();
        // The TID is the commit time as a ZODB TimeStamp.
        assert!(tid >= Tid::from_system_time(before) && tid <= Tid::from_system_time(after));
        let parts = tid.parts();
        assert!(
            parts.year >= 2024 && (1..=12).contains(&parts.month),
            "{tid}"
        );
        assert!(client.last_transaction() >= tid);
        let (serial, root) = client.load(Oid(0)).await.expect("load").expect("root");
        assert_eq!((serial, root), (tid, data("root")));

        // Later TIDs are greater, whatever the clock does.
        let second = commit(&client, &[(Oid(0), tid, data("root 2"))]).await;
        assert!(second > tid);
    });
}

#[test]
fn load_before_and_load_serial_read_past_revisions() {
    run(async {
        let cluster = cluster().await;
        let client = connect(&cluster, "client-zodb").await;
        let oid = client.new_oids(1).await.expect("oid")[0];
        let first = commit(&client, &[(oid, Tid::ZERO, data("v1"))]).await;
        let second = commit(&client, &[(oid, first, data("v2"))]).await;

        assert_eq!(
            client.load_before(oid, second).await.expect("loadBefore"),
            LoadBefore::Found {
                data: data("v1"),
                serial: first,
                next: Some(second),
            }
        );
        assert_eq!(
            client.load_before(oid, Tid::MAX).await.expect("loadBefore"),
            LoadBefore::Found {
                data: data("v2"),
                serial: second,
                next: None,
            }
        );
        assert_eq!(
            client.load_before(oid, first).await.expect("loadBefore"),
            LoadBefore::NoRevision,
            "the object exists, but not before its first revision"
        );
        assert_eq!(
            client
                .load_before(Oid(999_999), Tid::MAX)
                .await
                .expect("loadBefore"),
            LoadBefore::Missing
        );
        assert_eq!(
            client.load_serial(oid, first).await.expect("loadSerial"),
            Some(data("v1"))
        );
        assert_eq!(
            client
                .load_serial(oid, Tid(first.0 + 1))
                .await
                .expect("loadSerial"),
            None
        );
    });
}

#[test]
fn reads_go_on_while_a_transaction_votes_and_begins_wait_their_turn() {
    run(async {
        let cluster = Arc::new(cluster().await);
        let client = connect(&cluster, "client-zodb").await;
        let all = client.new_oids(80).await.expect("oids");
        let initial: Vec<(Oid, Tid, ObjectData)> = all
            .iter()
            .map(|oid| (*oid, Tid::ZERO, data(&format!("initial {}", oid.0))))
            .collect();
        let base = commit(&client, &initial).await;
        // The transaction writes the first half; the loads read the other half. (A load of an
        // object the transaction wrote waits for its outcome once a storage voted, and the
        // vote goes out with the stores: see the storage's `in_doubt.rs`.)
        let (oids, others) = all.split_at(40);
        let (oids, others) = (oids.to_vec(), others.to_vec());

        // A transaction with many stores, so that its vote waits for their answers.
        let ttid = client.begin().await.expect("begin");
        for oid in &oids {
            let big = ObjectData::from(vec![oid.0 as u8; 32 << 10]);
            client.store(*oid, base, big).await.expect("store");
        }
        let voting = {
            let client = client.clone();
            tokio::spawn(async move { client.vote(info("big")).await })
        };
        // Meanwhile other tasks load through clones of the same handle: each gets its own
        // answer, the committed state (the transaction has not finished).
        let mut loads = Vec::new();
        for oid in others.clone() {
            let client = client.clone();
            loads.push(tokio::spawn(async move {
                let loaded = client.load(oid).await.expect("load during the vote");
                let before = client.load_before(oid, Tid::MAX).await.expect("loadBefore");
                (oid, loaded, before)
            }));
        }
        // A second transaction waits for the first to end.
        let second = {
            let client = client.clone();
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let ttid2 = client.begin().await.expect("second begin");
                let first_outcome = cluster
                    .master
                    .call(move |master, _| master.outcome(ttid))
                    .await
                    .expect("master");
                client.abort().await.expect("abort the second");
                (ttid2, first_outcome)
            })
        };
        for load in loads {
            let (oid, loaded, before) = load.await.expect("load task");
            let expected = data(&format!("initial {}", oid.0));
            assert_eq!(loaded, Some((base, expected.clone())));
            assert_eq!(
                before,
                LoadBefore::Found {
                    data: expected,
                    serial: base,
                    next: None
                }
            );
        }
        let resolved = voting.await.expect("vote task").expect("vote");
        assert!(resolved.is_empty());
        let tid = client.finish().await.expect("finish");
        let (ttid2, first_outcome) = second.await.expect("second task");
        assert!(ttid2 != ttid);
        assert_eq!(
            first_outcome,
            Some(TransactionOutcome::Committed(tid)),
            "the second transaction began only after the first committed"
        );
        let (serial, loaded) = client.load(oids[0]).await.expect("load").expect("exists");
        assert_eq!((serial, loaded.as_bytes().len()), (tid, 32 << 10));
    });
}

/// An invalidation as the listener heard it: its TID, its objects, and `last_transaction`
/// while the listener ran.
type Heard = (Tid, Vec<Oid>, Tid);

#[test]
fn other_clients_commits_reach_the_listener_before_last_transaction_moves() {
    run(async {
        let cluster = cluster().await;
        let alice = connect(&cluster, "client-alice").await;
        let bob = connect(&cluster, "client-bob").await;
        let heard: Arc<Mutex<Vec<Heard>>> = Arc::default();
        {
            let heard = heard.clone();
            let bob_handle = bob.clone();
            bob.set_invalidation_listener(Some(Box::new(move |invalidation| {
                if let Invalidation::Objects { tid, oids } = invalidation {
                    // What bob's last_transaction says while the listener runs.
                    let last = bob_handle.last_transaction();
                    heard.lock().expect("lock").push((*tid, oids.clone(), last));
                }
            })));
        }
        let oids = alice.new_oids(3).await.expect("oids");
        let mut tids = Vec::new();
        let mut serial = Tid::ZERO;
        for round in 0..5 {
            let writes: Vec<(Oid, Tid, ObjectData)> = oids
                .iter()
                .map(|oid| (*oid, serial, data(&format!("round {round}"))))
                .collect();
            serial = commit(&alice, &writes).await;
            tids.push(serial);
        }
        let synced = bob.sync().await.expect("sync");
        assert_eq!(synced, serial);
        assert!(bob.last_transaction() >= serial);
        let heard = heard.lock().expect("lock").clone();
        assert_eq!(
            heard.iter().map(|(tid, _, _)| *tid).collect::<Vec<_>>(),
            tids,
            "every commit, in TID order"
        );
        for (tid, heard_oids, last_during) in &heard {
            assert_eq!(heard_oids, &oids);
            assert!(
                last_during < tid,
                "last_transaction moved to {last_during} before {tid} was delivered"
            );
        }
        assert_eq!(
            alice.invalidations(),
            0,
            "a client is not told of its own commits"
        );
        assert_eq!(bob.invalidations(), 5);
    });
}

#[test]
fn bad_calls_get_typed_errors() {
    run(async {
        let cluster = cluster().await;
        let config = ClientConfig {
            max_object_size: 1024,
            ..relaxed()
        };
        let client = cluster
            .client_with("client-zodb", config)
            .await
            .expect("client connects");
        let outside = client.store(Oid(1), Tid::ZERO, data("x")).await;
        assert!(
            matches!(
                outside,
                Err(ClientError::Protocol(ProtocolError::InvalidCall { .. }))
            ),
            "{outside:?}"
        );
        assert!(matches!(
            client.vote(info("none")).await,
            Err(ClientError::Protocol(ProtocolError::InvalidCall { .. }))
        ));
        assert!(matches!(
            client.finish().await,
            Err(ClientError::Protocol(ProtocolError::InvalidCall { .. }))
        ));
        client.abort().await.expect("aborting nothing is harmless");

        client.begin().await.expect("begin");
        let big = ObjectData::from(vec![0; 1025]);
        let too_large = client.store(Oid(1), Tid::ZERO, big).await;
        assert!(
            matches!(
                too_large,
                Err(ClientError::TooLarge {
                    oid: Oid(1),
                    size: 1025,
                    max: 1024
                })
            ),
            "{too_large:?}"
        );
        // The transaction goes on.
        client
            .store(Oid(1), Tid::ZERO, data("small"))
            .await
            .expect("store");
        client.vote(info("small")).await.expect("vote");
        let tid = client.finish().await.expect("finish");
        assert_eq!(
            client.load(Oid(1)).await.expect("load"),
            Some((tid, data("small")))
        );
    });
}

#[test]
fn pipelined_stores_take_effect_in_order_and_report_failures_when_waited_for() {
    run(async {
        let cluster = cluster().await;
        let config = ClientConfig {
            max_object_size: 1024,
            ..relaxed()
        };
        let client = cluster
            .client_with("client-zodb", config)
            .await
            .expect("client connects");
        // Outside a transaction the store is refused when the stores are waited for.
        client
            .store_pipelined(Oid(1), Tid::ZERO, data("x"))
            .expect("handed over");
        client
            .begin()
            .await
            .expect("begin (an earlier failure is not this one's)");
        // Too large: refused at once, the transaction goes on.
        let big = ObjectData::from(vec![0; 1025]);
        assert!(matches!(
            client.store_pipelined(Oid(1), Tid::ZERO, big),
            Err(ClientError::TooLarge {
                oid: Oid(1),
                size: 1025,
                max: 1024
            })
        ));
        let oids = client.new_oids(200).await.expect("oids");
        for (index, oid) in oids.iter().enumerate() {
            client
                .store_pipelined(*oid, Tid::ZERO, data(&format!("first {index}")))
                .expect("store");
        }
        // A second store of an object replaces the first, in order.
        client
            .store_pipelined(oids[0], Tid::ZERO, data("second"))
            .expect("store again");
        assert_eq!(client.wait_stores().await.expect("answers"), Vec::new());
        client.vote(info("pipelined")).await.expect("vote");
        let tid = client.finish().await.expect("finish");
        assert_eq!(
            client.load(oids[0]).await.expect("load"),
            Some((tid, data("second")))
        );
        assert_eq!(
            client.load(oids[199]).await.expect("load"),
            Some((tid, data("first 199")))
        );

        // A store the client refuses when it takes it (no transaction: the one above ended)
        // comes back from the next call that waits for the stores.
        client
            .store_pipelined(Oid(1), Tid::ZERO, data("late"))
            .expect("handed over");
        let late = client.wait_stores().await;
        assert!(
            matches!(
                late,
                Err(ClientError::Protocol(ProtocolError::InvalidCall {
                    call: "store",
                    ..
                }))
            ),
            "the store's own failure, not wait_stores': {late:?}"
        );
    });
}

#[test]
fn a_conflict_is_reported_and_resolved_by_storing_again() {
    run(async {
        let cluster = cluster().await;
        let alice = connect(&cluster, "client-alice").await;
        let bob = connect(&cluster, "client-bob").await;
        let oid = alice.new_oids(1).await.expect("oid")[0];
        let base = commit(&alice, &[(oid, Tid::ZERO, data("0"))]).await;

        // Bob read the object at `base`; Alice commits it meanwhile.
        bob.begin().await.expect("begin");
        let alices = commit(&alice, &[(oid, base, data("alice"))]).await;
        bob.store(oid, base, data("bob")).await.expect("store");
        let conflict = Conflict {
            oid,
            serial: base,
            current: alices,
            kind: ConflictKind::Write,
        };
        assert_eq!(bob.wait_stores().await.expect("answers"), vec![conflict]);
        match bob.vote(info("bob")).await {
            Err(ClientError::Conflicts(conflicts)) => assert_eq!(conflicts, vec![conflict]),
            other => panic!("the vote must report the conflict: {other:?}"),
        }
        // Resolution: the merged state, on top of the committed serial; the transaction
        // went on.
        bob.store(oid, alices, data("alice+bob"))
            .await
            .expect("store again");
        assert_eq!(bob.wait_stores().await.expect("answers"), Vec::new());
        assert_eq!(bob.vote(info("bob")).await.expect("vote"), vec![oid]);
        let bobs = bob.finish().await.expect("finish");
        assert!(bobs > alices);
        assert_eq!(
            alice.load(oid).await.expect("load"),
            Some((bobs, data("alice+bob")))
        );
        assert_eq!(
            alice.history(oid, 10).await.expect("history").len(),
            3,
            "base, alice, bob"
        );
    });
}

#[test]
fn a_stale_read_is_a_read_conflict_and_a_checked_object_stays_locked() {
    run(async {
        let cluster = cluster().await;
        let alice = connect(&cluster, "client-alice").await;
        let bob = connect(&cluster, "client-bob").await;
        let oids = alice.new_oids(2).await.expect("oids");
        let (read, written) = (oids[0], oids[1]);
        let base = commit(
            &alice,
            &[
                (read, Tid::ZERO, data("r0")),
                (written, Tid::ZERO, data("w0")),
            ],
        )
        .await;

        // Bob read `read` at `base`, then Alice changed it: his check fails, unresolvable.
        bob.begin().await.expect("begin");
        let changed = commit(&alice, &[(read, base, data("r1"))]).await;
        bob.check_current_serial(read, base).await.expect("check");
        bob.store(written, base, data("w1")).await.expect("store");
        let conflicts = bob.wait_stores().await.expect("answers");
        assert_eq!(
            conflicts,
            vec![Conflict {
                oid: read,
                serial: base,
                current: changed,
                kind: ConflictKind::ReadCurrent,
            }]
        );
        bob.abort().await.expect("abort");

        // A check of the current serial locks the object: a younger writer waits for the
        // checking transaction to end.
        let bobs_ttid = bob.begin().await.expect("begin");
        bob.check_current_serial(read, changed)
            .await
            .expect("check");
        assert_eq!(bob.wait_stores().await.expect("answers"), Vec::new());
        // Younger: temporary TIDs are the clients' own clocks, corrected by the primary's
        // within about a one-way delay, so a begin a moment later is not younger for sure;
        // each begin is at least a step after the last, so a few aborted begins make it so.
        let mut younger = false;
        for _ in 0..10_000 {
            if alice.begin().await.expect("alice begins") > bobs_ttid {
                younger = true;
                break;
            }
            alice.abort().await.expect("abort an empty transaction");
        }
        assert!(younger, "alice's temporary TIDs never passed bob's");
        alice
            .store(read, changed, data("r2"))
            .await
            .expect("alice stores the checked object");
        let alice_votes = {
            let alice = alice.clone();
            tokio::spawn(async move {
                alice.vote(info("alice")).await.expect("alice votes");
                alice.finish().await.expect("alice finishes")
            })
        };
        bob.store(written, base, data("w1")).await.expect("store");
        bob.vote(info("bob")).await.expect("bob votes");
        let bobs = bob.finish().await.expect("bob finishes");
        let alices = alice_votes.await.expect("alice's task");
        assert!(alices > bobs, "alice's store waited for bob's lock");
        assert!(bobs_ttid < alices);
        assert_eq!(
            bob.load(read).await.expect("load"),
            Some((alices, data("r2")))
        );
        // A check writes nothing: the object's history has no revision of bob's.
        let history = bob.history(read, 10).await.expect("history");
        assert!(history.iter().all(|entry| entry.tid != bobs), "{history:?}");
    });
}

#[test]
fn a_transaction_commits_at_the_tid_it_began_with_or_not_at_all() {
    run(async {
        let cluster = cluster().await;
        let restorer = connect(&cluster, "client-restorer").await;
        let other = connect(&cluster, "client-other").await;
        let oid = restorer.new_oids(1).await.expect("oid")[0];
        let first = commit(&restorer, &[(oid, Tid::ZERO, data("v1"))]).await;

        // At a chosen TID after the last one: exactly there (a restore, no serial check).
        let chosen = Tid(first.0 + 1_000);
        restorer.begin_at(Some(chosen)).await.expect("begin at");
        restorer
            .restore(oid, data("restored"))
            .await
            .expect("restore");
        restorer.vote(info("restore")).await.expect("vote");
        assert_eq!(restorer.finish().await.expect("finish"), chosen);
        assert_eq!(
            other.load(oid).await.expect("load"),
            Some((chosen, data("restored")))
        );
        // Later commits come after it.
        let later = commit(&other, &[(oid, chosen, data("v3"))]).await;
        assert!(later > chosen);

        // Not after the last commit: refused at once, and nothing is in progress.
        match restorer.begin_at(Some(chosen)).await {
            Err(ClientError::TidRefused { tid, last }) => {
                assert_eq!((tid, last), (chosen, later));
            }
            other => panic!("a TID in the past must be refused: {other:?}"),
        }

        // Overtaken between begin and finish: the finish is refused, the transaction aborted.
        let next = later.later().expect("a later TID");
        restorer.begin_at(Some(next)).await.expect("begin at");
        restorer.restore(oid, data("late")).await.expect("restore");
        restorer.vote(info("late")).await.expect("vote");
        let overtaking = commit(&other, &[(Oid(oid.0 + 1), Tid::ZERO, data("x"))]).await;
        assert!(overtaking > next);
        match restorer.finish().await {
            Err(ClientError::Aborted(AbortReason::FinishRefused(
                TransactionOutcome::TidNotAfterLast { last },
            ))) => assert_eq!(last, overtaking),
            other => panic!("the overtaken finish must be refused: {other:?}"),
        }
        assert_eq!(
            other.load(oid).await.expect("load"),
            Some((later, data("v3"))),
            "nothing of the refused transaction is visible"
        );
        // The handle is free for the next transaction.
        let last = commit(&restorer, &[(oid, later, data("v4"))]).await;
        assert!(last > overtaking);
    });
}

#[test]
fn an_undo_writes_an_earlier_revision_again() {
    run(async {
        let cluster = cluster().await;
        let client = connect(&cluster, "client-zodb").await;
        let oids = client.new_oids(2).await.expect("oids");
        let (kept, created) = (oids[0], oids[1]);
        let first = commit(&client, &[(kept, Tid::ZERO, data("v1"))]).await;
        let second = commit(
            &client,
            &[(kept, first, data("v2")), (created, Tid::ZERO, data("new"))],
        )
        .await;

        // Undo `second`: `kept` back to `first`, `created` deleted.
        client.begin().await.expect("begin");
        client
            .store_undo(kept, second, Some(first))
            .await
            .expect("undo kept");
        client
            .store_undo(created, second, None)
            .await
            .expect("undo created");
        client.vote(info("undo")).await.expect("vote");
        let undo = client.finish().await.expect("finish");
        assert_eq!(
            client.load_before(kept, Tid::MAX).await.expect("load"),
            LoadBefore::Found {
                data: data("v1"),
                serial: undo,
                next: None
            }
        );
        assert_eq!(
            client.load_serial(created, undo).await.expect("loadSerial"),
            Some(ObjectData::Deleted)
        );
        // An undo on top of a stale serial is a conflict like any store.
        client.begin().await.expect("begin");
        client
            .store_undo(kept, second, Some(first))
            .await
            .expect("undo again");
        let conflicts = client.wait_stores().await.expect("answers");
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].current, undo);
        client.abort().await.expect("abort");
    });
}

#[test]
fn the_iterator_is_a_snapshot_while_commits_go_on() {
    run(async {
        let cluster = cluster().await;
        let client = connect(&cluster, "client-zodb").await;
        let other = connect(&cluster, "client-other").await;
        // Transactions touching many partitions (P = 12), one of them larger than a page.
        let oids = client.new_oids(30).await.expect("oids");
        let mut committed = Vec::new();
        let mut serials: std::collections::BTreeMap<Oid, Tid> =
            oids.iter().map(|oid| (*oid, Tid::ZERO)).collect();
        for round in 0..6usize {
            let size = if round == 3 { 300 << 10 } else { 16 };
            let writes: Vec<(Oid, Tid, ObjectData)> = oids
                .iter()
                .skip(round)
                .step_by(2)
                .map(|oid| {
                    (
                        *oid,
                        serials[oid],
                        ObjectData::from(vec![round as u8; size]),
                    )
                })
                .collect();
            let tid = commit(&client, &writes).await;
            for (oid, _, _) in &writes {
                serials.insert(*oid, tid);
            }
            committed.push((tid, writes));
        }
        let first = committed[0].0;
        let mut iterator = client.iterator(first, None);
        assert_eq!(iterator.stop(), committed[5].0);
        // Commits go on while the iteration runs.
        let writer = {
            let other = other.clone();
            let oids = oids.clone();
            tokio::spawn(async move {
                let mut serial = serials_of(&other, &oids).await;
                for round in 0..4u8 {
                    let writes: Vec<(Oid, Tid, ObjectData)> = oids
                        .iter()
                        .map(|oid| (*oid, serial[oid], ObjectData::from(vec![100 + round; 8])))
                        .collect();
                    let tid = commit(&other, &writes).await;
                    for oid in &oids {
                        serial.insert(*oid, tid);
                    }
                }
            })
        };
        let mut seen = Vec::new();
        for _ in 0..100 {
            let Some(txn) = iterator.next().await.expect("next transaction") else {
                break;
            };
            seen.push(txn);
        }
        writer.await.expect("writer");
        assert_eq!(
            seen.len(),
            committed.len(),
            "exactly the snapshot's transactions"
        );
        for (txn, (tid, writes)) in seen.iter().zip(&committed) {
            assert_eq!(txn.tid, *tid);
            assert_eq!(txn.info, info("commit"));
            let mut expected: Vec<(Oid, ObjectData)> = writes
                .iter()
                .map(|(oid, _, data)| (*oid, data.clone()))
                .collect();
            expected.sort_by_key(|(oid, _)| *oid);
            let got: Vec<(Oid, ObjectData)> = txn
                .records
                .iter()
                .map(|record| (record.oid, record.data.clone()))
                .collect();
            assert_eq!(got, expected, "transaction {tid} whole, in OID order");
        }
        // A range in the middle.
        let mut middle = client.iterator(committed[2].0, Some(committed[3].0));
        let mut tids = Vec::new();
        while let Some(txn) = middle.next().await.expect("next") {
            tids.push(txn.tid);
        }
        assert_eq!(tids, [committed[2].0, committed[3].0]);
    });
}

/// The last serial of each of `oids`.
async fn serials_of(client: &ClientHandle, oids: &[Oid]) -> std::collections::BTreeMap<Oid, Tid> {
    let mut serials = std::collections::BTreeMap::new();
    for oid in oids {
        let (serial, _) = client.load(*oid).await.expect("load").expect("exists");
        serials.insert(*oid, serial);
    }
    serials
}

#[test]
fn undo_log_undo_info_and_an_undo_through_the_handle() {
    run(async {
        let cluster = cluster().await;
        let client = connect(&cluster, "client-zodb").await;
        let oids = client.new_oids(12).await.expect("oids");
        let mut tids = Vec::new();
        let mut serial = Tid::ZERO;
        for round in 0..5 {
            let writes: Vec<(Oid, Tid, ObjectData)> = oids
                .iter()
                .map(|oid| (*oid, serial, data(&format!("{round}"))))
                .collect();
            client.begin().await.expect("begin");
            for (oid, serial, data) in &writes {
                client
                    .store(*oid, *serial, data.clone())
                    .await
                    .expect("store");
            }
            client
                .vote(info(&format!("round {round}")))
                .await
                .expect("vote");
            serial = client.finish().await.expect("finish");
            tids.push(serial);
        }
        let log = client.undo_log(Tid::MAX, 3).await.expect("undo log");
        let logged: Vec<Tid> = log.iter().map(|summary| summary.tid).collect();
        assert_eq!(logged, [tids[4], tids[3], tids[2]]);
        assert_eq!(log[0].info.description, b"round 4");
        let next = client.undo_log(tids[2], 3).await.expect("undo log");
        let logged: Vec<Tid> = next.iter().map(|summary| summary.tid).collect();
        assert_eq!(logged, [tids[1], tids[0]]);

        // Undo the last round: every object back to round 3.
        let records = client
            .undo_info(tids[4])
            .await
            .expect("undo info")
            .expect("a transaction");
        assert_eq!(records.len(), oids.len());
        client.begin().await.expect("begin");
        for record in &records {
            assert_eq!((record.current, record.before), (tids[4], Some(tids[3])));
            client
                .store_undo(record.oid, record.current, record.before)
                .await
                .expect("undo store");
        }
        client.vote(info("undo")).await.expect("vote");
        let undo = client.finish().await.expect("finish");
        for oid in &oids {
            assert_eq!(
                client.load(*oid).await.expect("load"),
                Some((undo, data("3")))
            );
        }
        let mut iterator = client.iterator(undo, None);
        let txn = iterator.next().await.expect("next").expect("the undo");
        assert!(
            txn.records
                .iter()
                .all(|record| record.data_txn == Some(tids[3]))
        );
        assert_eq!(
            client
                .undo_info(Tid(tids[4].0 + 1))
                .await
                .expect("undo info"),
            None
        );
        let size = client.size().await.expect("size");
        assert_eq!(size.objects, oids.len() as u64);
        assert!(size.bytes >= 5 * oids.len() as u64);
    });
}

#[test]
fn pack_and_garbage_collection_through_the_handle() {
    run(async {
        let cluster = cluster().await;
        let client = connect(&cluster, "client-zodb").await;
        let oids = client.new_oids(3).await.expect("oids");
        let (kept, dropped) = (oids[0], oids[1]);
        let first = commit(
            &client,
            &[
                (kept, Tid::ZERO, data("k1")),
                (dropped, Tid::ZERO, data("d1")),
            ],
        )
        .await;
        let second = commit(&client, &[(kept, first, data("k2"))]).await;
        let third = commit(&client, &[(kept, second, data("k3"))]).await;

        let report = client.pack(second).await.expect("pack");
        assert_eq!(report.packed.len(), 3, "{report:?}");
        assert!(report.failed.is_empty());
        assert_eq!(report.removed, 2, "k1 on its two replicas");
        assert_eq!(client.load_serial(kept, first).await.expect("load"), None);
        assert_eq!(
            client.load_serial(kept, second).await.expect("load"),
            Some(data("k2")),
            "current at the pack TID"
        );
        let log: Vec<Tid> = client
            .undo_log(Tid::MAX, 10)
            .await
            .expect("log")
            .iter()
            .map(|summary| summary.tid)
            .collect();
        assert_eq!(log, [third], "the undo log stops at the pack");

        // Garbage collection: the application finds `dropped` unreachable at the pack TID.
        let mut scan = client.scan_objects(second);
        let mut current = Vec::new();
        while let Some(revision) = scan.next().await.expect("scan") {
            current.push((revision.oid, revision.serial));
        }
        current.sort();
        assert_eq!(current, [(kept, second), (dropped, first)]);
        let report = client
            .collect(second, vec![dropped])
            .await
            .expect("collect");
        assert_eq!(report.removed, 2, "d1 on its two replicas");
        assert_eq!(
            client.load_before(dropped, Tid::MAX).await.expect("load"),
            LoadBefore::Missing
        );
        assert_eq!(client.size().await.expect("size").objects, 1);
    });
}
