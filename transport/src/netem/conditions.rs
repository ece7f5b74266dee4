//! Which impairments apply to which destination.

use std::collections::HashMap;
use std::net::SocketAddr;

use str0m_netem::NetemConfig;

/// The link conditions one socket sees towards each destination.
///
/// A destination without its own entry uses the default, if one is set, and otherwise is not
/// impaired at all.
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
    per_destination: HashMap<SocketAddr, NetemConfig>,
}

impl LinkConditions {
    /// No impairment towards any destination.
    pub fn new() -> Self {
        Self::default()
    }

    /// Conditions for every destination that has none of its own.
    pub fn with_default(mut self, config: NetemConfig) -> Self {
        self.default = Some(config);
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
}
