//! One object on its way to one replica ([`Delivery`], addressed to a [`Target`]): how it goes
//! by unicast, and how the replica's verdict on its multicast copy (or, under
//! [`Verification::Application`](crate::fanout::Verification::Application), the group's
//! acknowledgement, [`settle_on_acknowledgement`]) settles it (delivered, a unicast fallback,
//! or a failure).
//!
//! Separate because it is the bookkeeping every path shares: the writer's API creates the
//! deliveries, the bundler and the lanes carry them, and each ends here with one outcome for
//! the caller's handle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::lane::{Lane, LaneWork, UNICAST_ALONE, queue};
use super::{Inner, lock};
use crate::fanout::error::DeliveryFailure;
use crate::fanout::handle::{DeliveryPath, ObjectOutcome, ReplicaOutcome};
use crate::fanout::reach::{Fallback, Strategy};
use crate::fanout::wire::{UnicastAck, UnicastHeader, Verdict};
use crate::multicast::driver::{DeliveryHandle, DeliveryOutcome};
use crate::quic::{Link, LinkError};

/// One object on its way to one replica.
pub(super) struct Delivery {
    pub(super) inner: Arc<Inner>,
    pub(super) target: Target,
    pub(super) object_id: u64,
    pub(super) data: Bytes,
    pub(super) start: Instant,
    pub(super) outcomes: Reporter,
}

/// Where a delivery's outcome goes: the object's own [`FanoutHandle`](crate::fanout::FanoutHandle),
/// or the caller's stream of every object's outcomes ([`Fanout::send_reporting`](super::Fanout::send_reporting)).
#[derive(Clone)]
pub(super) enum Reporter {
    Handle(mpsc::UnboundedSender<(String, ReplicaOutcome)>),
    Stream(mpsc::UnboundedSender<ObjectOutcome>),
}

impl Delivery {
    pub(super) fn resolve(self, outcome: ReplicaOutcome) {
        // The caller may have dropped the handle or the stream: the outcome then concerns
        // nobody.
        match self.outcomes {
            Reporter::Handle(handle) => {
                let _ = handle.send((self.target.name, outcome));
            }
            Reporter::Stream(stream) => {
                let _ = stream.send(ObjectOutcome {
                    object_id: self.object_id,
                    replica: self.target.name,
                    outcome,
                });
            }
        }
    }

    /// Sends the object by unicast: a large one alone at once, a small one through the
    /// replica's lane (batched with others).
    pub(super) fn by_unicast(self, path: DeliveryPath) {
        if self.data.len() >= UNICAST_ALONE {
            tokio::spawn(self.send_alone(path));
        } else {
            let lane = self.target.lane.clone();
            queue(&lane, LaneWork::Unicast(self, path));
        }
    }

    /// Sends the object by unicast on an object stream of its own.
    pub(super) async fn send_alone(self, path: DeliveryPath) {
        let header = UnicastHeader {
            object_id: self.object_id,
        };
        let answer = self
            .target
            .link
            .send_object::<_, UnicastAck>(&header, self.data.clone())
            .await;
        let outcome = match answer {
            Ok(_) => ReplicaOutcome::Delivered {
                elapsed: self.start.elapsed(),
                path,
            },
            Err(e) => ReplicaOutcome::Failed {
                reason: DeliveryFailure::Link(e),
            },
        };
        self.resolve(outcome);
    }

    /// What the replica's verdict on the multicast copy means for this delivery: done, a
    /// unicast fallback (in a task of its own), or a failure.
    pub(super) fn settle_multicast(self, answer: Result<Verdict, LinkError>, strategy: Strategy) {
        let verdict = match answer {
            Ok(Verdict::Verified) => {
                lock(&self.inner.state)
                    .reach
                    .multicast_delivered(self.target.receiver_id);
                let elapsed = self.start.elapsed();
                self.resolve(ReplicaOutcome::Delivered {
                    elapsed,
                    path: DeliveryPath::Multicast,
                });
                return;
            }
            Ok(verdict) => Ok(verdict),
            Err(e) => Err(e),
        };
        let fallback = {
            let mut state = lock(&self.inner.state);
            if !state.replicas.contains_key(&self.target.name) {
                drop(state);
                self.resolve(ReplicaOutcome::Failed {
                    reason: DeliveryFailure::Removed,
                });
                return;
            }
            state
                .reach
                .multicast_failed(self.target.receiver_id, strategy, Instant::now())
        };
        match (fallback, verdict) {
            // The link failed under the request (the replica died or froze, and the link's
            // failure detection noticed): a unicast fallback would dial it again and wait
            // the whole connect timeout. The delivery fails now instead.
            (Fallback::Unicast, Err(e)) if !self.target.link.is_connected() => {
                self.resolve(ReplicaOutcome::Failed {
                    reason: DeliveryFailure::Link(e),
                });
            }
            (Fallback::Unicast, _) => self.by_unicast(DeliveryPath::UnicastFallback),
            (Fallback::Fail, Ok(verdict)) => self.resolve(ReplicaOutcome::Failed {
                reason: DeliveryFailure::Multicast(verdict),
            }),
            (Fallback::Fail, Err(e)) => self.resolve(ReplicaOutcome::Failed {
                reason: DeliveryFailure::Link(e),
            }),
        }
    }
}

/// Settles `deliveries` (of one multicast object, or of the objects of one bundle) on the
/// group's acknowledgement, under
/// [`Verification::Application`](crate::fanout::Verification::Application), where no replica
/// answers an announcement: a replica whose multicast receiver acknowledged every byte has
/// it ([`Verdict::Verified`] stands for that), one the sender gave up on or that left the
/// group has lost it ([`Verdict::Lost`]: a unicast fallback under [`Strategy::Auto`], else
/// a failure). Every receiver's acknowledgement is evidence of reachability (also of a
/// receiver no delivery waited for: [`gather_evidence`](super::gather_evidence) is this with
/// none).
pub(super) async fn settle_on_acknowledgement(
    inner: Arc<Inner>,
    mut acknowledged: DeliveryHandle,
    deliveries: Vec<(Delivery, Strategy)>,
) {
    let mut waiting: HashMap<u32, Vec<(Delivery, Strategy)>> = HashMap::new();
    for (delivery, strategy) in deliveries {
        let receiver_id = delivery.target.receiver_id;
        waiting
            .entry(receiver_id)
            .or_default()
            .push((delivery, strategy));
    }
    while let Some((receiver_id, outcome)) = acknowledged.next().await {
        let verdict = match outcome {
            DeliveryOutcome::Delivered => Verdict::Verified,
            DeliveryOutcome::Abandoned | DeliveryOutcome::Removed => Verdict::Lost,
        };
        let settled = waiting.remove(&receiver_id).unwrap_or_default();
        // A delivery settled `Verified` records the evidence itself.
        if settled.is_empty() && verdict == Verdict::Verified {
            lock(&inner.state).reach.multicast_delivered(receiver_id);
        }
        for (delivery, strategy) in settled {
            delivery.settle_multicast(Ok(verdict), strategy);
        }
    }
    // A replica that joined again after the object left is not among its receivers, and a
    // sender that stopped reports nobody: the group did not bring them the object.
    for (delivery, strategy) in waiting.into_values().flatten() {
        delivery.settle_multicast(Ok(Verdict::Lost), strategy);
    }
}

/// The replica a [`Delivery`] goes to: its name, link, receiver id and lane.
pub(super) struct Target {
    pub(super) name: String,
    pub(super) link: Link,
    pub(super) receiver_id: u32,
    pub(super) lane: Lane,
}
