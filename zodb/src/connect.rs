//! A client of the cluster from its TOML configuration file, as `replicast client` makes one:
//! the QUIC endpoint with the node's certificate, the fan-out writer of `[fanout] strategy`,
//! and the connected [`ClientHandle`].
//!
//! TODO(zodb-node): the command (`src/cli/node.rs`, `src/cli/client.rs`) holds the same steps;
//! once `replicast-node` offers them (asked in the problems section of the ZODB API notes),
//! both use that one copy.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use replicast_certs::NodeIdentity;
use replicast_node::client::{Client, ClientConfig};
use replicast_node::config::{FanoutStrategy, MulticastConfig, NodeConfig, RoleConfig};
use replicast_node::driver::{ClientHandle, DriverConfig};
use replicast_transport::fanout::{Fanout, FanoutConfig, Strategy};
use replicast_transport::multicast::driver::{
    MulticastInterface, MulticastSenderConfig, MulticastSocketConfig,
};
use replicast_transport::quic::{Endpoint, EndpointConfig, LinkConfig};

use crate::errors::ZodbError;

/// A connected client and what the storage reports about it.
pub struct Connected {
    /// The client.
    pub handle: ClientHandle,
    /// Its endpoint, to wait for the close to reach the peers.
    pub endpoint: Endpoint,
    /// `node.name`.
    pub name: String,
    /// `fanout.strategy`.
    pub strategy: FanoutStrategy,
}

/// Reads the client configuration at `path`, binds its endpoint and connects to the master,
/// waiting at most `timeout` for it (and for each later answer); stores of more than
/// `max_object_size` bytes are refused.
pub async fn connect(
    path: &Path,
    timeout: Duration,
    max_object_size: usize,
) -> Result<Connected, ZodbError> {
    let config = NodeConfig::load(path).map_err(|source| ZodbError::Config {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    let RoleConfig::Client { master, fanout } = &config.role else {
        return Err(ZodbError::NotAClient {
            path: path.to_owned(),
            role: config.role().as_str(),
        });
    };
    let mut directory: HashMap<String, _> = config
        .storage_addresses
        .iter()
        .map(|(name, address)| (name.as_str().to_owned(), *address))
        .collect();
    directory.insert(master.name.as_str().to_owned(), master.address);
    let endpoint = bind_endpoint(&config)?;
    let writer = fanout_writer(&config, *fanout, &endpoint)?;
    let client = Client::new(
        config.node.name.as_str(),
        master.name.as_str(),
        ClientConfig {
            max_object_size,
            ..ClientConfig::default()
        },
    );
    let driver_config = DriverConfig {
        directory,
        ..DriverConfig::default()
    };
    let handle =
        ClientHandle::connect_with_fanout(client, endpoint.clone(), driver_config, timeout, writer)
            .await
            .map_err(|source| ZodbError::Connect {
                master: master.name.as_str().to_owned(),
                address: master.address.to_string(),
                source,
            })?;
    Ok(Connected {
        handle,
        endpoint,
        name: config.node.name.as_str().to_owned(),
        strategy: *fanout,
    })
}

/// The endpoint at `node.listen` with the certificate of `[tls]`, checked to be the node's.
fn bind_endpoint(config: &NodeConfig) -> Result<Endpoint, ZodbError> {
    let tls = &config.tls;
    let origin = config.origin.clone();
    let certificate = |message: String| ZodbError::Certificate {
        path: origin.clone(),
        message,
    };
    let identity = NodeIdentity::load(&tls.cert, &tls.key, &tls.ca)
        .map_err(|e| certificate(format!("cannot load the node's certificate ([tls]): {e}")))?;
    if identity.name() != config.node.name.as_str() {
        return Err(certificate(format!(
            "`node.name` is {:?} but the certificate {} is for {:?}",
            config.node.name.as_str(),
            tls.cert.display(),
            identity.name()
        )));
    }
    let server_tls = identity
        .server_config()
        .map_err(|e| certificate(e.to_string()))?;
    let client_tls = identity
        .client_config()
        .map_err(|e| certificate(e.to_string()))?;
    let tuning = &config.link;
    Endpoint::bind(EndpointConfig {
        listen: config.node.listen,
        server_tls,
        client_tls,
        link: LinkConfig {
            keep_alive: tuning.keep_alive,
            idle_timeout: Some(tuning.idle_timeout),
            // quinn's stream window is a u32: a larger value is the largest it can have.
            stream_receive_window: u32::try_from(tuning.stream_receive_window).unwrap_or(u32::MAX),
            send_window: tuning.send_window,
            ..LinkConfig::default()
        },
    })
    .map_err(|e| ZodbError::Bind {
        path: config.origin.clone(),
        listen: config.node.listen.to_string(),
        message: e.to_string(),
    })
}

/// The fan-out writer of `strategy`: unicast needs no group; multicast and auto send to
/// `[multicast]`, with a session id of their own per client.
fn fanout_writer(
    config: &NodeConfig,
    strategy: FanoutStrategy,
    endpoint: &Endpoint,
) -> Result<Fanout, ZodbError> {
    let strategy = match strategy {
        FanoutStrategy::Unicast => return Ok(Fanout::unicast(endpoint.clone())),
        FanoutStrategy::Multicast => Strategy::Multicast,
        FanoutStrategy::Auto => Strategy::Auto,
    };
    let origin: PathBuf = config.origin.clone();
    let multicast = config
        .multicast
        .as_ref()
        .ok_or_else(|| ZodbError::Multicast {
            path: origin.clone(),
            message: "`fanout.strategy` sends to a group: [multicast] is missing".to_owned(),
        })?;
    let mut socket = MulticastSocketConfig::new(multicast.group)
        .with_interface(interface(multicast))
        .with_ttl(multicast.ttl);
    socket.loopback = multicast.loopback;
    // Each client is a session of its own: storages keep sessions apart by their id.
    // RandomState is seeded from the operating system's randomness.
    let session_id = RandomState::new().build_hasher().finish();
    Fanout::bind(
        endpoint.clone(),
        FanoutConfig {
            strategy,
            ..FanoutConfig::new(MulticastSenderConfig::new(socket, session_id))
        },
    )
    .map_err(|e| ZodbError::Multicast {
        path: origin,
        message: format!(
            "cannot send to `multicast.group` {} on `multicast.interface` {}: {e}",
            multicast.group, multicast.interface
        ),
    })
}

/// The transport's name for the interface of `[multicast]`.
fn interface(multicast: &MulticastConfig) -> MulticastInterface {
    match &multicast.interface {
        replicast_node::config::MulticastInterface::Name(name) => {
            MulticastInterface::Name(name.clone())
        }
        replicast_node::config::MulticastInterface::Address(address) => {
            MulticastInterface::Address(*address)
        }
    }
}
