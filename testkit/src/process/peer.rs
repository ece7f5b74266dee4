//! [`Peer`]: a hostile (or inspecting) peer in the test process that holds a certificate of a
//! cluster and speaks the nodes' channel and messages by hand, for tests that send what a
//! well-behaved node never would.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use replicast_certs::NodeIdentity;
use replicast_node::client::TtidClock;
use replicast_node::ids::Oid;
use replicast_node::protocol::{LoadResult, Message, decode, encode};
use replicast_transport::quic::{Endpoint, Incoming, Link, LinkConfig, LinkError};

use super::WAIT;
use crate::endpoint::EndpointSpec;

/// An endpoint on 127.0.0.1 (any port) presenting `identity`, with `link` settings.
pub fn peer_endpoint(identity: &NodeIdentity, link: LinkConfig) -> Endpoint {
    crate::endpoint::bind_identity(identity, &EndpointSpec::default().with_link(link))
        .expect("bind an endpoint")
}

/// A peer that speaks the nodes' channel (one ordered QUIC stream per direction) and reads
/// what the nodes send back.
pub struct Peer {
    /// Its endpoint.
    pub endpoint: Endpoint,
    next_request: u64,
}

impl Peer {
    /// A peer on `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            next_request: 1,
        }
    }

    /// Dials `node` at `address`.
    pub async fn link(&self, node: &str, address: SocketAddr) -> Link {
        self.endpoint
            .link(node, address)
            .await
            .unwrap_or_else(|error| panic!("dial {node}: {error}"))
    }

    /// Sends `body` (any bytes) as the next message on `link`'s channel.
    pub async fn send_body(&mut self, link: &Link, body: Vec<u8>) {
        link.channel()
            .send(Bytes::from(body))
            .await
            .unwrap_or_else(|error| panic!("send to {}: {error}", link.peer()));
    }

    /// Sends `message` as the next message on `link`'s channel.
    pub async fn send(&mut self, link: &Link, message: &Message) {
        self.send_body(link, encode(message)).await;
    }

    /// The next message from `from` that `accept` takes (others are skipped: a client hears
    /// invalidations and tables it did not ask for), bounded by [`WAIT`].
    pub async fn wait_for<T>(&self, from: &str, accept: impl Fn(&Message) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let incoming = tokio::time::timeout(left, self.endpoint.accept())
                .await
                .unwrap_or_else(|_| panic!("no expected answer from {from} within {WAIT:?}"))
                .expect("the peer's endpoint is open");
            let Incoming::Message(message) = incoming else {
                continue;
            };
            if message.peer() != from {
                continue;
            }
            // A primary master wraps its orders in `FromPrimary`: the test reads the order.
            let body = decode(message.body())
                .expect("nodes send protocol messages")
                .into_order();
            if let Some(value) = accept(&body) {
                return value;
            }
        }
    }

    /// Loads `oid` from storage `link`; the storage answers in order after everything sent
    /// to it before, so the answer also proves those were handled.
    pub async fn load(&mut self, link: &Link, oid: Oid) -> LoadResult {
        let request = self.next_request;
        self.next_request += 1;
        self.send(link, &Message::Load { request, oid }).await;
        self.wait_for(link.peer(), |message| match message {
            Message::AnswerLoad {
                request: answered,
                result,
                ..
            } if *answered == request => Some(result.clone()),
            _ => None,
        })
        .await
    }

    /// Says hello to the master and waits for the partition table: the master handled every
    /// message sent to it before. Returns the clock that makes this peer's temporary TIDs, as
    /// the welcome numbered it (a `Begin` of one is the master's to accept).
    pub async fn hello(&mut self, master: &Link) -> TtidClock {
        self.send(master, &Message::ClientHello).await;
        let (number, clock) = self
            .wait_for(master.peer(), |message| match message {
                Message::TtidSpace { number, clock } => Some((*number, *clock)),
                _ => None,
            })
            .await;
        let mut ttids = TtidClock::default();
        ttids.set_space(SystemTime::now(), number, clock);
        self.wait_for(master.peer(), |message| {
            matches!(message, Message::PartitionTable(_)).then_some(())
        })
        .await;
        ttids
    }
}

/// Bounds a request or object exchange with a node by [`WAIT`].
pub async fn bounded_exchange<T>(
    what: &str,
    exchange: impl Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within {WAIT:?}"))
}

/// Sends `message` to `link`'s node as a request, the way `replicast status` does (the
/// [`encode`]d message as the request's bytes); the node's answer decoded, or its refusal.
pub async fn ask(link: &Link, message: &Message) -> Result<Message, LinkError> {
    let answer: Vec<u8> = bounded_exchange("a request", link.request(&encode(message))).await?;
    Ok(decode(&answer).expect("the node answers with a protocol message"))
}
