//! A node's identity: its name, certificate and private key, and the CAs it trusts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::crypto::ring::default_provider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::ca::CA_CERT_FILE;
use crate::files::{self, OutputFile};
use crate::role::roles_in;
use crate::{CertError, NodeName, Roles, x509};

/// A node's identity within a cluster: everything it needs for mutual TLS.
///
/// Created by [`ClusterCa::issue`](crate::ClusterCa::issue) or loaded from files; either way
/// the certificate carries the node name as subject CN and as first DNS name, and is signed
/// by the cluster CA whose certificate is kept alongside. A CA file may hold several CA
/// certificates (while a CA is rotated, the old one and the new one): the node trusts peers
/// of any of them, and its own certificate must come from one of them.
///
/// ```no_run
/// use std::path::Path;
/// use replicast_certs::NodeIdentity;
///
/// // certs/storage-1.pem, certs/storage-1.key and certs/ca.pem
/// let identity = NodeIdentity::load_dir(Path::new("certs"), "storage-1")?;
/// let server = identity.server_config()?;
/// let client = identity.client_config()?;
/// # Ok::<(), replicast_certs::CertError>(())
/// ```
pub struct NodeIdentity {
    name: NodeName,
    roles: Roles,
    cert_der: CertificateDer<'static>,
    key_der: PrivateKeyDer<'static>,
    /// The CA that signed `cert_der`.
    ca_der: CertificateDer<'static>,
    /// Every CA trusted, `ca_der` among them.
    trusted: Vec<CertificateDer<'static>>,
}

impl NodeIdentity {
    pub(crate) fn from_parts(
        name: NodeName,
        roles: Roles,
        cert_der: CertificateDer<'static>,
        key_der: PrivateKeyDer<'static>,
        ca_der: CertificateDer<'static>,
    ) -> Self {
        Self {
            name,
            roles,
            cert_der,
            key_der,
            trusted: vec![ca_der.clone()],
            ca_der,
        }
    }

    /// Loads a node's certificate, private key and cluster CA certificate(s) from three files.
    ///
    /// The node name is the certificate's subject CN, its roles its role URIs
    /// ([`roles_of`](crate::roles_of)). Each failure names its file: a missing file, no PEM
    /// block of the right kind, a key that does not belong to the certificate, a certificate
    /// signed by none of the CAs, a certificate (node or CA) that is expired or not yet valid,
    /// role names this version does not know. Every certificate of the CA file is trusted.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<NodeIdentity, CertError> {
        let cert_der = files::read_certificate(cert)?;
        let key_der = files::read_private_key(key)?;
        let trusted = crate::ca::load_ca_certificates(ca)?;
        let parsed = x509::parse(cert, &cert_der)?;
        check_key_matches(cert, x509::spki_der(&parsed), key, &key_der)?;
        let name = x509::common_name(&parsed)
            .ok_or_else(|| invalid(cert, "no subject common name".to_owned()))
            .and_then(|cn| {
                NodeName::new(&cn).map_err(|e| invalid(cert, format!("subject common name: {e}")))
            })?;
        let roles = roles_in(&parsed).map_err(|reason| invalid(cert, reason))?;
        // The CA that signed it; the error of the last one tried when none did.
        let mut signer = None;
        let mut refusal = None;
        for candidate in &trusted {
            let parsed_ca = x509::parse(ca, candidate)?;
            match x509::check_signed_by(cert, &parsed, ca, &parsed_ca) {
                Ok(()) => {
                    signer = Some(candidate.clone());
                    break;
                }
                Err(error) => refusal = Some(error),
            }
        }
        let Some(ca_der) = signer else {
            return Err(refusal.unwrap_or_else(|| invalid(cert, "no CA to check it".to_owned())));
        };
        x509::check_validity(cert, &parsed, SystemTime::now())?;
        Ok(NodeIdentity {
            name,
            roles,
            cert_der: cert_der.clone(),
            key_der,
            ca_der,
            trusted,
        })
    }

    /// Loads `DIR/NODE.pem`, `DIR/NODE.key` and `DIR/ca.pem`, and checks that the certificate
    /// is the one of node `node`.
    pub fn load_dir(dir: &Path, node: &str) -> Result<NodeIdentity, CertError> {
        let name = NodeName::new(node)?;
        let (cert, key) = Self::file_paths(dir, &name);
        let identity = Self::load(&cert, &key, &dir.join(CA_CERT_FILE))?;
        if identity.name != name {
            return Err(CertError::NameMismatch {
                path: cert,
                expected: name.to_string(),
                found: identity.name.to_string(),
            });
        }
        Ok(identity)
    }

    /// Writes `DIR/NODE.pem` and `DIR/NODE.key` (mode 0600), creating `dir` if needed.
    ///
    /// Without `force`, refuses with [`CertError::AlreadyExists`] if either file exists, and
    /// then writes neither. The CA certificate is not written: see
    /// [`ClusterCa::save`](crate::ClusterCa::save).
    pub fn save(&self, dir: &Path, force: bool) -> Result<(), CertError> {
        let (cert, key) = Self::file_paths(dir, &self.name);
        files::write_all(
            &[
                OutputFile {
                    path: cert,
                    contents: self.certificate_pem(),
                    secret: false,
                },
                OutputFile {
                    path: key,
                    contents: files::private_key_pem(&self.key_der),
                    secret: true,
                },
            ],
            force,
        )
    }

    /// Paths of a node's certificate and key files in `dir`: `NODE.pem` and `NODE.key`.
    pub fn file_paths(dir: &Path, node: &NodeName) -> (PathBuf, PathBuf) {
        (
            dir.join(format!("{node}.pem")),
            dir.join(format!("{node}.key")),
        )
    }

    /// The node name (the certificate's subject CN).
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The node name, as a validated [`NodeName`].
    pub fn node_name(&self) -> &NodeName {
        &self.name
    }

    /// The roles the certificate grants (none for a certificate issued without any).
    pub fn roles(&self) -> Roles {
        self.roles
    }

    /// The node's certificate, DER.
    pub fn certificate_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// The node's certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        files::pem_encode("CERTIFICATE", &self.cert_der)
    }

    /// The cluster CA certificate that signed this node's certificate, DER.
    pub fn ca_certificate_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    /// Every CA certificate this node trusts (one, or two while a CA is rotated), DER.
    pub fn trusted_cas(&self) -> &[CertificateDer<'static>] {
        &self.trusted
    }

    pub(crate) fn private_key_der(&self) -> PrivateKeyDer<'static> {
        self.key_der.clone_key()
    }
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            roles: self.roles,
            cert_der: self.cert_der.clone(),
            key_der: self.key_der.clone_key(),
            ca_der: self.ca_der.clone(),
            trusted: self.trusted.clone(),
        }
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("NodeIdentity")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

fn invalid(path: &Path, reason: String) -> CertError {
    CertError::InvalidCertificate {
        path: path.to_owned(),
        reason,
    }
}

/// Compares the public half of the private key with the certificate's public key, using the
/// same provider that will sign handshakes, so every key rustls accepts can be checked.
fn check_key_matches(
    cert_path: &Path,
    cert_spki: &[u8],
    key_path: &Path,
    key: &PrivateKeyDer<'static>,
) -> Result<(), CertError> {
    let signing_key = default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| CertError::InvalidKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
    match signing_key.public_key() {
        Some(spki) if spki.as_ref() == cert_spki => Ok(()),
        _ => Err(CertError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        }),
    }
}
