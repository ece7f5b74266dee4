//! The node configuration file: one TOML file per node, read by `replicast node --config FILE`.
//!
//! It names the node and its role, where it listens, its certificate files, the master it
//! reports to, the cluster's shape (on the master), the storage file (on a storage), the
//! fan-out strategy and multicast group, QUIC tuning and the log level:
//!
//! | section       | keys                                                          | roles            |
//! |---------------|---------------------------------------------------------------|------------------|
//! | `[node]`      | `name`, `role` (`master`, `storage`, `client`, `admin`), `listen` | all (required) |
//! | `[tls]`       | `ca`, `cert`, `key`, `crl` (optional)                         | all (required)   |
//! | `[cluster]`   | `partitions`, `replicas`, `storages` (names)                  | master (required)|
//! | `[storages]`  | `NAME = "IP:PORT"`: where each storage listens                | client (optional)|
//! | `[master]`    | `address`, `name`                                             | storage, client, admin (required) |
//! | `[storage]`   | `path`                                                        | storage (required) |
//! | `[fanout]`    | `strategy` = `"unicast"` (default), `"multicast"`, `"auto"`   | client           |
//! | `[multicast]` | `group`, `interface`, `ttl` (1), `loopback` (true), `rate_mbit` (unpaced; clients) | storage; client when the strategy multicasts |
//! | `[link]`      | `keep_alive_ms`, `idle_timeout_ms`, `stream_receive_window`, `send_window`, `message_copies`, `congestion` | all (optional) |
//! | `[limits]`    | `open_transactions`, `pending_stores`, `pending_store_bytes`, `streams`, `fanout_sessions` | all (optional) |
//! | `[log]`       | `level` (`"info"`)                                            | all (optional)   |
//!
//! Relative paths are resolved against the config file's directory. Every mistake is a
//! [`ConfigError`] naming the key (as a dotted path), the file and, where there is one, the line
//! and column; unknown keys are mistakes too. Examples for each role are in `docs/examples/`.
//!
//! ```
//! use replicast_node::config::{FanoutStrategy, NodeConfig, Role, RoleConfig};
//! use std::path::Path;
//!
//! let text = r#"
//! [node]
//! name = "client-1"
//! role = "client"
//! listen = "127.0.0.1:0"
//!
//! [tls]
//! ca = "certs/ca.pem"
//! cert = "certs/client-1.pem"
//! key = "certs/client-1.key"
//!
//! [master]
//! address = "127.0.0.1:7000"
//! name = "master"
//!
//! [fanout]
//! strategy = "auto"
//!
//! [multicast]
//! group = "239.1.2.3:7200"
//! interface = "127.0.0.1"
//! "#;
//! let config = NodeConfig::parse(text, "/etc/replicast/client-1.toml")?;
//! assert_eq!(config.role(), Role::Client);
//! assert_eq!(config.tls.cert, Path::new("/etc/replicast/certs/client-1.pem"));
//! let RoleConfig::Client { fanout, .. } = &config.role else { unreachable!() };
//! assert_eq!(*fanout, FanoutStrategy::Auto);
//!
//! // A unicast address where a group belongs: the error names the key and its place.
//! let error = NodeConfig::parse(&text.replace("239.1.2.3", "10.1.2.3"), "client-1.toml")
//!     .unwrap_err();
//! assert_eq!(error.key(), Some("multicast.group"));
//! assert!(error.to_string().starts_with("client-1.toml:20:9: `multicast.group`"));
//! # Ok::<(), replicast_node::config::ConfigError>(())
//! ```

mod check;
mod cluster;
mod error;
mod fanout;
mod limits;
mod link;
mod log;
mod master;
mod masters;
mod multicast;
mod node;
mod storage;
mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use cluster::ClusterLayout;
pub use error::{ConfigError, Location};
pub use fanout::FanoutStrategy;
pub use limits::PeerLimits;
pub use link::LinkTuning;
pub use log::LogLevel;
pub use master::MasterPeer;
pub use masters::{MAX_MASTERS, MasterSettings};
pub use multicast::{MulticastConfig, MulticastInterface};
pub use node::{NodeName, NodeSection, Role};
pub use storage::StorageFiles;
pub use tls::TlsFiles;

use check::Checker;

/// The whole file as written, every section optional until the role is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: Option<Spanned<node::RawNode>>,
    tls: Option<Spanned<tls::RawTls>>,
    master: Option<Spanned<master::RawMaster>>,
    masters: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    cluster: Option<Spanned<cluster::RawCluster>>,
    storage: Option<Spanned<storage::RawStorage>>,
    storages: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    fanout: Option<Spanned<fanout::RawFanout>>,
    multicast: Option<Spanned<multicast::RawMulticast>>,
    link: Option<Spanned<link::RawLink>>,
    limits: Option<Spanned<limits::RawLimits>>,
    log: Option<Spanned<log::RawLog>>,
}

/// A checked node configuration: everything a node needs to start, in the shape of its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The file it was read from.
    pub origin: PathBuf,
    /// `[node]`: name and listen address.
    pub node: NodeSection,
    /// `[tls]`: the node's certificate files.
    pub tls: TlsFiles,
    /// The sections that depend on `node.role`.
    pub role: RoleConfig,
    /// `[multicast]`, when the node sends to or joins a group.
    pub multicast: Option<MulticastConfig>,
    /// `[link]`: QUIC tuning, defaults where not given.
    pub link: LinkTuning,
    /// `[limits]`: what one peer may hold of this node, defaults where not given.
    pub limits: PeerLimits,
    /// `[log]`: the log level.
    pub log: LogLevel,
    /// `cluster.storages` on the master: the storages the partition table places cells on, in
    /// the order written. Empty when not given (and on other roles).
    pub cluster_storages: Vec<NodeName>,
    /// `[storages]` on a client: the address each storage listens at, so that the client can
    /// load from and store to it. Empty when not given (and on other roles).
    pub storage_addresses: BTreeMap<NodeName, SocketAddr>,
    /// The masters of the cluster (`[masters]`, or the one of `[master]` on a storage or a
    /// client; on a master without `[masters]`, itself): the group, in name order.
    pub masters: Vec<MasterPeer>,
    /// A master's own settings (`[master]` on a master, defaults otherwise); `None` on other
    /// roles.
    pub master_settings: Option<MasterSettings>,
}

/// What a node of each role needs beyond the common sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleConfig {
    /// A master: the shape of the partition table it builds.
    Master {
        /// `[cluster]`.
        cluster: ClusterLayout,
    },
    /// A storage: its master and its database file.
    Storage {
        /// `[master]`.
        master: MasterPeer,
        /// `[storage]`.
        storage: StorageFiles,
    },
    /// A client: its master and how it fans stored objects out.
    Client {
        /// `[master]`.
        master: MasterPeer,
        /// `fanout.strategy`.
        fanout: FanoutStrategy,
    },
    /// An operator (`replicast status`, `replicast admin`): the masters to ask.
    Admin {
        /// The first of [`NodeConfig::masters`].
        master: MasterPeer,
    },
}

/// The masters a storage or a client (`who`) knows: `[masters]`, or the single `[master]`.
fn peers_of(
    group: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    single: Option<Spanned<master::RawMaster>>,
    own_name: &NodeName,
    check: &Checker<'_>,
    who: &str,
) -> Result<Vec<MasterPeer>, ConfigError> {
    match (group, single) {
        (Some(group), _) => {
            let masters = masters::check_masters(group, check)?;
            if let Some(clash) = masters.iter().find(|master| master.name == *own_name) {
                return Err(ConfigError::Invalid {
                    at: check.at(None),
                    key: format!("masters.{}", clash.name),
                    value: clash.name.to_string(),
                    expected: "a master's name, which differs from this node's own `node.name`: \
                               names are unique in a cluster"
                        .to_owned(),
                });
            }
            Ok(masters)
        }
        (None, Some(single)) => Ok(vec![MasterPeer::check(single, own_name, check)?]),
        (None, None) => Err(ConfigError::Missing {
            at: check.at(None),
            key: "masters".to_owned(),
            needed_because: format!(
                "{who} needs the masters: [masters] with NAME = \"IP:PORT\" for each, or \
                 [master] with the address and name of a lone master"
            ),
        }),
    }
}

impl NodeConfig {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let bytes = std::fs::read(path).map_err(read_error)?;
        let text = String::from_utf8(bytes).map_err(|error| ConfigError::Syntax {
            at: Location {
                origin: path.to_path_buf(),
                position: None,
            },
            message: format!(
                "the file is not UTF-8 (invalid byte at offset {})",
                error.utf8_error().valid_up_to()
            ),
        })?;
        Self::parse(&text, path)
    }

    /// Checks configuration `text` that came from the file `origin`: errors name `origin`, and
    /// relative paths are resolved against its directory.
    pub fn parse(text: &str, origin: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let origin = origin.as_ref();
        let check = Checker::new(origin, text);
        let raw: RawConfig = toml::from_str(text).map_err(|error| check.toml_error(error))?;
        let missing = |key: &str, needed_because: &str| ConfigError::Missing {
            at: check.at(None),
            key: key.to_owned(),
            needed_because: needed_because.to_owned(),
        };

        let node = raw.node.ok_or_else(|| {
            missing(
                "node",
                "every node has a [node] section with name, role and listen",
            )
        })?;
        let (node, role) = NodeSection::check(node, &check)?;
        let tls = raw.tls.ok_or_else(|| {
            missing(
                "tls",
                "every node has a [tls] section with its ca, cert and key files",
            )
        })?;
        let tls = TlsFiles::check(tls, &check)?;

        let not_for = |section: Option<Range<usize>>, key: &str, hint: &str| match section {
            Some(span) => Err(ConfigError::NotForRole {
                at: check.at(Some(span)),
                key: key.to_owned(),
                role: role.to_string(),
                hint: hint.to_owned(),
            }),
            None => Ok(()),
        };
        let cluster_hint = "[cluster] sets the partition table's shape, on the master only";
        let storage_hint = "[storage] holds a storage node's database file";
        let fanout_hint = "[fanout] chooses how a client sends stored objects";
        let multicast_hint = "[multicast] is for the clients that send and the storages that join";
        let storage_span = raw.storage.as_ref().map(Spanned::span);
        let storages_hint = "[storages] tells a client where each storage listens";
        let storages_span = raw.storages.as_ref().map(Spanned::span);
        let mut cluster_storages = Vec::new();
        let mut storage_addresses = BTreeMap::new();
        let masters: Vec<MasterPeer>;
        let mut master_settings = None;
        let cluster_span = raw.cluster.as_ref().map(Spanned::span);
        let fanout_span = raw.fanout.as_ref().map(Spanned::span);
        let multicast_span = raw.multicast.as_ref().map(Spanned::span);

        let role_config = match role {
            Role::Master => {
                let raw_settings = match raw.master {
                    Some(section) => master::RawMaster::settings(section, &check)?,
                    None => masters::RawSettings {
                        path: None,
                        tick_ms: None,
                        election_ticks: None,
                        heartbeat_ticks: None,
                    },
                };
                master_settings = Some(MasterSettings::check(raw_settings, &node.name, &check)?);
                masters = match raw.masters {
                    Some(group) => {
                        let span = group.span();
                        let group = masters::check_masters(group, &check)?;
                        if !group.iter().any(|master| master.name == node.name) {
                            return Err(check.invalid(
                                "masters",
                                &Spanned::new(span, ()),
                                "a group without this master",
                                format!("the group with this master, {}, in it", node.name),
                            ));
                        }
                        group
                    }
                    None => vec![MasterPeer {
                        address: node.listen,
                        name: node.name.clone(),
                    }],
                };
                not_for(storage_span, "storage", storage_hint)?;
                not_for(fanout_span, "fanout", fanout_hint)?;
                not_for(multicast_span, "multicast", multicast_hint)?;
                not_for(storages_span.clone(), "storages", storages_hint)?;
                let cluster = raw.cluster.ok_or_else(|| {
                    missing(
                        "cluster",
                        "a master needs [cluster] with partitions and replicas",
                    )
                })?;
                let (cluster, storages) = ClusterLayout::check(cluster, &check)?;
                cluster_storages = storages;
                RoleConfig::Master { cluster }
            }
            Role::Storage => {
                not_for(cluster_span, "cluster", cluster_hint)?;
                not_for(fanout_span, "fanout", fanout_hint)?;
                not_for(storages_span.clone(), "storages", storages_hint)?;
                masters = peers_of(raw.masters, raw.master, &node.name, &check, "a storage")?;
                let storage = raw.storage.ok_or_else(|| {
                    missing(
                        "storage",
                        "a storage needs [storage] with the path of its database",
                    )
                })?;
                RoleConfig::Storage {
                    master: masters[0].clone(),
                    storage: StorageFiles::check(storage, &check)?,
                }
            }
            Role::Client => {
                not_for(cluster_span, "cluster", cluster_hint)?;
                not_for(storage_span, "storage", storage_hint)?;
                masters = peers_of(raw.masters, raw.master, &node.name, &check, "a client")?;
                let master = masters[0].clone();
                for (name, address) in raw.storages.map(Spanned::into_inner).into_iter().flatten() {
                    let key = format!("storages.{name}");
                    let name = NodeName::new(&name).ok_or_else(|| {
                        check.invalid(&key, &address, format!("{name:?}"), NodeName::EXPECTED)
                    })?;
                    let expected = "the storage's IP address and port, e.g. \"127.0.0.1:7101\"";
                    let parsed = node::check_socket_address(&check, &key, &address, expected)?;
                    if parsed.port() == 0 || parsed.ip().is_unspecified() {
                        return Err(check.invalid(
                            &key,
                            &address,
                            format!("{:?}", address.get_ref()),
                            "an address one can connect to: a unicast IP and a non-zero port",
                        ));
                    }
                    storage_addresses.insert(name, parsed);
                }
                let (fanout, strategy_span) = fanout::check_fanout(raw.fanout, &check)?;
                if fanout.uses_multicast() && raw.multicast.is_none() {
                    return Err(ConfigError::Missing {
                        at: check.at(strategy_span),
                        key: "multicast".to_owned(),
                        needed_because: format!(
                            "fanout.strategy = \"{fanout}\" sends to a group, named in [multicast]"
                        ),
                    });
                }
                RoleConfig::Client { master, fanout }
            }
            Role::Admin => {
                let admin_hint =
                    "an admin only asks the masters: [masters] (or [master]), [tls], [link], [log]";
                not_for(cluster_span, "cluster", admin_hint)?;
                not_for(storage_span, "storage", admin_hint)?;
                not_for(storages_span, "storages", admin_hint)?;
                not_for(fanout_span, "fanout", admin_hint)?;
                not_for(multicast_span, "multicast", admin_hint)?;
                masters = peers_of(raw.masters, raw.master, &node.name, &check, "an admin")?;
                RoleConfig::Admin {
                    master: masters[0].clone(),
                }
            }
        };
        let multicast = match raw.multicast {
            Some(multicast) => Some(MulticastConfig::check(multicast, &check)?),
            None => None,
        };
        Ok(Self {
            origin: origin.to_path_buf(),
            node,
            tls,
            role: role_config,
            multicast,
            link: LinkTuning::check(raw.link, &check)?,
            limits: PeerLimits::check(raw.limits, &check)?,
            log: LogLevel::check(raw.log, &check)?,
            cluster_storages,
            storage_addresses,
            masters,
            master_settings,
        })
    }

    /// The node's role.
    pub fn role(&self) -> Role {
        match self.role {
            RoleConfig::Master { .. } => Role::Master,
            RoleConfig::Storage { .. } => Role::Storage,
            RoleConfig::Client { .. } => Role::Client,
            RoleConfig::Admin { .. } => Role::Admin,
        }
    }

    /// The master this node reports to; `None` on the master itself.
    pub fn master(&self) -> Option<&MasterPeer> {
        match &self.role {
            RoleConfig::Master { .. } => None,
            RoleConfig::Storage { master, .. }
            | RoleConfig::Client { master, .. }
            | RoleConfig::Admin { master } => Some(master),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TLS: &str = "[tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\"\n";

    fn master(storages: &str) -> Result<NodeConfig, ConfigError> {
        let text = format!(
            "[node]\nname = \"master\"\nrole = \"master\"\nlisten = \"127.0.0.1:7000\"\n{TLS}\
             [cluster]\npartitions = 12\nreplicas = 2\n{storages}"
        );
        NodeConfig::parse(&text, "master.toml")
    }

    fn client(storages: &str) -> Result<NodeConfig, ConfigError> {
        let text = format!(
            "[node]\nname = \"client-1\"\nrole = \"client\"\nlisten = \"127.0.0.1:0\"\n{TLS}\
             [master]\naddress = \"127.0.0.1:7000\"\nname = \"master\"\n{storages}"
        );
        NodeConfig::parse(&text, "client-1.toml")
    }

    #[test]
    fn master_names_its_storages_in_order() {
        let config = master("storages = [\"storage-2\", \"storage-1\"]\n").unwrap();
        let names: Vec<&str> = config
            .cluster_storages
            .iter()
            .map(NodeName::as_str)
            .collect();
        assert_eq!(names, ["storage-2", "storage-1"]);
        assert!(master("").unwrap().cluster_storages.is_empty());
    }

    #[test]
    fn master_storage_mistakes_name_the_key() {
        for storages in [
            "storages = [\"storage-1\", \"storage-1\"]\n",
            "storages = [\"Storage_1\"]\n",
        ] {
            let error = master(storages).unwrap_err();
            assert_eq!(error.key(), Some("cluster.storages"), "{storages}: {error}");
        }
    }

    #[test]
    fn client_reads_storage_addresses() {
        let config = client("[storages]\nstorage-1 = \"127.0.0.1:7101\"\n").unwrap();
        let name = NodeName::new("storage-1").unwrap();
        assert_eq!(
            config.storage_addresses.get(&name),
            Some(&"127.0.0.1:7101".parse().unwrap())
        );
    }

    #[test]
    fn client_storage_address_mistakes_name_the_key() {
        for (storages, key) in [
            ("storage-1 = \"127.0.0.1\"", "storages.storage-1"),
            ("storage-1 = \"127.0.0.1:0\"", "storages.storage-1"),
            ("storage-1 = \"0.0.0.0:7101\"", "storages.storage-1"),
            ("Storage_1 = \"127.0.0.1:7101\"", "storages.Storage_1"),
        ] {
            let error = client(&format!("[storages]\n{storages}\n")).unwrap_err();
            assert_eq!(error.key(), Some(key), "{storages}: {error}");
        }
    }

    #[test]
    fn storages_section_is_for_clients_only() {
        let error = master("[storages]\nstorage-1 = \"127.0.0.1:7101\"\n").unwrap_err();
        assert_eq!(error.key(), Some("storages"), "{error}");
    }
}
