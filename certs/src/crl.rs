//! The cluster's certificate revocation list (CRL): which node certificates the cluster CA
//! took back before they expire.
//!
//! `replicast certs init` writes an empty list, `DIR/crl.pem` (number 1), and
//! `replicast certs revoke` adds a certificate to it, signing the new list with the CA key and
//! numbering it one higher. Every node loads the list its configuration names, refuses peers
//! whose certificate is on it at the handshake, and loads it again on SIGHUP.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::files::{self, OutputFile};
use crate::{CertError, ClusterCa, x509};

/// File name of the revocation list inside a certificate directory.
pub const CRL_FILE: &str = "crl.pem";
/// How long a new list says it is current. Nodes do not refuse a list past this date (a
/// cluster whose operator did not revoke anything for a while must keep running); it only
/// tells tools when the next one was due.
pub const CRL_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedCertificate {
    /// Its serial number, big-endian, without leading zero bytes.
    pub serial: Vec<u8>,
    /// When the CA revoked it.
    pub revoked_at: SystemTime,
}

/// A revocation list signed by the cluster CA, checked.
///
/// ```
/// use replicast_certs::{ClusterCa, RevocationList, Role};
///
/// let ca = ClusterCa::generate("prod")?;
/// let node = ca.issue_with_roles("client-1", Role::Client.into(), &[])?;
/// let empty = ca.revocation_list(None, &[])?;
/// assert_eq!(empty.number(), 1);
/// assert!(!empty.is_revoked(&node.certificate_der()));
/// let list = ca.revocation_list(Some(&empty), &[node.certificate_der()])?;
/// assert_eq!(list.number(), 2);
/// assert!(list.is_revoked(&node.certificate_der()));
/// # Ok::<(), replicast_certs::CertError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RevocationList {
    der: CertificateRevocationListDer<'static>,
    number: u64,
    this_update: SystemTime,
    /// Sorted by serial.
    revoked: Vec<RevokedCertificate>,
}

impl fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationList")
            .field("number", &self.number)
            .field("this_update", &self.this_update)
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

impl RevocationList {
    /// Reads the list at `path` (PEM, one `X509 CRL` block) and checks that the CA whose
    /// certificate is `ca` signed it. Every failure names the file: missing, not PEM, not a
    /// CRL, not signed by that CA, no CRL number.
    pub fn load(path: &Path, ca: &CertificateDer<'_>) -> Result<RevocationList, CertError> {
        let pem = files::read(path)?;
        let der =
            CertificateRevocationListDer::from_pem_slice(&pem).map_err(|_| CertError::NotPem {
                path: path.to_owned(),
                expected: "X509 CRL block",
            })?;
        Self::from_der(path, der, ca)
    }

    /// Checks a DER list that came from `origin` (named in errors) against the CA whose
    /// certificate is `ca`. Total: any bytes give a list or an error.
    pub fn from_der(
        origin: &Path,
        der: CertificateRevocationListDer<'static>,
        ca: &CertificateDer<'_>,
    ) -> Result<RevocationList, CertError> {
        let invalid = |reason: String| CertError::InvalidCrl {
            path: origin.to_owned(),
            reason,
        };
        let ca_path = PathBuf::from("the cluster CA certificate");
        let ca = x509::parse(&ca_path, ca)?;
        let crl = match x509_parser::parse_x509_crl(&der) {
            Ok(([], crl)) => crl,
            Ok((rest, _)) => {
                return Err(invalid(format!(
                    "{} trailing bytes after the CRL",
                    rest.len()
                )));
            }
            Err(e) => return Err(invalid(e.to_string())),
        };
        check_signed_by(origin, &crl, &ca)?;
        let number = crl
            .crl_number()
            .ok_or_else(|| invalid("no CRL number".to_owned()))?;
        let number = match number.to_u64_digits().as_slice() {
            [] => 0,
            [number] => *number,
            _ => return Err(invalid(format!("CRL number {number} is too large"))),
        };
        let this_update = system_time(crl.last_update().timestamp());
        let mut revoked: Vec<RevokedCertificate> = crl
            .iter_revoked_certificates()
            .map(|entry| RevokedCertificate {
                serial: entry.serial().to_bytes_be(),
                revoked_at: system_time(entry.revocation_date.timestamp()),
            })
            .collect();
        revoked.sort_by(|a, b| a.serial.cmp(&b.serial));
        Ok(RevocationList {
            der,
            number,
            this_update,
            revoked,
        })
    }

    /// Writes the list to `path` (PEM), replacing the file there atomically: a node that
    /// loads it meanwhile reads the old list or the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), CertError> {
        let temporary = path.with_extension("pem.new");
        files::write_all(
            &[OutputFile {
                path: temporary.clone(),
                contents: self.pem(),
                secret: false,
            }],
            true,
        )?;
        std::fs::rename(&temporary, path).map_err(|source| CertError::Io {
            path: path.to_owned(),
            action: "replace",
            source,
        })
    }

    /// The list, PEM.
    pub fn pem(&self) -> String {
        files::pem_encode("X509 CRL", &self.der)
    }

    /// The list, DER (what rustls' verifiers take).
    pub fn der(&self) -> &CertificateRevocationListDer<'static> {
        &self.der
    }

    /// The CRL number: 1 for the list `certs init` writes, one more at each revocation.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// When the CA issued this list.
    pub fn this_update(&self) -> SystemTime {
        self.this_update
    }

    /// The revoked certificates, by serial.
    pub fn revoked(&self) -> &[RevokedCertificate] {
        &self.revoked
    }

    /// Whether `cert` is on the list (by serial number: the list is the cluster CA's, and so
    /// is every certificate a node accepts). A certificate that does not parse is treated as
    /// revoked.
    pub fn is_revoked(&self, cert: &CertificateDer<'_>) -> bool {
        match x509_parser::parse_x509_certificate(cert) {
            Ok((_, cert)) => self.contains_serial(&cert.serial.to_bytes_be()),
            Err(_) => true,
        }
    }

    fn contains_serial(&self, serial: &[u8]) -> bool {
        self.revoked
            .binary_search_by(|entry| entry.serial.as_slice().cmp(serial))
            .is_ok()
    }
}

impl fmt::Display for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "CRL number: {}", self.number)?;
        writeln!(
            f,
            "this update: {}",
            x509::rfc3339(time::OffsetDateTime::from(self.this_update))
        )?;
        write!(f, "revoked:    {}", self.revoked.len())?;
        for entry in &self.revoked {
            let serial: Vec<String> = entry.serial.iter().map(|b| format!("{b:02x}")).collect();
            write!(
                f,
                "\n  serial {} on {}",
                serial.join(":"),
                x509::rfc3339(time::OffsetDateTime::from(entry.revoked_at))
            )?;
        }
        Ok(())
    }
}

impl ClusterCa {
    /// Reads a node certificate this CA issued, to revoke it: fails, naming the file, if it
    /// is missing, not PEM, or not signed by this CA.
    pub fn read_issued(&self, path: &Path) -> Result<CertificateDer<'static>, CertError> {
        let der = files::read_certificate(path)?;
        let cert = x509::parse(path, &der)?;
        let ca_der = self.certificate_der();
        let ca = x509::parse(Path::new(crate::CA_CERT_FILE), &ca_der)?;
        x509::check_signed_by(path, &cert, Path::new(crate::CA_CERT_FILE), &ca)?;
        Ok(der)
    }

    /// A new revocation list signed by this CA: the certificates of `previous` (when given)
    /// and `revoke`, numbered one after `previous` (1 without one), issued now.
    ///
    /// A certificate already on the list keeps its revocation date.
    pub fn revocation_list(
        &self,
        previous: Option<&RevocationList>,
        revoke: &[CertificateDer<'_>],
    ) -> Result<RevocationList, CertError> {
        let generate = |source| CertError::Generate {
            what: "the revocation list".to_owned(),
            source,
        };
        let now = SystemTime::now();
        let mut entries: Vec<RevokedCertificate> = previous
            .map(|list| list.revoked.clone())
            .unwrap_or_default();
        for cert in revoke {
            let parsed = x509::parse(Path::new("the certificate to revoke"), cert)?;
            let serial = parsed.serial.to_bytes_be();
            if !entries.iter().any(|entry| entry.serial == serial) {
                entries.push(RevokedCertificate {
                    serial,
                    revoked_at: now,
                });
            }
        }
        let number = previous.map_or(1, |list| list.number.saturating_add(1));
        let params = CertificateRevocationListParams {
            this_update: now.into(),
            next_update: (now + CRL_VALIDITY).into(),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: entries
                .iter()
                .map(|entry| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&entry.serial),
                    revocation_time: entry.revoked_at.into(),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(self.issuer()).map_err(generate)?;
        let der = CertificateRevocationListDer::from(crl.der().to_vec());
        RevocationList::from_der(
            Path::new("the new revocation list"),
            der,
            &self.certificate_der(),
        )
    }
}

fn check_signed_by(
    origin: &Path,
    crl: &CertificateRevocationList<'_>,
    ca: &X509Certificate<'_>,
) -> Result<(), CertError> {
    if crl.issuer() != ca.subject() || crl.verify_signature(ca.public_key()).is_err() {
        return Err(CertError::CrlNotFromCa {
            path: origin.to_owned(),
        });
    }
    Ok(())
}

fn system_time(unix_seconds: i64) -> SystemTime {
    match u64::try_from(unix_seconds) {
        Ok(seconds) => UNIX_EPOCH + Duration::from_secs(seconds),
        Err(_) => UNIX_EPOCH,
    }
}
