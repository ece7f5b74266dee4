//! A node's QUIC endpoint, and a client's connection, from its configuration file: what
//! `replicast node`, `replicast client`, `replicast status` and the ZODB storage share.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use replicast_node::client::ClientConfig;
//! use replicast_node::config::NodeConfig;
//! use replicast_node::driver::connect_from_config;
//!
//! let config = NodeConfig::load("/etc/replicast/client.toml")?;
//! let (client, endpoint) =
//!     connect_from_config(&config, ClientConfig::default(), Duration::from_secs(10)).await?;
//! let oid = client.new_oids(1).await?[0];
//! client.close().await?;
//! // Bounded: the master may be gone.
//! let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
//! # let _ = oid; Ok(()) }
//! ```

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use replicast_certs::{CertError, NodeIdentity, Revocation, RevocationList, Role as CertRole};
use replicast_transport::fanout::{Fanout, FanoutConfig, FanoutError, Strategy, Verification};
use replicast_transport::multicast::driver::{
    MulticastInterface, MulticastSenderConfig, MulticastSocketConfig,
};
use replicast_transport::multicast::proto::RateLimit;
use replicast_transport::quic::{Endpoint, EndpointConfig, LinkConfig, LinkError};

use super::client_handle::{ClientError, ClientHandle};
use super::run::DriverConfig;
use crate::client::{Client, ClientConfig};
use crate::config::{
    FanoutStrategy, LinkTuning, MulticastConfig, NodeConfig, PeerLimits, Role as ConfigRole,
    RoleConfig,
};
use crate::gate::GateLimits;

/// Why a node's endpoint or a client's connection could not be made from its configuration;
/// each names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The certificate files of `[tls]` do not load.
    #[error("cannot load the node's certificate ([tls] in {file}): {source}")]
    Certificate {
        /// The configuration file.
        file: PathBuf,
        /// Why.
        source: Box<CertError>,
    },
    /// The certificate is for another node.
    #[error("{file}: `node.name` is {name:?} but the certificate {cert} is for {certified:?}")]
    NameMismatch {
        /// The configuration file.
        file: PathBuf,
        /// `node.name`.
        name: String,
        /// `tls.cert`.
        cert: PathBuf,
        /// The name in the certificate.
        certified: String,
    },
    /// The certificate does not grant the role of `node.role`: the node would start and have
    /// every message refused by its peers.
    #[error(
        "{file}: `node.role` is \"{needed}\" but the certificate {cert} grants the role {granted}; \
         issue one with `replicast certs add --ca DIR --node {name} --role {needed} --force`"
    )]
    RoleMismatch {
        /// The configuration file.
        file: PathBuf,
        /// The role `node.role` needs.
        needed: CertRole,
        /// `tls.cert`.
        cert: PathBuf,
        /// The roles the certificate grants.
        granted: String,
        /// The certificate's node name.
        name: String,
    },
    /// The revocation list of `tls.crl` does not load (missing, corrupt, not the CA's).
    #[error("cannot load the revocation list (`tls.crl` in {file}): {source}")]
    RevocationList {
        /// The configuration file.
        file: PathBuf,
        /// Why.
        source: Box<CertError>,
    },
    /// The revocation list revokes the node's own certificate (every peer would refuse it).
    #[error(
        "{file}: the certificate {cert} is revoked by {crl} (CRL number {number}); issue a new \
         one with `replicast certs add --ca DIR --node {name} --force`"
    )]
    Revoked {
        /// The configuration file.
        file: PathBuf,
        /// `tls.cert`.
        cert: PathBuf,
        /// `tls.crl`.
        crl: PathBuf,
        /// The list's number.
        number: u64,
        /// The certificate's node name.
        name: String,
    },
    /// The QUIC endpoint does not bind.
    #[error("cannot listen at {listen} (`node.listen` in {file}): {source}")]
    Bind {
        /// The configuration file.
        file: PathBuf,
        /// `node.listen`.
        listen: SocketAddr,
        /// Why.
        source: Box<LinkError>,
    },
    /// The file is not a client's.
    #[error("{file}: `node.role` is {role:?}; a client's configuration is needed")]
    NotAClient {
        /// The configuration file.
        file: PathBuf,
        /// `node.role`.
        role: &'static str,
    },
    /// `fanout.strategy` sends to a group, and `[multicast]` is missing.
    #[error("{file}: `fanout.strategy` = \"{strategy}\" sends to a group: [multicast] is missing")]
    NoGroup {
        /// The configuration file.
        file: PathBuf,
        /// `fanout.strategy`.
        strategy: FanoutStrategy,
    },
    /// The multicast group of `[multicast]` cannot be sent to.
    #[error(
        "{file}: cannot send to `multicast.group` {group} on `multicast.interface` {interface}: {source}"
    )]
    Multicast {
        /// The configuration file.
        file: PathBuf,
        /// `multicast.group`.
        group: SocketAddr,
        /// `multicast.interface`.
        interface: String,
        /// Why.
        source: Box<FanoutError>,
    },
    /// No master answered, or the primary refused.
    #[error("cannot connect to the masters ({master} first, [masters] in {file}): {source}")]
    Connect {
        /// The configuration file.
        file: PathBuf,
        /// The first master asked.
        master: String,
        /// Why.
        source: Box<ClientError>,
    },
}

/// A node's bound endpoint and the revocation list its TLS configurations check.
#[derive(Debug)]
pub struct Bound {
    /// The QUIC endpoint.
    pub endpoint: Endpoint,
    /// The list in force (`tls.crl`), replaceable (a node reloads it on SIGHUP); the driver's
    /// gate checks peers against it too ([`DriverConfig::revocation`]).
    pub revocation: Revocation,
}

/// Loads the node's certificate files named in `[tls]` (and its revocation list, `tls.crl`)
/// and binds its QUIC endpoint at `node.listen` with the `[link]` tuning.
///
/// With `shared_name`, peers know the endpoint as one session of its name (`NAME#SESSION`),
/// beside any other process using the same certificate: clients, and the short-lived
/// endpoints of `replicast status` and `admin`. Without it (masters, storages) the name is
/// this process's alone, and a peer holding a live connection from another process of that
/// name refuses this one.
pub fn bind_endpoint(config: &NodeConfig, shared_name: bool) -> Result<Endpoint, ConnectError> {
    bind(config, shared_name).map(|bound| bound.endpoint)
}

/// [`bind_endpoint`], keeping the revocation list's handle. The certificate must be for
/// `node.name` and grant the role of `node.role`; the list must load, be the CA's and not
/// revoke the node itself.
pub fn bind(config: &NodeConfig, shared_name: bool) -> Result<Bound, ConnectError> {
    let file = || config.origin.clone();
    let tls = &config.tls;
    let certificate = |source| ConnectError::Certificate {
        file: file(),
        source: Box::new(source),
    };
    let identity = NodeIdentity::load(&tls.cert, &tls.key, &tls.ca).map_err(certificate)?;
    if identity.name() != config.node.name.as_str() {
        return Err(ConnectError::NameMismatch {
            file: file(),
            name: config.node.name.as_str().to_owned(),
            cert: tls.cert.clone(),
            certified: identity.name().to_owned(),
        });
    }
    check_role(config, &identity)?;
    let list = match &tls.crl {
        Some(path) => Some(load_crl(config, path, &identity)?),
        None => None,
    };
    let tls_configs = identity.tls_configs(list).map_err(certificate)?;
    let endpoint = Endpoint::bind(EndpointConfig {
        listen: config.node.listen,
        server_tls: tls_configs.server,
        client_tls: tls_configs.client,
        link: LinkConfig {
            shared_name,
            ..link_config(&config.link, &config.limits)
        },
    })
    .map_err(|source| ConnectError::Bind {
        file: file(),
        listen: config.node.listen,
        source: Box::new(source),
    })?;
    Ok(Bound {
        endpoint,
        revocation: tls_configs.revocation,
    })
}

/// The revocation list at `path` (`tls.crl`), checked against the cluster CA; a node whose
/// own certificate is on it is refused too (every peer would refuse it).
fn load_crl(
    config: &NodeConfig,
    path: &Path,
    identity: &NodeIdentity,
) -> Result<RevocationList, ConnectError> {
    let list = RevocationList::load(path, identity.trusted_cas()).map_err(|source| {
        ConnectError::RevocationList {
            file: config.origin.clone(),
            source: Box::new(source),
        }
    })?;
    if list.is_revoked(&identity.certificate_der()) {
        return Err(ConnectError::Revoked {
            file: config.origin.clone(),
            cert: config.tls.cert.clone(),
            crl: path.to_owned(),
            number: list.number(),
            name: identity.name().to_owned(),
        });
    }
    Ok(list)
}

/// The certificate role that `node.role` needs.
fn certificate_role(role: ConfigRole) -> CertRole {
    match role {
        ConfigRole::Master => CertRole::Master,
        ConfigRole::Storage => CertRole::Storage,
        ConfigRole::Client => CertRole::Client,
        ConfigRole::Admin => CertRole::Admin,
    }
}

/// Refuses a certificate that does not grant the role of `node.role`, naming both.
fn check_role(config: &NodeConfig, identity: &NodeIdentity) -> Result<(), ConnectError> {
    let needed = certificate_role(config.role());
    if identity.roles().contains(needed) {
        return Ok(());
    }
    Err(ConnectError::RoleMismatch {
        file: config.origin.clone(),
        needed,
        cert: config.tls.cert.clone(),
        granted: identity.roles().to_string(),
        name: identity.name().to_owned(),
    })
}

/// The driver settings `[limits]` sets: what the gate lets a peer hold.
pub fn driver_config(config: &NodeConfig) -> DriverConfig {
    let limits = &config.limits;
    DriverConfig {
        limits: GateLimits::from(*limits),
        ..DriverConfig::default()
    }
}

/// The transport's link configuration for the `[link]` tuning and the `[limits]` on streams.
pub fn link_config(tuning: &LinkTuning, limits: &PeerLimits) -> LinkConfig {
    LinkConfig {
        // `limits.streams` is checked to fit a u32.
        max_concurrent_streams: u32::try_from(limits.streams).unwrap_or(u32::MAX),
        keep_alive: tuning.keep_alive,
        idle_timeout: Some(tuning.idle_timeout),
        // The file allows any u64; quinn's stream window is a u32, so a larger value is the
        // largest window it can have.
        stream_receive_window: u32::try_from(tuning.stream_receive_window).unwrap_or(u32::MAX),
        send_window: tuning.send_window,
        message_copies: tuning.message_copies,
        congestion: tuning.congestion,
        ..LinkConfig::default()
    }
}

/// The transport's name for the interface of `[multicast]`.
pub fn multicast_interface(multicast: &MulticastConfig) -> MulticastInterface {
    match &multicast.interface {
        crate::config::MulticastInterface::Name(name) => MulticastInterface::Name(name.clone()),
        crate::config::MulticastInterface::Address(address) => {
            MulticastInterface::Address(*address)
        }
    }
}

/// The fan-out writer of a client's `[fanout] strategy` on `endpoint`: unicast needs no group;
/// multicast and auto send to `[multicast]`, as a session of its own (a random id per call),
/// paced at `multicast.rate_mbit` if given.
pub fn fanout_writer(config: &NodeConfig, endpoint: &Endpoint) -> Result<Fanout, ConnectError> {
    let RoleConfig::Client { fanout, .. } = &config.role else {
        return Err(not_a_client(config));
    };
    let strategy = match fanout {
        FanoutStrategy::Unicast => return Ok(Fanout::unicast(endpoint.clone())),
        FanoutStrategy::Multicast => Strategy::Multicast,
        FanoutStrategy::Auto => Strategy::Auto,
    };
    let multicast = config
        .multicast
        .as_ref()
        .ok_or_else(|| ConnectError::NoGroup {
            file: config.origin.clone(),
            strategy: *fanout,
        })?;
    let mut socket = MulticastSocketConfig::new(multicast.group)
        .with_interface(multicast_interface(multicast))
        .with_ttl(multicast.ttl);
    socket.loopback = multicast.loopback;
    // Each writer is a session of its own: storages keep the sessions of earlier runs (and of
    // other processes with the same name) apart. RandomState is seeded from the operating
    // system's randomness.
    let session_id = RandomState::new().build_hasher().finish();
    let timeouts = super::FailureTimeouts::after(config.link.idle_timeout);
    let mut sender = timeouts.sender(MulticastSenderConfig::new(socket, session_id));
    if let Some(mbit) = multicast.rate_mbit {
        // Paced: the sender also sends parity as its receivers' loss calls for.
        sender.protocol.rate_limit = Some(RateLimit::link(u64::from(mbit) * 1_000_000));
    }
    Fanout::bind(
        endpoint.clone(),
        FanoutConfig {
            strategy,
            // The client names every store of the group on its channel to the storage, with
            // its digest (`Message::GroupStore`), and the storage checks the bytes there: the
            // fan-out announces nothing, so each store has one acknowledgement, the storage's.
            verification: Verification::Application,
            ..FanoutConfig::new(sender)
        },
    )
    .map_err(|source| ConnectError::Multicast {
        file: config.origin.clone(),
        group: multicast.group,
        interface: multicast.interface.to_string(),
        source: Box::new(source),
    })
}

/// Connects a client from its configuration file: binds its endpoint, starts its fan-out
/// writer (`[fanout]`), finds the primary among the masters (`[masters]`) and the storages (the master's address
/// book, and `[storages]` where given) and waits, bounded by `timeout`, for the partition
/// table. Returns the handle and its endpoint: after [`ClientHandle::close`], wait (bounded)
/// for [`Endpoint::wait_idle`] so that the master learns the client left before the process
/// exits.
pub async fn connect_from_config(
    config: &NodeConfig,
    client: ClientConfig,
    timeout: Duration,
) -> Result<(ClientHandle, Endpoint), ConnectError> {
    let RoleConfig::Client { master, .. } = &config.role else {
        return Err(not_a_client(config));
    };
    let mut directory: HashMap<String, SocketAddr> = config
        .storage_addresses
        .iter()
        .map(|(name, address)| (name.as_str().to_owned(), *address))
        .collect();
    for peer in &config.masters {
        directory.insert(peer.name.as_str().to_owned(), peer.address);
    }
    let masters: Vec<String> = config
        .masters
        .iter()
        .map(|peer| peer.name.as_str().to_owned())
        .collect();
    // Several processes may share a client's configuration: each is a session of its own.
    let Bound {
        endpoint,
        revocation,
    } = bind(config, true)?;
    let writer = fanout_writer(config, &endpoint)?;
    // Its patience with a silent storage outlasts the storages' wait for a vanished client.
    let client = super::FailureTimeouts::after(config.link.idle_timeout).client(client);
    let role = Client::with_masters(config.node.name.as_str(), masters, client);
    let driver = DriverConfig {
        directory,
        revocation: Some(revocation),
        ..driver_config(config)
    };
    let handle = ClientHandle::connect_with_fanout(role, endpoint.clone(), driver, timeout, writer)
        .await
        .map_err(|source| ConnectError::Connect {
            file: config.origin.clone(),
            master: master.name.as_str().to_owned(),
            source: Box::new(source),
        })?;
    Ok((handle, endpoint))
}

fn not_a_client(config: &NodeConfig) -> ConnectError {
    ConnectError::NotAClient {
        file: config.origin.clone(),
        role: config.role().as_str(),
    }
}
