//! `[masters]`: the master group, on every node; and a master's own settings in `[master]`.
//!
//! Every node lists the masters, `NAME = "IP:PORT"`, so that it can find the primary by
//! itself. The single `[master]` form of storages and clients (`address`, `name`) stays valid
//! as a group of one. On a master, `[masters]` lists the group (itself included; a master
//! without it is a group of one) and `[master]` holds its own settings: where its replicated
//! log is kept and raft's timing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;
use super::master::MasterPeer;
use super::node::{NodeName, check_socket_address};

/// The most masters a group may have: raft needs a majority for everything, so more only
/// slow the commits down.
pub const MAX_MASTERS: usize = 7;

/// Checks `[masters]`: each `NAME = "IP:PORT"`.
pub(super) fn check_masters(
    raw: Spanned<BTreeMap<String, Spanned<String>>>,
    check: &Checker<'_>,
) -> Result<Vec<MasterPeer>, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.is_empty() || raw.len() > MAX_MASTERS {
        return Err(check.invalid(
            "masters",
            &Spanned::new(span, ()),
            format!("{} masters", raw.len()),
            format!("1 to {MAX_MASTERS} masters (1, 3 or 5: a majority must stay up)"),
        ));
    }
    let mut masters = Vec::new();
    for (name, address) in raw {
        let key = format!("masters.{name}");
        let name = NodeName::new(&name).ok_or_else(|| {
            check.invalid(&key, &address, format!("{name:?}"), NodeName::EXPECTED)
        })?;
        let expected = "the master's IP address and port, e.g. \"127.0.0.1:7000\"";
        let parsed = check_socket_address(check, &key, &address, expected)?;
        if parsed.port() == 0 || parsed.ip().is_unspecified() || parsed.ip().is_multicast() {
            return Err(check.invalid(
                &key,
                &address,
                format!("{:?}", address.get_ref()),
                "an address one can connect to: a unicast IP and a non-zero port",
            ));
        }
        masters.push(MasterPeer {
            address: parsed,
            name,
        });
    }
    Ok(masters)
}

/// A master's own settings (`[master]` on a master): its log and raft's timing. Every key
/// has a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterSettings {
    /// The redb file of the master's replicated log (`master.path`), resolved against the
    /// config file's directory; `data/NAME-log.redb` beside the file by default.
    pub path: PathBuf,
    /// How often raft's clock ticks (`master.tick_ms`, 50).
    pub tick: Duration,
    /// Ticks without the primary's word before a follower stands for election, at least
    /// (`master.election_ticks`, 10; the wait is random, up to twice as long).
    pub election_ticks: usize,
    /// Ticks between the primary's heartbeats (`master.heartbeat_ticks`, 2).
    pub heartbeat_ticks: usize,
}

/// The keys of `[master]` on a master.
pub(super) struct RawSettings {
    pub(super) path: Option<Spanned<String>>,
    pub(super) tick_ms: Option<Spanned<u64>>,
    pub(super) election_ticks: Option<Spanned<u64>>,
    pub(super) heartbeat_ticks: Option<Spanned<u64>>,
}

impl MasterSettings {
    /// The settings of master `name` with every default.
    pub fn defaults(name: &NodeName, base: &std::path::Path) -> Self {
        Self {
            path: base
                .join("data")
                .join(format!("{}-log.redb", name.as_str())),
            tick: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 2,
        }
    }

    pub(super) fn check(
        raw: RawSettings,
        name: &NodeName,
        check: &Checker<'_>,
    ) -> Result<Self, ConfigError> {
        let mut settings = Self::defaults(name, check.base_dir());
        if let Some(path) = &raw.path {
            let text = check.non_empty("master.path", path, "a path to the master's log file")?;
            settings.path = check.resolve(text);
        }
        if let Some(tick) = &raw.tick_ms {
            if !(1..=10_000).contains(tick.get_ref()) {
                return Err(check.invalid("master.tick_ms", tick, tick.get_ref(), "1 to 10000"));
            }
            settings.tick = Duration::from_millis(*tick.get_ref());
        }
        if let Some(ticks) = &raw.heartbeat_ticks {
            if !(1..=1000).contains(ticks.get_ref()) {
                return Err(check.invalid(
                    "master.heartbeat_ticks",
                    ticks,
                    ticks.get_ref(),
                    "1 to 1000",
                ));
            }
            settings.heartbeat_ticks = *ticks.get_ref() as usize;
        }
        if let Some(ticks) = &raw.election_ticks {
            let value = *ticks.get_ref() as usize;
            if value <= settings.heartbeat_ticks || value > 10_000 {
                return Err(check.invalid(
                    "master.election_ticks",
                    ticks,
                    ticks.get_ref(),
                    format!(
                        "more than master.heartbeat_ticks ({}), at most 10000",
                        settings.heartbeat_ticks
                    ),
                ));
            }
            settings.election_ticks = value;
        } else if settings.election_ticks <= settings.heartbeat_ticks {
            settings.election_ticks = settings.heartbeat_ticks * 5;
        }
        Ok(settings)
    }
}
