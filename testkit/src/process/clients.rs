//! In-process clients of a [`LocalCluster`](super::LocalCluster): real QUIC endpoints with the
//! certificates `replicast certs init` made, stores through a fan-out writer.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use replicast_certs::NodeIdentity;
use replicast_node::client::{Client, ClientConfig};
use replicast_node::driver::{ClientHandle, DriverConfig, FailureTimeouts};
use replicast_transport::fanout::{Fanout, FanoutConfig, Strategy};
use replicast_transport::multicast::driver::{MulticastSenderConfig, MulticastSocketConfig};
use replicast_transport::quic::{Endpoint, LinkConfig};

use crate::endpoint::{self, EndpointSpec};

/// Bounds every wait of an in-process client's call.
pub const CALL_WAIT: Duration = Duration::from_secs(20);

pub use crate::endpoint::random_group;

/// A random 64-bit value (a multicast session id).
pub fn random_u64() -> u64 {
    rand::random()
}

/// `[multicast]` for `group` on 127.0.0.1.
pub fn multicast_section(group: SocketAddr) -> String {
    format!("[multicast]\ngroup = \"{group}\"\ninterface = \"127.0.0.1\"\n")
}

/// `[fanout]` with `strategy`.
pub fn fanout_section(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Unicast => "[fanout]\nstrategy = \"unicast\"\n",
        Strategy::Multicast => "[fanout]\nstrategy = \"multicast\"\n",
        Strategy::Auto => "[fanout]\nstrategy = \"auto\"\n",
    }
}

/// The name a strategy has in configuration files and output.
pub fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Unicast => "unicast",
        Strategy::Multicast => "multicast",
        Strategy::Auto => "auto",
    }
}

/// The in-process clients' links take a silent peer for lost after this long (the
/// cluster's `[link] idle_timeout_ms`).
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Client `name`'s QUIC endpoint on 127.0.0.1 with its certificate from `certs/`; a silent
/// peer is noticed within a second or two, not quinn's 30 s.
///
/// # Panics
/// When the certificate cannot be loaded or the endpoint bound.
pub fn client_endpoint(certs: &Path, name: &str) -> Endpoint {
    let identity = NodeIdentity::load(
        &certs.join(format!("{name}.pem")),
        &certs.join(format!("{name}.key")),
        &certs.join("ca.pem"),
    )
    .expect("load the client's certificate");
    let link = LinkConfig {
        keep_alive: Some(Duration::from_millis(500)),
        idle_timeout: Some(CLIENT_IDLE_TIMEOUT),
        ..LinkConfig::default()
    };
    endpoint::bind_identity(&identity, &EndpointSpec::default().with_link(link))
        .unwrap_or_else(|error| panic!("the endpoint of {name}: {error}"))
}

/// The driver configuration of a client whose master listens at `master`.
pub fn client_driver_config(master: SocketAddr) -> DriverConfig {
    DriverConfig {
        directory: HashMap::from([("master".to_owned(), master)]),
        ..DriverConfig::default()
    }
}

/// Connects client `name` (certificate in `certs/`) to the master at `master`; its stores go
/// through a fan-out writer with `strategy`, on `group` unless the strategy is unicast.
pub async fn connect(
    certs: &Path,
    name: &str,
    master: SocketAddr,
    strategy: Strategy,
    group: SocketAddr,
) -> ClientHandle {
    connect_masters(
        certs,
        name,
        &BTreeMap::from([("master".to_owned(), master)]),
        strategy,
        group,
    )
    .await
}

/// As [`connect`], for a cluster of several masters (by name, e.g.
/// [`LocalCluster::master_addresses`](super::LocalCluster::master_addresses)): the client asks
/// the first, follows redirects to the primary and finds the next primary by itself when the
/// primary is lost.
pub async fn connect_masters(
    certs: &Path,
    name: &str,
    masters: &BTreeMap<String, SocketAddr>,
    strategy: Strategy,
    group: SocketAddr,
) -> ClientHandle {
    let endpoint = client_endpoint(certs, name);
    let writer = match strategy {
        Strategy::Unicast => Fanout::unicast(endpoint.clone()),
        strategy => {
            let socket = MulticastSocketConfig::new(group);
            Fanout::bind(
                endpoint.clone(),
                FanoutConfig {
                    strategy,
                    ..FanoutConfig::new(
                        FailureTimeouts::after(CLIENT_IDLE_TIMEOUT)
                            .sender(MulticastSenderConfig::new(socket, random_u64())),
                    )
                },
            )
            .expect("bind the fan-out writer")
        }
    };
    let directory: HashMap<String, SocketAddr> = masters
        .iter()
        .map(|(name, address)| (name.clone(), *address))
        .collect();
    ClientHandle::connect_with_fanout(
        Client::with_masters(
            name,
            masters.keys().cloned().collect(),
            ClientConfig::default(),
        ),
        endpoint,
        DriverConfig {
            directory,
            ..DriverConfig::default()
        },
        CALL_WAIT,
        writer,
    )
    .await
    .expect("the client connects and adds the storages to its fan-out")
}
