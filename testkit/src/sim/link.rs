//! [`LossyLink`]: one direction of a datagram path.

use std::time::{Duration, Instant};

use rand::Rng;

/// How one direction of a link loses datagrams.
#[derive(Debug, Clone, Copy)]
pub enum LossModel {
    /// Each datagram lost independently with this probability.
    Random(f64),
    /// Gilbert-Elliott: a good and a bad state with their own loss rates.
    Bursty {
        /// Probability per datagram of going from the good state to the bad one.
        good_to_bad: f64,
        /// Probability per datagram of going back.
        bad_to_good: f64,
        /// Loss in the good state.
        loss_good: f64,
        /// Loss in the bad state.
        loss_bad: f64,
    },
}

/// One direction of a datagram path: loss, a fixed delay, reordering with jitter,
/// duplication, and a cut from some instant on. Datagrams keep their order (as on a real
/// path) unless reordered: then they take up to `jitter` longer and may overtake or be
/// overtaken.
#[derive(Debug, Clone)]
pub struct LossyLink {
    /// How it loses datagrams.
    pub model: LossModel,
    /// Whether the bursty model is in its bad state.
    pub in_bad_state: bool,
    /// The delay of every datagram.
    pub delay: Duration,
    /// The most a reordered datagram takes beyond `delay`.
    pub jitter: Duration,
    /// Probability that a datagram is reordered.
    pub reorder: f64,
    /// Probability that a datagram arrives twice.
    pub duplicate: f64,
    /// From this instant on every datagram is lost (a receiver cut off).
    pub cut_at: Option<Instant>,
    /// Arrival of the last datagram that kept its order.
    pub last_arrival: Option<Instant>,
}

impl LossyLink {
    /// A link losing by `model` with `delay`, nothing reordered, duplicated or cut.
    pub fn new(model: LossModel, delay: Duration) -> Self {
        Self {
            model,
            in_bad_state: false,
            delay,
            jitter: Duration::ZERO,
            reorder: 0.0,
            duplicate: 0.0,
            cut_at: None,
            last_arrival: None,
        }
    }

    /// The delays after which copies of a datagram sent at `now` arrive (empty: lost), drawn
    /// from `rng`.
    pub fn carry(&mut self, now: Instant, rng: &mut impl Rng) -> Vec<Duration> {
        if self.cut_at.is_some_and(|at| now >= at) {
            return Vec::new();
        }
        let lost = match self.model {
            LossModel::Random(p) => rng.random_bool(p),
            LossModel::Bursty {
                good_to_bad,
                bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let flip = if self.in_bad_state {
                    bad_to_good
                } else {
                    good_to_bad
                };
                if rng.random_bool(flip) {
                    self.in_bad_state = !self.in_bad_state;
                }
                rng.random_bool(if self.in_bad_state {
                    loss_bad
                } else {
                    loss_good
                })
            }
        };
        if lost {
            return Vec::new();
        }
        let copies = if rng.random_bool(self.duplicate) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let arrival = now + self.delay;
                if rng.random_bool(self.reorder) {
                    return arrival + self.jitter.mul_f64(rng.random::<f64>()) - now;
                }
                let arrival = self.last_arrival.map_or(arrival, |last| last.max(arrival));
                self.last_arrival = Some(arrival);
                arrival - now
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn datagrams_keep_their_order_until_the_cut() {
        let mut rng = StdRng::seed_from_u64(1);
        let start = Instant::now();
        let mut link = LossyLink::new(LossModel::Random(0.0), Duration::from_millis(5));
        link.cut_at = Some(start + Duration::from_millis(10));
        assert_eq!(link.carry(start, &mut rng), [Duration::from_millis(5)]);
        assert_eq!(
            link.carry(start + Duration::from_millis(1), &mut rng),
            [Duration::from_millis(5)]
        );
        assert!(
            link.carry(start + Duration::from_millis(10), &mut rng)
                .is_empty()
        );
    }

    #[test]
    fn bursty_loss_loses_in_bursts() {
        let mut rng = StdRng::seed_from_u64(2);
        let now = Instant::now();
        let mut link = LossyLink::new(
            LossModel::Bursty {
                good_to_bad: 0.05,
                bad_to_good: 0.2,
                loss_good: 0.0,
                loss_bad: 1.0,
            },
            Duration::ZERO,
        );
        let lost: Vec<bool> = (0..2000)
            .map(|_| link.carry(now, &mut rng).is_empty())
            .collect();
        let losses = lost.iter().filter(|lost| **lost).count();
        let runs = lost.windows(2).filter(|w| !w[0] && w[1]).count();
        assert!(losses > 0 && runs > 0);
        assert!(losses > 2 * runs, "{losses} losses in {runs} bursts");
    }
}
