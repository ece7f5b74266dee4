//! Which impairments apply to which destination.

use std::collections::HashMap;
use std::net::SocketAddr;

use str0m_netem::NetemConfig;

/// The link conditions one socket sees towards each destination.
///
/// A destination without its own entry uses the default, if one is set, and otherwise is not
/// impaired at all. The default is either a link of its own per destination
/// ([`with_default`](Self::with_default)) or one link that every such destination shares
/// ([`with_shared_default`](Self::with_shared_default)): one queue and one rate limit for all,
/// as a sender's NIC has.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use replicast_transport::netem::{LinkConditions, NetemConfig};
///
/// let wan = NetemConfig::new().latency(Duration::from_millis(40)).seed(1);
/// let conditions = LinkConditions::new().with_default(wan);
/// assert!(conditions.config_for("127.0.0.1:9".parse().unwrap()).is_some());
/// ```
#[derive(Debug, Clone, Default)]
pub struct LinkConditions {
    default: Option<NetemConfig>,
    /// Whether every destination without its own entry shares one link of the default.
    shared_default: bool,
    per_destination: HashMap<SocketAddr, NetemConfig>,
}

/// Which emulated link a datagram takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LinkKey {
    /// The link of one destination.
    Destination(SocketAddr),
    /// The one link every destination without its own entry shares.
    Shared,
}

impl LinkConditions {
    /// No impairment towards any destination.
    pub fn new() -> Self {
        Self::default()
    }

    /// Conditions for every destination that has none of its own, each on a link of its own
    /// (its own queue, its own rate limit).
    pub fn with_default(mut self, config: NetemConfig) -> Self {
        self.default = Some(config);
        self.shared_default = false;
        self
    }

    /// Conditions for every destination that has none of its own, all on one shared link: one
    /// queue, so a rate limit bounds what the socket sends in total, whatever the destination.
    /// This is a sender's own link (its NIC and access line); a datagram keeps its destination.
    ///
    /// ```
    /// use std::time::Duration;
    /// use replicast_transport::netem::{Bitrate, DataSize, LinkConditions, NetemConfig};
    ///
    /// let uplink = NetemConfig::new().link(Bitrate::mbps(100), DataSize::bytes(256_000));
    /// let conditions = LinkConditions::new().with_shared_default(uplink);
    /// assert!(conditions.config_for("127.0.0.1:9".parse().unwrap()).is_some());
    /// ```
    pub fn with_shared_default(mut self, config: NetemConfig) -> Self {
        self.default = Some(config);
        self.shared_default = true;
        self
    }

    /// Conditions towards one destination (an endpoint's or a multicast group's address).
    pub fn with_link(mut self, destination: SocketAddr, config: NetemConfig) -> Self {
        self.per_destination.insert(destination, config);
        self
    }

    /// The conditions that apply to `destination`, or `None` when it is not impaired.
    pub fn config_for(&self, destination: SocketAddr) -> Option<NetemConfig> {
        self.per_destination
            .get(&destination)
            .copied()
            .or(self.default)
    }

    /// The link towards `destination` and its conditions, or `None` when it is not impaired.
    /// Called per datagram: by reference, and without hashing the address when no link is
    /// per destination.
    pub(crate) fn link_for(&self, destination: SocketAddr) -> Option<(LinkKey, &NetemConfig)> {
        if !self.per_destination.is_empty()
            && let Some(config) = self.per_destination.get(&destination)
        {
            return Some((LinkKey::Destination(destination), config));
        }
        let key = if self.shared_default {
            LinkKey::Shared
        } else {
            LinkKey::Destination(destination)
        };
        self.default.as_ref().map(|config| (key, config))
    }
}
