//! Which congestion controller a connection runs ([`Congestion`]).

mod cubic;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The congestion controller of every connection of an endpoint
/// ([`LinkConfig::congestion`](super::LinkConfig::congestion)).
///
/// Both are quinn's own. They differ in what they take a lost packet for:
///
/// - [`Cubic`](Self::Cubic) (the default, as in TCP and quinn) takes every loss as congestion
///   and shrinks its window. On a path that loses packets at random, without congestion, that
///   bounds a connection far below the link: at 1% loss and 20 ms it moved a 1 MiB object in
///   about 1.3 s over a 100 Mbit/s link (docs/BENCH.md, "Unicast under random loss").
/// - [`Bbr`](Self::Bbr) paces by the bandwidth and round trip it measures, and loss alone does
///   not shrink its rate: the same 1 MiB object took about 0.16 s. But on the same link
///   without loss it was slower than CUBIC in 3 cells of 9 (p99 up to 3.4x CUBIC's, p50 up to
///   1.6x), and quinn calls its BBR experimental. So it is not the default: turn it on for
///   paths whose loss is mostly not congestion, after measuring them.
///
/// ```
/// use replicast_transport::quic::{Congestion, LinkConfig};
///
/// // Links across a WAN whose loss is mostly not congestion.
/// let link = LinkConfig {
///     congestion: Congestion::Bbr,
///     ..LinkConfig::default()
/// };
/// assert_eq!(link.congestion.name(), "bbr");
/// assert_eq!(Congestion::from_name("cubic"), Some(Congestion::Cubic));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// CUBIC (RFC 9438): loss-based, quinn's default, with Linux's rule for bursts in slow
    /// start (a window grows to twice the largest burst even when each burst's
    /// acknowledgements arrive after it).
    #[default]
    Cubic,
    /// BBR (version 1, quinn's experimental implementation): model-based.
    Bbr,
}

impl Congestion {
    /// Every controller, by [`name`](Self::name).
    pub const ALL: [Congestion; 2] = [Congestion::Cubic, Congestion::Bbr];

    /// The name configuration files use: `cubic` or `bbr`.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::Bbr => "bbr",
        }
    }

    /// The controller called `name` ([`name`](Self::name)), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|congestion| congestion.name() == name)
    }

    /// What a name must be, for error messages: `one of cubic, bbr`.
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
        assert_eq!(Congestion::expected(), "one of cubic, bbr");
    }
}
