//! The driver reports a lost connection even when a new one replaced it at once: two drivers
//! over real QUIC on 127.0.0.1, one closing its connection and sending again at once, so the
//! other may see the new channel before the old one's end. The messages handed to the closed
//! connection may be gone, so both sides must hear of the loss, once (a storage that does not
//! learn that the master counted it lost never announces itself again).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use replicast_certs::ClusterCa;
use replicast_node::driver::{DriverConfig, DriverHandle, Role, spawn};
use replicast_node::protocol::{Message, NodeReport, ProtocolError, Transmit};
use replicast_testkit::endpoint::{address, endpoint};
use replicast_transport::quic::Endpoint;
use tokio::sync::mpsc;

/// Bounds every wait.
const WAIT: Duration = Duration::from_secs(10);

/// What the recording role saw.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Message(String),
    Lost(String),
}

/// A role that sends what it is told to and reports what it receives and whom it lost.
#[derive(Default)]
struct Recorder {
    outbox: VecDeque<Transmit>,
    events: VecDeque<Seen>,
}

impl Recorder {
    fn send(&mut self, to: &str) {
        self.outbox.push_back(Transmit {
            to: to.into(),
            message: Message::NodeReport(NodeReport::default()),
        });
    }
}

impl Role for Recorder {
    type Event = Seen;

    fn handle_bytes(
        &mut self,
        _now: SystemTime,
        from: &str,
        _bytes: &[u8],
    ) -> Result<(), ProtocolError> {
        self.events.push_back(Seen::Message(from.to_owned()));
        Ok(())
    }

    fn handle_message(
        &mut self,
        _now: SystemTime,
        from: &str,
        _message: Message,
    ) -> Result<(), ProtocolError> {
        self.events.push_back(Seen::Message(from.to_owned()));
        Ok(())
    }

    fn handle_timeout(&mut self, _now: SystemTime) -> Result<(), ProtocolError> {
        Ok(())
    }

    fn peer_lost(&mut self, _now: SystemTime, peer: &str) -> Result<(), ProtocolError> {
        self.events.push_back(Seen::Lost(peer.to_owned()));
        Ok(())
    }

    fn poll_timeout(&self) -> Option<SystemTime> {
        None
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    fn poll_event(&mut self) -> Option<Seen> {
        self.events.pop_front()
    }
}

fn start(
    endpoint: Endpoint,
    directory: HashMap<String, SocketAddr>,
) -> (DriverHandle<Recorder>, mpsc::UnboundedReceiver<Seen>) {
    spawn(
        Recorder::default(),
        endpoint,
        DriverConfig {
            directory,
            ..DriverConfig::default()
        },
    )
}

async fn next(events: &mut mpsc::UnboundedReceiver<Seen>, what: &str) -> Seen {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {WAIT:?}: {what}"))
        .expect("the driver runs")
}

/// Waits for `expected`, skipping other events; returns what was skipped.
async fn wait_for(events: &mut mpsc::UnboundedReceiver<Seen>, expected: Seen) -> Vec<Seen> {
    let mut skipped = Vec::new();
    loop {
        let event = next(events, &format!("{expected:?}")).await;
        if event == expected {
            return skipped;
        }
        skipped.push(event);
    }
}

#[tokio::test]
async fn a_connection_replaced_at_once_is_reported_lost_once_on_both_sides() {
    let ca = ClusterCa::generate("driver-links-test").expect("cluster CA");
    let (master_endpoint, storage_endpoint) = (endpoint(&ca, "master"), endpoint(&ca, "storage"));
    let master_address = address(&master_endpoint);
    let (master, mut master_events) = start(master_endpoint, HashMap::new());
    let (storage, mut storage_events) = start(
        storage_endpoint,
        HashMap::from([("master".to_owned(), master_address)]),
    );

    // The storage speaks first: each side now counts the other as connected.
    storage
        .call(|role, _| role.send("master"))
        .await
        .expect("the storage driver runs");
    wait_for(&mut master_events, Seen::Message("storage".into())).await;
    master
        .call(|role, _| role.send("storage"))
        .await
        .expect("the master driver runs");
    wait_for(&mut storage_events, Seen::Message("master".into())).await;

    // The connection drops and the storage speaks again at once, over a new connection.
    storage
        .endpoint()
        .known_link("master")
        .expect("the storage knows the master")
        .disconnect("test: the connection drops");
    storage
        .call(|role, _| role.send("master"))
        .await
        .expect("the storage driver runs");

    let skipped = wait_for(&mut master_events, Seen::Lost("storage".into())).await;
    assert!(
        !skipped.contains(&Seen::Lost("storage".into())),
        "reported once: {skipped:?}"
    );
    wait_for(&mut storage_events, Seen::Lost("master".into())).await;
    assert_eq!(
        master.stats().peers_lost,
        1,
        "the master lost the storage once"
    );

    // Both sides still talk over the new connection, and a later loss is reported again.
    master
        .call(|role, _| role.send("storage"))
        .await
        .expect("the master driver runs");
    wait_for(&mut storage_events, Seen::Message("master".into())).await;
    storage
        .endpoint()
        .known_link("master")
        .expect("the storage knows the master")
        .disconnect("test: the connection drops again");
    storage
        .call(|role, _| role.send("master"))
        .await
        .expect("the storage driver runs");
    wait_for(&mut master_events, Seen::Lost("storage".into())).await;
    assert_eq!(
        master.stats().peers_lost,
        2,
        "the master lost the storage twice"
    );

    storage.stop().await.expect("stop the storage");
    master.stop().await.expect("stop the master");
}
