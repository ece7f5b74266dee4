//! The gate every message, request and fan-out session passes before a role's handler sees
//! it: the sender's certificate must grant a role the [authorization
//! table](crate::protocol::rule) allows for what it sent, must not be revoked, and what it sent
//! must not take it beyond its per-peer [limits](GateLimits).
//!
//! A [`Gate`] is sans-IO, like the roles: the driver hands it what arrived, with the peer's
//! certificate from the transport, and gets back whether to deliver it or the typed
//! [`Refusal`] to answer with. Refusals are counted per peer and reason (shown by
//! `replicast status`), and a refused one-way message is answered with [`Message::Refused`] at
//! a bounded pace per peer.

mod limits;
mod peers;
mod refusals;
mod reply;

pub use limits::{GateLimits, PeerLoad};
pub use reply::refuse_incoming;

use std::time::Instant;

use std::time::UNIX_EPOCH;

use replicast_certs::Revocation;
use replicast_transport::quic::PeerCertificate;

use crate::ids::Tid;
use crate::protocol::{
    CrlStatus, FANOUT_REPLICAS, FANOUT_WRITERS, Message, Refusal, RefusalCount, RefusalReason,
    authorize,
};

use peers::PeerGrants;
use refusals::Refusals;

/// What to do with a message that arrived.
#[derive(Debug)]
pub enum Admission {
    /// Hand it to the role.
    Deliver(Message),
    /// Refused: the role does not see it; `reply`, when there is one, goes back to the sender
    /// (refusals of one-way messages are sent back at a bounded pace).
    Refuse {
        /// Why.
        refusal: Refusal,
        /// The [`Message::Refused`] to send back, if any.
        reply: Option<Message>,
    },
    /// The peer refused something this node sent ([`Message::Refused`]): logged, for the
    /// operator; no role handles it.
    Refused(Refusal),
}

/// The authorization state of one node: what its peers' certificates grant, the revocation
/// list they are checked against, and the refusals so far.
#[derive(Default)]
pub struct Gate {
    grants: PeerGrants,
    refusals: Refusals,
    revocation: Option<Revocation>,
    limits: GateLimits,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("refused", &self.refusals.total())
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate with no refusals yet, refusing peers `revocation`'s list names (the list the
    /// node's TLS configurations check, so that a connection established before a peer was
    /// revoked carries nothing more once the list is replaced) and what would take a peer
    /// beyond `limits`.
    pub fn new(revocation: Option<Revocation>, limits: GateLimits) -> Self {
        Self {
            revocation,
            limits,
            ..Self::default()
        }
    }

    /// The number and date of the revocation list in force, for the node's report.
    pub fn crl(&self) -> Option<CrlStatus> {
        let list = self.revocation.as_ref()?.list()?;
        Some(CrlStatus {
            number: list.number(),
            issued_unix_secs: list
                .this_update()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
        })
    }

    /// Decides on `message` from `peer`, who presented `certificate` (`None` for a store the
    /// fan-out delivered: the grant of the certificate that opened the session applies);
    /// `load` tells what the role holds for `peer` (asked only of messages that add to it, with
    /// the transaction they name).
    pub fn admit(
        &mut self,
        now: Instant,
        peer: &str,
        certificate: Option<&PeerCertificate>,
        message: Message,
        load: impl FnOnce(Option<Tid>) -> PeerLoad,
    ) -> Admission {
        let refusal = |reason| Refusal {
            kind: message.kind().to_owned(),
            reason,
        };
        let checked = self
            .grants
            .grant(peer, certificate, self.revocation.as_ref())
            .roles()
            .map_err(refusal)
            .and_then(|roles| authorize(roles, &message))
            .and_then(|()| {
                limits::check(&self.limits, &message, || {
                    load(limits::transaction_of(&message))
                })
                .map_err(refusal)
            });
        match (checked, message) {
            (Ok(()), Message::Refused(refusal)) => {
                tracing::warn!(%peer, %refusal, "the peer refused a message of this node");
                Admission::Refused(refusal)
            }
            (Ok(()), message) => Admission::Deliver(message),
            (Err(refusal), _) => {
                tracing::info!(%peer, %refusal, "refused");
                let reply = self
                    .refusals
                    .count(now, peer, &refusal)
                    .then(|| Message::Refused(refusal.clone()));
                Admission::Refuse { refusal, reply }
            }
        }
    }

    /// Decides on fan-out work (a session's requests, a unicast object) from `peer`: only
    /// writers whose certificate grants [`FANOUT_WRITERS`] open sessions here.
    pub fn admit_fanout(
        &mut self,
        now: Instant,
        peer: &str,
        certificate: Option<&PeerCertificate>,
    ) -> Result<(), Refusal> {
        let refusal = |reason| Refusal {
            kind: "fan-out".to_owned(),
            reason,
        };
        let grant = self
            .grants
            .grant(peer, certificate, self.revocation.as_ref());
        let checked = match grant.roles() {
            Ok(roles) if roles.intersects(FANOUT_WRITERS.senders) => Ok(()),
            Ok(roles) => Err(refusal(RefusalReason::Role {
                allowed: FANOUT_WRITERS.senders.bits(),
                granted: roles.bits(),
            })),
            Err(reason) => Err(refusal(reason)),
        };
        if let Err(refusal) = &checked {
            tracing::info!(%peer, %refusal, "refused fan-out work");
            self.refusals.count(now, peer, refusal);
        }
        checked
    }

    /// Every refusal so far, counted by peer and reason.
    pub fn refusal_counts(&self) -> Vec<RefusalCount> {
        self.refusals.counts()
    }

    /// How many refusals in all.
    pub fn refused(&self) -> u64 {
        self.refusals.total()
    }
}

/// Whether `certificate`, presented by `peer` when a writer dialed it, may join the writer's
/// fan-out sessions as a replica ([`FANOUT_REPLICAS`]); read afresh (a writer adds a replica
/// rarely), and checked against `revocation` (`None`: the handshake already checked it).
pub fn replica_grant(
    peer: &str,
    certificate: Option<&PeerCertificate>,
    revocation: Option<&Revocation>,
) -> Result<(), Refusal> {
    let refusal = |reason| Refusal {
        kind: "fan-out replica".to_owned(),
        reason,
    };
    let Some(certificate) = certificate else {
        // A link without a verified certificate: mutual TLS never makes one, so this is a
        // peer that grants nothing.
        return Err(refusal(RefusalReason::Role {
            allowed: FANOUT_REPLICAS.senders.bits(),
            granted: 0,
        }));
    };
    match peers::PeerGrants::default()
        .grant(peer, Some(certificate), revocation)
        .roles()
    {
        Ok(roles) if roles.intersects(FANOUT_REPLICAS.senders) => Ok(()),
        Ok(roles) => Err(refusal(RefusalReason::Role {
            allowed: FANOUT_REPLICAS.senders.bits(),
            granted: roles.bits(),
        })),
        Err(reason) => Err(refusal(reason)),
    }
}
