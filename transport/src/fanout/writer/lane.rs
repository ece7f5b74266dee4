//! The per-replica lanes: what a writer says to one replica about single objects
//! (announcements of multicast objects and bundles, small unicast objects) queues in that
//! replica's lane and leaves in batches: one request for the announcements (the verdicts come
//! back in one answer), one object stream for the small unicast objects.
//!
//! Separate because a lane is a task per replica with its own batching and its own limit of
//! batches in flight ([`LANE_REQUESTS`], [`SLOT_HOLD`]); the writer's API and the bundler only
//! queue work in it ([`queue`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::delivery::Delivery;
use crate::fanout::error::DeliveryFailure;
use crate::fanout::handle::{DeliveryPath, ReplicaOutcome};
use crate::fanout::reach::Strategy;
use crate::fanout::wire::{
    Bundle, ControlAnswer, ControlRequest, Expectation, MAX_BUNDLE_BATCH, MAX_EXPECT_BATCH,
    MAX_UNICAST_BATCH, UnicastBatchAck, UnicastBatchHeader, UnicastPart, Verdict,
};
use crate::quic::{Link, LinkError};

/// Batches in flight at once per replica: while they are out, the next announcements and
/// unicast objects gather into the next batch, so a busy writer sends few large batches and a
/// quiet one sends each object at once.
const LANE_REQUESTS: usize = 4;

/// How long a batch holds its slot in the lane at most: one whose verdicts take long (an
/// object lost on the group waits for the replica's bound) must not hold back the batches
/// behind it, which would then wait for that bound one after the other.
const SLOT_HOLD: Duration = Duration::from_millis(10);

/// Objects at least this large go by unicast alone, on a stream of their own; smaller ones are
/// batched.
pub(super) const UNICAST_ALONE: usize = 256 << 10;

/// Bytes of small objects one unicast batch gathers at most.
const UNICAST_BATCH_BYTES: usize = 4 << 20;

/// Where announcements and unicast objects to one replica queue for their batch.
pub(super) type Lane = mpsc::UnboundedSender<LaneWork>;

/// A multicast object announced to one replica, waiting in the replica's lane.
pub(super) struct Announced {
    pub(super) delivery: Delivery,
    pub(super) expectation: Expectation,
    pub(super) strategy: Strategy,
}

/// A bundle announced to one replica, with its objects' deliveries to that replica (in the
/// order of the bundle's parts).
pub(super) struct AnnouncedBundle {
    pub(super) bundle: Bundle,
    pub(super) deliveries: Vec<(Delivery, Strategy)>,
}

/// What waits in a replica's lane.
pub(super) enum LaneWork {
    /// A multicast object to announce.
    Announce(Announced),
    /// A bundle to announce.
    AnnounceBundle(AnnouncedBundle),
    /// A small object to send by unicast (by choice, or as the fallback of a multicast
    /// delivery).
    Unicast(Delivery, DeliveryPath),
}

impl LaneWork {
    fn deliveries(self) -> Vec<Delivery> {
        match self {
            Self::Announce(announced) => vec![announced.delivery],
            Self::AnnounceBundle(announced) => announced
                .deliveries
                .into_iter()
                .map(|(delivery, _)| delivery)
                .collect(),
            Self::Unicast(delivery, _) => vec![delivery],
        }
    }
}

/// Queues `work` in `lane`. The lane ends only when its replica left the set: work that finds
/// it gone fails as removed.
pub(super) fn queue(lane: &Lane, work: LaneWork) {
    if let Err(mpsc::error::SendError(work)) = lane.send(work) {
        for delivery in work.deliveries() {
            delivery.resolve(ReplicaOutcome::Failed {
                reason: DeliveryFailure::Removed,
            });
        }
    }
}

/// Starts the lane of a replica reached over `link`.
pub(super) fn start_lane(link: Link) -> Lane {
    let (lane, queue) = mpsc::unbounded_channel();
    tokio::spawn(run_lane(link, queue));
    lane
}

/// One batch of a lane: announcements (one request), bundles' announcements (one request) and
/// small unicast objects (one object stream).
#[derive(Default)]
struct Batch {
    announced: Vec<Announced>,
    bundles: Vec<AnnouncedBundle>,
    unicast: Vec<(Delivery, DeliveryPath)>,
    unicast_bytes: usize,
}

impl Batch {
    /// Takes `work` if there is room for it; gives it back otherwise.
    fn take(&mut self, work: LaneWork) -> Option<LaneWork> {
        match work {
            LaneWork::Announce(announced) if self.announced.len() < MAX_EXPECT_BATCH => {
                self.announced.push(announced);
                None
            }
            LaneWork::AnnounceBundle(announced) if self.bundles.len() < MAX_BUNDLE_BATCH => {
                self.bundles.push(announced);
                None
            }
            LaneWork::Unicast(delivery, path)
                if self.unicast.is_empty()
                    || (self.unicast.len() < MAX_UNICAST_BATCH
                        && self.unicast_bytes + delivery.data.len() <= UNICAST_BATCH_BYTES) =>
            {
                self.unicast_bytes += delivery.data.len();
                self.unicast.push((delivery, path));
                None
            }
            full => Some(full),
        }
    }
}

/// One replica's lane: whatever queued while [`LANE_REQUESTS`] batches were out (each for
/// [`SLOT_HOLD`] at most) goes as the next batch: one request for its announcements (up to
/// [`MAX_EXPECT_BATCH`], the verdicts come back in one answer) and one object stream for its
/// unicast objects. Ends once the replica left the set and its queue is drained.
async fn run_lane(link: Link, mut queue: mpsc::UnboundedReceiver<LaneWork>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(LANE_REQUESTS));
    let mut carried: Option<LaneWork> = None;
    loop {
        let first = match carried.take() {
            Some(work) => work,
            None => match queue.recv().await {
                Some(work) => work,
                None => return,
            },
        };
        // The semaphore is never closed.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Batch::default();
        carried = batch.take(first);
        while carried.is_none() {
            match queue.try_recv() {
                Ok(next) => carried = batch.take(next),
                Err(_) => break,
            }
        }
        let link = link.clone();
        tokio::spawn(async move {
            let sent = async {
                tokio::join!(
                    announce(&link, batch.announced),
                    announce_bundles(&link, batch.bundles),
                    send_unicast(&link, batch.unicast)
                );
            };
            tokio::pin!(sent);
            // The slot is free once the batch is answered, or after SLOT_HOLD at the latest.
            if tokio::time::timeout(SLOT_HOLD, &mut sent).await.is_err() {
                drop(slot);
                sent.await;
            }
        });
    }
}

/// Sends one batch of announcements and settles each delivery with its verdict.
async fn announce(link: &Link, batch: Vec<Announced>) {
    if batch.is_empty() {
        return;
    }
    let expectations = batch
        .iter()
        .map(|announced| announced.expectation.clone())
        .collect();
    let verdicts = verdicts(
        link,
        &ControlRequest::ExpectBatch(expectations),
        batch.len(),
    )
    .await;
    for (announced, verdict) in batch.into_iter().zip(verdicts) {
        announced
            .delivery
            .settle_multicast(verdict, announced.strategy);
    }
}

/// Sends `request`, a batch of `count` announcements, and returns a verdict for each, in
/// order: the replica's, or what the writer knows without it.
async fn verdicts(
    link: &Link,
    request: &ControlRequest,
    count: usize,
) -> Vec<Result<Verdict, LinkError>> {
    match link.request::<_, ControlAnswer>(request).await {
        Ok(ControlAnswer::Verdicts(verdicts)) if verdicts.len() == count => {
            verdicts.into_iter().map(Ok).collect()
        }
        // An answer that is not this batch's: nothing is known to have arrived.
        Ok(_) => vec![Ok(Verdict::NotReceived); count],
        Err(e) => vec![Err(e); count],
    }
}

/// Sends one batch of bundles' announcements and settles each object's delivery with its
/// bundle's verdict (a bundle not verified falls back, or fails, object by object).
async fn announce_bundles(link: &Link, batch: Vec<AnnouncedBundle>) {
    if batch.is_empty() {
        return;
    }
    let bundles = batch
        .iter()
        .map(|announced| announced.bundle.clone())
        .collect();
    let verdicts = verdicts(link, &ControlRequest::ExpectBundles(bundles), batch.len()).await;
    for (announced, verdict) in batch.into_iter().zip(verdicts) {
        for (delivery, strategy) in announced.deliveries {
            delivery.settle_multicast(verdict.clone(), strategy);
        }
    }
}

/// Sends small objects on one object stream (a single one with its plain header) and
/// resolves each with the replica's acknowledgement.
async fn send_unicast(link: &Link, mut batch: Vec<(Delivery, DeliveryPath)>) {
    if batch.len() <= 1 {
        if let Some((delivery, path)) = batch.pop() {
            delivery.send_alone(path).await;
        }
        return;
    }
    let parts = batch
        .iter()
        .map(|(delivery, _)| UnicastPart {
            object_id: delivery.object_id,
            len: delivery.data.len() as u64,
        })
        .collect();
    // The objects go as the parts of one payload: the stream carries them one after the
    // other, with no copy to gather them.
    let payload = batch
        .iter()
        .map(|(delivery, _)| delivery.data.clone())
        .collect();
    let answer = link
        .send_object_parts::<_, UnicastBatchAck>(&UnicastBatchHeader { parts }, payload)
        .await;
    let answer = match answer {
        Ok(ack) if ack.objects == batch.len() as u64 => Ok(()),
        Ok(ack) => Err(DeliveryFailure::UnexpectedAck {
            sent: batch.len() as u64,
            acknowledged: ack.objects,
        }),
        Err(e) => Err(DeliveryFailure::Link(e)),
    };
    for (delivery, path) in batch {
        let outcome = match &answer {
            Ok(()) => ReplicaOutcome::Delivered {
                elapsed: delivery.start.elapsed(),
                path,
            },
            Err(reason) => ReplicaOutcome::Failed {
                reason: reason.clone(),
            },
        };
        delivery.resolve(outcome);
    }
}
