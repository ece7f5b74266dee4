//! Shared by the `quic_*` integration tests: real certificates and endpoints on 127.0.0.1 from
//! the testkit (in the shape these tests take them), and a small serving loop.
#![allow(dead_code)] // Each test file uses a different part.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use replicast_certs::{ClusterCa, NodeIdentity};
use replicast_testkit::endpoint::{self, EndpointSpec};
use replicast_transport::quic::{Endpoint, Incoming, LinkConfig};
use serde::{Deserialize, Serialize};

/// Bound on every test body: nothing here should take more than a fraction of it.
pub const TEST_BOUND: Duration = Duration::from_secs(120);

/// Runs a test body with [`TEST_BOUND`] as its time limit.
pub async fn bounded<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_BOUND, body)
        .await
        .expect("test exceeded its time bound")
}

pub use replicast_testkit::endpoint::{address as addr, ca};

pub fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

pub fn identity(ca: &ClusterCa, node: &str) -> NodeIdentity {
    endpoint::identity(ca, node).expect("issue node certificate")
}

/// An endpoint on 127.0.0.1 with an ephemeral port.
pub fn endpoint(identity: &NodeIdentity, link: LinkConfig) -> Endpoint {
    endpoint::bind_identity(identity, &EndpointSpec::default().with_link(link))
        .expect("bind endpoint")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Answered with `Pong` of the same number.
    Ping(u64),
    /// Answered with an error carrying this text.
    Fail(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHeader {
    pub oid: u64,
}

/// The receiver's account of an object: what it got, hashed independently of the transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub oid: u64,
    pub len: u64,
    pub sha256: Vec<u8>,
}

pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// Serves requests (`Request`), objects (answered with an `Ack`) and forwards messages to
/// `messages`, until the endpoint closes.
pub fn serve(
    endpoint: Endpoint,
    messages: Option<tokio::sync::mpsc::UnboundedSender<(String, Vec<u8>)>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let incoming = match incoming {
                // In the accept loop itself: messages keep their channel's order.
                Incoming::Message(message) => {
                    if let Some(messages) = &messages {
                        let _ = messages.send((message.peer().to_owned(), message.body().to_vec()));
                    }
                    continue;
                }
                Incoming::ChannelEnded(_) => continue,
                other => other,
            };
            tokio::spawn(async move {
                match incoming {
                    Incoming::Request(request) => match request.decode::<Request>() {
                        Ok(Request::Ping(n)) => {
                            let _ = request.respond(&Pong(n)).await;
                        }
                        Ok(Request::Fail(text)) => {
                            let _ = request.respond_err(&text).await;
                        }
                        Err(e) => {
                            let _ = request.respond_err(&e.to_string()).await;
                        }
                    },
                    Incoming::Object(mut object) => {
                        let Ok(header) = object.header::<ObjectHeader>() else {
                            let _ = object.respond_err("bad header").await;
                            return;
                        };
                        if let Ok(payload) = object.receive().await {
                            let ack = Ack {
                                oid: header.oid,
                                len: payload.len() as u64,
                                sha256: sha256(&payload),
                            };
                            let _ = object.respond(&ack).await;
                        }
                    }
                    Incoming::Message(_) | Incoming::ChannelEnded(_) => {}
                }
            });
        }
    })
}
