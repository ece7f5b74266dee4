//! Certificates for a replicast cluster: a cluster CA, one certificate per node, and the rustls
//! configurations for mutual TLS between nodes.
//!
//! Every node certificate is signed directly by the cluster CA and carries the node name as
//! subject CN and as first DNS subject alternative name, with both the ServerAuth and the
//! ClientAuth usage: a node dials others with the same identity it accepts them with. A
//! client checks the server's certificate against the name it dials (rustls' standard
//! server-name check); a server learns the client's name from the CN ([`node_name_of`]).
//!
//! ```
//! use replicast_certs::{ClusterCa, NodeIdentity};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let ca = ClusterCa::generate("test")?;
//! ca.save(dir.path(), false)?;
//! ca.issue("node-a", &[])?.save(dir.path(), false)?;
//!
//! let node = NodeIdentity::load_dir(dir.path(), "node-a")?;
//! let server = node.server_config()?;
//! assert_eq!(server.alpn_protocols, [replicast_certs::ALPN.to_vec()]);
//! # Ok::<(), replicast_certs::CertError>(())
//! ```
#![warn(missing_docs)]

mod ca;
mod crl;
mod error;
mod files;
mod identity;
mod info;
mod name;
mod revocation;
mod role;
mod tls;
mod x509;

pub use ca::{
    CA_CERT_FILE, CA_KEY_FILE, CA_VALIDITY, CLOCK_SKEW_ALLOWANCE, ClusterCa, NODE_VALIDITY,
    load_ca_certificate, load_ca_certificates,
};
pub use crl::{CRL_FILE, CRL_VALIDITY, RevocationList, RevokedCertificate};
pub use error::CertError;
pub use identity::NodeIdentity;
pub use info::{CertificateInfo, ValidityStatus};
pub use name::NodeName;
pub use revocation::{Revocation, TlsConfigs};
pub use role::{ROLE_URI_PREFIX, Role, Roles, roles_of};
pub use tls::{anonymous_client_config, node_name_of};

/// The ALPN protocol every replicast connection negotiates: its number is the version of
/// what travels on the connection's streams (the transport's framing), so that peers of two
/// versions refuse each other at the handshake instead of misreading each other's streams.
///
/// Version 2: request and object streams name the service they are for after their kind
/// byte (a storage serves the node protocol and the fan-out's on one endpoint).
pub const ALPN: &[u8] = b"replicast/2";
