//! Seeded datagram impairment (loss, duplication, reordering) for tests and benchmarks.
//!
//! The drivers apply an [`Impairment`] to every datagram they read, before the protocol core
//! sees it, so loss can be injected on real sockets without root or netem. It is a test aid: a
//! production configuration leaves it off. Time-based impairment (delay, jitter, rate) lives in
//! [`netem`](crate::netem).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to do to datagrams, each decided independently with a seeded generator, so a failing
/// run can be repeated.
///
/// # Example
///
/// ```
/// use replicast_transport::multicast::driver::{Impairment, ImpairmentConfig};
///
/// let mut lossy = Impairment::new(ImpairmentConfig::loss(0.5, 7));
/// let mut delivered = 0;
/// for _ in 0..1000 {
///     lossy.apply(b"datagram", |_| delivered += 1);
/// }
/// assert_eq!(lossy.stats().dropped + delivered, 1000);
/// assert!(delivered > 400 && delivered < 600);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImpairmentConfig {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a delivered datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back and delivered after the next one.
    pub reorder: f64,
    /// Seed of the generator.
    pub seed: u64,
}

impl ImpairmentConfig {
    /// Independent loss with probability `loss`, nothing else.
    pub fn loss(loss: f64, seed: u64) -> Self {
        Self {
            loss,
            duplicate: 0.0,
            reorder: 0.0,
            seed,
        }
    }

    /// Adds duplication with probability `duplicate`.
    pub fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = duplicate;
        self
    }

    /// Adds reordering with probability `reorder`.
    pub fn with_reorder(mut self, reorder: f64) -> Self {
        self.reorder = reorder;
        self
    }
}

/// Counters of an [`Impairment`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairmentStats {
    /// Datagrams offered.
    pub offered: u64,
    /// Datagrams dropped.
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Datagrams held back behind a later one.
    pub reordered: u64,
}

/// Applies an [`ImpairmentConfig`] to a sequence of datagrams.
#[derive(Debug)]
pub struct Impairment {
    config: ImpairmentConfig,
    rng: StdRng,
    /// At most one datagram waits to be delivered after the next, which bounds memory.
    held: Option<Vec<u8>>,
    stats: ImpairmentStats,
}

impl Impairment {
    /// An impairment drawing from a generator seeded with `config.seed`.
    pub fn new(config: ImpairmentConfig) -> Self {
        Self {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            held: None,
            stats: ImpairmentStats::default(),
        }
    }

    /// Offers one datagram; `deliver` is called for each datagram that passes now (none, the
    /// datagram, its duplicate, and a datagram held back earlier, in delivery order).
    pub fn apply(&mut self, datagram: &[u8], mut deliver: impl FnMut(&[u8])) {
        self.stats.offered += 1;
        if self.rng.random_bool(self.config.loss.clamp(0.0, 1.0)) {
            self.stats.dropped += 1;
            return;
        }
        if self.held.is_none() && self.rng.random_bool(self.config.reorder.clamp(0.0, 1.0)) {
            self.stats.reordered += 1;
            self.held = Some(datagram.to_vec());
            return;
        }
        deliver(datagram);
        if self.rng.random_bool(self.config.duplicate.clamp(0.0, 1.0)) {
            self.stats.duplicated += 1;
            deliver(datagram);
        }
        if let Some(held) = self.held.take() {
            deliver(&held);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ImpairmentStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: ImpairmentConfig, count: u32) -> (Vec<u32>, ImpairmentStats) {
        let mut impairment = Impairment::new(config);
        let mut delivered = Vec::new();
        for n in 0..count {
            impairment.apply(&n.to_be_bytes(), |d| {
                delivered.push(u32::from_be_bytes(d.try_into().unwrap()))
            });
        }
        (delivered, impairment.stats())
    }

    #[test]
    fn no_impairment_passes_everything_in_order() {
        let (delivered, stats) = run(ImpairmentConfig::loss(0.0, 1), 100);
        assert_eq!(delivered, (0..100).collect::<Vec<_>>());
        assert_eq!(stats.dropped + stats.duplicated + stats.reordered, 0);
    }

    #[test]
    fn same_seed_same_fate() {
        let config = ImpairmentConfig::loss(0.1, 42)
            .with_duplicate(0.1)
            .with_reorder(0.1);
        assert_eq!(run(config, 1000), run(config, 1000));
        let other = ImpairmentConfig { seed: 43, ..config };
        assert_ne!(run(config, 1000).0, run(other, 1000).0);
    }

    #[test]
    fn counts_add_up() {
        let config = ImpairmentConfig::loss(0.2, 5)
            .with_duplicate(0.1)
            .with_reorder(0.1);
        let (delivered, stats) = run(config, 10_000);
        // Everything offered is dropped, delivered, or (at most one) still held.
        let held = stats.offered + stats.duplicated - stats.dropped - delivered.len() as u64;
        assert!(held <= 1, "held {held}");
        assert!(stats.dropped > 1500 && stats.dropped < 2500, "{stats:?}");
        assert!(stats.duplicated > 0 && stats.reordered > 0);
        let out_of_order = delivered.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(out_of_order > 0);
    }
}
