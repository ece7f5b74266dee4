//! A readable summary of a certificate, for operators (`replicast certs show`).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use x509_parser::extensions::GeneralName;

use crate::{CertError, files, x509};

/// What an operator wants to know about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateInfo {
    /// Subject distinguished name, e.g. `O=prod, CN=storage-1`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject alternative names, e.g. `DNS:storage-1`, `IP:127.0.0.1`.
    pub subject_alt_names: Vec<String>,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Whether the certificate is valid now, expired or not yet valid.
    pub status: ValidityStatus,
    /// Whether this is a CA certificate.
    pub is_ca: bool,
    /// The roles the certificate grants (`urn:replicast:role:ROLE` names), e.g. `storage`;
    /// the role names as written when they cannot be read.
    pub roles: String,
    /// Extended key usages, e.g. `serverAuth`, `clientAuth`.
    pub extended_key_usages: Vec<String>,
    /// Serial number, hexadecimal with colons.
    pub serial: String,
}

/// Where the present moment falls in a certificate's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidityStatus {
    /// Valid now.
    Valid,
    /// Validity ended.
    Expired,
    /// Validity has not started.
    NotYetValid,
}

impl CertificateInfo {
    /// Summarizes every certificate of a PEM file, in file order.
    pub fn read_file(path: &Path) -> Result<Vec<CertificateInfo>, CertError> {
        files::read_certificates(path)?
            .iter()
            .map(|der| Self::from_der(path, der))
            .collect()
    }

    /// Summarizes one DER certificate; `path` names its origin in errors.
    pub fn from_der(path: &Path, der: &[u8]) -> Result<CertificateInfo, CertError> {
        let cert = x509::parse(path, der)?;
        let invalid = |reason: String| CertError::InvalidCertificate {
            path: path.to_owned(),
            reason,
        };
        let subject_alt_names = cert
            .subject_alternative_name()
            .map_err(|e| invalid(format!("subject alternative names: {e}")))?
            .map(|ext| ext.value.general_names.iter().map(general_name).collect())
            .unwrap_or_default();
        let extended_key_usages = cert
            .extended_key_usage()
            .map_err(|e| invalid(format!("extended key usage: {e}")))?
            .map(|ext| {
                let eku = ext.value;
                [
                    (eku.server_auth, "serverAuth"),
                    (eku.client_auth, "clientAuth"),
                    (eku.any, "any"),
                ]
                .into_iter()
                .filter(|(present, _)| *present)
                .map(|(_, name)| name.to_owned())
                .chain(eku.other.iter().map(|oid| oid.to_id_string()))
                .collect()
            })
            .unwrap_or_default();
        let status = match x509::check_validity(path, &cert, SystemTime::now()) {
            Err(CertError::Expired { .. }) => ValidityStatus::Expired,
            Err(CertError::NotYetValid { .. }) => ValidityStatus::NotYetValid,
            _ => ValidityStatus::Valid,
        };
        let roles = match crate::role::roles_in(&cert) {
            Ok(roles) => roles.to_string(),
            Err(reason) => format!("UNREADABLE ({reason})"),
        };
        let time = |t| x509::to_datetime(t).map_or_else(|| t.to_string(), x509::rfc3339);
        let validity = cert.validity();
        Ok(CertificateInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            subject_alt_names,
            not_before: time(validity.not_before),
            not_after: time(validity.not_after),
            status,
            is_ca: cert.is_ca(),
            roles,
            extended_key_usages,
            serial: cert.raw_serial_as_string(),
        })
    }
}

impl fmt::Display for CertificateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "subject:    {}", self.subject)?;
        writeln!(f, "issuer:     {}", self.issuer)?;
        writeln!(f, "SANs:       {}", list(&self.subject_alt_names))?;
        writeln!(f, "not before: {}", self.not_before)?;
        writeln!(f, "not after:  {}", self.not_after)?;
        writeln!(f, "status:     {}", self.status)?;
        writeln!(f, "CA:         {}", if self.is_ca { "yes" } else { "no" })?;
        if !self.is_ca {
            writeln!(f, "roles:      {}", self.roles)?;
        }
        writeln!(f, "usages:     {}", list(&self.extended_key_usages))?;
        write!(f, "serial:     {}", self.serial)
    }
}

impl fmt::Display for ValidityStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Valid => "valid",
            Self::Expired => "EXPIRED",
            Self::NotYetValid => "NOT YET VALID",
        })
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
            Some(ip) => format!("IP:{ip}"),
            None => format!("IP:invalid ({} bytes)", bytes.len()),
        },
        GeneralName::URI(uri) => format!("URI:{uri}"),
        other => other.to_string(),
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}
