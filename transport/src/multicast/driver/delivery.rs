//! Delivery reports: what became of one object at each receiver.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tokio::sync::mpsc;

/// What became of an object at one receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryOutcome {
    /// The receiver acknowledged every byte of the object.
    Delivered,
    /// The sender gave up on this receiver for this object (it stopped acknowledging within
    /// the configured bound); the caller should bring it the object another way.
    Abandoned,
    /// The receiver was removed from the group before the object's fate was known.
    Removed,
}

/// Resolves, receiver by receiver, as the sender learns what became of one object.
///
/// Returned by [`MulticastSender::send`](super::MulticastSender::send).
#[derive(Debug)]
pub struct DeliveryHandle {
    object_id: u64,
    receivers: Vec<u32>,
    outcomes: mpsc::UnboundedReceiver<(u32, DeliveryOutcome)>,
    report: BTreeMap<u32, DeliveryOutcome>,
}

impl DeliveryHandle {
    /// The object this handle reports on.
    pub fn object_id(&self) -> u64 {
        self.object_id
    }

    /// The receivers that were members when the object was accepted: one outcome comes for
    /// each.
    pub fn receivers(&self) -> &[u32] {
        &self.receivers
    }

    /// The next receiver's outcome, or `None` once every receiver has one (or the driver
    /// stopped before they all had one).
    pub async fn next(&mut self) -> Option<(u32, DeliveryOutcome)> {
        let (receiver, outcome) = self.outcomes.recv().await?;
        self.report.insert(receiver, outcome);
        Some((receiver, outcome))
    }

    /// Waits for every receiver's outcome.
    pub async fn wait(mut self) -> DeliveryReport {
        while self.next().await.is_some() {}
        DeliveryReport {
            object_id: self.object_id,
            receivers: self.receivers,
            outcomes: self.report,
        }
    }
}

/// Every receiver's outcome for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The object.
    pub object_id: u64,
    /// The receivers that were members when the object was accepted.
    pub receivers: Vec<u32>,
    /// The outcome per receiver; a receiver is missing only if the driver stopped first.
    pub outcomes: BTreeMap<u32, DeliveryOutcome>,
}

impl DeliveryReport {
    /// Whether every receiver acknowledged the object.
    pub fn all_delivered(&self) -> bool {
        self.receivers
            .iter()
            .all(|r| self.outcomes.get(r) == Some(&DeliveryOutcome::Delivered))
    }

    /// The receivers that did not acknowledge the object, for whatever reason.
    pub fn undelivered(&self) -> Vec<u32> {
        self.receivers
            .iter()
            .copied()
            .filter(|r| self.outcomes.get(r) != Some(&DeliveryOutcome::Delivered))
            .collect()
    }
}

/// The driver's side of the handles: objects whose fate is not yet known everywhere.
#[derive(Debug, Default)]
pub(crate) struct DeliveryTracker {
    pending: HashMap<u64, Pending>,
}

#[derive(Debug)]
struct Pending {
    awaiting: BTreeSet<u32>,
    outcomes: mpsc::UnboundedSender<(u32, DeliveryOutcome)>,
}

impl DeliveryTracker {
    /// Starts tracking `object_id`, sent to `receivers`.
    pub(crate) fn track(&mut self, object_id: u64, receivers: Vec<u32>) -> DeliveryHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        if !receivers.is_empty() {
            self.pending.insert(
                object_id,
                Pending {
                    awaiting: receivers.iter().copied().collect(),
                    outcomes: tx,
                },
            );
        }
        DeliveryHandle {
            object_id,
            receivers,
            outcomes: rx,
            report: BTreeMap::new(),
        }
    }

    /// Records one receiver's outcome; outcomes nobody awaits (a receiver removed meanwhile,
    /// a repeated report) are ignored.
    pub(crate) fn resolve(&mut self, object_id: u64, receiver: u32, outcome: DeliveryOutcome) {
        let Some(pending) = self.pending.get_mut(&object_id) else {
            return;
        };
        if pending.awaiting.remove(&receiver) {
            // The caller may have dropped the handle: the outcome then concerns nobody.
            let _ = pending.outcomes.send((receiver, outcome));
        }
        if pending.awaiting.is_empty() {
            self.pending.remove(&object_id);
        }
    }

    /// Resolves a removed receiver everywhere it is awaited.
    pub(crate) fn remove_receiver(&mut self, receiver: u32) {
        let objects: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.awaiting.contains(&receiver))
            .map(|(object, _)| *object)
            .collect();
        for object in objects {
            self.resolve(object, receiver, DeliveryOutcome::Removed);
        }
    }

    /// Objects whose fate is still unknown somewhere.
    pub(crate) fn outstanding(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handle_resolves_per_receiver_then_ends() {
        let mut tracker = DeliveryTracker::default();
        let handle = tracker.track(9, vec![1, 2, 3]);
        tracker.resolve(9, 2, DeliveryOutcome::Delivered);
        tracker.resolve(9, 2, DeliveryOutcome::Abandoned); // repeated: ignored
        tracker.resolve(9, 1, DeliveryOutcome::Abandoned);
        assert_eq!(tracker.outstanding(), 1);
        tracker.remove_receiver(3);
        assert_eq!(tracker.outstanding(), 0);
        let report = handle.wait().await;
        assert!(!report.all_delivered());
        assert_eq!(report.undelivered(), vec![1, 3]);
        assert_eq!(report.outcomes[&2], DeliveryOutcome::Delivered);
        assert_eq!(report.outcomes[&3], DeliveryOutcome::Removed);
    }

    #[tokio::test]
    async fn no_receivers_resolves_at_once() {
        let mut tracker = DeliveryTracker::default();
        let report = tracker.track(1, vec![]).wait().await;
        assert!(report.all_delivered());
        assert_eq!(tracker.outstanding(), 0);
    }
}
