//! The node name of a peer, read from the leaf certificate it presented.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The leaf certificate the peer presented, if any (`None` on a connection without a verified
/// peer certificate, which an endpoint with mutual TLS does not establish).
pub(crate) fn peer_certificate(
    connection: &quinn::Connection,
) -> Option<std::sync::Arc<CertificateDer<'static>>> {
    let chain = connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    chain.into_iter().next().map(std::sync::Arc::new)
}

/// The subject common name of the peer's leaf certificate: replicast names a node by it.
///
/// By the time a connection is established the certificate has been verified against the
/// cluster CA by rustls, so the name can be trusted.
pub(crate) fn peer_name(connection: &quinn::Connection) -> Result<String, String> {
    let identity = connection
        .peer_identity()
        .ok_or("the peer presented no certificate")?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "the peer identity is not a certificate chain")?;
    let leaf = chain
        .first()
        .ok_or("the peer's certificate chain is empty")?;
    let (_, certificate) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("cannot parse the peer's certificate: {e}"))?;
    let name = certificate
        .subject()
        .iter_common_name()
        .next()
        .ok_or("the peer's certificate has no common name")?
        .as_str()
        .map_err(|e| format!("the peer's common name is not a string: {e}"))?;
    if name.is_empty() {
        return Err("the peer's common name is empty".into());
    }
    Ok(name.to_owned())
}
