//! `[tls]`: the files of the node's identity for mutual TLS.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [tls] table")]
pub(super) struct RawTls {
    ca: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    crl: Option<Spanned<String>>,
}

/// The `[tls]` section: PEM files of the cluster CA, the node's certificate and its private key,
/// and optionally the cluster's certificate revocation list.
///
/// Relative paths in the file are resolved against the config file's directory; the files are
/// not read here (the node reads them when it starts, and reports its own errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate every peer's certificate must chain to (`tls.ca`).
    pub ca: PathBuf,
    /// This node's certificate, naming it as `node.name` (`tls.cert`).
    pub cert: PathBuf,
    /// This node's private key (`tls.key`).
    pub key: PathBuf,
    /// The cluster CA's revocation list (`tls.crl`, written by `replicast certs init` and
    /// `replicast certs revoke`): peers whose certificate is on it are refused. Read at start
    /// and again on SIGHUP; `None`: no revocation.
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    pub(super) fn check(raw: Spanned<RawTls>, check: &Checker<'_>) -> Result<Self, ConfigError> {
        let section = Some(raw.span());
        let raw = raw.into_inner();
        let file = |value: Option<Spanned<String>>, key: &str, what: &str| {
            let value = check.required(value, key, section.clone(), what)?;
            let path = check.non_empty(key, &value, "a path to a PEM file")?;
            Ok::<_, ConfigError>(check.resolve(path))
        };
        Ok(Self {
            ca: file(
                raw.ca,
                "tls.ca",
                "peers are checked against the cluster CA (a PEM file)",
            )?,
            cert: file(
                raw.cert,
                "tls.cert",
                "the node proves its name with its certificate (a PEM file)",
            )?,
            key: file(
                raw.key,
                "tls.key",
                "the node's certificate needs its private key (a PEM file)",
            )?,
            crl: match raw.crl {
                Some(crl) => Some(check.resolve(check.non_empty(
                    "tls.crl",
                    &crl,
                    "a path to the cluster's revocation list (a PEM file)",
                )?)),
                None => None,
            },
        })
    }
}
