//! Which path each replica gets: the per-replica reachability state and the fallback
//! decisions of a fan-out, as a plain state machine (no I/O, no clock of its own).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How a fan-out call reaches its replicas.
///
/// ```
/// use replicast_transport::fanout::Strategy;
///
/// assert_eq!(Strategy::default(), Strategy::Auto);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The object goes over each replica's QUIC link; the replica answers once it has it.
    Unicast,
    /// One send to the multicast group; the digest goes over each replica's QUIC link, and
    /// each replica acknowledges over QUIC only bytes that match it. A replica that does not
    /// get the object by multicast is reported failed.
    Multicast,
    /// Multicast to the replicas that have proven reachable on the group, unicast to the
    /// rest; a replica whose multicast delivery fails gets the object by unicast at once and
    /// is demoted to unicast until it proves reachable again. A replica whose QUIC link
    /// failed meanwhile (dead or frozen) is reported failed instead: the unicast would only
    /// dial it again.
    #[default]
    Auto,
}

/// The path chosen for one replica of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Over the replica's QUIC link.
    Unicast,
    /// Over the group, digest and acknowledgement over QUIC.
    Multicast,
}

/// What the writer knows about a replica's multicast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// Not yet shown to receive the group.
    Unproven,
    /// Received the group recently.
    Proven,
    /// A multicast delivery to it failed; it gets unicast until it proves reachable again.
    Demoted {
        /// When the failure was seen.
        since: Instant,
    },
}

/// After a multicast delivery to a replica failed, what to do for that object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Send it by unicast.
    Unicast,
    /// Report the replica failed (the call asked for multicast only).
    Fail,
}

/// The route under `strategy` for a replica in state `reach` (`None`: not tracked, as one
/// not proven).
pub(crate) fn route_for(strategy: Strategy, reach: Option<Reachability>) -> Route {
    match (strategy, reach) {
        (Strategy::Unicast, _) => Route::Unicast,
        (Strategy::Multicast, _) | (Strategy::Auto, Some(Reachability::Proven)) => Route::Multicast,
        (Strategy::Auto, _) => Route::Unicast,
    }
}

/// The reachability of every replica of one writer, and when to probe the group.
///
/// Evidence comes from two places: the multicast sender's per-receiver outcomes (any object,
/// probes included, delivered on the group proves the path) and the replicas' digest verdicts
/// over QUIC (a verified object proves it; a mismatch, a loss or a timeout demotes).
///
/// ```
/// use std::time::{Duration, Instant};
/// use replicast_transport::fanout::{Fallback, ReachabilityTable, Route, Strategy};
///
/// let now = Instant::now();
/// let mut table = ReachabilityTable::new(Duration::from_millis(500));
/// table.add(1);
/// assert_eq!(table.route(1, Strategy::Auto), Route::Unicast); // not proven yet
/// assert!(table.probe_due(now)); // so the group is probed
/// table.multicast_delivered(1);
/// assert_eq!(table.route(1, Strategy::Auto), Route::Multicast);
/// assert_eq!(table.multicast_failed(1, Strategy::Auto, now), Fallback::Unicast);
/// assert_eq!(table.route(1, Strategy::Auto), Route::Unicast); // demoted
/// ```
#[derive(Debug, Clone)]
pub struct ReachabilityTable {
    replicas: HashMap<u32, Reachability>,
    probe_interval: Duration,
    last_probe: Option<Instant>,
}

impl ReachabilityTable {
    /// An empty table probing the group at most once per `probe_interval` while some
    /// replica is not proven.
    pub fn new(probe_interval: Duration) -> Self {
        Self {
            replicas: HashMap::new(),
            probe_interval,
            last_probe: None,
        }
    }

    /// Starts tracking receiver `id`, unproven.
    pub fn add(&mut self, id: u32) {
        self.replicas.insert(id, Reachability::Unproven);
    }

    /// Stops tracking receiver `id`.
    pub fn remove(&mut self, id: u32) {
        self.replicas.remove(&id);
    }

    /// The state of receiver `id`, if tracked.
    pub fn state(&self, id: u32) -> Option<Reachability> {
        self.replicas.get(&id).copied()
    }

    /// The route for receiver `id` under `strategy`.
    pub fn route(&self, id: u32, strategy: Strategy) -> Route {
        route_for(strategy, self.state(id))
    }

    /// Records that an object reached `id` over the group: it is proven.
    pub fn multicast_delivered(&mut self, id: u32) {
        if let Some(state) = self.replicas.get_mut(&id) {
            *state = Reachability::Proven;
        }
    }

    /// Records that a multicast delivery to `id` failed (lost, abandoned, not received in
    /// time, or bytes that did not match the digest) and says what to do for the object.
    pub fn multicast_failed(&mut self, id: u32, strategy: Strategy, now: Instant) -> Fallback {
        if let Some(state) = self.replicas.get_mut(&id) {
            // A replica already demoted keeps the time of its first failure.
            if !matches!(state, Reachability::Demoted { .. }) {
                *state = Reachability::Demoted { since: now };
            }
        }
        match strategy {
            Strategy::Multicast => Fallback::Fail,
            Strategy::Unicast | Strategy::Auto => Fallback::Unicast,
        }
    }

    /// Whether a probe should go to the group now: some replica is not proven and the last
    /// probe is at least the probe interval old. Answering `true` counts as probing.
    pub fn probe_due(&mut self, now: Instant) -> bool {
        let unproven = self
            .replicas
            .values()
            .any(|state| *state != Reachability::Proven);
        let interval_passed = self
            .last_probe
            .is_none_or(|at| now.saturating_duration_since(at) >= self.probe_interval);
        if unproven && interval_passed {
            self.last_probe = Some(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_strategies_ignore_reachability() {
        let mut table = ReachabilityTable::new(Duration::from_secs(1));
        table.add(7);
        assert_eq!(table.route(7, Strategy::Unicast), Route::Unicast);
        assert_eq!(table.route(7, Strategy::Multicast), Route::Multicast);
        table.multicast_delivered(7);
        assert_eq!(table.route(7, Strategy::Unicast), Route::Unicast);
    }

    #[test]
    fn multicast_only_fails_instead_of_falling_back() {
        let now = Instant::now();
        let mut table = ReachabilityTable::new(Duration::from_secs(1));
        table.add(1);
        assert_eq!(
            table.multicast_failed(1, Strategy::Multicast, now),
            Fallback::Fail
        );
        assert_eq!(table.state(1), Some(Reachability::Demoted { since: now }));
    }

    #[test]
    fn demoted_replica_is_promoted_by_later_evidence() {
        let start = Instant::now();
        let mut table = ReachabilityTable::new(Duration::from_secs(1));
        table.add(1);
        table.multicast_delivered(1);
        table.multicast_failed(1, Strategy::Auto, start);
        let later = start + Duration::from_millis(10);
        table.multicast_failed(1, Strategy::Auto, later);
        assert_eq!(table.state(1), Some(Reachability::Demoted { since: start }));
        assert_eq!(table.route(1, Strategy::Auto), Route::Unicast);
        table.multicast_delivered(1);
        assert_eq!(table.route(1, Strategy::Auto), Route::Multicast);
    }

    #[test]
    fn probes_are_paced_and_stop_once_everyone_is_proven() {
        let start = Instant::now();
        let mut table = ReachabilityTable::new(Duration::from_secs(1));
        assert!(!table.probe_due(start), "nobody to probe");
        table.add(1);
        table.add(2);
        assert!(table.probe_due(start));
        assert!(!table.probe_due(start + Duration::from_millis(999)));
        assert!(table.probe_due(start + Duration::from_secs(1)));
        table.multicast_delivered(1);
        table.multicast_delivered(2);
        assert!(!table.probe_due(start + Duration::from_secs(5)));
    }

    #[test]
    fn unknown_replicas_are_ignored() {
        let mut table = ReachabilityTable::new(Duration::from_secs(1));
        table.multicast_delivered(9);
        assert_eq!(table.state(9), None);
        table.add(9);
        table.remove(9);
        assert_eq!(table.route(9, Strategy::Auto), Route::Unicast);
    }
}
