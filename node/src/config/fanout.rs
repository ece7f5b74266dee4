//! `[fanout]`: how a client sends stored objects to their replicas.

use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [fanout] table")]
pub(super) struct RawFanout {
    strategy: Option<Spanned<String>>,
}

/// How a writer hands an object to its replicas (`fanout.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FanoutStrategy {
    /// One QUIC stream to each replica. Works everywhere; the default.
    #[default]
    Unicast,
    /// One send to the multicast group; digests and acknowledgements over QUIC.
    Multicast,
    /// Multicast to the replicas reachable on the group, unicast to the others.
    Auto,
}

impl FanoutStrategy {
    /// The strategy as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unicast => "unicast",
            Self::Multicast => "multicast",
            Self::Auto => "auto",
        }
    }

    /// Whether the strategy sends to a multicast group, and so needs `[multicast]`.
    pub fn uses_multicast(self) -> bool {
        self != Self::Unicast
    }
}

impl fmt::Display for FanoutStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks `[fanout]`, returning the strategy and the span of its value.
pub(super) fn check_fanout(
    raw: Option<Spanned<RawFanout>>,
    check: &Checker<'_>,
) -> Result<(FanoutStrategy, Option<std::ops::Range<usize>>), ConfigError> {
    let Some(strategy) = raw.and_then(|raw| raw.into_inner().strategy) else {
        return Ok((FanoutStrategy::default(), None));
    };
    let parsed = match strategy.get_ref().as_str() {
        "unicast" => FanoutStrategy::Unicast,
        "multicast" => FanoutStrategy::Multicast,
        "auto" => FanoutStrategy::Auto,
        other => {
            return Err(check.invalid(
                "fanout.strategy",
                &strategy,
                format!("{other:?}"),
                "one of \"unicast\", \"multicast\", \"auto\"",
            ));
        }
    };
    Ok((parsed, Some(strategy.span())))
}
