//! Errors of the fan-out API.

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
