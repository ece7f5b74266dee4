//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while creating, storing, loading or using certificates.
///
/// Every variant that concerns a file names it, so that an operator can tell which of the
/// files in a certificate directory needs attention.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A node name is not a DNS label (`[a-z0-9-]`, 1 to 63 characters, no `-` at either end).
    #[error("invalid node name {name:?}: {reason}")]
    InvalidNodeName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A cluster name is empty, too long for a certificate name, or has control characters.
    #[error("invalid cluster name {name:?}: {reason}")]
    InvalidClusterName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A role name is not one of `master`, `storage`, `client`, `admin`.
    #[error(
        "invalid role {role:?}: expected master, storage, client or admin (several joined by '+')"
    )]
    InvalidRole {
        /// The role as given.
        role: String,
    },
    /// An extra subject alternative name is neither an IP address nor a DNS name.
    #[error("invalid subject alternative name {san:?}: {reason}")]
    InvalidSan {
        /// The name as given.
        san: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Generating a key or signing a certificate failed.
    #[error("cannot generate {what}")]
    Generate {
        /// What was being generated, e.g. "the CA certificate".
        what: String,
        /// The underlying failure.
        #[source]
        source: rcgen::Error,
    },
    /// A file that must exist does not.
    #[error("{}: file not found", path.display())]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// A file exists and would be overwritten, but overwriting was not allowed.
    #[error("{}: already exists (use --force to overwrite)", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {action} failed", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was attempted, e.g. "read" or "create".
        action: &'static str,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM block of the expected kind.
    #[error("{}: not PEM, or no {expected} in it", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What was looked for, e.g. "CERTIFICATE block" or "private key".
        expected: &'static str,
    },
    /// A certificate is PEM but its contents cannot be used.
    #[error("{}: invalid certificate: {reason}", path.display())]
    InvalidCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A private key is PEM but cannot be used.
    #[error("{}: invalid private key: {reason}", path.display())]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("{}: private key does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate's validity period ended.
    #[error("{}: certificate expired on {not_after} (valid from {not_before}; now {now})", path.display())]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// Start of the validity period (RFC 3339).
        not_before: String,
        /// End of the validity period (RFC 3339).
        not_after: String,
        /// The time of the check (RFC 3339).
        now: String,
    },
    /// The certificate's validity period has not started yet.
    #[error("{}: certificate not valid before {not_before} (valid until {not_after}; now {now})", path.display())]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// Start of the validity period (RFC 3339).
        not_before: String,
        /// End of the validity period (RFC 3339).
        not_after: String,
        /// The time of the check (RFC 3339).
        now: String,
    },
    /// The certificate was not signed by the cluster CA.
    #[error("{}: certificate is not signed by the cluster CA {}", cert.display(), ca.display())]
    NotSignedByCa {
        /// The node certificate file.
        cert: PathBuf,
        /// The CA certificate file.
        ca: PathBuf,
    },
    /// A certificate that must be a CA is not one.
    #[error("{}: not a CA certificate (basic constraints CA is missing)", path.display())]
    NotCa {
        /// The certificate file.
        path: PathBuf,
    },
    /// A node certificate does not carry the node name it was loaded for.
    #[error("{}: certificate is for node {found:?}, expected {expected:?}", path.display())]
    NameMismatch {
        /// The certificate file.
        path: PathBuf,
        /// The node name asked for.
        expected: String,
        /// The node name in the certificate's subject CN.
        found: String,
    },
    /// A revocation list is PEM but cannot be used.
    #[error("{}: invalid certificate revocation list: {reason}", path.display())]
    InvalidCrl {
        /// The list's file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A revocation list was not issued by the cluster CA (another CA's, or forged).
    #[error("{}: the certificate revocation list is not signed by the cluster CA", path.display())]
    CrlNotFromCa {
        /// The list's file.
        path: PathBuf,
    },
    /// A peer's certificate (received over the network) does not carry a valid node name.
    #[error("peer certificate: {reason}")]
    InvalidPeerCertificate {
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate, key or settings while building a configuration.
    #[error("cannot build the TLS configuration")]
    Tls(#[from] rustls::Error),
    /// rustls refused to build a certificate verifier.
    #[error("cannot build a certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}
