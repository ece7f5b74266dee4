//! What nodes report about their links, and the cluster status the master answers with.
//!
//! Every client and storage sends the master a [`NodeReport`] now and then: the measured
//! round-trip time of each of its links and, for a writer, whether each storage is reached by
//! multicast right now or by the unicast fallback. The master keeps the latest report of each
//! node and answers [`Message::AskStatus`](super::Message::AskStatus) with a [`ClusterStatus`]:
//! what `replicast status` prints.

use serde::{Deserialize, Serialize};

use crate::partition::{NodeName, PartitionTable};

/// How a writer's stored objects reach one storage right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorePath {
    /// Over the multicast group (its reachability is proven).
    Multicast,
    /// Over the storage's QUIC link, because multicast is off for this writer (strategy
    /// `unicast`) or the storage has not proven reachable on the group (strategy `auto`).
    Unicast,
}

/// One link of the reporting node, as it measures it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    /// The node at the other end.
    pub peer: NodeName,
    /// The smoothed round-trip time QUIC measures on the link, in microseconds; `None` when no
    /// connection is up.
    pub rtt_micros: Option<u64>,
    /// For a writer's link to a storage: how stored objects reach it now.
    pub store_path: Option<StorePath>,
}

/// Messages, requests or fan-out sessions of one peer that a node refused for one reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalCount {
    /// The peer that sent them (its certificate's name).
    pub peer: NodeName,
    /// Why they were refused ([`RefusalReason::label`](super::RefusalReason::label)).
    pub reason: String,
    /// How many, since the node started.
    pub count: u64,
}

/// The certificate revocation list a node checks its peers against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlStatus {
    /// The list's CRL number (one more at each revocation).
    pub number: u64,
    /// When the cluster CA issued it, in seconds since the Unix epoch.
    pub issued_unix_secs: u64,
}

impl CrlStatus {
    /// The issue date, UTC, as RFC 3339 text (`2026-12-04T18:00:00Z`).
    ///
    /// ```
    /// use replicast_node::protocol::CrlStatus;
    ///
    /// let crl = CrlStatus { number: 2, issued_unix_secs: 86_400 + 3_723 };
    /// assert_eq!(crl.issued_utc(), "1970-01-02T01:02:03Z");
    /// ```
    pub fn issued_utc(&self) -> String {
        let (days, second_of_day) = (
            self.issued_unix_secs / 86_400,
            self.issued_unix_secs % 86_400,
        );
        // Days since 1970 of a u64 count of seconds fit an i64.
        let (year, month, day) =
            crate::ids::civil_from_days(i64::try_from(days).unwrap_or(i64::MAX / 2));
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60
        )
    }
}

/// What a client or storage tells the master about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Its links, one per peer it has a connection to.
    pub links: Vec<LinkReport>,
    /// What it refused of its peers, by peer and reason.
    pub refusals: Vec<RefusalCount>,
    /// The revocation list it loaded, if its configuration names one.
    pub crl: Option<CrlStatus>,
}

/// The role of a node in a [`ClusterStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    /// The master.
    Master,
    /// A storage.
    Storage,
    /// A client.
    Client,
}

/// Whether a node is part of the running cluster, as the master sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Connected and serving.
    Running,
    /// Known (in the partition table) but not connected.
    Down,
    /// A storage connected to the master but not in the partition table yet: it holds no
    /// cells until an operator adds it (`replicast admin add-storage`).
    Waiting,
}

/// One node in a [`ClusterStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its name, as in its certificate.
    pub name: NodeName,
    /// Its role.
    pub role: NodeRole,
    /// Running or down.
    pub state: NodeState,
    /// The address it accepts connections at, when it told the master.
    pub address: Option<std::net::SocketAddr>,
    /// Its latest report, if it sent one.
    pub report: Option<NodeReport>,
}

/// What a master is in the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterRole {
    /// It serves: raft's leader, with everything committed before its term applied.
    Primary,
    /// It follows the primary's log (a hot standby), or waits for an election.
    Follower,
}

/// One master of the group, as the master answering sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStatus {
    /// Its name.
    pub name: NodeName,
    /// Where it accepts connections, if known.
    pub address: Option<std::net::SocketAddr>,
    /// Primary or follower.
    pub role: MasterRole,
    /// Its log position: the last index known to match the primary's log (for the
    /// answering master itself, the last it applied); `None` when the answering master does
    /// not know (it is not the primary).
    pub log_index: Option<u64>,
}

/// The whole cluster as the master sees it: the answer to `replicast status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The master's name.
    pub master: NodeName,
    /// The raft term of the answering master.
    pub term: u64,
    /// The masters of the group.
    pub masters: Vec<MasterStatus>,
    /// Whether every partition has a readable cell on a running storage, so that every object
    /// can be loaded and commits can go on.
    pub operational: bool,
    /// The last committed TID, as a raw 64-bit value (0 when none).
    pub last_tid: u64,
    /// The last TID whose finish every voter acknowledged (or went out of date for), as a raw
    /// 64-bit value: every readable cell holds every commit up to it, so a reader of several
    /// partitions (`replicast backup`) sees one consistent state there.
    pub complete_tid: u64,
    /// Every node the master knows: itself, the storages of the table, connected clients.
    pub nodes: Vec<NodeStatus>,
    /// The partition table with its cell states.
    pub partition_table: PartitionTable,
    /// The standing backups (`replicast backup --follow`) that reported to this master.
    pub backups: Vec<BackupStatus>,
}

/// What a standing backup is doing, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupState {
    /// Waiting for the next commit (or for the next look at the master).
    Following,
    /// Fetching a round of transactions from the storages.
    Fetching,
    /// Its last look or round failed (the report's `error` says why); it tries again.
    Retrying,
    /// It stopped (SIGTERM or SIGINT): it reports no more.
    Stopped,
}

impl BackupState {
    /// The state's name in `replicast status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Following => "following",
            Self::Fetching => "fetching",
            Self::Retrying => "retrying",
            Self::Stopped => "stopped",
        }
    }
}

/// What a standing backup tells the master about itself
/// ([`Message::ReportBackup`](super::Message::ReportBackup)), about once per interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    /// Which backup of the sender's name: its directory, as the follower names it.
    pub directory: String,
    /// The TID the backup directory is consistent at, raw (0 when none yet).
    pub backup_tid: u64,
    /// What it is doing.
    pub state: BackupState,
    /// How often it reports, in milliseconds: the master counts a report stale after
    /// [`STALE_AFTER_MISSED`] of them did not come.
    pub interval_millis: u64,
    /// Its bandwidth bound, bytes per second, if any.
    pub rate: Option<u64>,
    /// Rounds done since it started.
    pub rounds: u64,
    /// Bytes the last round fetched.
    pub last_round_bytes: u64,
    /// Why its last look or round failed.
    pub error: Option<String>,
}

/// How many reports a standing backup may miss before the master shows its report as stale.
pub const STALE_AFTER_MISSED: u32 = 3;

/// A standing backup in a [`ClusterStatus`]: its latest report and how far behind the
/// master's last commit it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStatus {
    /// The name of the certificate it reports with.
    pub name: NodeName,
    /// Its latest report.
    pub report: BackupReport,
    /// Whether the backup holds the master's last commit.
    pub caught_up: bool,
    /// How far the backup's TID is behind the master's last commit, in milliseconds of the
    /// TIDs' clock (0 once caught up).
    pub behind_millis: u64,
    /// How long ago the report came, in milliseconds of the master's clock.
    pub report_age_millis: u64,
    /// Whether [`STALE_AFTER_MISSED`] reports did not come: the follower is gone, frozen or
    /// cut off, and the report says where it was, not where it is.
    pub stale: bool,
}
