//! The writer's bundler: small objects for the group do not reach the multicast sender one by
//! one; whatever queued while the sender was busy leaves as one multicast object, a [`Bundle`]
//! of them, announced once in each replica's lane (or, under
//! [`Verification::Application`], framed in its own bytes, [`BundleFrame`], and announced to
//! nobody).
//!
//! Separate from the writer's API because it is a task of its own, with its own queue and
//! bounds ([`BUNDLE_BYTES`], [`BUNDLE_QUEUE_BYTES`]): `send_to` only hands it a small object
//! ([`Bundled`]) and returns.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Inner;
use super::delivery::{Delivery, settle_on_acknowledgement};
use super::lane::{Announced, AnnouncedBundle, LaneWork, queue};
use super::{gather_evidence, next_multicast_id};
use crate::fanout::error::{DeliveryFailure, FanoutError};
use crate::fanout::handle::ReplicaOutcome;
use crate::fanout::reach::Strategy;
use crate::fanout::verification::Verification;
use crate::fanout::wire::{
    BUNDLE_BIT, Bundle, BundleFrame, Expectation, MAX_BUNDLE_PARTS, UnicastPart, digest,
};
use crate::multicast::driver::{MulticastSendError, MulticastSender};

/// Objects at least this large are multicast as objects of their own; smaller ones travel
/// bundled (several to one multicast object).
pub(super) const BUNDLE_ALONE: usize = 256 << 10;

/// Bytes one bundle gathers at most (and never more than the sender's largest object).
pub(super) const BUNDLE_BYTES: usize = 1 << 20;

/// Bytes of small objects waiting for their bundle at most: beyond it,
/// [`Fanout::send_to`](super::Fanout::send_to) waits (the multicast backpressure, as the
/// sender's window gives it to large objects).
pub(super) const BUNDLE_QUEUE_BYTES: usize = 8 << 20;

/// A small object waiting for its bundle.
pub(super) struct Bundled {
    pub(super) object_id: u64,
    pub(super) data: Bytes,
    /// One per replica it goes to over the group, sorted by replica name.
    pub(super) deliveries: Vec<(Delivery, Strategy)>,
    /// Its bytes' room in the bundler's queue, until the bundle is with the sender.
    pub(super) _room: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Bundled {
    /// The replicas it goes to, for grouping objects with the same ones into a bundle.
    fn replicas(&self) -> Vec<&str> {
        self.deliveries
            .iter()
            .map(|(delivery, _)| delivery.target.name.as_str())
            .collect()
    }

    pub(super) fn fail(self, reason: &DeliveryFailure) {
        for (delivery, _) in self.deliveries {
            delivery.resolve(ReplicaOutcome::Failed {
                reason: reason.clone(),
            });
        }
    }
}

/// The writer's bundler: whatever small multicast objects queued while the sender was busy
/// with the previous bundle leave as the next ones, one per set of replicas, of `bound` bytes
/// and [`MAX_BUNDLE_PARTS`] objects at most (an object alone goes as itself). Ends with the
/// writer (its queue's sender is in the writer's state).
pub(super) async fn run_bundler(mut queue: mpsc::UnboundedReceiver<Bundled>, bound: usize) {
    let mut carried: Option<Bundled> = None;
    loop {
        let first = match carried.take() {
            Some(bundled) => bundled,
            None => match queue.recv().await {
                Some(bundled) => bundled,
                None => return,
            },
        };
        let mut bytes = first.data.len();
        let mut taken = vec![first];
        while taken.len() < MAX_BUNDLE_PARTS {
            match queue.try_recv() {
                Ok(next) if bytes + next.data.len() <= bound => {
                    bytes += next.data.len();
                    taken.push(next);
                }
                Ok(next) => {
                    carried = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        // One bundle per set of replicas, in the order of their first object.
        let mut groups: Vec<Vec<Bundled>> = Vec::new();
        for bundled in taken {
            match groups
                .iter_mut()
                .find(|group| group[0].replicas() == bundled.replicas())
            {
                Some(group) => group.push(bundled),
                None => groups.push(vec![bundled]),
            }
        }
        for group in groups {
            send_bundle(group).await;
        }
    }
}

/// Hands `group` (objects for the same replicas) to the sender, as one object if it is one,
/// as a bundle otherwise, and queues its announcement in each replica's lane.
async fn send_bundle(mut group: Vec<Bundled>) {
    let Some(inner) = group
        .first()
        .and_then(|bundled| bundled.deliveries.first())
        .map(|(delivery, _)| delivery.inner.clone())
    else {
        return;
    };
    let Some(sender) = inner.sender.as_ref() else {
        for bundled in group {
            bundled.fail(&DeliveryFailure::Sender(FanoutError::NoGroup.to_string()));
        }
        return;
    };
    if inner.verification == Verification::Application {
        if let Err((error, group)) = send_unannounced(&inner, sender, group).await {
            let reason = DeliveryFailure::Sender(error.to_string());
            for bundled in group {
                bundled.fail(&reason);
            }
        }
        return;
    }
    let multicast_id = next_multicast_id(&inner);
    if group.len() == 1 {
        let Some(bundled) = group.pop() else { return };
        let sent = sender.send(multicast_id, bundled.data.clone()).await;
        match sent {
            Ok(delivery) => {
                tokio::spawn(gather_evidence(inner.clone(), delivery));
            }
            Err(error) => return bundled.fail(&DeliveryFailure::Sender(error.to_string())),
        }
        let expectation = Expectation {
            session_id: inner.session_id,
            multicast_id,
            object_id: bundled.object_id,
            len: bundled.data.len() as u64,
            digest: digest(&bundled.data),
        };
        for (delivery, strategy) in bundled.deliveries {
            let lane = delivery.target.lane.clone();
            let announced = Announced {
                delivery,
                expectation: expectation.clone(),
                strategy,
            };
            queue(&lane, LaneWork::Announce(announced));
        }
        return;
    }
    let len: usize = group.iter().map(|bundled| bundled.data.len()).sum();
    let mut payload = bytes::BytesMut::with_capacity(len);
    for bundled in &group {
        payload.extend_from_slice(&bundled.data);
    }
    let payload = payload.freeze();
    let bundle = Bundle {
        session_id: inner.session_id,
        multicast_id,
        len: len as u64,
        digest: digest(&payload),
        parts: group
            .iter()
            .map(|bundled| UnicastPart {
                object_id: bundled.object_id,
                len: bundled.data.len() as u64,
            })
            .collect(),
    };
    match sender.send(multicast_id, payload).await {
        Ok(delivery) => {
            tokio::spawn(gather_evidence(inner.clone(), delivery));
        }
        Err(error) => {
            let reason = DeliveryFailure::Sender(error.to_string());
            for bundled in group {
                bundled.fail(&reason);
            }
            return;
        }
    }
    // Every object of the group goes to the same replicas, in the same (sorted) order.
    let mut lanes: Vec<AnnouncedBundle> = Vec::new();
    for bundled in group {
        for (i, (delivery, strategy)) in bundled.deliveries.into_iter().enumerate() {
            match lanes.get_mut(i) {
                Some(announced) => announced.deliveries.push((delivery, strategy)),
                None => lanes.push(AnnouncedBundle {
                    bundle: bundle.clone(),
                    deliveries: vec![(delivery, strategy)],
                }),
            }
        }
    }
    for announced in lanes {
        let Some(lane) = announced
            .deliveries
            .first()
            .map(|(delivery, _)| delivery.target.lane.clone())
        else {
            continue;
        };
        queue(&lane, LaneWork::AnnounceBundle(announced));
    }
}

/// Hands `group` to the sender under [`Verification::Application`], where nobody announces
/// it: one object goes under its own id, several as a bundle framed in its bytes
/// ([`BundleFrame`], under an id with [`BUNDLE_BIT`]); the group's acknowledgement settles
/// every delivery ([`settle_on_acknowledgement`]). A group the sender refuses comes back with
/// the sender's error, its deliveries unsettled.
pub(super) async fn send_unannounced(
    inner: &Arc<Inner>,
    sender: &MulticastSender,
    mut group: Vec<Bundled>,
) -> Result<(), (MulticastSendError, Vec<Bundled>)> {
    let (multicast_id, payload) = match group.as_slice() {
        [one] => (one.object_id, one.data.clone()),
        _ => {
            let parts: Vec<(u64, Bytes)> = group
                .iter()
                .map(|bundled| (bundled.object_id, bundled.data.clone()))
                .collect();
            let id = next_multicast_id(inner) | BUNDLE_BIT;
            (id, BundleFrame::encode(&parts))
        }
    };
    let acknowledged = match sender.send(multicast_id, payload).await {
        Ok(acknowledged) => acknowledged,
        Err(error) => return Err((error, group)),
    };
    let deliveries = group
        .drain(..)
        .flat_map(|bundled| bundled.deliveries)
        .collect();
    tokio::spawn(settle_on_acknowledgement(
        inner.clone(),
        acknowledged,
        deliveries,
    ));
    Ok(())
}
