//! rustls configurations for mutual TLS between the nodes of one cluster.
//!
//! TLS 1.3 only, ring as the one crypto provider (never the process-wide default), the cluster
//! CA(s) as the only roots, a client certificate required by every server, ALPN [`ALPN`].

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::default_provider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;

use crate::{ALPN, CertError, NodeIdentity, NodeName};

impl NodeIdentity {
    /// A server configuration that presents this node's certificate and accepts only clients
    /// that present a certificate signed by the cluster CA.
    ///
    /// The client's node name is the subject CN of its leaf certificate; see
    /// [`node_name_of`].
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, CertError> {
        let provider = ring_provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(
            cluster_roots(self.trusted_cas())?,
            provider.clone(),
        )
        .build()?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.certificate_der()], self.private_key_der())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration that presents this node's certificate and accepts only servers
    /// whose certificate is signed by the cluster CA and names the node being dialed (pass the
    /// node name as the server name when connecting).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, CertError> {
        self.client_config_trusting_all(self.trusted_cas())
    }

    /// Like [`client_config`](Self::client_config), but trusting `ca` instead of this node's
    /// own cluster CA.
    ///
    /// For tests and probes that check a server's refusal of a certificate from another CA:
    /// such a client must trust the server to get as far as presenting its certificate.
    pub fn client_config_trusting(
        &self,
        ca: &CertificateDer<'_>,
    ) -> Result<Arc<ClientConfig>, CertError> {
        self.client_config_trusting_all(std::slice::from_ref(ca))
    }

    fn client_config_trusting_all(
        &self,
        cas: &[CertificateDer<'_>],
    ) -> Result<Arc<ClientConfig>, CertError> {
        let mut config = ClientConfig::builder_with_provider(ring_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(cluster_roots(cas)?)
            .with_client_auth_cert(vec![self.certificate_der()], self.private_key_der())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// A client configuration that trusts the cluster CA but presents no certificate.
///
/// Servers built by [`NodeIdentity::server_config`] refuse it; it serves tests and probes
/// that check exactly that.
pub fn anonymous_client_config(ca: &CertificateDer<'_>) -> Result<Arc<ClientConfig>, CertError> {
    let mut config = ClientConfig::builder_with_provider(ring_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(cluster_roots(std::slice::from_ref(ca))?)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The node name of a peer: the subject CN of its leaf certificate.
///
/// Use it on the certificate chain of an established, verified connection (for quinn,
/// `Connection::peer_identity()`); it does not verify anything itself.
pub fn node_name_of(cert: &CertificateDer<'_>) -> Result<NodeName, CertError> {
    let invalid = |reason: String| CertError::InvalidPeerCertificate { reason };
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| invalid(e.to_string()))?;
    let cn = crate::x509::common_name(&parsed)
        .ok_or_else(|| invalid("no subject common name".to_owned()))?;
    NodeName::new(&cn).map_err(|e| invalid(e.to_string()))
}

pub(crate) fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(default_provider())
}

/// The trust anchors: the cluster's CA certificates (one, or two while a CA is rotated).
pub(crate) fn cluster_roots(cas: &[CertificateDer<'_>]) -> Result<Arc<RootCertStore>, CertError> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone().into_owned())?;
    }
    Ok(Arc::new(roots))
}
