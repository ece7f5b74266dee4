//! `[limits]`: what one peer may hold of a node's resources.

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [limits] table")]
pub(super) struct RawLimits {
    open_transactions: Option<Spanned<u64>>,
    pending_stores: Option<Spanned<u64>>,
    pending_store_bytes: Option<Spanned<u64>>,
    streams: Option<Spanned<u64>>,
    fanout_sessions: Option<Spanned<u64>>,
}

/// The optional `[limits]` section: per-peer bounds on what a node holds for its peers. A
/// peer that reaches one gets a typed refusal ([`Refusal`](crate::protocol::Refusal)) or, for
/// the transport's bounds, waits or loses its connection; the node's memory stays bounded
/// whatever its peers send. Every key has a default, ample for well-behaved nodes.
///
/// ```
/// use replicast_node::config::PeerLimits;
///
/// let limits = PeerLimits::default();
/// assert_eq!(limits.open_transactions, 1024);
/// assert!(limits.pending_store_bytes >= 16 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Transactions a client may have open at once: begun at the master and not finished or
    /// aborted, or holding stores at a storage (`limits.open_transactions`).
    pub open_transactions: u64,
    /// Stores a storage holds for one peer's unfinished transactions, a store without a
    /// begin included (`limits.pending_stores`).
    pub pending_stores: u64,
    /// Bytes of one peer's stores a storage holds in memory while they wait for a lock
    /// (`limits.pending_store_bytes`).
    pub pending_store_bytes: u64,
    /// QUIC streams of each direction a peer may have open at once on a connection; further
    /// ones wait (`limits.streams`).
    pub streams: u64,
    /// Fan-out sessions a storage serves at once, one per writer (`limits.fanout_sessions`).
    pub fanout_sessions: u64,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            open_transactions: 1024,
            pending_stores: 16_384,
            pending_store_bytes: 256 << 20,
            streams: 1024,
            fanout_sessions: 256,
        }
    }
}

impl PeerLimits {
    pub(super) fn check(
        raw: Option<Spanned<RawLimits>>,
        check: &Checker<'_>,
    ) -> Result<Self, ConfigError> {
        let mut limits = Self::default();
        let Some(raw) = raw else {
            return Ok(limits);
        };
        let raw = raw.into_inner();
        // QUIC counts streams in a varint, quinn in a u32.
        let max_streams = u64::from(u32::MAX);
        for (value, key, target, max) in [
            (
                raw.open_transactions,
                "limits.open_transactions",
                &mut limits.open_transactions,
                u64::MAX,
            ),
            (
                raw.pending_stores,
                "limits.pending_stores",
                &mut limits.pending_stores,
                u64::MAX,
            ),
            (
                raw.pending_store_bytes,
                "limits.pending_store_bytes",
                &mut limits.pending_store_bytes,
                u64::MAX,
            ),
            (
                raw.streams,
                "limits.streams",
                &mut limits.streams,
                max_streams,
            ),
            (
                raw.fanout_sessions,
                "limits.fanout_sessions",
                &mut limits.fanout_sessions,
                u64::MAX,
            ),
        ] {
            if let Some(value) = value {
                if !(1..=max).contains(value.get_ref()) {
                    return Err(check.invalid(
                        key,
                        &value,
                        value.get_ref(),
                        format!("1 to {max}: a limit of 0 would refuse everything"),
                    ));
                }
                *target = *value.get_ref();
            }
        }
        Ok(limits)
    }
}
