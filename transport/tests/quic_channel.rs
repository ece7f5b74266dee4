//! The ordered message channel and the sessions behind names, over real QUIC on 127.0.0.1:
//! messages arrive in order beside requests and objects, a broken channel is visible on both
//! sides and the next message opens a new one, a reader that does not read holds its sender
//! back instead of filling memory, processes sharing a client name are peers of their own,
//! and a second process claiming a running storage's name is refused without disturbing it.

mod quic_support;

use std::time::Duration;

use bytes::Bytes;
use quic_support::*;
use replicast_transport::quic::{
    Channel, ChannelId, ChannelState, Endpoint, Incoming, Link, LinkConfig, LinkError,
    TrySendError, codes, session_peer_name,
};

/// Waits for the next message or channel end from `endpoint`, skipping other work.
async fn next_message(endpoint: &Endpoint) -> Incoming {
    loop {
        let incoming = tokio::time::timeout(Duration::from_secs(20), endpoint.accept())
            .await
            .expect("work within 20 s")
            .expect("the endpoint is open");
        if matches!(incoming, Incoming::Message(_) | Incoming::ChannelEnded(_)) {
            return incoming;
        }
    }
}

/// A storage's channel to a master that carried one message: the master's endpoint, the
/// storage's, its link, the channel, and the channel's id on the master's side.
async fn one_message_on_a_channel() -> (Endpoint, Endpoint, Link, Channel, ChannelId) {
    let ca = ca("cluster");
    let server = endpoint(&identity(&ca, "master"), LinkConfig::default());
    let client = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
    let link = client.link("master", addr(&server)).await.unwrap();
    let first = link.channel();
    first.send(Bytes::from_static(b"one")).await.unwrap();
    let Incoming::Message(one) = next_message(&server).await else {
        panic!("a message");
    };
    let first_inbound = one.channel();
    (server, client, link, first, first_inbound)
}

/// After `first` (read by `server` as `first_inbound`) closed, the next message on `link`
/// goes on a new channel, which `server` reads.
async fn the_next_message_opens_another(
    server: &Endpoint,
    link: &Link,
    first: &Channel,
    first_inbound: ChannelId,
) {
    let second = link.channel();
    assert_ne!(second.id(), first.id());
    second.send(Bytes::from_static(b"two")).await.unwrap();
    let Incoming::Message(two) = next_message(server).await else {
        panic!("a message");
    };
    assert_ne!(two.channel(), first_inbound);
    assert_eq!(two.body(), b"two");
}

/// Sends `message` on `channel` until it is full for good (it stays full 200 ms, while the
/// windows could open a little); how many it took. Bounded: never full in 20 s fails.
async fn fill(channel: &Channel, message: &Bytes) -> usize {
    let mut queued = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match channel.try_send(message.clone()) {
            Ok(()) => queued += 1,
            Err(TrySendError::Full(_)) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if channel.try_send(message.clone()).is_err() {
                    return queued;
                }
                queued += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "never full");
    }
}

fn body(incoming: Incoming) -> (String, Bytes) {
    match incoming {
        Incoming::Message(message) => (message.peer().to_owned(), message.into_body()),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_messages_of_every_size_arrive_in_order() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "master"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        let link = client.link("master", addr(&server)).await.unwrap();
        let channel = link.channel();
        // Small and large messages interleaved: a large one never lets a later small one pass.
        let sizes = |n: u64| match n % 100 {
            0 => 3 << 20,
            50 => 200_000,
            _ => (n % 17) as usize,
        };
        let sender = tokio::spawn(async move {
            for n in 0..1000u64 {
                let mut message = n.to_be_bytes().to_vec();
                message.resize(8 + sizes(n), (n % 251) as u8);
                channel.send(Bytes::from(message)).await.unwrap();
            }
        });
        let mut ids = std::collections::HashSet::new();
        for n in 0..1000u64 {
            let Incoming::Message(message) = next_message(&server).await else {
                panic!("the channel ended early");
            };
            ids.insert(message.channel());
            let body = message.into_body();
            assert_eq!(&body[..8], &n.to_be_bytes(), "message {n} in its place");
            assert_eq!(body.len(), 8 + sizes(n));
            assert!(body[8..].iter().all(|b| *b == (n % 251) as u8));
        }
        sender.await.unwrap();
        assert_eq!(ids.len(), 1, "one channel carried them all");
    })
    .await;
}

#[tokio::test]
async fn a_message_beyond_the_limit_is_refused_and_the_channel_goes_on() {
    bounded(async {
        let ca = ca("cluster");
        let limited = LinkConfig {
            max_message_len: 1000,
            ..LinkConfig::default()
        };
        let server = endpoint(&identity(&ca, "master"), LinkConfig::default());
        let client = endpoint(&identity(&ca, "client-1"), limited);
        let link = client.link("master", addr(&server)).await.unwrap();
        let channel = link.channel();
        let refused = channel.send(Bytes::from(vec![0; 1001])).await;
        assert!(
            matches!(
                refused,
                Err(LinkError::FrameTooLarge {
                    len: 1001,
                    max: 1000
                })
            ),
            "{refused:?}"
        );
        channel.send(Bytes::from_static(b"fits")).await.unwrap();
        assert_eq!(body(next_message(&server).await).1, "fits");
        assert!(!channel.is_closed());
    })
    .await;
}

#[tokio::test]
async fn a_receiver_refuses_an_oversized_message_by_ending_the_channel() {
    bounded(async {
        let ca = ca("cluster");
        let strict = LinkConfig {
            max_message_len: 1000,
            ..LinkConfig::default()
        };
        let server = endpoint(&identity(&ca, "master"), strict);
        let client = endpoint(&identity(&ca, "client-1"), LinkConfig::default());
        let link = client.link("master", addr(&server)).await.unwrap();
        let first = link.channel();
        first.send(Bytes::from_static(b"before")).await.unwrap();
        first.send(Bytes::from(vec![7; 5000])).await.unwrap();
        let (_, before) = body(next_message(&server).await);
        assert_eq!(before, "before");
        let Incoming::ChannelEnded(end) = next_message(&server).await else {
            panic!("the oversized message ends the channel");
        };
        assert!(
            matches!(
                end.reason(),
                LinkError::FrameTooLarge {
                    len: 5000,
                    max: 1000
                }
            ),
            "{:?}",
            end.reason()
        );
        assert_eq!(server.stats().protocol_errors, 1);
        // The sender sees its channel stopped; the next message opens another one.
        let reason = tokio::time::timeout(Duration::from_secs(10), first.closed())
            .await
            .expect("the sender learns of the end");
        assert!(
            matches!(reason, LinkError::StreamReset { .. }),
            "{reason:?}"
        );
        link.send_message(&"after").await.unwrap();
        let Incoming::Message(after) = next_message(&server).await else {
            panic!("a message on the new channel");
        };
        assert_ne!(after.channel(), end.channel(), "a new channel");
        assert!(link.is_connected(), "the connection went on");
    })
    .await;
}

#[tokio::test]
async fn a_dropped_connection_ends_the_channel_on_both_sides_and_the_next_message_opens_another() {
    bounded(async {
        let (server, client, link, first, first_inbound) = one_message_on_a_channel().await;

        server
            .known_link("storage-1")
            .expect("the storage is known")
            .disconnect("test: drop the connection");
        // The sender hears of it without sending anything.
        let reason = tokio::time::timeout(Duration::from_secs(10), first.closed())
            .await
            .expect("the sender learns of the drop");
        assert!(reason.is_connection_error(), "{reason:?}");
        assert!(matches!(first.state(), ChannelState::Closed(_)));
        // The receiver too, after the channel's last message.
        let Incoming::ChannelEnded(end) = next_message(&server).await else {
            panic!("the channel's end");
        };
        assert_eq!((end.peer(), end.channel()), ("storage-1", first_inbound));
        let refused = first.try_send(Bytes::from_static(b"lost"));
        assert!(
            matches!(refused, Err(TrySendError::Closed(_))),
            "{refused:?}"
        );

        // The next message goes on a new channel over a new connection.
        the_next_message_opens_another(&server, &link, &first, first_inbound).await;
        assert_eq!(client.stats().connections_dialed, 2);
    })
    .await;
}

/// A receiver that gives a channel up (it counts its peer as lost) stops it: the sender learns
/// it without sending anything, and its next message opens a new channel on the same
/// connection, which the receiver reads. Without that, a sender that noticed nothing went on
/// sending on the old channel, every message dropped by the receiver.
#[tokio::test]
async fn a_channel_given_up_by_its_receiver_closes_at_the_sender_and_the_next_opens_another() {
    bounded(async {
        let (server, client, link, first, first_inbound) = one_message_on_a_channel().await;

        assert!(server.give_up_channel(first_inbound), "the channel was read");
        assert!(!server.give_up_channel(first_inbound), "given up once");
        let reason = tokio::time::timeout(Duration::from_secs(10), first.closed())
            .await
            .expect("the sender learns that its channel was given up");
        assert!(
            matches!(reason, LinkError::StreamReset { code, .. } if code == codes::GIVEN_UP.into_inner()),
            "{reason:?}"
        );
        let Incoming::ChannelEnded(end) = next_message(&server).await else {
            panic!("the channel's end");
        };
        assert_eq!(end.channel(), first_inbound);

        the_next_message_opens_another(&server, &link, &first, first_inbound).await;
        assert_eq!(client.stats().connections_dialed, 1, "the same connection");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_does_not_read_holds_its_sender_back() {
    bounded(async {
        let ca = ca("cluster");
        // Small windows and queues: what a slow reader may have in flight is bounded by them.
        let tight = LinkConfig {
            stream_receive_window: 64 << 10,
            receive_window: 256 << 10,
            incoming_queue: 4,
            channel_queue: 16,
            channel_queue_bytes: 64 << 10,
            ..LinkConfig::default()
        };
        let server = endpoint(&identity(&ca, "master"), tight.clone());
        let client = endpoint(&identity(&ca, "client-1"), tight);
        let link = client.link("master", addr(&server)).await.unwrap();
        let channel = link.channel();
        channel.opened().await.unwrap();
        // Nobody accepts on the server: after the windows and queues fill, the channel is full.
        let message = Bytes::from(vec![1u8; 8 << 10]);
        let queued = fill(&channel, &message).await;
        // Bounded: the queue, the windows and the incoming queue, not the 1000s a sender
        // could push.
        let bound = (64 + 256 + 64) * 1024 / (8 << 10) + 16 + 4 + 8;
        assert!(queued <= bound, "{queued} messages taken, bound {bound}");
        // The reader reads: every message arrives, in order, and the sender goes on.
        let sending = tokio::spawn({
            let channel = channel.clone();
            async move { channel.send(Bytes::from_static(b"last")).await }
        });
        for _ in 0..queued {
            let (_, body) = body(next_message(&server).await);
            assert_eq!(body.len(), 8 << 10);
        }
        sending.await.unwrap().unwrap();
        assert_eq!(body(next_message(&server).await).1, "last");
    })
    .await;
}

/// A receiver that keeps one sender's messages (it cannot take them yet) stops reading that
/// sender's channel once they fill the channel's window; the sender is held back, another
/// sender's messages still arrive, and once the kept ones are dropped the channel goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_receiver_keeps_hold_back_their_channel_alone() {
    bounded(async {
        let ca = ca("cluster");
        const WINDOW: usize = 64 << 10;
        const MESSAGE: usize = 8 << 10;
        let tight = LinkConfig {
            stream_receive_window: 64 << 10,
            channel_queue: 16,
            channel_queue_bytes: 64 << 10,
            channel_window: WINDOW,
            ..LinkConfig::default()
        };
        let server = endpoint(&identity(&ca, "storage-1"), tight.clone());
        let held_sender = endpoint(&identity(&ca, "client-1"), tight.clone());
        let other_sender = endpoint(&identity(&ca, "client-2"), tight);
        let held_link = held_sender.link("storage-1", addr(&server)).await.unwrap();
        let other_link = other_sender.link("storage-1", addr(&server)).await.unwrap();
        let channel = held_link.channel();
        // The server keeps every message of client-1 it reads, in a task of its own.
        let (kept_tx, mut kept_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Bytes)>();
        let reader = tokio::spawn({
            let server = server.clone();
            async move {
                loop {
                    let message = body(next_message(&server).await);
                    if kept_tx.send(message).is_err() {
                        return;
                    }
                }
            }
        });
        let message = Bytes::from(vec![1u8; MESSAGE]);
        let queued = fill(&channel, &message).await;
        // Bounded by the window (and the one message read while waiting for room), the
        // stream's receive window and the sender's queue: not the 1000s it could push.
        let bound = (WINDOW + (64 << 10) + (64 << 10)) / MESSAGE + 1 + 16;
        assert!(queued <= bound, "{queued} messages taken, bound {bound}");
        let mut kept = Vec::new();
        while let Ok(message) = kept_rx.try_recv() {
            kept.push(message);
        }
        assert!(
            kept.len() <= WINDOW / MESSAGE + 1,
            "the receiver was handed {} messages, more than its window",
            kept.len()
        );
        // Another sender is read meanwhile.
        other_link
            .channel()
            .send(Bytes::from_static(b"other"))
            .await
            .unwrap();
        let other = tokio::time::timeout(Duration::from_secs(10), kept_rx.recv())
            .await
            .expect("another sender's message arrives while one channel is held")
            .unwrap();
        assert_eq!(other, ("client-2".to_owned(), Bytes::from_static(b"other")));
        // The receiver lets its kept messages go: the rest arrive, in order, and the sender
        // goes on.
        let mut arrived = kept.len();
        drop(kept);
        let sending = tokio::spawn({
            let channel = channel.clone();
            async move { channel.send(Bytes::from_static(b"last")).await }
        });
        while arrived < queued {
            let (peer, body) = kept_rx.recv().await.unwrap();
            assert_eq!((peer.as_str(), body.len()), ("client-1", MESSAGE));
            arrived += 1;
        }
        sending.await.unwrap().unwrap();
        let (_, last) = kept_rx.recv().await.unwrap();
        assert_eq!(last, "last");
        reader.abort();
    })
    .await;
}

#[tokio::test]
async fn processes_sharing_a_client_name_are_peers_of_their_own() {
    bounded(async {
        let ca = ca("cluster");
        let server = endpoint(&identity(&ca, "master"), LinkConfig::default());
        let shared = LinkConfig {
            shared_name: true,
            ..LinkConfig::default()
        };
        let client = identity(&ca, "client-1");
        let (one, two) = (endpoint(&client, shared.clone()), endpoint(&client, shared));
        assert_ne!(one.session(), two.session());
        let link_one = one.link("master", addr(&server)).await.unwrap();
        let link_two = two.link("master", addr(&server)).await.unwrap();
        link_one.send_message(&1u8).await.unwrap();
        let (from_one, _) = body(next_message(&server).await);
        link_two.send_message(&2u8).await.unwrap();
        let (from_two, _) = body(next_message(&server).await);
        assert_eq!(from_one, session_peer_name("client-1", one.session()));
        assert_eq!(from_two, session_peer_name("client-1", two.session()));
        // Neither replaced the other: both connected, and the server reaches each.
        assert!(link_one.is_connected() && link_two.is_connected());
        let mut peers = server.connected_peers();
        peers.sort();
        let mut expected = vec![from_one.clone(), from_two.clone()];
        expected.sort();
        assert_eq!(peers, expected);
        serve(one.clone(), None);
        serve(two.clone(), None);
        for peer in [&from_one, &from_two] {
            let back = server.known_link(peer).expect("each session is known");
            assert_eq!(
                back.request::<_, Pong>(&Request::Ping(9)).await.unwrap(),
                Pong(9)
            );
        }
        assert_eq!(server.stats().names_refused, 0);
        // A session that leaves is forgotten.
        one.close();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while server.known_link(&from_one).is_some() {
            assert!(tokio::time::Instant::now() < deadline, "still known");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(server.known_link(&from_two).is_some());
    })
    .await;
}

#[tokio::test]
async fn a_second_process_claiming_a_running_storage_name_is_refused() {
    bounded(async {
        let ca = ca("cluster");
        let master = endpoint(&identity(&ca, "master"), LinkConfig::default());
        let storage = identity(&ca, "storage-1");
        let running = endpoint(&storage, LinkConfig::default());
        let running_link = running.link("master", addr(&master)).await.unwrap();
        running_link.send_message(&"hello").await.unwrap();
        let (from, _) = body(next_message(&master).await);
        assert_eq!(from, "storage-1");

        let second = endpoint(&storage, LinkConfig::default());
        let refused = second.link("master", addr(&master)).await;
        match refused {
            Err(LinkError::NameInUse { peer, reason }) => {
                assert_eq!(peer, "master");
                assert!(
                    reason.contains("storage-1") && reason.contains(&addr(&running).to_string()),
                    "the refusal names the running process: {reason}"
                );
            }
            other => panic!("a second storage-1 was not refused: {other:?}"),
        }
        assert_eq!(master.stats().names_refused, 1);
        // The running one is not disturbed: same connection, its channel goes on.
        running_link.send_message(&"still here").await.unwrap();
        let Incoming::Message(message) = next_message(&master).await else {
            panic!("the running storage's channel ended");
        };
        assert_eq!(message.peer(), "storage-1");
        assert_eq!(master.stats().connections_accepted, 1);

        // Once the running one is gone, the name is free.
        running.close();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match second.link("master", addr(&master)).await {
                Ok(_) => break,
                Err(LinkError::NameInUse { .. }) => {
                    assert!(tokio::time::Instant::now() < deadline, "never freed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(other) => panic!("{other}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn the_same_session_dialing_again_is_taken_and_its_old_channel_ends() {
    bounded(async {
        let ca = ca("cluster");
        let master = endpoint(&identity(&ca, "master"), LinkConfig::default());
        let storage = endpoint(&identity(&ca, "storage-1"), LinkConfig::default());
        let link = storage.link("master", addr(&master)).await.unwrap();
        link.send_message(&1u8).await.unwrap();
        let Incoming::Message(first) = next_message(&master).await else {
            panic!("a message");
        };
        // The storage forgets its side of the connection without telling the master (as after
        // a network change), and dials again: same session, so the master takes the new
        // connection and ends the old one.
        let old = master.known_link("storage-1").unwrap();
        assert!(old.is_connected());
        let channel = link.channel();
        link.disconnect("test");
        // What was queued on the old channel is lost with it; the next message goes on a new
        // one once the sender knows.
        channel.closed().await;
        link.send_message(&2u8).await.unwrap();
        let mut saw_end = false;
        let mut saw_second = false;
        while !(saw_end && saw_second) {
            match next_message(&master).await {
                Incoming::ChannelEnded(end) => {
                    assert_eq!(end.channel(), first.channel());
                    saw_end = true;
                }
                Incoming::Message(message) => {
                    assert_ne!(message.channel(), first.channel());
                    assert_eq!(message.body(), postcard::to_stdvec(&2u8).unwrap());
                    saw_second = true;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(master.stats().names_refused, 0);
    })
    .await;
}
