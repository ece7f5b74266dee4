//! `[node]`: who this node is, what it does and where it listens.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [node] table")]
pub(super) struct RawNode {
    name: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
}

/// The `[node]` section: the node's name and where it accepts QUIC connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSection {
    /// The node's name, which is also the name in its certificate.
    pub name: NodeName,
    /// The UDP address its QUIC endpoint binds.
    pub listen: SocketAddr,
}

/// The role a node plays in the cluster (`node.role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Allocates ids, owns the partition table, orders commits.
    Master,
    /// Holds partitions of the objects.
    Storage,
    /// Runs transactions against the cluster.
    Client,
    /// An operator's identity for `replicast status` and `replicast admin`; not a daemon.
    Admin,
}

impl Role {
    /// The role as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Storage => "storage",
            Self::Client => "client",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node name: a DNS label (`[a-z0-9-]`, 1 to 63 characters, no leading or trailing `-`), so
/// that it can stand in a certificate's DNS subject alternative name and in a host name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// What a node name must look like, for error messages.
    pub const EXPECTED: &'static str =
        "a DNS label: 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'";

    /// Checks `name`; `None` if it is not a DNS label.
    ///
    /// ```
    /// use replicast_node::config::NodeName;
    /// assert!(NodeName::new("storage-1").is_some());
    /// assert!(NodeName::new("Storage_1").is_none());
    /// ```
    pub fn new(name: &str) -> Option<Self> {
        let valid = (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        valid.then(|| Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a node name found at `key`.
pub(super) fn check_name(
    check: &Checker<'_>,
    key: &str,
    value: &Spanned<String>,
) -> Result<NodeName, ConfigError> {
    NodeName::new(value.get_ref()).ok_or_else(|| {
        check.invalid(
            key,
            value,
            format!("{:?}", value.get_ref()),
            NodeName::EXPECTED,
        )
    })
}

/// Checks a socket address found at `key`.
pub(super) fn check_socket_address(
    check: &Checker<'_>,
    key: &str,
    value: &Spanned<String>,
    expected: &str,
) -> Result<SocketAddr, ConfigError> {
    value
        .get_ref()
        .trim()
        .parse()
        .map_err(|_| check.invalid(key, value, format!("{:?}", value.get_ref()), expected))
}

impl NodeSection {
    pub(super) fn check(
        raw: Spanned<RawNode>,
        check: &Checker<'_>,
    ) -> Result<(Self, Role), ConfigError> {
        let section = Some(raw.span());
        let raw = raw.into_inner();
        let name = check.required(
            raw.name,
            "node.name",
            section.clone(),
            "every node has a name",
        )?;
        let name = check_name(check, "node.name", &name)?;
        let role = check.required(
            raw.role,
            "node.role",
            section.clone(),
            "every node has a role: \"master\", \"storage\", \"client\" or \"admin\"",
        )?;
        let role = match role.get_ref().as_str() {
            "master" => Role::Master,
            "storage" => Role::Storage,
            "client" => Role::Client,
            "admin" => Role::Admin,
            other => {
                return Err(check.invalid(
                    "node.role",
                    &role,
                    format!("{other:?}"),
                    "one of \"master\", \"storage\", \"client\", \"admin\"",
                ));
            }
        };
        let listen = check.required(
            raw.listen,
            "node.listen",
            section,
            "every node binds a UDP address for QUIC, e.g. \"127.0.0.1:7000\"",
        )?;
        let address = check_socket_address(
            check,
            "node.listen",
            &listen,
            "an IP address and port, e.g. \"127.0.0.1:7000\" or \"[::1]:7000\"",
        )?;
        if address.port() == 0 && matches!(role, Role::Master | Role::Storage) {
            return Err(check.invalid(
                "node.listen",
                &listen,
                format!("{:?}", listen.get_ref()),
                "a fixed port: other nodes must know where to reach a master or a storage",
            ));
        }
        Ok((
            Self {
                name,
                listen: address,
            },
            role,
        ))
    }
}
