//! Errors of the fan-out API.

use std::net::SocketAddr;

use crate::multicast::driver::{BindError, DriverClosed, MulticastSendError};
use crate::quic::LinkError;

use super::wire::Verdict;

/// Why a fan-out call, or a change of the replica set, could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// The QUIC link to a replica failed while setting up or changing membership.
    #[error("replica {replica}: {source}")]
    Link {
        /// The replica.
        replica: String,
        /// What the link reported.
        #[source]
        source: LinkError,
    },
    /// A replica answered a control request with something else than expected.
    #[error("replica {replica} answered {what} unexpectedly")]
    UnexpectedAnswer {
        /// The replica.
        replica: String,
        /// The request.
        what: &'static str,
    },
    /// The replica named is not in the writer's set.
    #[error("unknown replica {0}")]
    UnknownReplica(String),
    /// The replica named is already in the writer's set.
    #[error("replica {0} is already a member")]
    DuplicateReplica(String),
    /// The writer has no multicast group ([`Fanout::unicast`](super::Fanout::unicast)) and
    /// the call needs one.
    #[error("this fan-out writer has no multicast group (unicast only)")]
    NoGroup,
    /// The multicast sender could not be started.
    #[error("multicast sender: {0}")]
    Bind(#[from] BindError),
    /// The multicast sender refused the object.
    #[error("multicast send: {0}")]
    Send(#[from] MulticastSendError),
    /// The multicast sender's task has stopped.
    #[error("the multicast sender has stopped")]
    Closed(#[from] DriverClosed),
    /// Under [`Verification::Application`](super::Verification::Application), an object id
    /// at or above [`APPLICATION_ID_LIMIT`](super::wire::APPLICATION_ID_LIMIT) for the
    /// group (its multicast id would read as a bundle or a probe).
    #[error("object id {0:#x} is beyond the group's ids under application verification")]
    ObjectId(u64),
}

/// Why one replica did not get one object.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryFailure {
    /// The replica's QUIC link failed (for the object itself or for its digest).
    #[error("link: {0}")]
    Link(#[source] LinkError),
    /// The multicast delivery failed and the call asked for multicast only.
    #[error("multicast delivery failed: {0:?}")]
    Multicast(Verdict),
    /// The multicast sender refused the object (or its bundle): it stopped.
    #[error("multicast sender: {0}")]
    Sender(String),
    /// The replica was removed from the set before the object reached it.
    #[error("replica removed")]
    Removed,
    /// The replica acknowledged a different number of objects than a unicast batch held.
    #[error("the replica acknowledged {acknowledged} objects of a unicast batch of {sent}")]
    UnexpectedAck {
        /// Objects in the batch.
        sent: u64,
        /// Objects the replica said it took.
        acknowledged: u64,
    },
}

/// Why a replica refused a writer's request to join its session (sent back to the writer as
/// the request's error).
#[derive(Debug, thiserror::Error)]
pub(super) enum JoinRefusal {
    /// Another writer holds a session of that id here. The sessions of all writers on a group
    /// share the replica's socket, where only their ids tell them apart.
    #[error(
        "session {session_id} belongs to another writer (the writers of one replica need \
         distinct session ids)"
    )]
    AnotherWritersSession {
        /// The session id asked for.
        session_id: u64,
    },
    /// The replica serves as many writer sessions as it is configured to.
    #[error("the replica serves its limit of {max} fan-out sessions; try again later")]
    Limit {
        /// The configured limit.
        max: usize,
    },
    /// No socket serves the group, and none could be bound.
    #[error("cannot join {group}: {source}")]
    Bind {
        /// The group.
        group: SocketAddr,
        /// Why the multicast receiver could not start.
        #[source]
        source: BindError,
    },
    /// The group's multicast receiver stopped before it took the session's key.
    #[error("the multicast receiver of {group} stopped before it took session {session_id}")]
    Stopped {
        /// The group.
        group: SocketAddr,
        /// The session.
        session_id: u64,
    },
}
