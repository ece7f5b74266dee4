//! QUIC endpoints with real certificates: a node identity issued by a cluster CA, an
//! [`EndpointConfig`] trusting that CA, and an [`Endpoint`] bound on an address of this host,
//! on an emulated link ([`LinkConditions`]) when asked.
//!
//! The functions returning `Result` are for harnesses that report errors (the bench); the
//! short ones ([`ca`], [`endpoint`], [`endpoint_config`], [`address`]) are for tests and panic
//! with the reason.
//!
//! ```no_run
//! # async fn demo() {
//! use replicast_testkit::endpoint::{address, ca, endpoint};
//!
//! let ca = ca("demo");
//! let node = endpoint(&ca, "storage-1"); // within a tokio runtime
//! println!("storage-1 listens at {}", address(&node));
//! # }
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand::Rng as _;
use replicast_certs::{ClusterCa, NodeIdentity, Roles};
use replicast_transport::netem::{ImpairedUdpSocket, LinkConditions};
use replicast_transport::quic::{Endpoint, EndpointConfig, LinkConfig};

use crate::TestkitError;

/// Where and how an endpoint binds: an address of this host (any free port), the link
/// configuration, and the emulated conditions of its socket (`None`: a plain socket).
#[derive(Clone, Debug)]
pub struct EndpointSpec {
    /// The address to bind (port 0: any free one).
    pub address: IpAddr,
    /// The QUIC link configuration.
    pub link: LinkConfig,
    /// The emulated conditions of the endpoint's UDP socket.
    pub conditions: Option<LinkConditions>,
}

impl Default for EndpointSpec {
    /// 127.0.0.1, the default link configuration, no emulation.
    fn default() -> Self {
        Self {
            address: Ipv4Addr::LOCALHOST.into(),
            link: LinkConfig::default(),
            conditions: None,
        }
    }
}

impl EndpointSpec {
    /// The default spec bound to `address` instead of 127.0.0.1.
    pub fn at(address: impl Into<IpAddr>) -> Self {
        Self {
            address: address.into(),
            ..Self::default()
        }
    }

    /// This spec with `link` as the link configuration.
    pub fn with_link(self, link: LinkConfig) -> Self {
        Self { link, ..self }
    }

    /// This spec with the socket emulated under `conditions` (none when `None`).
    pub fn with_conditions(self, conditions: Option<LinkConditions>) -> Self {
        Self { conditions, ..self }
    }
}

/// A certificate and key for `name` issued by `ca`, granting the role `name` starts with
/// (`master`, `storage-1`, `client-1`, `admin`; none for other names, which only the transport
/// accepts: a node's gate refuses every message of a peer without a role).
pub fn identity(ca: &ClusterCa, name: &str) -> Result<NodeIdentity, TestkitError> {
    let roles = Roles::infer_from_name(name).unwrap_or(Roles::NONE);
    ca.issue_with_roles(name, roles, &[])
        .map_err(|e| TestkitError::setup(format!("certificate for {name}"), e))
}

/// The configuration of an endpoint presenting `identity`, trusting its CA, listening at
/// `listen`.
pub fn config(
    identity: &NodeIdentity,
    listen: SocketAddr,
    link: LinkConfig,
) -> Result<EndpointConfig, TestkitError> {
    let name = identity.name();
    Ok(EndpointConfig {
        listen,
        server_tls: identity
            .server_config()
            .map_err(|e| TestkitError::setup(format!("server TLS of {name}"), e))?,
        client_tls: identity
            .client_config()
            .map_err(|e| TestkitError::setup(format!("client TLS of {name}"), e))?,
        link,
    })
}

/// Binds an endpoint with `config`, on an [`ImpairedUdpSocket`] under `conditions` when
/// given. Must be called within a tokio runtime (the endpoint's tasks run on it).
pub fn bind_config(
    config: EndpointConfig,
    conditions: Option<LinkConditions>,
) -> Result<Endpoint, TestkitError> {
    let listen = config.listen;
    let Some(conditions) = conditions else {
        return Endpoint::bind(config)
            .map_err(|e| TestkitError::setup(format!("endpoint at {listen}"), e));
    };
    let socket = std::net::UdpSocket::bind(listen)
        .map_err(|e| TestkitError::setup(format!("UDP socket at {listen}"), e))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| TestkitError::setup(format!("endpoint at {listen}"), "no tokio runtime"))?;
    let inner = runtime
        .wrap_udp_socket(socket)
        .map_err(|e| TestkitError::setup(format!("UDP socket at {listen}"), e))?;
    Endpoint::bind_with_socket(config, ImpairedUdpSocket::new(inner, conditions))
        .map_err(|e| TestkitError::setup(format!("endpoint at {listen}"), e))
}

/// An endpoint presenting `identity`, bound as `spec` says. Within a tokio runtime.
pub fn bind_identity(
    identity: &NodeIdentity,
    spec: &EndpointSpec,
) -> Result<Endpoint, TestkitError> {
    let listen = SocketAddr::new(spec.address, 0);
    bind_config(
        config(identity, listen, spec.link.clone())?,
        spec.conditions.clone(),
    )
}

/// An endpoint for `name` with a certificate from `ca`, bound as `spec` says. Within a tokio
/// runtime.
pub fn bind(ca: &ClusterCa, name: &str, spec: &EndpointSpec) -> Result<Endpoint, TestkitError> {
    bind_identity(&identity(ca, name)?, spec)
}

/// A fresh cluster CA named `name`.
///
/// # Panics
/// When the CA cannot be generated.
pub fn ca(name: &str) -> ClusterCa {
    ClusterCa::generate(name).unwrap_or_else(|error| panic!("cluster CA {name}: {error}"))
}

/// The configuration of an endpoint on 127.0.0.1 (any port) presenting a certificate for
/// `name` issued by `ca` and trusting `ca`'s certificates, with the default link
/// configuration.
///
/// # Panics
/// When the certificate or the TLS configuration cannot be made.
pub fn endpoint_config(ca: &ClusterCa, name: &str) -> EndpointConfig {
    identity(ca, name)
        .and_then(|identity| {
            config(
                &identity,
                (Ipv4Addr::LOCALHOST, 0).into(),
                LinkConfig::default(),
            )
        })
        .unwrap_or_else(|error| panic!("{error}"))
}

/// An endpoint bound on 127.0.0.1 as [`endpoint_config`] describes. Within a tokio runtime.
///
/// # Panics
/// When it cannot be made or bound.
pub fn endpoint(ca: &ClusterCa, name: &str) -> Endpoint {
    bind(ca, name, &EndpointSpec::default()).unwrap_or_else(|error| panic!("{error}"))
}

/// Where a bound `endpoint` listens.
///
/// # Panics
/// When the socket has no local address.
pub fn address(endpoint: &Endpoint) -> SocketAddr {
    endpoint
        .local_addr()
        .unwrap_or_else(|error| panic!("a bound endpoint has an address: {error}"))
}

/// A random administratively scoped multicast group (239.255.x.y) and port, so that tests
/// running at the same time do not hear each other.
pub fn random_group() -> SocketAddr {
    let mut rng = rand::rng();
    let group = Ipv4Addr::new(239, 255, rng.random_range(1..255), rng.random_range(1..255));
    SocketAddr::new(IpAddr::V4(group), rng.random_range(20_000..60_000))
}
