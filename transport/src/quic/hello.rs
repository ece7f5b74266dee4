//! The hello that opens every connection: who the process behind a certificate is.
//!
//! A certificate names a node; a *session* names one process using it (a random number drawn
//! when the [`Endpoint`](super::Endpoint) binds). The dialer opens the connection's first
//! stream ([`StreamKind::Hello`](super::StreamKind::Hello)) with its [`Hello`]; the acceptor
//! answers with its own session in a [`Welcome`] or closes the connection with
//! [`codes::NAME_IN_USE`](super::codes::NAME_IN_USE) and the reason:
//!
//! - a **shared** name (clients: several worker processes may share one certificate) makes
//!   each session a peer of its own, named [`session_peer_name`]`(name, session)`, so no
//!   process replaces another's connection;
//! - an **exclusive** name (masters, storages) is held by one process at a time: while a live
//!   connection from one session of the name exists, another session claiming it is refused
//!   with a reason naming the running one's address, and the running one is not disturbed.
//!   The same session dialing again (its process lost the connection) replaces its old
//!   connection.

use serde::{Deserialize, Serialize};

use super::frame::FrameError;

/// The dialer's introduction, the body of the first frame of a connection's hello stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The dialing process's session (random per endpoint).
    pub session: u64,
    /// Whether the dialer's certificate name is shared by several processes.
    pub shared: bool,
}

/// The acceptor's answer to a [`Hello`] it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The accepting process's session.
    pub session: u64,
    /// Whether the acceptor's certificate name is shared by several processes.
    pub shared: bool,
}

impl Hello {
    /// Decodes a hello frame's body.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        postcard::from_bytes(body).map_err(|e| FrameError::malformed("hello", e))
    }
}

impl Welcome {
    /// Decodes a welcome's postcard bytes.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        postcard::from_bytes(body).map_err(|e| FrameError::malformed("welcome", e))
    }
}

/// The separator between a shared name and its session in a peer's name. Not a character of
/// a node name (DNS labels), so a session's peer name never collides with a node's.
pub const SESSION_SEPARATOR: char = '#';

/// The name peers know one session of a shared name by: `NAME#SESSION`, the session as 16
/// hexadecimal digits.
///
/// ```
/// use replicast_transport::quic::session_peer_name;
///
/// assert_eq!(session_peer_name("client-1", 0xab), "client-1#00000000000000ab");
/// ```
pub fn session_peer_name(name: &str, session: u64) -> String {
    format!("{name}{SESSION_SEPARATOR}{session:016x}")
}

/// The certificate name of a peer name: `NAME` for `NAME` or `NAME#SESSION`.
///
/// ```
/// use replicast_transport::quic::node_name;
///
/// assert_eq!(node_name("client-1#00000000000000ab"), "client-1");
/// assert_eq!(node_name("storage-1"), "storage-1");
/// ```
pub fn node_name(peer: &str) -> &str {
    peer.split_once(SESSION_SEPARATOR)
        .map_or(peer, |(name, _)| name)
}

/// The session part of a peer name: the 16 hexadecimal digits of `NAME#SESSION`, `None` for a
/// peer known by its name alone (an exclusive name: a master, a storage).
///
/// ```
/// use replicast_transport::quic::peer_session;
///
/// assert_eq!(peer_session("client-1#00000000000000ab"), Some("00000000000000ab"));
/// assert_eq!(peer_session("storage-1"), None);
/// ```
pub fn peer_session(peer: &str) -> Option<&str> {
    peer.split_once(SESSION_SEPARATOR)
        .map(|(_, session)| session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_welcome_round_trip_and_garbage_is_refused() {
        let hello = Hello {
            session: u64::MAX,
            shared: true,
        };
        let bytes = postcard::to_stdvec(&hello).unwrap();
        assert_eq!(Hello::decode(&bytes), Ok(hello));
        assert!(Hello::decode(&[0xff]).is_err());
        assert!(Welcome::decode(&[]).is_err());
    }

    #[test]
    fn a_session_name_is_never_a_node_name() {
        let peer = session_peer_name("client-1", 7);
        assert_ne!(peer, "client-1");
        assert_eq!(node_name(&peer), "client-1");
    }
}
