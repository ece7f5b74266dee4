//! The driver answers request streams through [`Role::answer`], apart from the one-way messages
//! of the two-phase commit: over real QUIC on 127.0.0.1, a second endpoint under the name of a
//! running client asks the master's driver for the status (answered), for what the master does
//! not answer and garbage (refused with an error), and the running client's link goes on as
//! if nothing happened: no loss on either side, its next request answered in order.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use replicast_certs::ClusterCa;
use replicast_node::driver::{DriverConfig, Role, spawn};
use replicast_node::master::{Master, MasterConfig};
use replicast_node::partition::PartitionTable;
use replicast_node::protocol::{Message, ProtocolError, Transmit, decode, decode_from, encode};
use replicast_testkit::endpoint::{address, endpoint, endpoint_config};
use replicast_transport::quic::{Endpoint, EndpointConfig, Link, LinkConfig, LinkError};
use tokio::sync::mpsc;

/// Bounds every wait.
const WAIT: Duration = Duration::from_secs(10);

/// A client-like role: sends what it is told to, reports every message it receives. It
/// answers no request (the trait's default).
#[derive(Default)]
struct Recorder {
    outbox: VecDeque<Transmit>,
    received: VecDeque<Message>,
}

impl Role for Recorder {
    type Event = Message;

    fn handle_bytes(
        &mut self,
        now: SystemTime,
        from: &str,
        bytes: &[u8],
    ) -> Result<(), ProtocolError> {
        let message = decode_from(from, bytes)?;
        self.handle_message(now, from, message)
    }

    fn handle_message(
        &mut self,
        _now: SystemTime,
        _from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        // The master's messages are orders of its term; the recorder keeps what they say.
        self.received.push_back(message.into_order());
        Ok(())
    }

    fn handle_timeout(&mut self, _now: SystemTime) -> Result<(), ProtocolError> {
        Ok(())
    }

    fn peer_lost(&mut self, _now: SystemTime, _peer: &str) -> Result<(), ProtocolError> {
        Ok(())
    }

    fn poll_timeout(&self) -> Option<SystemTime> {
        None
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    fn poll_event(&mut self) -> Option<Message> {
        self.received.pop_front()
    }
}

/// The next message the recorder received, skipping those `accept` does not take.
async fn next<T>(
    received: &mut mpsc::UnboundedReceiver<Message>,
    what: &str,
    accept: impl Fn(&Message) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            let message = received.recv().await.expect("the client driver runs");
            if let Some(value) = accept(&message) {
                return value;
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

/// Asks `message` on a request stream as `replicast status` does.
async fn ask(link: &Link, message: &Message) -> Result<Message, LinkError> {
    let answer: Vec<u8> = tokio::time::timeout(WAIT, link.request(&encode(message)))
        .await
        .unwrap_or_else(|_| panic!("no answer to {} within {WAIT:?}", message.kind()))?;
    Ok(decode(&answer).expect("answers are protocol messages"))
}

fn refusal(result: Result<impl std::fmt::Debug, LinkError>) -> String {
    match result {
        Err(LinkError::Remote { message, .. }) => message,
        other => panic!("a refusal expected, got {other:?}"),
    }
}

#[tokio::test]
async fn requests_under_a_running_clients_name_are_answered_apart_from_its_link() {
    let ca = ClusterCa::generate("driver-requests-test").expect("cluster CA");
    let table = PartitionTable::new(4, 2, &["s1".into(), "s2".into()]).expect("a table");
    let master_endpoint = endpoint(&ca, "master");
    let master_address = address(&master_endpoint);
    let (master, _master_events) = spawn(
        Master::new(table, MasterConfig::default()).expect("a lone master"),
        master_endpoint,
        DriverConfig::default(),
    );
    let client_endpoint = endpoint(&ca, "client-1");
    let client_address = address(&client_endpoint);
    let (client, mut received) = spawn(
        Recorder::default(),
        client_endpoint,
        DriverConfig {
            directory: HashMap::from([("master".to_owned(), master_address)]),
            ..DriverConfig::default()
        },
    );
    let send = |message: Message| {
        client.call(move |role, _| {
            role.outbox.push_back(Transmit {
                to: "master".into(),
                message,
            })
        })
    };

    // client-1 becomes a client and asks for an object id.
    send(Message::ClientHello).await.expect("the driver runs");
    next(&mut received, "partition table", |m| {
        matches!(m, Message::PartitionTable(_)).then_some(())
    })
    .await;
    send(Message::AskNewOids { count: 1 })
        .await
        .expect("the driver runs");
    let first = next(&mut received, "AnswerNewOids", |m| match m {
        Message::AnswerNewOids { first, .. } => Some(*first),
        _ => None,
    })
    .await;

    // Another process claiming client-1's name is refused, and client-1 is not disturbed.
    let impostor = endpoint(&ca, "client-1");
    match impostor.link("master", master_address).await {
        Err(LinkError::NameInUse { reason, .. }) => {
            assert!(reason.contains(&client_address.to_string()), "{reason}");
        }
        other => panic!("a second client-1 was let in: {other:?}"),
    }
    impostor.close();
    // Another process with client-1's certificate asks, as `replicast status` does: as a session of
    // a shared name, a peer of its own.
    let asker = Endpoint::bind(EndpointConfig {
        link: LinkConfig {
            shared_name: true,
            ..LinkConfig::default()
        },
        ..endpoint_config(&ca, "client-1")
    })
    .expect("bind the asker");
    let link = asker
        .link("master", master_address)
        .await
        .expect("connect to the master");
    match ask(&link, &Message::AskStatus { request: 9 }).await {
        Ok(Message::AnswerStatus { request, status }) => {
            assert_eq!(request, 9);
            assert!(
                status.nodes.iter().any(|node| node.name == "client-1"),
                "the running client is listed: {status:?}"
            );
        }
        other => panic!("AnswerStatus expected, got {other:?}"),
    }
    let text = refusal(ask(&link, &Message::AskNewOids { count: 1 }).await);
    assert!(text.contains("unexpected AskNewOids"), "{text}");
    let garbage: Result<Vec<u8>, _> = link.request(&[0xffu8; 6]).await;
    let text = refusal(garbage);
    assert!(text.contains("not a request"), "{text}");
    // A role that answers nothing (a client's) refuses every request.
    let to_client = asker
        .link("client-1", client_address)
        .await
        .expect("connect to the client");
    let text = refusal(ask(&to_client, &Message::AskStatus { request: 1 }).await);
    assert!(text.contains("unexpected AskStatus"), "{text}");
    asker.close();
    tokio::time::timeout(WAIT, asker.wait_idle())
        .await
        .expect("the asker's connections close");

    // client-1's own link is untouched: its next request is answered in order, nothing was lost.
    send(Message::AskNewOids { count: 1 })
        .await
        .expect("the driver runs");
    let second = next(&mut received, "AnswerNewOids", |m| match m {
        Message::AnswerNewOids { first, .. } => Some(*first),
        _ => None,
    })
    .await;
    assert!(second > first, "{second:?} after {first:?}");
    let stats = master.stats();
    assert_eq!(stats.requests_answered, 1, "{stats:?}");
    assert_eq!(stats.requests_refused, 2, "{stats:?}");
    assert_eq!(stats.peers_lost, 0, "{stats:?}");
    assert_eq!(stats.decode_errors, 0, "{stats:?}");
    assert_eq!(stats.refused, 0, "{stats:?}");
    let client_stats = client.stats();
    assert_eq!(client_stats.peers_lost, 0, "{client_stats:?}");
    assert_eq!(client_stats.requests_refused, 1, "{client_stats:?}");
    assert_eq!(client_stats.decode_errors, 0, "{client_stats:?}");

    client.stop().await.expect("stop the client");
    master.stop().await.expect("stop the master");
}
