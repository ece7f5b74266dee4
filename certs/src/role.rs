//! The roles a node certificate grants: what its holder may do in the cluster.
//!
//! A certificate carries each of its roles as a subject alternative name of type URI,
//! `urn:replicast:role:ROLE` ([`ROLE_URI_PREFIX`]). A URI SAN is standard X.509, shown by every
//! tool (`openssl x509 -text`, `replicast certs show`), covered by the CA's signature like the
//! node name, and ignored by rustls' server-name check, which looks at DNS names only.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::CertError;

/// The prefix of the URI subject alternative names that carry roles.
pub const ROLE_URI_PREFIX: &str = "urn:replicast:role:";

/// One role a certificate can grant.
///
/// ```
/// use replicast_certs::Role;
///
/// let role: Role = "storage".parse()?;
/// assert_eq!(role, Role::Storage);
/// assert_eq!(role.uri(), "urn:replicast:role:storage");
/// # Ok::<(), replicast_certs::CertError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Runs the master: allocates ids, owns the partition table, orders commits.
    Master,
    /// Runs a storage: holds partitions, answers stores, votes and loads, replicates.
    Storage,
    /// Runs transactions: begins, stores, votes, finishes, aborts, loads, asks status.
    Client,
    /// An operator: asks status and runs admin commands (`replicast admin`), nothing else.
    Admin,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 4] = [Role::Master, Role::Storage, Role::Client, Role::Admin];

    /// The role's name, as written on the command line, in configuration files and in the
    /// certificate's URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Storage => "storage",
            Self::Client => "client",
            Self::Admin => "admin",
        }
    }

    /// The URI subject alternative name that grants this role.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| CertError::InvalidRole { role: s.to_owned() })
    }
}

/// A set of [`Role`]s: what one certificate grants.
///
/// Written as role names joined by `+` (`client+admin`); the empty set is written `none`.
///
/// ```
/// use replicast_certs::{Role, Roles};
///
/// let roles: Roles = "client+admin".parse()?;
/// assert!(roles.contains(Role::Admin) && !roles.contains(Role::Storage));
/// assert_eq!(roles.to_string(), "client+admin");
/// assert_eq!(Roles::infer_from_name("storage-a1"), Some(Roles::from(Role::Storage)));
/// assert_eq!(Roles::infer_from_name("mallory"), None);
/// # Ok::<(), replicast_certs::CertError>(())
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    /// No role: a certificate that grants nothing (one issued for the transport alone).
    pub const NONE: Roles = Roles(0);

    /// The set as a bit mask (bit `n` for the `n`th role of [`Role::ALL`]), for compact
    /// encodings.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set of a bit mask from [`bits`](Self::bits); bits of no known role are dropped.
    pub const fn from_bits(bits: u8) -> Roles {
        Roles(bits & ((1 << Role::ALL.len()) - 1))
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Whether the set and `other` share a role.
    pub fn intersects(self, other: Roles) -> bool {
        self.0 & other.0 != 0
    }

    /// The set with `role` added.
    #[must_use]
    pub fn with(self, role: Role) -> Roles {
        Roles(self.0 | role.bit())
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles in the set, in [`Role::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL
            .into_iter()
            .filter(move |role| self.contains(*role))
    }

    /// The role a node name suggests: `ROLE` itself or a name starting with `ROLE-`
    /// (`master`, `storage-1`, `client-a`, `admin-alice`). `None` for any other name, whose
    /// role must be given.
    pub fn infer_from_name(name: &str) -> Option<Roles> {
        Role::ALL
            .into_iter()
            .find(|role| {
                let role = role.as_str();
                name == role
                    || name
                        .strip_prefix(role)
                        .is_some_and(|rest| rest.starts_with('-'))
            })
            .map(Roles::from)
    }
}

impl From<Role> for Roles {
    fn from(role: Role) -> Self {
        Roles(role.bit())
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        iter.into_iter().fold(Roles::NONE, Roles::with)
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, role) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            f.write_str(role.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Roles({self})")
    }
}

impl FromStr for Roles {
    type Err = CertError;

    /// Parses `ROLE[+ROLE...]`; `none` is the empty set.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(Roles::NONE);
        }
        s.split('+')
            .map(|role| role.trim().parse::<Role>())
            .collect()
    }
}

/// The roles a DER certificate grants: its URI subject alternative names under
/// [`ROLE_URI_PREFIX`].
///
/// It verifies nothing: use it on the leaf of a verified chain (a peer's certificate once the
/// handshake succeeded). A certificate without such names grants no role; one whose names
/// cannot be read, or that names a role this version does not know, is refused: granting less
/// than the issuer meant is safer than guessing.
pub fn roles_of(cert: &CertificateDer<'_>) -> Result<Roles, CertError> {
    let invalid = |reason: String| CertError::InvalidPeerCertificate { reason };
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| invalid(e.to_string()))?;
    roles_in(&parsed).map_err(invalid)
}

/// The roles of a parsed certificate; the error says what is wrong.
pub(crate) fn roles_in(cert: &X509Certificate<'_>) -> Result<Roles, String> {
    let names = cert
        .subject_alternative_name()
        .map_err(|e| format!("subject alternative names: {e}"))?;
    let mut roles = Roles::NONE;
    for name in names.iter().flat_map(|ext| ext.value.general_names.iter()) {
        if let GeneralName::URI(uri) = name
            && let Some(role) = uri.strip_prefix(ROLE_URI_PREFIX)
        {
            let role: Role = role
                .parse()
                .map_err(|_| format!("unknown role {role:?} in {uri:?}"))?;
            roles = roles.with(role);
        }
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print() {
        for text in ["master", "storage", "client", "admin", "client+admin"] {
            let roles: Roles = text.parse().expect(text);
            assert_eq!(roles.to_string(), text);
        }
        assert_eq!("none".parse::<Roles>().ok(), Some(Roles::NONE));
        assert_eq!(
            "admin+client".parse::<Roles>().ok(),
            "client+admin".parse().ok()
        );
        for bad in ["", "root", "client+", "Client", "client,admin"] {
            assert!(
                matches!(bad.parse::<Roles>(), Err(CertError::InvalidRole { .. })),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn names_suggest_roles() {
        for (name, role) in [
            ("master", Some(Role::Master)),
            ("master-2", Some(Role::Master)),
            ("storage-a1", Some(Role::Storage)),
            ("client-1", Some(Role::Client)),
            ("admin", Some(Role::Admin)),
            ("storage1", None),
            ("masters", None),
            ("mallory", None),
        ] {
            assert_eq!(
                Roles::infer_from_name(name),
                role.map(Roles::from),
                "{name}"
            );
        }
    }

    #[test]
    fn set_operations() {
        let roles = Roles::from(Role::Client).with(Role::Admin);
        assert!(roles.contains(Role::Client) && roles.contains(Role::Admin));
        assert!(!roles.contains(Role::Master));
        assert!(roles.intersects(Role::Admin.into()));
        assert!(!roles.intersects(Role::Storage.into()));
        assert_eq!(
            roles.iter().collect::<Vec<_>>(),
            [Role::Client, Role::Admin]
        );
        assert!(Roles::NONE.is_empty() && !roles.is_empty());
        assert_eq!(Roles::from_bits(roles.bits()), roles);
        assert_eq!(Roles::from_bits(0xff).iter().count(), Role::ALL.len());
    }
}
