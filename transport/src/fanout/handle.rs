//! [`FanoutHandle`]: what became of one object at each replica.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;

use super::error::DeliveryFailure;

/// How an object reached a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryPath {
    /// Over the replica's QUIC link, by choice.
    Unicast,
    /// Over the group; the replica verified the digest.
    Multicast,
    /// Over the QUIC link after the multicast delivery failed.
    UnicastFallback,
}

/// The outcome of one object at one replica.
#[derive(Debug, Clone)]
pub enum ReplicaOutcome {
    /// The replica acknowledged the object.
    Delivered {
        /// Time from the fan-out call to the acknowledgement.
        elapsed: Duration,
        /// How it got there.
        path: DeliveryPath,
    },
    /// The replica did not get it.
    Failed {
        /// Why.
        reason: DeliveryFailure,
    },
}

impl ReplicaOutcome {
    /// Whether the replica acknowledged the object.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered { .. })
    }
}

/// The outcome of one object at one replica, as [`Fanout::send_reporting`](super::Fanout::send_reporting)
/// reports it on the caller's stream.
#[derive(Debug, Clone)]
pub struct ObjectOutcome {
    /// The object.
    pub object_id: u64,
    /// The replica.
    pub replica: String,
    /// What became of the object there.
    pub outcome: ReplicaOutcome,
}

/// Resolves replica by replica as the acknowledgements of one object come in.
///
/// Returned by [`Fanout::send`](super::Fanout::send).
#[derive(Debug)]
pub struct FanoutHandle {
    pub(crate) object_id: u64,
    pub(crate) replicas: Vec<String>,
    pub(crate) outcomes: mpsc::UnboundedReceiver<(String, ReplicaOutcome)>,
    pub(crate) report: BTreeMap<String, ReplicaOutcome>,
}

impl FanoutHandle {
    /// The object.
    pub fn object_id(&self) -> u64 {
        self.object_id
    }

    /// The replicas the object was handed to: one outcome comes for each.
    pub fn replicas(&self) -> &[String] {
        &self.replicas
    }

    /// The next replica's outcome, or `None` once every replica has one.
    pub async fn next(&mut self) -> Option<(String, ReplicaOutcome)> {
        let (replica, outcome) = self.outcomes.recv().await?;
        self.report.insert(replica.clone(), outcome.clone());
        Some((replica, outcome))
    }

    /// Waits for every replica's outcome.
    pub async fn wait(mut self) -> FanoutReport {
        while self.next().await.is_some() {}
        FanoutReport {
            object_id: self.object_id,
            replicas: self.replicas,
            outcomes: self.report,
        }
    }
}

/// Every replica's outcome for one object.
#[derive(Debug, Clone)]
pub struct FanoutReport {
    /// The object.
    pub object_id: u64,
    /// The replicas it was handed to.
    pub replicas: Vec<String>,
    /// The outcome per replica; one is missing only if the writer was dropped first.
    pub outcomes: BTreeMap<String, ReplicaOutcome>,
}

impl FanoutReport {
    /// Whether every replica acknowledged the object.
    pub fn all_delivered(&self) -> bool {
        self.replicas.iter().all(|r| {
            self.outcomes
                .get(r)
                .is_some_and(ReplicaOutcome::is_delivered)
        })
    }

    /// The latest acknowledgement, if every replica acknowledged.
    pub fn completion(&self) -> Option<Duration> {
        let mut latest = Duration::ZERO;
        for replica in &self.replicas {
            match self.outcomes.get(replica) {
                Some(ReplicaOutcome::Delivered { elapsed, .. }) => latest = latest.max(*elapsed),
                _ => return None,
            }
        }
        Some(latest)
    }

    /// How the object reached `replica`, if it did.
    pub fn path(&self, replica: &str) -> Option<DeliveryPath> {
        match self.outcomes.get(replica) {
            Some(ReplicaOutcome::Delivered { path, .. }) => Some(*path),
            _ => None,
        }
    }
}
