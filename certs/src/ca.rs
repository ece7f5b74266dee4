//! The cluster certificate authority.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::files::{self, OutputFile};
use crate::name::San;
use crate::{CertError, NodeIdentity, NodeName, Roles, x509};

/// File name of the CA certificate inside a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside a certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Validity of a new CA: ten years (with leap days).
pub const CA_VALIDITY: Duration = Duration::from_secs(3653 * 24 * 60 * 60);
/// Default validity of a node certificate: one year.
pub const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// New certificates start this long in the past, so that a node whose clock is a little behind
/// the issuer's accepts them at once.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// A cluster's certificate authority: its certificate and signing key.
///
/// Every node certificate of a cluster is signed directly by its CA, and every node trusts
/// only that CA.
///
/// ```
/// use replicast_certs::ClusterCa;
///
/// let ca = ClusterCa::generate("prod")?;
/// let node = ca.issue("storage-1", &["127.0.0.1".to_owned()])?;
/// assert_eq!(node.name(), "storage-1");
/// assert_eq!(node.ca_certificate_der(), ca.certificate_der());
/// # Ok::<(), replicast_certs::CertError>(())
/// ```
pub struct ClusterCa {
    cluster_name: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl ClusterCa {
    /// Creates a new CA, valid for [`CA_VALIDITY`], with a fresh ECDSA P-256 key.
    ///
    /// `cluster_name` becomes the organization of every certificate; it must be 1 to 64
    /// printable characters.
    pub fn generate(cluster_name: &str) -> Result<ClusterCa, CertError> {
        check_cluster_name(cluster_name)?;
        let generate = |source| CertError::Generate {
            what: format!("the CA of cluster {cluster_name:?}"),
            source,
        };
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster_name);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("{cluster_name} CA {}", ca_tag(&key)),
        );
        // Path length 0: this CA signs node certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SKEW_ALLOWANCE).into();
        params.not_after = (now + CA_VALIDITY).into();
        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(ClusterCa {
            cluster_name: cluster_name.to_owned(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads `DIR/ca.pem` and `DIR/ca.key`.
    ///
    /// Fails, naming the file, if either is missing or not PEM, if the certificate is not a CA
    /// or not currently valid, or if the key does not belong to it.
    pub fn load(dir: &Path) -> Result<ClusterCa, CertError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_der = files::read_certificate(&cert_path)?;
        let key_der = files::read_private_key(&key_path)?;
        let cert = x509::parse(&cert_path, &cert_der)?;
        if !cert.is_ca() {
            return Err(CertError::NotCa { path: cert_path });
        }
        let key = KeyPair::try_from(&key_der).map_err(|e| CertError::InvalidKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        if key.subject_public_key_info() != x509::spki_der(&cert) {
            return Err(CertError::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        x509::check_validity(&cert_path, &cert, SystemTime::now())?;
        let cluster_name = cert
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .map(str::to_owned)
            .or_else(|| x509::common_name(&cert))
            .unwrap_or_default();
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| {
            CertError::InvalidCertificate {
                path: cert_path.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(ClusterCa {
            cluster_name,
            cert_der: cert_der.clone(),
            issuer,
        })
    }

    /// Writes `DIR/ca.pem` and `DIR/ca.key` (mode 0600), creating `dir` if needed.
    ///
    /// Without `force`, refuses with [`CertError::AlreadyExists`] if either file exists, and
    /// then writes neither.
    pub fn save(&self, dir: &Path, force: bool) -> Result<(), CertError> {
        files::write_all(
            &[
                OutputFile {
                    path: dir.join(CA_CERT_FILE),
                    contents: self.certificate_pem(),
                    secret: false,
                },
                OutputFile {
                    path: dir.join(CA_KEY_FILE),
                    contents: self.issuer.key().serialize_pem(),
                    secret: true,
                },
            ],
            force,
        )
    }

    /// Writes only the CA certificate, `DIR/ca.pem`: what a node needs besides its own files.
    ///
    /// Without `force`, refuses with [`CertError::AlreadyExists`] if the file exists.
    pub fn save_certificate(&self, dir: &Path, force: bool) -> Result<(), CertError> {
        files::write_all(
            &[OutputFile {
                path: dir.join(CA_CERT_FILE),
                contents: self.certificate_pem(),
                secret: false,
            }],
            force,
        )
    }

    /// Issues a certificate for node `node` granting no role, valid for [`NODE_VALIDITY`].
    ///
    /// `sans` are extra subject alternative names, each an IP address or a DNS name; the node
    /// name itself is always the subject CN and the first DNS name. A replicast node refuses
    /// every message of a peer without a role: use [`issue_with_roles`](Self::issue_with_roles)
    /// for the nodes of a cluster; this is for users of the transport alone.
    pub fn issue(&self, node: &str, sans: &[String]) -> Result<NodeIdentity, CertError> {
        self.issue_with_roles(node, Roles::NONE, sans)
    }

    /// Issues a certificate for node `node` granting `roles`, valid for [`NODE_VALIDITY`].
    ///
    /// ```
    /// use replicast_certs::{ClusterCa, Role};
    ///
    /// let ca = ClusterCa::generate("prod")?;
    /// let node = ca.issue_with_roles("storage-1", Role::Storage.into(), &[])?;
    /// assert_eq!(node.roles(), Role::Storage.into());
    /// # Ok::<(), replicast_certs::CertError>(())
    /// ```
    pub fn issue_with_roles(
        &self,
        node: &str,
        roles: Roles,
        sans: &[String],
    ) -> Result<NodeIdentity, CertError> {
        let now = SystemTime::now();
        self.issue_with(
            node,
            roles,
            sans,
            now - CLOCK_SKEW_ALLOWANCE,
            now + NODE_VALIDITY,
        )
    }

    /// Issues a certificate for node `node`, granting no role, with the given validity period.
    ///
    /// Meant for tests (expired or not yet valid certificates); see
    /// [`issue_with`](Self::issue_with).
    pub fn issue_with_validity(
        &self,
        node: &str,
        sans: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<NodeIdentity, CertError> {
        self.issue_with(node, Roles::NONE, sans, not_before, not_after)
    }

    /// Issues a certificate for node `node` granting `roles`, with the given validity period:
    /// the general form of the `issue` methods, for tests (expired or not yet valid
    /// certificates) and for operators who rotate on their own schedule.
    ///
    /// Each role becomes a URI subject alternative name `urn:replicast:role:ROLE`, after the
    /// node name and `sans`.
    pub fn issue_with(
        &self,
        node: &str,
        roles: Roles,
        sans: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<NodeIdentity, CertError> {
        let name = NodeName::new(node)?;
        let generate = |source| CertError::Generate {
            what: format!("the certificate of node {node:?}"),
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, self.cluster_name.as_str());
        params
            .distinguished_name
            .push(DnType::CommonName, name.as_str());
        params.subject_alt_names = subject_alt_names(&name, sans)?;
        for role in roles.iter() {
            let uri = Ia5String::try_from(role.uri()).map_err(generate)?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(NodeIdentity::from_parts(
            name,
            roles,
            cert.der().clone(),
            key_der,
            self.cert_der.clone(),
        ))
    }

    /// The CA's signing key and name, for what else it signs (revocation lists).
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The cluster name (the organization of the CA's subject).
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        files::pem_encode("CERTIFICATE", &self.cert_der)
    }
}

/// Reads the CA certificate from a PEM file (usually `DIR/ca.pem`), without its key.
///
/// What a probe needs for [`anonymous_client_config`](crate::anonymous_client_config), and
/// what tells whether a directory's `ca.pem` belongs to a given CA.
pub fn load_ca_certificate(path: &Path) -> Result<CertificateDer<'static>, CertError> {
    let der = files::read_certificate(path)?;
    if !x509::parse(path, &der)?.is_ca() {
        return Err(CertError::NotCa {
            path: path.to_owned(),
        });
    }
    Ok(der)
}

/// Reads every CA certificate of a PEM file (one, or several while a CA is rotated), without
/// keys: each must be a valid CA certificate (the error names the file and which one is not).
pub fn load_ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let ders = files::read_certificates(path)?;
    let now = std::time::SystemTime::now();
    for der in &ders {
        let parsed = x509::parse(path, der)?;
        if !parsed.is_ca() {
            return Err(CertError::NotCa {
                path: path.to_owned(),
            });
        }
        x509::check_validity(path, &parsed, now)?;
    }
    Ok(ders)
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key stays out of logs.
        f.debug_struct("ClusterCa")
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

fn check_cluster_name(name: &str) -> Result<(), CertError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.chars().count() > 64 {
        Some("longer than 64 characters")
    } else if name.chars().any(char::is_control) {
        Some("contains control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CertError::InvalidClusterName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The node name as first DNS name, then the extra names, without duplicates.
fn subject_alt_names(name: &NodeName, sans: &[String]) -> Result<Vec<SanType>, CertError> {
    let dns = |s: &str| {
        Ia5String::try_from(s)
            .map(SanType::DnsName)
            .map_err(|_| CertError::InvalidSan {
                san: s.to_owned(),
                reason: "not ASCII",
            })
    };
    let mut out = vec![dns(name.as_str())?];
    for san in sans {
        let san = match San::parse(san)? {
            San::Ip(ip) => SanType::IpAddress(ip),
            San::Dns(host) => dns(&host)?,
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

/// What tells a CA from the cluster's others in its name: the day it was made (UTC) and the
/// start of its public key (random). Two CAs of one cluster (the old one and the new one while
/// a CA is rotated) then have different subjects, which is how certificate and revocation list
/// checks tell their issuers apart.
fn ca_tag(key: &KeyPair) -> String {
    let now = time::OffsetDateTime::now_utc();
    // The end of the encoded point: the start is a fixed header.
    let public = key.public_key_raw();
    let start = public.len().saturating_sub(4);
    let tag: String = public[start..].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{:04}-{:02}-{:02} {tag}",
        now.year(),
        u8::from(now.month()),
        now.day()
    )
}
