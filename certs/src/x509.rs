//! Checks on parsed certificates, shared by loading and inspection.

use std::path::Path;
use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::certificate::X509Certificate;
use x509_parser::time::ASN1Time;

use crate::CertError;

/// Parses one DER certificate read from `path`; trailing bytes are refused.
pub(crate) fn parse<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, CertError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(CertError::InvalidCertificate {
            path: path.to_owned(),
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        }),
        Err(e) => Err(CertError::InvalidCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// The first subject common name, if it is a string.
pub(crate) fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// The DER SubjectPublicKeyInfo of the certificate, for comparing with a private key.
pub(crate) fn spki_der<'a>(cert: &X509Certificate<'a>) -> &'a [u8] {
    cert.tbs_certificate.subject_pki.raw
}

/// Refuses a certificate that is not valid at `now`, saying the dates.
pub(crate) fn check_validity(
    path: &Path,
    cert: &X509Certificate<'_>,
    now: SystemTime,
) -> Result<(), CertError> {
    let validity = cert.validity();
    let now = OffsetDateTime::from(now);
    let not_before = to_datetime(validity.not_before);
    let not_after = to_datetime(validity.not_after);
    let dates = || {
        (
            rfc3339_opt(not_before, validity.not_before),
            rfc3339_opt(not_after, validity.not_after),
            rfc3339(now),
        )
    };
    if not_before.is_some_and(|start| now < start) {
        let (not_before, not_after, now) = dates();
        return Err(CertError::NotYetValid {
            path: path.to_owned(),
            not_before,
            not_after,
            now,
        });
    }
    if not_after.is_some_and(|end| now > end) {
        let (not_before, not_after, now) = dates();
        return Err(CertError::Expired {
            path: path.to_owned(),
            not_before,
            not_after,
            now,
        });
    }
    Ok(())
}

/// Refuses a certificate whose signature does not verify with the CA's public key.
pub(crate) fn check_signed_by(
    cert_path: &Path,
    cert: &X509Certificate<'_>,
    ca_path: &Path,
    ca: &X509Certificate<'_>,
) -> Result<(), CertError> {
    if cert.issuer() != ca.subject() || cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err(CertError::NotSignedByCa {
            cert: cert_path.to_owned(),
            ca: ca_path.to_owned(),
        });
    }
    Ok(())
}

/// A certificate time as a date-time; `None` if it is outside the representable range.
pub(crate) fn to_datetime(time: ASN1Time) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(time.timestamp()).ok()
}

/// RFC 3339 text of a date-time.
pub(crate) fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339)
        .unwrap_or_else(|_| format!("{} (unix seconds)", time.unix_timestamp()))
}

fn rfc3339_opt(time: Option<OffsetDateTime>, raw: ASN1Time) -> String {
    time.map_or_else(|| raw.to_string(), rfc3339)
}
