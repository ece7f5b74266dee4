//! What the master knows of the nodes beyond its table, and the cluster status it answers
//! [`Message::AskStatus`](crate::protocol::Message::AskStatus) with.
//!
//! Storages and clients send a [`NodeReport`] about once a second; the master keeps the latest
//! one of each node it counts as running or connected, and drops it when the node leaves, so
//! the reports it holds are bounded by the nodes it knows. A storage that connects but is not
//! in the table waits here until an operator adds it (`replicast admin add-storage`).
//!
//! ```
//! use replicast_node::master::{Master, MasterConfig};
//! use replicast_node::partition::PartitionTable;
//! use replicast_node::protocol::{Message, NodeRole, NodeState};
//! use std::time::SystemTime;
//!
//! let table = PartitionTable::new(4, 2, &["s1".into(), "s2".into()])?;
//! let mut master = Master::new(table, MasterConfig::default())?;
//! master.handle(SystemTime::now(), "s1", Message::StorageReady)?;
//! let status = master.cluster_status();
//! assert!(status.operational);
//! let s1 = status.nodes.iter().find(|node| node.name == "s1").unwrap();
//! assert_eq!((s1.role, s1.state), (NodeRole::Storage, NodeState::Running));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::Master;
use crate::partition::NodeName;
use crate::protocol::{
    ClusterStatus, MasterRole, MasterStatus, NodeReport, NodeRole, NodeState, NodeStatus,
};

/// The most links one report may list; the rest are dropped, so that a node cannot make the
/// master hold (and every status answer carry) an unbounded list.
pub const MAX_REPORTED_LINKS: usize = 256;

/// The name the master gives itself in a status until told otherwise ([`Master::identify`]).
const DEFAULT_NAME: &str = "master";

/// What the master knows of nodes beyond the partition table.
#[derive(Debug, Default)]
pub(super) struct Roster {
    /// The master's own name and address, for the status.
    name: Option<NodeName>,
    address: Option<SocketAddr>,
    /// The latest report of each running storage and connected client.
    reports: BTreeMap<NodeName, NodeReport>,
    /// Storages connected but holding no cells yet, with their address once they told it.
    pub(super) waiting: BTreeMap<NodeName, Option<SocketAddr>>,
    /// The standing backups' reports (soft state, never in the log).
    pub(super) backups: super::backups::Backups,
}

impl Roster {
    /// Forgets the nodes' reports, the waiting storages and the backups' reports.
    pub(super) fn forget_nodes(&mut self) {
        self.reports.clear();
        self.waiting.clear();
        self.backups.forget();
    }
}

impl Master {
    /// Sets the name and address the master shows for itself in a [`ClusterStatus`] (by
    /// default `"master"` and none: the role does not know its certificate nor its socket).
    pub fn identify(&mut self, name: &str, address: Option<SocketAddr>) {
        self.roster.name = Some(name.to_owned());
        self.roster.address = address;
    }

    /// Storages connected to the master but not in its table, waiting to be added.
    pub fn waiting_storages(&self) -> impl Iterator<Item = &str> {
        self.roster.waiting.keys().map(String::as_str)
    }

    /// The cluster as this master sees it: what it answers
    /// [`Message::AskStatus`](crate::protocol::Message::AskStatus) with.
    ///
    /// Nodes come in this order: the master, the table's storages (in the order they joined),
    /// storages waiting to be added, connected clients (by name). The standing backups'
    /// ages count to the latest time the master was given.
    pub fn cluster_status(&self) -> ClusterStatus {
        let master = self
            .roster
            .name
            .clone()
            .unwrap_or_else(|| self.consensus.name().to_owned());
        let _ = DEFAULT_NAME;
        let group = self.consensus.status();
        let config = self.consensus.group_config();
        let primary = self.is_primary();
        let masters = config
            .masters
            .iter()
            .map(|(name, address)| {
                let own = *name == self.consensus.name();
                let is_primary = if own {
                    primary
                } else {
                    group.leader.as_deref() == Some(name.as_str())
                };
                let log_index = if own {
                    Some(group.applied)
                } else {
                    group
                        .matched
                        .iter()
                        .find(|(member, _)| member == name)
                        .map(|(_, index)| *index)
                };
                MasterStatus {
                    name: if own { master.clone() } else { name.clone() },
                    address: if own {
                        self.roster.address.or(*address)
                    } else {
                        *address
                    },
                    role: if is_primary {
                        MasterRole::Primary
                    } else {
                        MasterRole::Follower
                    },
                    log_index,
                }
            })
            .collect();
        let state = self.current();
        let mut nodes = vec![NodeStatus {
            name: master.clone(),
            role: NodeRole::Master,
            state: NodeState::Running,
            address: self.roster.address,
            report: None,
        }];
        nodes.extend(state.table.storages().iter().map(|name| NodeStatus {
            name: name.clone(),
            role: NodeRole::Storage,
            state: if self.running.contains(name) {
                NodeState::Running
            } else {
                NodeState::Down
            },
            address: state.storage_addresses.get(name).copied(),
            report: self.roster.reports.get(name).cloned(),
        }));
        nodes.extend(
            self.roster
                .waiting
                .iter()
                .map(|(name, address)| NodeStatus {
                    name: name.clone(),
                    role: NodeRole::Storage,
                    state: NodeState::Waiting,
                    address: *address,
                    report: None,
                }),
        );
        nodes.extend(self.clients.iter().map(|name| NodeStatus {
            name: name.clone(),
            role: NodeRole::Client,
            state: NodeState::Running,
            address: None,
            report: self.roster.reports.get(name).cloned(),
        }));
        ClusterStatus {
            master,
            term: group.term,
            masters,
            operational: primary && self.serves_every_partition(),
            last_tid: state.last_tid.0,
            complete_tid: state.last_committed.0,
            nodes,
            partition_table: state.table.clone(),
            backups: self.roster.backups.status(state.last_tid),
        }
    }

    /// Whether every partition has a readable cell on a running storage: the cluster can load
    /// every object and commit to every partition right now. (The table alone keeps the last
    /// readable cell of a partition readable even when its storage is down.)
    fn serves_every_partition(&self) -> bool {
        self.state.table.partitions().all(|cells| {
            cells
                .iter()
                .any(|cell| cell.is_readable() && self.running.contains(&cell.node))
        })
    }

    /// Keeps `report` as the latest of `from`, a running storage or connected client.
    pub(super) fn record_report(&mut self, from: &str, mut report: NodeReport) {
        report.links.truncate(MAX_REPORTED_LINKS);
        report.refusals.truncate(MAX_REPORTED_LINKS);
        self.roster.reports.insert(from.to_owned(), report);
    }

    /// `from`, not in the table, said it is a storage (`StorageReady`, or its address): it
    /// waits to be added.
    pub(super) fn storage_waiting(&mut self, from: &str, address: Option<SocketAddr>) {
        let known = self.roster.waiting.entry(from.to_owned()).or_default();
        if address.is_some() {
            *known = address;
        }
    }

    /// `node` left: its report is outdated, and a waiting storage stops waiting.
    pub(super) fn forget_in_roster(&mut self, node: &str) {
        self.roster.reports.remove(node);
        self.roster.waiting.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use crate::ids::{Oid, Tid};
    use crate::master::test_support::{begin, drain, running_master};
    use crate::master::{Master, MasterConfig};
    use crate::partition::{CellState, PartitionTable};
    use crate::protocol::{
        LinkReport, Message, NodeReport, NodeRole, NodeState, ProtocolError, StorePath,
    };

    fn master() -> Master {
        let storages = ["s1", "s2", "s3"].map(String::from);
        let table = PartitionTable::new(6, 2, &storages).expect("a valid table");
        Master::new(table, MasterConfig::default()).expect("a lone master")
    }

    fn report(peer: &str, rtt_micros: u64, store_path: Option<StorePath>) -> NodeReport {
        NodeReport {
            links: vec![LinkReport {
                peer: peer.into(),
                rtt_micros: Some(rtt_micros),
                store_path,
            }],
            ..NodeReport::default()
        }
    }

    /// Asks as `replicast status` does: a request, answered directly, nothing sent besides.
    fn ask_status(master: &mut Master, from: &str) -> crate::protocol::ClusterStatus {
        let answer = master
            .answer(SystemTime::now(), from, Message::AskStatus { request: 7 })
            .expect("anyone may ask for the status");
        let Message::AnswerStatus { request, status } = answer else {
            panic!("AnswerStatus expected, got {answer:?}");
        };
        assert_eq!(request, 7, "the answer names the request");
        let sent = drain(master);
        assert!(sent.is_empty(), "asking sends nothing: {sent:?}");
        *status
    }

    #[test]
    fn status_lists_nodes_with_roles_states_addresses_and_reports() {
        let mut master = master();
        let now = SystemTime::now();
        master.identify("m", Some("127.0.0.1:7000".parse().expect("an address")));
        for storage in ["s1", "s2"] {
            master
                .handle(now, storage, Message::StorageReady)
                .expect("ready");
        }
        master
            .handle(
                now,
                "s1",
                Message::StorageAddress {
                    address: "127.0.0.1:7001".parse().expect("an address"),
                },
            )
            .expect("address");
        master
            .handle(now, "c1", Message::ClientHello)
            .expect("hello");
        let client_report = report("s1", 1500, Some(StorePath::Multicast));
        master
            .handle(now, "c1", Message::NodeReport(client_report.clone()))
            .expect("a client reports");
        let storage_report = report("m", 800, None);
        master
            .handle(now, "s2", Message::NodeReport(storage_report.clone()))
            .expect("a storage reports");
        drain(&mut master);

        let status = ask_status(&mut master, "operator");
        assert_eq!(status.master, "m");
        assert!(status.operational);
        assert_eq!(status.last_tid, 0, "nothing committed yet");
        let summary: Vec<_> = status
            .nodes
            .iter()
            .map(|node| (node.name.as_str(), node.role, node.state))
            .collect();
        assert_eq!(
            summary,
            [
                ("m", NodeRole::Master, NodeState::Running),
                ("s1", NodeRole::Storage, NodeState::Running),
                ("s2", NodeRole::Storage, NodeState::Running),
                ("s3", NodeRole::Storage, NodeState::Down),
                ("c1", NodeRole::Client, NodeState::Running),
            ]
        );
        assert_eq!(
            status.nodes[0].address,
            Some("127.0.0.1:7000".parse().expect("an address"))
        );
        assert_eq!(
            status.nodes[1].address,
            Some("127.0.0.1:7001".parse().expect("an address"))
        );
        assert_eq!(status.nodes[2].address, None, "s2 told no address");
        assert_eq!(status.nodes[2].report.as_ref(), Some(&storage_report));
        assert_eq!(status.nodes[4].report.as_ref(), Some(&client_report));
        assert_eq!(&status.partition_table, master.table());
    }

    #[test]
    fn asking_for_the_status_changes_nothing() {
        let mut master = master();
        let before = master.cluster_status();
        ask_status(&mut master, "operator");
        let after = master.cluster_status();
        assert_eq!(before, after);
        assert!(
            !after.nodes.iter().any(|node| node.name == "operator"),
            "the asker is not counted as a client"
        );
        // And the asker cannot begin a transaction: it is no client.
        assert!(
            master
                .handle(
                    SystemTime::now(),
                    "operator",
                    Message::Begin {
                        ttid: Tid(1),
                        table_version: 1
                    }
                )
                .is_err()
        );
    }

    #[test]
    fn a_running_node_may_ask_and_stays_as_it_was() {
        let now = SystemTime::now();
        let mut master = running_master(now, 6, &["s1", "s2", "s3"]);
        let before = master.cluster_status();
        let from_storage = ask_status(&mut master, "s1");
        let from_client = ask_status(&mut master, "c1");
        assert_eq!(from_storage, before);
        assert_eq!(from_client, before);
        assert_eq!(master.cluster_status(), before);
    }

    #[test]
    fn requests_other_than_the_operators_are_refused_and_change_nothing() {
        let mut master = master();
        let before = master.cluster_status();
        for request in [
            Message::Begin {
                ttid: Tid(1),
                table_version: 1,
            },
            Message::ClientHello,
            Message::StorageReady,
            Message::AnswerStatus {
                request: 1,
                status: Box::new(before.clone()),
            },
        ] {
            let kind = request.kind();
            let refusal = master
                .answer(SystemTime::now(), "s1", request)
                .expect_err("not a request the master answers");
            assert!(
                matches!(&refusal, ProtocolError::Unexpected { from, kind: k } if from == "s1" && *k == kind),
                "{refusal:?}"
            );
        }
        assert!(drain(&mut master).is_empty());
        assert_eq!(master.cluster_status(), before);
    }

    #[test]
    fn not_operational_while_a_partition_has_no_readable_cell_on_a_running_storage() {
        let mut master = master();
        let now = SystemTime::now();
        master
            .handle(now, "s1", Message::StorageReady)
            .expect("ready");
        // s2 and s3 never came: the partition held by both has nobody to serve it.
        assert!(!master.cluster_status().operational);
        master
            .handle(now, "s2", Message::StorageReady)
            .expect("ready");
        master
            .handle(now, "s3", Message::StorageReady)
            .expect("ready");
        assert!(master.cluster_status().operational);
        // s3 and s2 fail: the table keeps the last readable cells, but they are down.
        master.peer_lost(now, "s3").expect("lost");
        assert!(
            master.cluster_status().operational,
            "s1 and s2 cover everything"
        );
        master.peer_lost(now, "s2").expect("lost");
        assert!(
            master.table().is_operational(),
            "the table keeps a readable cell"
        );
        assert!(
            !master.cluster_status().operational,
            "but its storage is down"
        );
    }

    #[test]
    fn reports_from_strangers_are_refused_and_those_of_leavers_dropped() {
        let mut master = master();
        let now = SystemTime::now();
        assert!(
            master
                .handle(now, "stranger", Message::NodeReport(report("s1", 1, None)))
                .is_err(),
            "a node neither running nor connected has nothing to report"
        );
        master
            .handle(now, "c1", Message::ClientHello)
            .expect("hello");
        master
            .handle(now, "c1", Message::NodeReport(report("s1", 1, None)))
            .expect("report");
        master.peer_lost(now, "c1").expect("lost");
        let status = master.cluster_status();
        assert!(!status.nodes.iter().any(|node| node.name == "c1"));
        assert!(!status.nodes.iter().any(|node| node.name == "stranger"));
        assert!(master.roster.reports.is_empty(), "no report kept");
    }

    #[test]
    fn a_report_keeps_a_bounded_number_of_links() {
        let mut master = master();
        let now = SystemTime::now();
        master
            .handle(now, "s1", Message::StorageReady)
            .expect("ready");
        let links = (0..super::MAX_REPORTED_LINKS + 10)
            .map(|i| LinkReport {
                peer: format!("p{i}"),
                rtt_micros: None,
                store_path: None,
            })
            .collect();
        master
            .handle(
                now,
                "s1",
                Message::NodeReport(NodeReport {
                    links,
                    ..NodeReport::default()
                }),
            )
            .expect("report");
        let status = master.cluster_status();
        let s1 = status.nodes.iter().find(|node| node.name == "s1");
        let kept = s1
            .and_then(|node| node.report.as_ref())
            .map(|r| r.links.len());
        assert_eq!(kept, Some(super::MAX_REPORTED_LINKS));
    }

    #[test]
    fn status_shows_cell_states_operational_and_the_last_commit() {
        let now = SystemTime::now();
        let mut master = running_master(now, 6, &["s1", "s2", "s3"]);
        let ttid = begin(&mut master, now);
        let oid = Oid(1);
        let voters: Vec<String> = master
            .table()
            .readable_cells(oid)
            .map(|cell| cell.node.clone())
            .collect();
        master
            .handle(
                now,
                "c1",
                Message::AskFinish {
                    ttid,
                    oids: vec![oid],
                    voters: voters.clone(),
                    failed: vec![],
                },
            )
            .expect("finish");
        let tid = drain(&mut master)
            .into_iter()
            .find_map(|t| match t.message {
                Message::Finish { tid, .. } => Some(tid),
                _ => None,
            })
            .expect("a finish");
        for voter in &voters {
            master
                .handle(now, voter, Message::Finished { ttid, tid })
                .expect("finished");
        }
        // A storage lost: its cells go out of date, and the status says so.
        master.peer_lost(now, "s3").expect("lost");
        let status = master.cluster_status();
        assert_eq!(status.last_tid, tid.0);
        assert_ne!(Tid(status.last_tid), Tid::ZERO);
        assert!(status.operational, "s1 and s2 cover every partition");
        let s3_cells: Vec<CellState> = status
            .partition_table
            .partitions()
            .flatten()
            .filter(|cell| cell.node == "s3")
            .map(|cell| cell.state)
            .collect();
        assert!(!s3_cells.is_empty());
        assert!(s3_cells.iter().all(|state| *state == CellState::OutOfDate));
    }
}
