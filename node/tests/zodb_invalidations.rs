//! Invalidations as a ZODB application gets them, against an in-process cluster on real QUIC
//! links: every other client's commits in TID order, `finish` returning only after earlier
//! invalidations reached the application, and a lost link to the master reported as "drop
//! everything" before invalidations flow again.

use std::sync::{Arc, Mutex};

use replicast_node::driver::{ClientHandle, Invalidation};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_testkit::cluster::{Cluster, WAIT};
use replicast_testkit::zodb::{cluster, commit, connect, data, run};

/// What a listener heard, in order.
type Heard = Arc<Mutex<Vec<Invalidation>>>;

/// Records every invalidation `client` gets.
fn listen(client: &ClientHandle) -> Heard {
    let heard: Heard = Arc::default();
    let recorded = heard.clone();
    client.set_invalidation_listener(Some(Box::new(move |invalidation| {
        recorded.lock().expect("lock").push(invalidation.clone());
    })));
    heard
}

/// The TIDs of the object invalidations heard.
fn tids(heard: &Heard) -> Vec<Tid> {
    heard
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|invalidation| match invalidation {
            Invalidation::Objects { tid, .. } => Some(*tid),
            Invalidation::Everything { .. } => None,
        })
        .collect()
}

/// Commits `rounds` transactions writing `oid` (which only this client writes); their TIDs.
async fn write_rounds(client: ClientHandle, oid: Oid, rounds: usize) -> Vec<Tid> {
    let mut serial = Tid::ZERO;
    let mut tids = Vec::new();
    for round in 0..rounds {
        serial = commit(&client, &[(oid, serial, data(&format!("{round}")))]).await;
        tids.push(serial);
    }
    tids
}

#[test]
fn every_other_clients_commits_arrive_in_tid_order() {
    run(async {
        let cluster = cluster().await;
        let names = ["client-a", "client-b", "client-c"];
        let mut clients = Vec::new();
        for name in names {
            clients.push(connect(&cluster, name).await);
        }
        let heard: Vec<Heard> = clients.iter().map(listen).collect();
        let oids = clients[0].new_oids(3).await.expect("oids");
        // The three commit at once, each its own object.
        let mut writers = Vec::new();
        for (client, oid) in clients.iter().zip(&oids) {
            writers.push(tokio::spawn(write_rounds(client.clone(), *oid, 8)));
        }
        let mut own = Vec::new();
        for writer in writers {
            own.push(writer.await.expect("writer"));
        }
        for (index, client) in clients.iter().enumerate() {
            let synced = client.sync().await.expect("sync");
            assert!(client.last_transaction() >= synced);
            let mut expected: Vec<Tid> = own
                .iter()
                .enumerate()
                .filter(|(writer, _)| *writer != index)
                .flat_map(|(_, tids)| tids.iter().copied())
                .collect();
            expected.sort();
            let got = tids(&heard[index]);
            assert_eq!(
                got, expected,
                "{}: every other client's commit, in TID order, and none of its own",
                names[index]
            );
            for invalidation in heard[index].lock().expect("lock").iter() {
                if let Invalidation::Objects { tid, oids: written } = invalidation {
                    let writer = own.iter().position(|tids| tids.contains(tid));
                    let writer = writer.expect("a commit of a client");
                    assert_eq!(written, &vec![oids[writer]]);
                }
            }
        }
    });
}

#[test]
fn finish_returns_after_earlier_invalidations_reached_the_application() {
    run(async {
        let cluster = Arc::new(cluster().await);
        let alice = connect(&cluster, "client-alice").await;
        let bob = connect(&cluster, "client-bob").await;
        let oids = alice.new_oids(2).await.expect("oids");
        // Bob's application takes its time with the first invalidation.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(released);
        let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
        {
            let order = order.clone();
            bob.set_invalidation_listener(Some(Box::new(move |_| {
                let _ = released
                    .lock()
                    .expect("lock")
                    .recv_timeout(std::time::Duration::from_secs(60));
                order.lock().expect("lock").push("invalidation delivered");
            })));
        }
        let alices = commit(&alice, &[(oids[0], Tid::ZERO, data("alice"))]).await;
        // Bob commits after Alice: his finish is answered after her invalidation reached
        // his client, and must wait until his application had it.
        let finishing = {
            let bob = bob.clone();
            let order = order.clone();
            let oid = oids[1];
            tokio::spawn(async move {
                let tid = commit(&bob, &[(oid, Tid::ZERO, data("bob"))]).await;
                order.lock().expect("lock").push("bob's finish returned");
                tid
            })
        };
        // Once the master finished Bob's commit (his finish is answered), let the listener
        // go on.
        cluster
            .wait_for_master("bob's commit finished", move |master| {
                master.last_transaction() > alices
            })
            .await
            .expect("bob's commit finishes");
        assert!(bob.last_transaction() < alices, "not delivered yet");
        release.send(()).expect("release the listener");
        let bobs = finishing.await.expect("bob's task");
        assert!(bobs > alices);
        assert_eq!(
            *order.lock().expect("lock"),
            ["invalidation delivered", "bob's finish returned"]
        );
        assert!(bob.last_transaction() >= bobs);
    });
}

#[test]
fn a_lost_master_link_invalidates_everything_then_invalidations_flow_again() {
    run(async {
        let cluster: Cluster = cluster().await;
        let alice = connect(&cluster, "client-alice").await;
        let bob = connect(&cluster, "client-bob").await;
        let heard = listen(&bob);
        let oid = alice.new_oids(1).await.expect("oid")[0];
        let first = commit(&alice, &[(oid, Tid::ZERO, data("1"))]).await;
        bob.sync().await.expect("sync");
        assert_eq!(tids(&heard), [first]);

        // The master drops bob's connection: it forgets bob, and invalidations sent meanwhile
        // would be lost.
        cluster
            .master
            .endpoint()
            .known_link("client-bob")
            .expect("bob is connected")
            .disconnect("test: cut the link");
        let second = commit(&alice, &[(oid, first, data("2"))]).await;
        // Bob announces himself again; his application hears it may have missed commits.
        let everything = async {
            loop {
                let got =
                    heard.lock().expect("lock").iter().find_map(
                        |invalidation| match invalidation {
                            Invalidation::Everything { tid } => Some(*tid),
                            Invalidation::Objects { .. } => None,
                        },
                    );
                if let Some(tid) = got {
                    return tid;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        let resynced = tokio::time::timeout(WAIT, everything)
            .await
            .expect("bob hears he must drop his cache");
        assert!(resynced >= first);
        assert!(bob.last_transaction() >= resynced);
        // Later commits reach him again.
        let third = commit(&alice, &[(oid, second, data("3"))]).await;
        let synced = bob.sync().await.expect("sync");
        assert!(synced >= third);
        assert!(tids(&heard).contains(&third));
        assert_eq!(
            bob.load(oid).await.expect("load"),
            Some((third, ObjectData::from(b"3".to_vec())))
        );
    });
}

#[test]
fn a_forgotten_client_that_speaks_again_is_welcomed_back_and_resyncs() {
    use replicast_node::client::{Client, ClientEvent};
    use replicast_node::master::{Master, MasterConfig};
    use replicast_node::partition::PartitionTable;
    use std::time::SystemTime;

    let now = SystemTime::now();
    let storages: Vec<String> = ["s1", "s2"].iter().map(|name| name.to_string()).collect();
    let table = PartitionTable::new(4, 2, &storages).expect("table");
    let mut master = Master::new(table, MasterConfig::default()).expect("master");
    let mut client = Client::new("c1", "master", replicast_testkit::zodb::relaxed());
    client.connect();
    let deliver = |master: &mut Master, client: &mut Client| {
        while let Some(transmit) = client.poll_transmit() {
            let _ = master.handle(now, "c1", transmit.message);
        }
        let mut sent = Vec::new();
        while let Some(transmit) = master.poll_transmit() {
            assert_eq!(transmit.to, "c1");
            // The primary's answers come as its orders.
            sent.push(transmit.message.clone().into_order().kind());
            client
                .handle(now, "master", transmit.message)
                .expect("the client takes it");
        }
        sent
    };
    assert_eq!(
        deliver(&mut master, &mut client),
        ["LastTransaction", "TtidSpace", "PartitionTable"]
    );
    assert_eq!(client.poll_event(), Some(ClientEvent::Ready));
    // The master counts the client lost (its link was cut) before the client noticed: the
    // client's next message makes it welcome again, and the client learns it may have missed
    // invalidations.
    master.peer_lost(now, "c1").expect("lost");
    let request = client.ask_last_transaction();
    assert_eq!(
        deliver(&mut master, &mut client),
        [
            "LastTransaction",
            "TtidSpace",
            "PartitionTable",
            "AnswerLastTransaction"
        ]
    );
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(
        events,
        [
            ClientEvent::Resynced { last: Tid::ZERO },
            ClientEvent::LastTransaction {
                request,
                tid: Tid::ZERO
            }
        ]
    );
    // Without the loss, nothing of the kind.
    let request = client.ask_last_transaction();
    assert_eq!(deliver(&mut master, &mut client), ["AnswerLastTransaction"]);
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::LastTransaction {
            request,
            tid: Tid::ZERO
        })
    );
}
