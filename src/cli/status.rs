//! `replicast status --config FILE [--json]`: the cluster as its master sees it.
//!
//! The command connects to the master with the certificate of the configuration given and
//! asks once ([`Message::AskStatus`]) on a request stream. The master's driver answers
//! requests apart from the one-way messages of the two-phase commit: the asker does not become
//! a client, and the request takes no place in the sequence of messages from its name, so the
//! command may use the configuration of a node that is running (a client, a storage) without
//! disturbing it. The question goes through `master_client::ask_master`,
//! shared with `replicast admin`, `check` and `backup`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use replicast_node::config::NodeConfig;
use replicast_node::driver::bind_endpoint;
use replicast_node::partition::CellState;
use replicast_node::protocol::{
    BackupStatus, ClusterStatus, MasterRole, Message, NodeRole, NodeState, NodeStatus, StorePath,
};
use serde::Serialize;

use super::Error;
use super::master_client::ask_master;
use replicast_transport::quic::{Endpoint, node_name, peer_session};

/// The exit status when the cluster is not operational.
const NOT_OPERATIONAL: i32 = 2;

/// The long help of `replicast status` (`--help`): what it prints, exit status, JSON fields.
const HELP: &str = "\
Prints the nodes (name, role, state, address, the number and date of the revocation list it \
checks peers against), each node's links with the RTT it measures and, \
for a writer's link to a storage, whether stored objects reach that storage by multicast or by \
unicast right now, and the partition table as a grid of partitions x storages (U up to date, \
O out of date, F feeding, . no cell). A storage in state `waiting` is connected but holds no \
cells until `replicast admin add-storage` adds it. Each process of a name several processes share (a client's) is listed as NAME#SESSION, and leaves the list within seconds of its exit. \
Standing backups (`replicast backup --follow`) that report to the primary are listed with their \
TID, how far behind the last commit they are and how long ago they reported (STALE after 3 \
missed reports).

Configuration: any node's: a master's own (the command asks it first, at `node.listen`), a \
client's or a storage's (it asks the masters of `[masters]` or `[master]`); a master that is not \
the primary redirects the command to the primary. The node may be running: the question goes on a request \
stream of its own, which the master answers apart from that node's messages.

Exit status: 0 when the cluster is operational (every partition has a readable cell on a \
running storage), 2 when it is not, 1 when the master cannot be asked.

JSON (--json), one object; these field names are stable, absent values are null:
  master            the name of the master that answered (the primary when one serves)
  term              its raft term
  masters           list of {name, address, role, log_index}
    role            \"primary\" | \"follower\"
    log_index       the master's log position as the answering master knows it, or null
  operational       true or false, as the exit status
  last_tid          the last commit's TID, 16 hex digits
  nodes             list of {name, session, role, state, address, links, crl, refusals}
    name            the node's name (its certificate's)
    session         null, or 16 hex digits: which process of a name several processes share
                    (a client's; each process is a node of its own, with its own links)
    role            \"master\" | \"storage\" | \"client\"
    state           \"running\" | \"down\" | \"waiting\"
    address         \"IP:PORT\" or null
    links           null (no report) or list of {peer, peer_session, rtt_ms, store_path}
      peer, peer_session  the peer's name and session, as name and session above
      rtt_ms        float, or null when the link has no measurement
      store_path    \"multicast\" | \"unicast\" (a writer's link to a storage) or null
    crl             null (no report, or no `tls.crl`) or {number, issued}: the revocation list
                    the node checks its peers against (issued: RFC 3339, UTC)
    refusals        null (no report) or list of {peer, peer_session, reason, count}: what the node refused
                    of each peer before its role saw it (the peer's certificate does not grant
                    a role allowed to send it, is revoked, or a per-peer limit was reached)
  partition_table   {version, partitions, replicas, storages, cells}
    storages        the storages holding cells, in the order they joined
    cells           one list per partition of {storage, state, replaces}
      state         \"up_to_date\" | \"out_of_date\" | \"feeding\"
      replaces      the storage whose cell this feeding cell takes over, or null
  backups           list of {name, directory, state, backup_tid, caught_up, behind_seconds,
                    report_age_seconds, stale, rate, rounds, error}: the standing backups
                    (`replicast backup --follow`) that report to the primary
    name, directory the certificate it reports with, and the backup directory it names
    state           \"following\" | \"fetching\" | \"retrying\" | \"stopped\"
    backup_tid      the TID the backup is consistent at, 16 hex digits
    caught_up       whether it holds the last commit (last_tid)
    behind_seconds  how far its TID is behind last_tid, in seconds of the TIDs' clock
    report_age_seconds  since its last report, by the master's clock
    stale           true when it missed 3 reports (gone, frozen or cut off): the row says
                    where it was, not where it is
    rate            its bandwidth bound in bytes per second, or null
    rounds          incremental rounds done since it started
    error           why its last attempt failed, or null";

/// Arguments of `replicast status`; `--help` shows [`HELP`].
#[derive(Debug, Args)]
#[command(after_long_help = HELP)]
pub struct StatusArgs {
    /// A node's configuration file (the master's, a client's or a storage's), for its
    /// certificate and the master's address.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Bound on the wait for the master, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
}

impl StatusArgs {
    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }
}

/// The cluster's status, from the master (following redirects; see [`ask_master`]).
pub(super) async fn cluster_status(
    config: &NodeConfig,
    timeout: Duration,
) -> Result<ClusterStatus, Error> {
    let request = request_id();
    let (answer, _, _) = ask_master(config, Message::AskStatus { request }, timeout).await?;
    answered_status(answer, request, "AskStatus")
}

/// The addresses of the storages `status` shows running: where `check` and `backup` read.
pub(super) fn running_storages(status: &ClusterStatus) -> BTreeMap<&str, SocketAddr> {
    status
        .nodes
        .iter()
        .filter(|node| node.role == NodeRole::Storage && node.state == NodeState::Running)
        .filter_map(|node| Some((node.name.as_str(), node.address?)))
        .collect()
}

/// An endpoint with `config`'s certificate on a port and session of its own, for a command
/// that talks to the storages: the node of this configuration may be running beside it.
pub(super) fn own_endpoint(config: &NodeConfig) -> Result<Endpoint, Error> {
    let mut own = config.clone();
    own.node.listen.set_port(0);
    Ok(bind_endpoint(&own, true)?)
}

/// The status in `answer`, the master's answer to request `request` (an `asked` message).
pub(super) fn answered_status(
    answer: Message,
    request: u64,
    asked: &str,
) -> Result<ClusterStatus, Error> {
    match answer {
        Message::AnswerStatus {
            status,
            request: answered,
        } if answered == request => Ok(*status),
        Message::AnswerStatus {
            request: answered, ..
        } => Err(format!("the master answered request {answered}, not {request}").into()),
        other => Err(format!("the master answered {} to {asked}", other.kind()).into()),
    }
}

/// Runs `replicast status`; exits the process with 2 when the cluster is not operational.
pub fn run(args: StatusArgs) -> Result<(), Error> {
    let config = NodeConfig::load(&args.config)?;
    let timeout = Duration::from_secs(args.timeout);
    let request = request_id();
    let (answer, name, address) =
        block_on(ask_master(&config, Message::AskStatus { request }, timeout))?;
    let mut status = answered_status(answer, request, "AskStatus")?;
    // The master role knows neither its certificate's name nor its socket unless its driver
    // told it; this command authenticated the name and dialed the address.
    if let Some(own) = status
        .nodes
        .iter_mut()
        .find(|node| node.role == NodeRole::Master)
    {
        if own.address.is_none() {
            own.address = Some(address);
        }
        own.name.clone_from(&name);
    }
    status.master = name;
    let text = if args.json {
        let view = StatusView::from(&status);
        serde_json::to_string_pretty(&view)
            .map_err(|e| format!("cannot write the status as JSON: {e}"))?
    } else {
        render(&status)
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write the status: {e}"))?;
    if !status.operational {
        std::process::exit(NOT_OPERATIONAL);
    }
    Ok(())
}

/// Runs `future` on a runtime of its own (the command makes one connection).
pub(super) fn block_on<T>(
    future: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?
        .block_on(future)
}

/// A request id that differs between runs (the answer must name it).
pub(super) fn request_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    // The low bits vary fastest; the process id separates two runs in the same instant.
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

/// The JSON form of a [`ClusterStatus`]; field names are part of the command's interface.
#[derive(Debug, Serialize)]
struct StatusView {
    master: String,
    term: u64,
    masters: Vec<MasterView>,
    operational: bool,
    last_tid: String,
    nodes: Vec<NodeView>,
    partition_table: TableView,
    backups: Vec<BackupView>,
}

/// A standing backup in the JSON status.
#[derive(Debug, Serialize)]
struct BackupView {
    name: String,
    directory: String,
    state: &'static str,
    backup_tid: String,
    caught_up: bool,
    behind_seconds: f64,
    report_age_seconds: f64,
    stale: bool,
    rate: Option<u64>,
    rounds: u64,
    error: Option<String>,
}

impl From<&BackupStatus> for BackupView {
    fn from(backup: &BackupStatus) -> Self {
        Self {
            name: backup.name.clone(),
            directory: backup.report.directory.clone(),
            state: backup.report.state.as_str(),
            backup_tid: format!("{:016x}", backup.report.backup_tid),
            caught_up: backup.caught_up,
            behind_seconds: backup.behind_millis as f64 / 1000.0,
            report_age_seconds: backup.report_age_millis as f64 / 1000.0,
            stale: backup.stale,
            rate: backup.report.rate,
            rounds: backup.report.rounds,
            error: backup.report.error.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct MasterView {
    name: String,
    address: Option<String>,
    role: &'static str,
    log_index: Option<u64>,
}

#[derive(Debug, Serialize)]
struct NodeView {
    name: String,
    session: Option<String>,
    role: &'static str,
    state: &'static str,
    address: Option<String>,
    links: Option<Vec<LinkView>>,
    refusals: Option<Vec<RefusalView>>,
    crl: Option<CrlView>,
}

#[derive(Debug, Serialize)]
struct CrlView {
    number: u64,
    issued: String,
}

#[derive(Debug, Serialize)]
struct RefusalView {
    peer: String,
    peer_session: Option<String>,
    reason: String,
    count: u64,
}

#[derive(Debug, Serialize)]
struct LinkView {
    peer: String,
    peer_session: Option<String>,
    rtt_ms: Option<f64>,
    store_path: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct TableView {
    version: u64,
    partitions: u32,
    replicas: usize,
    storages: Vec<String>,
    cells: Vec<Vec<CellView>>,
}

#[derive(Debug, Serialize)]
struct CellView {
    storage: String,
    state: &'static str,
    replaces: Option<String>,
}

impl From<&ClusterStatus> for StatusView {
    fn from(status: &ClusterStatus) -> Self {
        let table = &status.partition_table;
        Self {
            master: status.master.clone(),
            term: status.term,
            masters: status
                .masters
                .iter()
                .map(|master| MasterView {
                    name: master.name.clone(),
                    address: master.address.map(|address| address.to_string()),
                    role: master_role_name(master.role),
                    log_index: master.log_index,
                })
                .collect(),
            operational: status.operational,
            last_tid: format!("{:016x}", status.last_tid),
            nodes: status.nodes.iter().map(NodeView::from).collect(),
            partition_table: TableView {
                version: table.version(),
                partitions: table.num_partitions(),
                replicas: table.replicas(),
                storages: table.storages().to_vec(),
                cells: table
                    .partitions()
                    .map(|cells| {
                        cells
                            .iter()
                            .map(|cell| CellView {
                                storage: cell.node.clone(),
                                state: cell_state_name(cell.state),
                                replaces: cell.replaces.clone(),
                            })
                            .collect()
                    })
                    .collect(),
            },
            backups: status.backups.iter().map(BackupView::from).collect(),
        }
    }
}

impl From<&NodeStatus> for NodeView {
    fn from(node: &NodeStatus) -> Self {
        Self {
            name: node_name(&node.name).to_owned(),
            session: peer_session(&node.name).map(str::to_owned),
            role: role_name(node.role),
            state: state_name(node.state),
            address: node.address.map(|address| address.to_string()),
            links: node.report.as_ref().map(|report| {
                report
                    .links
                    .iter()
                    .map(|link| LinkView {
                        peer: node_name(&link.peer).to_owned(),
                        peer_session: peer_session(&link.peer).map(str::to_owned),
                        rtt_ms: link.rtt_micros.map(|micros| micros as f64 / 1000.0),
                        store_path: link.store_path.map(path_name),
                    })
                    .collect()
            }),
            crl: node
                .report
                .as_ref()
                .and_then(|report| report.crl)
                .map(|crl| CrlView {
                    number: crl.number,
                    issued: crl.issued_utc(),
                }),
            refusals: node.report.as_ref().map(|report| {
                report
                    .refusals
                    .iter()
                    .map(|refusal| RefusalView {
                        peer: node_name(&refusal.peer).to_owned(),
                        peer_session: peer_session(&refusal.peer).map(str::to_owned),
                        reason: refusal.reason.clone(),
                        count: refusal.count,
                    })
                    .collect()
            }),
        }
    }
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Master => "master",
        NodeRole::Storage => "storage",
        NodeRole::Client => "client",
    }
}

fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Running => "running",
        NodeState::Down => "down",
        NodeState::Waiting => "waiting",
    }
}

fn path_name(path: StorePath) -> &'static str {
    match path {
        StorePath::Multicast => "multicast",
        StorePath::Unicast => "unicast",
    }
}

fn cell_state_name(state: CellState) -> &'static str {
    match state {
        CellState::UpToDate => "up_to_date",
        CellState::OutOfDate => "out_of_date",
        CellState::Feeding => "feeding",
    }
}

fn cell_letter(state: CellState) -> char {
    match state {
        CellState::UpToDate => 'U',
        CellState::OutOfDate => 'O',
        CellState::Feeding => 'F',
    }
}

fn master_role_name(role: MasterRole) -> &'static str {
    match role {
        MasterRole::Primary => "primary",
        MasterRole::Follower => "follower",
    }
}

/// The human form: a summary line, then masters, nodes, links and the partition grid.
fn render(status: &ClusterStatus) -> String {
    let table = &status.partition_table;
    let mut out = format!(
        "cluster {}; master {}, last TID {:016x}, partition table version {} \
         (P = {}, R = {})\n",
        if status.operational {
            "operational"
        } else {
            "NOT operational (a partition has no readable cell)"
        },
        status.master,
        status.last_tid,
        table.version(),
        table.num_partitions(),
        table.replicas(),
    );

    out.push_str(&format!("\nMASTERS (term {})\n", status.term));
    let masters: Vec<[String; 4]> = status
        .masters
        .iter()
        .map(|master| {
            [
                master.name.clone(),
                master_role_name(master.role).to_owned(),
                master.address.map_or("-".to_owned(), |a| a.to_string()),
                master.log_index.map_or("-".to_owned(), |i| i.to_string()),
            ]
        })
        .collect();
    push_table(&mut out, ["NAME", "ROLE", "ADDRESS", "LOG INDEX"], &masters);

    out.push_str("\nNODES\n");
    let rows: Vec<[String; 5]> = status
        .nodes
        .iter()
        .map(|node| {
            [
                node.name.clone(),
                role_name(node.role).to_owned(),
                state_name(node.state).to_owned(),
                node.address.map_or("-".to_owned(), |a| a.to_string()),
                node.report
                    .as_ref()
                    .and_then(|report| report.crl)
                    .map_or("-".to_owned(), |crl| {
                        format!("#{} {}", crl.number, crl.issued_utc())
                    }),
            ]
        })
        .collect();
    push_table(&mut out, ["NAME", "ROLE", "STATE", "ADDRESS", "CRL"], &rows);

    let links: Vec<[String; 4]> = status
        .nodes
        .iter()
        .filter_map(|node| node.report.as_ref().map(|report| (node, report)))
        .flat_map(|(node, report)| {
            report.links.iter().map(|link| {
                [
                    node.name.clone(),
                    link.peer.clone(),
                    link.rtt_micros.map_or("-".to_owned(), |micros| {
                        format!("{:.2} ms", micros as f64 / 1000.0)
                    }),
                    link.store_path.map_or("-", path_name).to_owned(),
                ]
            })
        })
        .collect();
    out.push_str("\nLINKS (as each node measures them; STORES: how a writer reaches a storage)\n");
    if links.is_empty() {
        out.push_str("no node has reported its links yet\n");
    } else {
        push_table(&mut out, ["FROM", "TO", "RTT", "STORES"], &links);
    }

    let refusals: Vec<[String; 4]> = status
        .nodes
        .iter()
        .filter_map(|node| node.report.as_ref().map(|report| (node, report)))
        .flat_map(|(node, report)| {
            report.refusals.iter().map(|refusal| {
                [
                    node.name.clone(),
                    refusal.peer.clone(),
                    refusal.reason.clone(),
                    refusal.count.to_string(),
                ]
            })
        })
        .collect();
    if !refusals.is_empty() {
        out.push_str("\nREFUSED (messages a node refused of a peer, by reason)\n");
        push_table(&mut out, ["NODE", "PEER", "REASON", "COUNT"], &refusals);
    }

    if !status.backups.is_empty() {
        out.push_str(
            "\nBACKUPS (standing backups, `replicast backup --follow`; BEHIND: to the last TID)\n",
        );
        let backups: Vec<[String; 7]> = status.backups.iter().map(backup_row).collect();
        push_table(
            &mut out,
            [
                "NAME",
                "DIRECTORY",
                "STATE",
                "BACKUP TID",
                "BEHIND",
                "REPORTED",
                "LAST ERROR",
            ],
            &backups,
        );
    }

    out.push_str("\nPARTITIONS (U up to date, O out of date, F feeding, . no cell)\n");
    let storages = table.storages();
    let width = storages.iter().map(String::len).max().unwrap_or(1);
    let label = format!("P{}", table.num_partitions().saturating_sub(1)).len();
    out.push_str(&format!("{:label$}", ""));
    for storage in storages {
        out.push_str(&format!("  {storage:>width$}"));
    }
    out.push('\n');
    for (partition, cells) in table.partitions().enumerate() {
        out.push_str(&format!("{:<label$}", format!("P{partition}")));
        for storage in storages {
            let letter = cells
                .iter()
                .find(|cell| &cell.node == storage)
                .map_or('.', |cell| cell_letter(cell.state));
            out.push_str(&format!("  {letter:>width$}"));
        }
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

/// One standing backup as a row of the human form.
fn backup_row(backup: &BackupStatus) -> [String; 7] {
    let report = &backup.report;
    [
        backup.name.clone(),
        report.directory.clone(),
        match report.rate {
            Some(rate) => format!("{} ({rate} B/s)", report.state.as_str()),
            None => report.state.as_str().to_owned(),
        },
        format!("{:016x}", report.backup_tid),
        if backup.caught_up {
            "caught up".to_owned()
        } else {
            format!("{:.1} s", backup.behind_millis as f64 / 1000.0)
        },
        format!(
            "{:.1} s ago{}",
            backup.report_age_millis as f64 / 1000.0,
            if backup.stale { " STALE" } else { "" }
        ),
        report.error.clone().unwrap_or_else(|| "-".to_owned()),
    ]
}

/// Appends `rows` under `header`, in columns as wide as their widest entry.
fn push_table<const N: usize>(out: &mut String, header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut line = |cells: [&str; N]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replicast_node::partition::PartitionTable;
    use replicast_node::protocol::{BackupReport, BackupState, LinkReport, NodeReport};

    fn status() -> ClusterStatus {
        let storages = ["storage-1", "storage-2", "storage-3"].map(String::from);
        let mut table = PartitionTable::new(3, 2, &storages).expect("a table");
        table.mark_out_of_date("storage-3").expect("known storage");
        ClusterStatus {
            term: 1,
            masters: Vec::new(),
            master: "master".into(),
            operational: true,
            last_tid: 0x1234,
            complete_tid: 0x1234,
            nodes: vec![
                NodeStatus {
                    name: "master".into(),
                    role: NodeRole::Master,
                    state: NodeState::Running,
                    address: Some("127.0.0.1:7000".parse().expect("address")),
                    report: None,
                },
                NodeStatus {
                    name: "client-1#00000000000000ab".into(),
                    role: NodeRole::Client,
                    state: NodeState::Running,
                    address: None,
                    report: Some(NodeReport {
                        links: vec![
                            LinkReport {
                                peer: "storage-1".into(),
                                rtt_micros: Some(1250),
                                store_path: Some(StorePath::Unicast),
                            },
                            LinkReport {
                                peer: "client-2#00000000000000cd".into(),
                                rtt_micros: None,
                                store_path: None,
                            },
                        ],
                        ..NodeReport::default()
                    }),
                },
            ],
            partition_table: table,
            backups: vec![BackupStatus {
                name: "admin".into(),
                report: BackupReport {
                    directory: "/srv/backup".into(),
                    backup_tid: 0x1200,
                    state: BackupState::Following,
                    interval_millis: 1000,
                    rate: Some(20_000_000),
                    rounds: 7,
                    last_round_bytes: 4096,
                    error: None,
                },
                caught_up: false,
                behind_millis: 1500,
                report_age_millis: 3500,
                stale: true,
            }],
        }
    }

    #[test]
    fn json_has_the_documented_fields() {
        let json = serde_json::to_value(StatusView::from(&status())).expect("serializes");
        assert_eq!(json["master"], "master");
        assert_eq!(json["operational"], true);
        assert_eq!(json["last_tid"], "0000000000001234");
        assert_eq!(json["nodes"][0]["role"], "master");
        assert_eq!(json["nodes"][0]["address"], "127.0.0.1:7000");
        assert_eq!(json["nodes"][0]["links"], serde_json::Value::Null);
        assert_eq!(json["nodes"][1]["links"][0]["rtt_ms"], 1.25);
        assert_eq!(json["nodes"][1]["links"][0]["store_path"], "unicast");
        // One process of a shared name: the name is the certificate's, the session apart, and
        // the same for a peer; a peer with an exclusive name has no session.
        assert_eq!(json["nodes"][1]["name"], "client-1");
        assert_eq!(json["nodes"][1]["session"], "00000000000000ab");
        assert_eq!(json["nodes"][0]["session"], serde_json::Value::Null);
        assert_eq!(json["nodes"][1]["links"][0]["peer"], "storage-1");
        assert_eq!(
            json["nodes"][1]["links"][0]["peer_session"],
            serde_json::Value::Null
        );
        assert_eq!(json["nodes"][1]["links"][1]["peer"], "client-2");
        assert_eq!(
            json["nodes"][1]["links"][1]["peer_session"],
            "00000000000000cd"
        );
        let table = &json["partition_table"];
        assert_eq!(table["partitions"], 3);
        assert_eq!(table["replicas"], 2);
        assert_eq!(table["cells"][0][0]["state"], "up_to_date");
        // Cells are dealt round-robin: P1 is on storage-3, then storage-1.
        assert_eq!(table["cells"][1][0]["storage"], "storage-3");
        assert_eq!(table["cells"][1][0]["state"], "out_of_date");
        let backup = &json["backups"][0];
        assert_eq!(backup["name"], "admin");
        assert_eq!(backup["directory"], "/srv/backup");
        assert_eq!(backup["state"], "following");
        assert_eq!(backup["backup_tid"], "0000000000001200");
        assert_eq!(backup["caught_up"], false);
        assert_eq!(backup["behind_seconds"], 1.5);
        assert_eq!(backup["report_age_seconds"], 3.5);
        assert_eq!(backup["stale"], true);
        assert_eq!(backup["rate"], 20_000_000);
        assert_eq!(backup["rounds"], 7);
        assert_eq!(backup["error"], serde_json::Value::Null);
    }

    #[test]
    fn human_form_has_nodes_links_and_the_grid() {
        let text = render(&status());
        assert!(text.starts_with("cluster operational; master master,"));
        let link_rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|line| line.starts_with("client-1#"))
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert!(
            link_rows.contains(&vec![
                "client-1#00000000000000ab",
                "storage-1",
                "1.25",
                "ms",
                "unicast"
            ]),
            "a session's links are listed under NAME#SESSION: {text}"
        );
        // P1 is on storage-1 (up to date) and storage-3 (out of date).
        let grid_row = text
            .lines()
            .find(|line| line.starts_with("P1"))
            .expect("a row per partition");
        let letters: Vec<&str> = grid_row.split_whitespace().skip(1).collect();
        assert_eq!(letters, ["U", ".", "O"], "{text}");
        let backup_row = text
            .lines()
            .find(|line| line.starts_with("admin"))
            .expect("a row per standing backup");
        for part in [
            "/srv/backup",
            "0000000000001200",
            "1.5 s",
            "3.5 s ago STALE",
        ] {
            assert!(backup_row.contains(part), "{part}: {text}");
        }
    }
}
