//! [`Peer`]: what an endpoint knows of one peer: its address, its current connection (with
//! the session behind it), a dial in progress, its outbound [`Channel`], and whether the
//! objects sent to it compress.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::channel::Channel;
use super::codes;
use super::compressibility::Compressibility;
use super::endpoint::{Inner, is_live};
use super::error::LinkError;
use crate::sync::lock;

/// A connection whose hello was exchanged.
#[derive(Clone, Debug)]
pub(crate) struct Established {
    pub(crate) connection: quinn::Connection,
    /// The session of the process at the other end.
    pub(crate) session: u64,
    /// Whether this endpoint dialed it (as opposed to accepting it).
    pub(crate) dialed: bool,
}

type DialResult = Option<Result<quinn::Connection, LinkError>>;

/// A peer known by name (a node's name, or `NAME#SESSION` for one process of a shared name).
pub(crate) struct Peer {
    pub(crate) name: Arc<str>,
    /// Whether the objects sent to the peer are worth trying to compress, learned from those
    /// sent before (whatever connection carried them).
    pub(crate) compressibility: Arc<Compressibility>,
    state: Mutex<PeerState>,
}

struct PeerState {
    /// Where to dial; `None` for a peer known only from its own connection.
    addr: Option<SocketAddr>,
    connection: Option<Established>,
    /// Set while a dial is under way; callers arriving meanwhile wait for its result.
    dialing: Option<watch::Receiver<DialResult>>,
    /// The ordered channel to the peer, while it is open.
    channel: Option<Channel>,
}

/// What [`Peer::admit`] decided about an accepted connection.
pub(crate) enum Admission {
    /// Another live process holds the peer's name; it runs at `holder`.
    Refused { holder: SocketAddr },
    /// The connection is the peer's current one; `replaced` is the same session's earlier
    /// connection, accepted before and to be closed.
    Admitted { replaced: Option<quinn::Connection> },
}

enum Step {
    Wait(watch::Receiver<DialResult>),
    Dial(watch::Sender<DialResult>, SocketAddr),
}

impl Peer {
    pub(crate) fn new(name: Arc<str>, addr: Option<SocketAddr>) -> Self {
        Self {
            name,
            compressibility: Arc::default(),
            state: Mutex::new(PeerState {
                addr,
                connection: None,
                dialing: None,
                channel: None,
            }),
        }
    }

    /// The address to dial, or else the address of the current connection.
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        let state = lock(&self.state);
        state.addr.or_else(|| {
            state
                .connection
                .as_ref()
                .map(|c| c.connection.remote_address())
        })
    }

    pub(crate) fn set_addr(&self, addr: SocketAddr) {
        lock(&self.state).addr = Some(addr);
    }

    /// The current connection if it is live.
    pub(crate) fn current(&self) -> Option<Established> {
        lock(&self.state)
            .connection
            .clone()
            .filter(|c| is_live(&c.connection))
    }

    /// Decides about a connection accepted from this peer (see [`hello`](super::hello)).
    pub(crate) fn admit(&self, new: Established, addr: SocketAddr) -> Admission {
        let mut state = lock(&self.state);
        let replaced = match state.connection.as_ref().filter(|c| is_live(&c.connection)) {
            Some(old) if old.session != new.session => {
                return Admission::Refused {
                    holder: old.connection.remote_address(),
                };
            }
            // The process dialed again: the connection it accepted before is dead to it.
            Some(old) if !old.dialed => Some(old.connection.clone()),
            // A crossing dial: both connections stay; ours may carry the channel.
            _ => None,
        };
        state.connection = Some(new);
        // The peer dials from the socket it listens on: that is where it is reached.
        state.addr = Some(addr);
        Admission::Admitted { replaced }
    }

    /// `connection` ended; true if the peer has no connection left and no open channel.
    pub(crate) fn forget(&self, connection: &quinn::Connection) -> bool {
        let mut state = lock(&self.state);
        if state
            .connection
            .as_ref()
            .is_some_and(|c| c.connection.stable_id() == connection.stable_id())
        {
            state.connection = None;
        }
        state.connection.is_none()
            && state.dialing.is_none()
            && state.channel.as_ref().is_none_or(Channel::is_closed)
    }

    /// The open channel to this peer, or a new one.
    pub(crate) fn channel(self: &Arc<Self>, inner: &Arc<Inner>) -> Channel {
        let mut state = lock(&self.state);
        if let Some(channel) = state.channel.as_ref().filter(|c| !c.is_closed()) {
            return channel.clone();
        }
        let channel = Channel::open(inner, self.clone());
        state.channel = Some(channel.clone());
        channel
    }

    /// The live connection to this peer, dialing if there is none. Concurrent callers share
    /// one dial and its result.
    pub(crate) async fn connection(
        &self,
        inner: &Arc<Inner>,
    ) -> Result<quinn::Connection, LinkError> {
        loop {
            let step = {
                let mut state = lock(&self.state);
                if let Some(current) = state.connection.as_ref().filter(|c| is_live(&c.connection))
                {
                    return Ok(current.connection.clone());
                }
                match (&state.dialing, state.addr) {
                    (Some(dialing), _) => Step::Wait(dialing.clone()),
                    (None, Some(addr)) => {
                        let (result, dialing) = watch::channel(None);
                        state.dialing = Some(dialing);
                        Step::Dial(result, addr)
                    }
                    (None, None) => {
                        return Err(LinkError::UnknownPeer {
                            peer: self.name.to_string(),
                        });
                    }
                }
            };
            match step {
                Step::Wait(mut dialing) => {
                    let outcome = dialing
                        .wait_for(Option::is_some)
                        .await
                        .map(|result| result.clone());
                    match outcome {
                        Ok(Some(result)) => return result,
                        Ok(None) => {}
                        Err(_) => {
                            // The dialing caller was cancelled: clear its mark and try again.
                            let mut state = lock(&self.state);
                            if state
                                .dialing
                                .as_ref()
                                .is_some_and(|d| d.same_channel(&dialing))
                            {
                                state.dialing = None;
                            }
                        }
                    }
                }
                Step::Dial(result_tx, addr) => {
                    let result = inner.dial(&self.name, addr).await;
                    let result = {
                        let mut state = lock(&self.state);
                        state.dialing = None;
                        match result {
                            Ok(established) => {
                                let connection = established.connection.clone();
                                state.connection = Some(established);
                                Ok(connection)
                            }
                            Err(error) => Err(error),
                        }
                    };
                    result_tx.send_replace(Some(result.clone()));
                    return result;
                }
            }
        }
    }

    /// Closes the current connection, if any.
    pub(crate) fn disconnect(&self, reason: &str) {
        if let Some(current) = lock(&self.state).connection.take() {
            current.connection.close(codes::CLOSED, reason.as_bytes());
        }
    }
}
