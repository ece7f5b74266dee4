//! `[master]`: how storages and clients reach the cluster's master.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;
use super::node::{NodeName, check_name, check_socket_address};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [master] table")]
pub(super) struct RawMaster {
    address: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    tick_ms: Option<Spanned<u64>>,
    election_ticks: Option<Spanned<u64>>,
    heartbeat_ticks: Option<Spanned<u64>>,
}

impl RawMaster {
    /// A master's own settings (`[master]` on a master); `address` and `name` are the
    /// section's keys on storages and clients, and a mistake here.
    pub(super) fn settings(
        raw: Spanned<Self>,
        check: &Checker<'_>,
    ) -> Result<super::masters::RawSettings, ConfigError> {
        let raw = raw.into_inner();
        for (key, value) in [("master.address", &raw.address), ("master.name", &raw.name)] {
            if let Some(value) = value {
                return Err(check.invalid(
                    key,
                    value,
                    format!("{:?}", value.get_ref()),
                    "on a master, [master] holds its own settings (path, tick_ms, \
                     election_ticks, heartbeat_ticks); list the group in [masters]",
                ));
            }
        }
        Ok(super::masters::RawSettings {
            path: raw.path,
            tick_ms: raw.tick_ms,
            election_ticks: raw.election_ticks,
            heartbeat_ticks: raw.heartbeat_ticks,
        })
    }
}

/// The `[master]` section of storages and clients: where the master listens and the name its
/// certificate must carry (a connection to a peer with another name is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterPeer {
    /// The master's QUIC address (`master.address`).
    pub address: SocketAddr,
    /// The master's node name, checked against its certificate (`master.name`).
    pub name: NodeName,
}

impl MasterPeer {
    /// Checks `[master]` of the node named `own_name`.
    pub(super) fn check(
        raw: Spanned<RawMaster>,
        own_name: &NodeName,
        check: &Checker<'_>,
    ) -> Result<Self, ConfigError> {
        let section = Some(raw.span());
        let raw = raw.into_inner();
        for (key, value) in [("master.path", raw.path.as_ref().map(Spanned::span))]
            .into_iter()
            .chain([
                ("master.tick_ms", raw.tick_ms.as_ref().map(Spanned::span)),
                (
                    "master.election_ticks",
                    raw.election_ticks.as_ref().map(Spanned::span),
                ),
                (
                    "master.heartbeat_ticks",
                    raw.heartbeat_ticks.as_ref().map(Spanned::span),
                ),
            ])
        {
            if let Some(span) = value {
                return Err(check.invalid(
                    key,
                    &Spanned::new(span, ()),
                    key,
                    "a key of a master's own [master]; here [master] names the master",
                ));
            }
        }
        let address = check.required(
            raw.address,
            "master.address",
            section.clone(),
            "the node connects to the master at this address, e.g. \"127.0.0.1:7000\"",
        )?;
        let expected = "the master's IP address and port, e.g. \"127.0.0.1:7000\"";
        let parsed = check_socket_address(check, "master.address", &address, expected)?;
        if parsed.port() == 0 || parsed.ip().is_unspecified() || parsed.ip().is_multicast() {
            return Err(check.invalid(
                "master.address",
                &address,
                format!("{:?}", address.get_ref()),
                "an address one can connect to: a unicast IP and a non-zero port",
            ));
        }
        let name = check.required(
            raw.name,
            "master.name",
            section,
            "the master's certificate is checked against this name",
        )?;
        let checked_name = check_name(check, "master.name", &name)?;
        if checked_name == *own_name {
            // Peers are told apart by the names in their certificates.
            return Err(check.invalid(
                "master.name",
                &name,
                format!("{:?}", name.get_ref()),
                "the master's name, which differs from this node's own `node.name`: \
                 names are unique in a cluster",
            ));
        }
        Ok(Self {
            address: parsed,
            name: checked_name,
        })
    }
}
