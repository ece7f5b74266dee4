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

/// The cluster's revocation list, checked: one list signed by the cluster CA, or, while a CA
/// is rotated, one list of each trusted CA (the file then holds their PEM blocks one after the
/// other).
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
///
/// // While a CA is rotated, the lists of both CAs travel together.
/// let next = ClusterCa::generate("prod")?;
/// let both = RevocationList::combine(vec![list, next.revocation_list(None, &[])?])?;
/// assert!(both.is_revoked(&node.certificate_der()));
/// # Ok::<(), replicast_certs::CertError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RevocationList {
    /// One per CA, each from a different issuer.
    lists: Vec<SignedList>,
}

/// One CA's list.
#[derive(Clone, PartialEq, Eq)]
struct SignedList {
    der: CertificateRevocationListDer<'static>,
    /// The issuer's name, DER (the CA certificate's subject).
    issuer: Vec<u8>,
    /// The same, as text.
    issuer_name: String,
    number: u64,
    this_update: SystemTime,
    /// Sorted by serial.
    revoked: Vec<RevokedCertificate>,
}

impl fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationList")
            .field("lists", &self.lists.len())
            .field("number", &self.number())
            .field("revoked", &self.revoked().len())
            .finish_non_exhaustive()
    }
}

impl RevocationList {
    /// Reads the list(s) at `path` (PEM, one `X509 CRL` block per CA) and checks that each was
    /// signed by one of `cas`, and that each CA of `cas` has exactly one. Every failure names
    /// the file: missing, not PEM, not a CRL, signed by none of the CAs, no CRL number, a CA
    /// without a list or with two.
    pub fn load(path: &Path, cas: &[CertificateDer<'_>]) -> Result<RevocationList, CertError> {
        let pem = files::read(path)?;
        let not_pem = || CertError::NotPem {
            path: path.to_owned(),
            expected: "X509 CRL block",
        };
        let ders = CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| not_pem())?;
        if ders.is_empty() {
            return Err(not_pem());
        }
        let mut lists = Vec::with_capacity(ders.len());
        for der in ders {
            let mut refusal = None;
            let mut checked = None;
            for ca in cas {
                match Self::from_der(path, der.clone(), ca) {
                    Ok(list) => {
                        checked = Some(list);
                        break;
                    }
                    Err(error) => refusal = Some(error),
                }
            }
            match checked {
                Some(list) => lists.extend(list.lists),
                None => {
                    return Err(refusal.unwrap_or_else(|| CertError::CrlNotFromCa {
                        path: path.to_owned(),
                    }));
                }
            }
        }
        let list = Self::combine_from(path, lists)?;
        for ca in cas {
            let parsed = x509::parse(Path::new("a trusted CA certificate"), ca)?;
            let subject = parsed.subject().as_raw();
            if !list.lists.iter().any(|one| one.issuer == subject) {
                return Err(CertError::InvalidCrl {
                    path: path.to_owned(),
                    reason: format!(
                        "no revocation list of the trusted CA {} (each CA of the CA file needs \
                         its list in this file)",
                        parsed.subject()
                    ),
                });
            }
        }
        Ok(list)
    }

    /// The lists of `lists` as one (what a node loads while a CA is rotated); fails if two
    /// come from the same CA.
    pub fn combine(lists: Vec<RevocationList>) -> Result<RevocationList, CertError> {
        Self::combine_from(
            Path::new("the combined revocation lists"),
            lists.into_iter().flat_map(|list| list.lists).collect(),
        )
    }

    fn combine_from(origin: &Path, lists: Vec<SignedList>) -> Result<RevocationList, CertError> {
        for (i, one) in lists.iter().enumerate() {
            if lists[..i].iter().any(|other| other.issuer == one.issuer) {
                return Err(CertError::InvalidCrl {
                    path: origin.to_owned(),
                    reason: "two revocation lists of the same CA".to_owned(),
                });
            }
        }
        Ok(RevocationList { lists })
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
        let issuer = crl.issuer().as_raw().to_vec();
        let issuer_name = crl.issuer().to_string();
        Ok(RevocationList {
            lists: vec![SignedList {
                der,
                issuer,
                issuer_name,
                number,
                this_update,
                revoked,
            }],
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

    /// The list(s), PEM.
    pub fn pem(&self) -> String {
        self.lists
            .iter()
            .map(|one| files::pem_encode("X509 CRL", &one.der))
            .collect()
    }

    /// The list of each CA, DER (what rustls' verifiers take).
    pub fn ders(&self) -> Vec<CertificateRevocationListDer<'static>> {
        self.lists.iter().map(|one| one.der.clone()).collect()
    }

    /// The CRL number: 1 for the list `certs init` writes, one more at each revocation (with
    /// the lists of several CAs, the highest).
    pub fn number(&self) -> u64 {
        self.lists.iter().map(|one| one.number).max().unwrap_or(0)
    }

    /// When the CA issued this list (with several, the latest).
    pub fn this_update(&self) -> SystemTime {
        self.lists
            .iter()
            .map(|one| one.this_update)
            .max()
            .unwrap_or(UNIX_EPOCH)
    }

    /// The revoked certificates, by serial (of every CA's list).
    pub fn revoked(&self) -> Vec<RevokedCertificate> {
        self.lists
            .iter()
            .flat_map(|one| one.revoked.iter().cloned())
            .collect()
    }

    /// Whether `cert` is on the list of the CA that issued it (by issuer name and serial
    /// number). A certificate that does not parse is treated as revoked.
    pub fn is_revoked(&self, cert: &CertificateDer<'_>) -> bool {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert) else {
            return true;
        };
        let serial = cert.serial.to_bytes_be();
        self.lists
            .iter()
            .filter(|one| one.issuer == cert.issuer().as_raw())
            .any(|one| {
                one.revoked
                    .binary_search_by(|entry| entry.serial.as_slice().cmp(&serial))
                    .is_ok()
            })
    }

    /// The list of the CA named `subject` (DER), if this holds one.
    fn of_issuer(&self, subject: &[u8]) -> Option<&SignedList> {
        self.lists.iter().find(|one| one.issuer == subject)
    }
}

impl fmt::Display for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, one) in self.lists.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if self.lists.len() > 1 {
                writeln!(f, "issuer:     {}", one.issuer_name)?;
            }
            writeln!(f, "CRL number: {}", one.number)?;
            writeln!(
                f,
                "this update: {}",
                x509::rfc3339(time::OffsetDateTime::from(one.this_update))
            )?;
            write!(f, "revoked:    {}", one.revoked.len())?;
            for entry in &one.revoked {
                let serial: Vec<String> = entry.serial.iter().map(|b| format!("{b:02x}")).collect();
                write!(
                    f,
                    "\n  serial {} on {}",
                    serial.join(":"),
                    x509::rfc3339(time::OffsetDateTime::from(entry.revoked_at))
                )?;
            }
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

    /// A new revocation list signed by this CA: the certificates of `previous` (when given;
    /// of its lists, this CA's) and `revoke`, numbered one after `previous` (1 without one),
    /// issued now.
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
        // Of `previous`, the list of this CA (the others are other CAs' business).
        let ca_der = self.certificate_der();
        let subject = x509::parse(Path::new(crate::CA_CERT_FILE), &ca_der)?
            .subject()
            .as_raw()
            .to_vec();
        let previous = previous.and_then(|list| list.of_issuer(&subject));
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
        RevocationList::from_der(Path::new("the new revocation list"), der, &ca_der)
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
