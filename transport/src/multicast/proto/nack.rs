//! When a receiver NACKs a missing datagram, and when it gives up on it.
//!
//! Each gap waits a random backoff before its first NACK, uniform in
//! `[min, min + factor * group RTT]` capped at `max` (RFC 5401, 3.5, scales the backoff by the
//! group RTT the same way, so that a repair caused by another receiver's NACK can arrive
//! first), then is NACKed again every one and a half group RTTs plus a fresh backoff until it
//! arrives or its retries run out; it is given up on when its repair deadline passes, not when
//! its retries run out. Gaps due at the same time travel in one NACK as ranges. (Doubling the
//! wait per retry was tried: it cut duplicate NACKs little on loopback and used up the repair
//! deadline under bursty loss.)
//!
//! Retries are timed by the RTT the sender announced, which can be far below the time a
//! repair takes to come back: measured on an idle path when a burst starts, it knows nothing
//! of the queue the burst then builds before a CPU-bound receiver's group socket, and a
//! repair to the group (a loss several receivers NACKed) waits at the back of that queue (a
//! unicast repair comes on the receiver's own socket, read beside the group's). Thirty retries 1.5 RTTs of 0.6 ms apart are spent in
//! about 30 ms, before the answer to the first can be read; giving up then lost objects whose
//! repairs were on their way (`a_receiver_behind_its_socket_queue_waits_for_its_repairs`
//! in `multicast_sim`). So a gap out of retries is NACKed [`LATE_RETRIES`] more times, spread
//! over its repair deadline (a repair lost on its way, or a NACK the sender took for a
//! duplicate of one it had just answered, is asked for again), and is given up on only at
//! the deadline. The deadline bounds the wait; the retries bound the NACKs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::config::ReceiverConfig;
use super::wire::{MAX_NACK_RANGES, SeqRange};

/// NACKs of a gap after its `max_nack_retries` ran out, spread evenly over its repair
/// deadline: the announced RTT those retries were timed by may have been far too short.
pub(crate) const LATE_RETRIES: u32 = 8;

#[derive(Debug, Clone, Copy)]
struct Missing {
    detected_at: Instant,
    due: Instant,
    retries: u32,
    /// Once its fast retries ran out: when a receiver that gave a gap up then (before the
    /// late retries) would have given it up, the last fast retry's wait after it.
    fast_retries_over: Option<Instant>,
}

/// A deterministic generator for backoff jitter (SplitMix64): the core must not draw on a
/// global RNG, so that simulations replay exactly.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Missing sequence numbers of one session and their NACK timers.
#[derive(Debug)]
pub(crate) struct NackScheduler {
    missing: BTreeMap<u64, Missing>,
    /// No timer of any entry is earlier (may be earlier than needed after removals).
    earliest: Option<Instant>,
}

/// What became of a missing datagram that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filled {
    /// It was not missing.
    NotMissing,
    /// It was missing and had not been NACKed by this receiver yet.
    BeforeNack,
    /// It was missing and NACKed.
    AfterNack,
    /// It was missing, NACKed, and arrived after its fast retries ran out and the wait after
    /// the last of them: without the late retries it would have been given up on.
    AfterFastRetries,
}

impl NackScheduler {
    pub(crate) fn new() -> Self {
        Self {
            missing: BTreeMap::new(),
            earliest: None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.missing.len()
    }

    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.missing.contains_key(&seq)
    }

    /// The lowest missing sequence number.
    pub(crate) fn first(&self) -> Option<u64> {
        self.missing.keys().next().copied()
    }

    /// Missing sequence numbers below `seq`.
    pub(crate) fn below(&self, seq: u64) -> Vec<u64> {
        self.missing.range(..seq).map(|(seq, _)| *seq).collect()
    }

    /// Records `seq` missing; its first NACK waits `backoff`.
    pub(crate) fn insert(&mut self, seq: u64, now: Instant, backoff: Duration) {
        let due = now + backoff;
        self.missing.entry(seq).or_insert(Missing {
            detected_at: now,
            due,
            retries: 0,
            fast_retries_over: None,
        });
        self.earliest = Some(self.earliest.map_or(due, |at| at.min(due)));
    }

    /// `seq` was resolved (given up on, or past the window).
    pub(crate) fn remove(&mut self, seq: u64) {
        self.missing.remove(&seq);
    }

    /// `seq` arrived at `now`: what became of it, and when it was found missing, if it was.
    pub(crate) fn remove_detected(&mut self, seq: u64, now: Instant) -> (Filled, Option<Instant>) {
        match self.missing.remove(&seq) {
            None => (Filled::NotMissing, None),
            Some(missing) if missing.retries == 0 => {
                (Filled::BeforeNack, Some(missing.detected_at))
            }
            Some(missing) if missing.fast_retries_over.is_some_and(|over| over <= now) => {
                (Filled::AfterFastRetries, Some(missing.detected_at))
            }
            Some(missing) => (Filled::AfterNack, Some(missing.detected_at)),
        }
    }

    /// Takes the ranges due for a NACK now (at most one NACK's worth) and schedules their
    /// retries.
    pub(crate) fn take_due(
        &mut self,
        now: Instant,
        config: &ReceiverConfig,
        group_rtt: Duration,
        jitter: &mut Jitter,
        held_back: impl Fn(u64) -> bool,
    ) -> Vec<SeqRange> {
        if self.earliest.is_none_or(|at| at > now) {
            return Vec::new();
        }
        let mut ranges: Vec<SeqRange> = Vec::new();
        // A repair comes back one announced RTT (round trip plus coalescing) after the NACK;
        // half as much again covers a sender busy with data before it looks again.
        let retry_base = (group_rtt * 3 / 2).max(config.nack_backoff_min);
        for (&seq, missing) in self.missing.iter_mut() {
            if missing.due > now
                || missing.retries >= config.max_nack_retries.saturating_add(LATE_RETRIES)
            {
                continue;
            }
            if held_back(seq) {
                // Parity in hand covers it once the rest of its block comes: look again
                // later, without spending a retry.
                missing.due = now + retry_base;
                continue;
            }
            let extends = ranges.last().is_some_and(|range| {
                range.first + u64::from(range.len) == seq && range.len < u32::MAX
            });
            if extends {
                if let Some(range) = ranges.last_mut() {
                    range.len += 1;
                }
            } else if ranges.len() == MAX_NACK_RANGES {
                break;
            } else {
                ranges.push(SeqRange { first: seq, len: 1 });
            }
            missing.retries += 1;
            let wait = retry_base + backoff(config, group_rtt, jitter);
            missing.due = now
                + if missing.retries >= config.max_nack_retries {
                    if missing.retries == config.max_nack_retries {
                        missing.fast_retries_over = Some(now + wait);
                    }
                    wait.max(config.repair_deadline / (LATE_RETRIES + 1))
                } else {
                    wait
                };
        }
        self.recompute_earliest(config);
        ranges
    }

    /// Removes and returns the sequence numbers given up on: past the repair deadline (one
    /// out of retries is still awaited until then: a repair it asked for may be on its way).
    pub(crate) fn take_expired(&mut self, now: Instant, config: &ReceiverConfig) -> Vec<u64> {
        if self.earliest.is_none_or(|at| at > now) {
            return Vec::new();
        }
        let expired: Vec<u64> = self
            .missing
            .iter()
            .filter(|(_, missing)| missing.detected_at + config.repair_deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &expired {
            self.missing.remove(seq);
        }
        self.recompute_earliest(config);
        expired
    }

    fn recompute_earliest(&mut self, config: &ReceiverConfig) {
        self.earliest = self
            .missing
            .values()
            .map(|missing| {
                let deadline = missing.detected_at + config.repair_deadline;
                if missing.retries >= config.max_nack_retries.saturating_add(LATE_RETRIES) {
                    // No NACK is due any more, only the give-up.
                    deadline
                } else {
                    missing.due.min(deadline)
                }
            })
            .min();
    }

    /// When a NACK or a give-up may next be due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.earliest
    }
}

/// The first-NACK wait: uniform in `[min, min + factor * rtt]`, capped at `max`.
pub(crate) fn backoff(
    config: &ReceiverConfig,
    group_rtt: Duration,
    jitter: &mut Jitter,
) -> Duration {
    let spread = group_rtt.mul_f64(config.nack_backoff_rtt_factor.max(0.0) * jitter.unit());
    (config.nack_backoff_min + spread).min(config.nack_backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_bounds_and_varies() {
        let config = ReceiverConfig::default();
        let mut jitter = Jitter::new(7);
        let rtt = Duration::from_millis(20);
        let waits: Vec<Duration> = (0..1000)
            .map(|_| backoff(&config, rtt, &mut jitter))
            .collect();
        assert!(waits.iter().all(|w| *w >= config.nack_backoff_min));
        assert!(waits.iter().all(|w| *w <= config.nack_backoff_min + rtt));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 900);
    }

    #[test]
    fn due_gaps_travel_as_ranges_and_retry_until_the_deadline() {
        let config = ReceiverConfig {
            max_nack_retries: 2,
            ..ReceiverConfig::default()
        };
        let mut jitter = Jitter::new(1);
        let mut nacks = NackScheduler::new();
        let now = Instant::now();
        for seq in [3, 4, 5, 9] {
            nacks.insert(seq, now, Duration::ZERO);
        }
        let rtt = Duration::from_millis(1);
        let ranges = nacks.take_due(now, &config, rtt, &mut jitter, |_| false);
        assert_eq!(
            ranges,
            vec![SeqRange { first: 3, len: 3 }, SeqRange { first: 9, len: 1 }]
        );
        assert!(
            nacks
                .take_due(now, &config, rtt, &mut jitter, |_| false)
                .is_empty(),
            "not due again yet"
        );
        assert_eq!(nacks.remove_detected(4, now).0, Filled::AfterNack);
        let later = now + Duration::from_millis(50);
        assert_eq!(
            nacks
                .take_due(later, &config, rtt, &mut jitter, |_| false)
                .len(),
            3
        );
        let much_later = later + Duration::from_millis(50);
        assert!(
            nacks
                .take_due(much_later, &config, rtt, &mut jitter, |_| false)
                .is_empty(),
            "out of retries at the announced RTT's pace"
        );
        assert!(
            nacks.take_expired(much_later, &config).is_empty(),
            "out of retries, a repair may still come before the deadline"
        );
        // The late retries, a ninth of the deadline apart, then only the deadline.
        let late_gap = config.repair_deadline / (LATE_RETRIES + 1);
        let mut at = later;
        for late in 0..LATE_RETRIES {
            at += late_gap + rtt * 2;
            assert_eq!(
                nacks
                    .take_due(at, &config, rtt, &mut jitter, |_| false)
                    .len(),
                3,
                "late retry {late}"
            );
        }
        assert!(
            nacks
                .take_due(at + late_gap * 2, &config, rtt, &mut jitter, |_| false)
                .is_empty(),
            "out of late retries too"
        );
        assert_eq!(nacks.next_deadline(), Some(now + config.repair_deadline));
        assert!(nacks.take_expired(at, &config).is_empty());
        assert_eq!(
            nacks.remove_detected(5, at).0,
            Filled::AfterFastRetries,
            "a repair the late retries waited for"
        );
        let deadline = now + config.repair_deadline;
        assert_eq!(nacks.take_expired(deadline, &config), vec![3, 9]);
        assert_eq!(nacks.len(), 0);
    }
}
