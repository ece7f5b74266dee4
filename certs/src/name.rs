//! Node names and extra subject alternative names.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::CertError;

/// The name of a node: a DNS label, so that it can serve as the subject CN and as a DNS
/// subject alternative name that rustls' standard server-name check accepts.
///
/// Rules: `[a-z0-9-]`, 1 to 63 characters, no `-` at either end.
///
/// ```
/// use replicast_certs::NodeName;
///
/// let name: NodeName = "storage-1".parse()?;
/// assert_eq!(name.as_str(), "storage-1");
/// assert!("Storage_1".parse::<NodeName>().is_err());
/// # Ok::<(), replicast_certs::CertError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// Longest allowed name (the length limit of one DNS label).
    pub const MAX_LEN: usize = 63;

    /// Checks `name` against the rules and wraps it.
    pub fn new(name: &str) -> Result<Self, CertError> {
        let invalid = |reason| CertError::InvalidNodeName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("empty"));
        }
        if name.len() > Self::MAX_LEN {
            return Err(invalid("longer than 63 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "only lowercase letters, digits and '-' are allowed",
            ));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(invalid("must not start or end with '-'"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An extra subject alternative name: an IP address or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum San {
    Ip(IpAddr),
    Dns(String),
}

impl San {
    /// Parses an IP address, or else a DNS name (labels of `[a-zA-Z0-9-]`, total at most 253).
    pub(crate) fn parse(san: &str) -> Result<Self, CertError> {
        if let Ok(ip) = san.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let invalid = |reason| CertError::InvalidSan {
            san: san.to_owned(),
            reason,
        };
        let name = san.strip_suffix('.').unwrap_or(san);
        if name.is_empty() || name.len() > 253 {
            return Err(invalid(
                "not an IP address, and not a DNS name of 1 to 253 characters",
            ));
        }
        for label in name.split('.') {
            let label_ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !label_ok {
                return Err(invalid("not an IP address, and not a valid DNS name"));
            }
        }
        Ok(Self::Dns(name.to_ascii_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "node-1", "0", &"x".repeat(63)] {
            assert_eq!(
                NodeName::new(ok).map(|n| n.to_string()).ok().as_deref(),
                Some(ok)
            );
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "é", &"x".repeat(64)] {
            assert!(
                matches!(NodeName::new(bad), Err(CertError::InvalidNodeName { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn sans_are_ip_or_dns() {
        assert_eq!(
            San::parse("127.0.0.1").ok(),
            Some(San::Ip([127, 0, 0, 1].into()))
        );
        assert_eq!(
            San::parse("::1").ok(),
            Some(San::Ip(std::net::Ipv6Addr::LOCALHOST.into()))
        );
        assert_eq!(
            San::parse("Node.Example.org.").ok(),
            Some(San::Dns("node.example.org".into()))
        );
        for bad in ["", "a..b", "-a.b", "a b", "a_b.c", "1.2.3.4:5"] {
            assert!(
                matches!(San::parse(bad), Err(CertError::InvalidSan { .. })),
                "{bad:?}"
            );
        }
    }
}
