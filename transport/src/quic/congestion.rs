//! Which congestion controller a connection runs ([`Congestion`]).

mod cubic;
mod random_loss;
mod round_peak;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The congestion controller of every connection of an endpoint
/// ([`LinkConfig::congestion`](super::LinkConfig::congestion)).
///
/// All are quinn's own controllers. They differ in what they take a lost packet for:
///
/// - [`Cubic`](Self::Cubic) (the default) is CUBIC (RFC 9438) that shrinks its window for a
///   loss only when the loss looks like congestion: a queue (the smoothed round trip above
///   the path's minimum by a quarter of it, at least 2 ms) in the last two round trips, three
///   packets or more lost at once, or more than 2% of the recent bytes lost. A loss with none
///   of these is taken as random (a lossy hop, not a full buffer): the packet is sent again,
///   the window stays. Without that, at 1% random loss and 20 ms, CUBIC moved a 1 MiB object
///   in about 1.3 s over a 100 Mbit/s link (docs/BENCH.md, "Unicast under random loss").
/// - [`StrictCubic`](Self::StrictCubic) takes every loss for congestion, as TCP's and
///   quinn's CUBIC do: for a path shared with traffic that expects exactly that.
/// - [`Bbr`](Self::Bbr) paces by the bandwidth and round trip it measures, and loss alone does
///   not shrink its rate. On the bench's links without loss it was slower than CUBIC in 3
///   cells of 9 (p99 up to 3.4x CUBIC's, p50 up to 1.6x), and quinn calls its BBR
///   experimental.
///
/// ```
/// use replicast_transport::quic::{Congestion, LinkConfig};
///
/// // Links on a path shared with TCP traffic that backs off at every loss.
/// let link = LinkConfig {
///     congestion: Congestion::StrictCubic,
///     ..LinkConfig::default()
/// };
/// assert_eq!(link.congestion.name(), "strict-cubic");
/// assert_eq!(Congestion::from_name("cubic"), Some(Congestion::Cubic));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Congestion {
    /// CUBIC (RFC 9438) that keeps its window through losses it takes for random (no queue,
    /// at most 2% lost), with Linux's rule for bursts in slow start (a window grows to three
    /// times the largest burst even when each burst's acknowledgements arrive after it; Linux
    /// says twice, and paces faster than quinn).
    #[default]
    Cubic,
    /// CUBIC that shrinks its window at every loss, as quinn's (with the same rule for
    /// bursts).
    StrictCubic,
    /// BBR (version 1, quinn's experimental implementation): model-based.
    Bbr,
}

impl Congestion {
    /// Every controller, by [`name`](Self::name).
    pub const ALL: [Congestion; 3] = [Congestion::Cubic, Congestion::StrictCubic, Congestion::Bbr];

    /// The name configuration files use: `cubic`, `strict-cubic` or `bbr`.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::StrictCubic => "strict-cubic",
            Congestion::Bbr => "bbr",
        }
    }

    /// The controller called `name` ([`name`](Self::name)), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|congestion| congestion.name() == name)
    }

    /// What a name must be, for error messages: `one of cubic, strict-cubic, bbr`.
    pub fn expected() -> String {
        let names: Vec<&str> = Self::ALL
            .iter()
            .map(|congestion| congestion.name())
            .collect();
        format!("one of {}", names.join(", "))
    }

    /// quinn's factory of this controller.
    pub(crate) fn factory(self) -> Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
        match self {
            Congestion::Cubic => Arc::new(cubic::CubicFactory::default()),
            Congestion::StrictCubic => Arc::new(cubic::CubicFactory::strict()),
            Congestion::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_none() {
        for congestion in Congestion::ALL {
            assert_eq!(Congestion::from_name(congestion.name()), Some(congestion));
        }
        assert_eq!(Congestion::from_name("reno"), None);
        assert_eq!(Congestion::from_name("BBR"), None);
        assert_eq!(Congestion::expected(), "one of cubic, strict-cubic, bbr");
    }
}
