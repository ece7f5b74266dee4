//! `replicast status --config FILE [--json]`: the cluster as its master sees it.
//!
//! The command connects to the master with the certificate of the configuration given and
//! asks once ([`Message::AskStatus`]) on a request stream. The master's driver answers
//! requests apart from the one-way messages of the two-phase commit: the asker does not become
//! a client, and the request takes no place in the sequence of messages from its name, so the
//! command may use the configuration of a node that is running (a client, a storage) without
//! disturbing it. [`ask_master`] is shared with `replicast admin`.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use replicast_node::config::{NodeConfig, RoleConfig};
use replicast_node::partition::CellState;
use replicast_node::protocol::{
    ClusterStatus, MasterRole, Message, NodeRole, NodeState, NodeStatus, StorePath, decode_from,
    encode,
};
use serde::Serialize;

use super::Error;
use replicast_node::driver::bind_endpoint;

/// How long the command waits for the master to acknowledge its closing the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The exit status when the cluster is not operational.
const NOT_OPERATIONAL: i32 = 2;

/// The long help of `replicast status` (`--help`): what it prints, exit status, JSON fields.
const HELP: &str = "\
Prints the nodes (name, role, state, address, the number and date of the revocation list it \
checks peers against), each node's links with the RTT it measures and, \
for a writer's link to a storage, whether stored objects reach that storage by multicast or by \
unicast right now, and the partition table as a grid of partitions x storages (U up to date, \
O out of date, F feeding, . no cell). A storage in state `waiting` is connected but holds no \
cells until `replicast admin add-storage` adds it.

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
  nodes             list of {name, role, state, address, links}
    role            \"master\" | \"storage\" | \"client\"
    state           \"running\" | \"down\" | \"waiting\"
    address         \"IP:PORT\" or null
    links           null (no report) or list of {peer, rtt_ms, store_path}
      rtt_ms        float, or null when the link has no measurement
      store_path    \"multicast\" | \"unicast\" (a writer's link to a storage) or null
    crl             null (no report, or no `tls.crl`) or {number, issued}: the revocation list
                    the node checks its peers against (issued: RFC 3339, UTC)
    refusals        null (no report) or list of {peer, reason, count}: what the node refused
                    of each peer before its role saw it (the peer's certificate does not grant
                    a role allowed to send it, is revoked, or a per-peer limit was reached)
  partition_table   {version, partitions, replicas, storages, cells}
    storages        the storages holding cells, in the order they joined
    cells           one list per partition of {storage, state, replaces}
      state         \"up_to_date\" | \"out_of_date\" | \"feeding\"
      replaces      the storage whose cell this feeding cell takes over, or null";

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

/// Runs `replicast status`; exits the process with 2 when the cluster is not operational.
pub fn run(args: StatusArgs) -> Result<(), Error> {
    let config = NodeConfig::load(&args.config)?;
    let timeout = Duration::from_secs(args.timeout);
    let request = request_id();
    let (answer, name, address) =
        block_on(ask_master(&config, Message::AskStatus { request }, timeout))?;
    let Message::AnswerStatus {
        status,
        request: answered,
    } = answer
    else {
        return Err(format!("the master answered {} to AskStatus", answer.kind()).into());
    };
    if answered != request {
        return Err(format!("the master answered request {answered}, not {request}").into());
    }
    let mut status = *status;
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

/// The masters a node's configuration names, with where to reach them: `[masters]` (or the
/// single `[master]`); on a master's own configuration, the group, itself first (it runs on
/// this host, at `node.listen`).
fn masters_of(config: &NodeConfig) -> Vec<(String, SocketAddr)> {
    let mut masters: Vec<(String, SocketAddr)> = config
        .masters
        .iter()
        .map(|master| (master.name.as_str().to_owned(), master.address))
        .collect();
    if let RoleConfig::Master { .. } = &config.role {
        let own = config.node.name.as_str();
        masters.retain(|(name, _)| name != own);
        let mut address = config.node.listen;
        if address.ip().is_unspecified() {
            address.set_ip(match address.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        masters.insert(0, (own.to_owned(), address));
    }
    masters
}

/// Asks the masters named by `config` `message` on a request stream, with `config`'s
/// certificate, following a master's redirect to the primary ([`Message::PrimaryIs`]) and
/// trying the next master when one cannot be reached; returns the answer and the name and
/// address of the master that gave it. Bounded by `timeout` as a whole. A refusal comes back
/// as the master's error text.
///
/// The endpoint listens on `node.listen`'s address with a port of the system's choosing, so
/// that the command runs beside a node started from the same file.
pub(super) async fn ask_master(
    config: &NodeConfig,
    message: Message,
    timeout: Duration,
) -> Result<(Message, String, SocketAddr), Error> {
    let mut candidates: std::collections::VecDeque<(String, SocketAddr)> =
        masters_of(config).into();
    let known = masters_of(config);
    let mut own = config.clone();
    own.node.listen.set_port(0);
    let endpoint = bind_endpoint(&own)?;
    let exchange = async {
        let mut errors = Vec::new();
        // Bounded: each master once, and a few redirects.
        for _ in 0..(known.len() + 4) {
            let Some((master, address)) = candidates.pop_front() else {
                break;
            };
            // One master may be down or frozen: connecting to it gets a share of the time,
            // not all of it. A master that took the connection gets the rest for its answer:
            // a change is answered once committed in the masters' log, which may take a
            // while, and asking another master meanwhile would ask for the change twice.
            let share = timeout / u32::try_from(known.len().max(1) + 1).unwrap_or(2);
            let answer = async {
                let link = match tokio::time::timeout(share, endpoint.link(&master, address)).await
                {
                    Ok(link) => link.map_err(|e| {
                        format!("cannot connect to the master {master} at {address}: {e}")
                    })?,
                    Err(_) => {
                        return Err::<Message, Error>(
                            format!("{master} at {address} did not answer in time").into(),
                        );
                    }
                };
                let answer: Vec<u8> = link.request(&encode(&message)).await.map_err(|e| {
                    format!("the master {master} did not answer {}: {e}", message.kind())
                })?;
                Ok::<Message, Error>(decode_from(&master, &answer)?)
            };
            match answer.await {
                Ok(Message::PrimaryIs {
                    primary: Some(primary),
                    address: primary_address,
                    ..
                }) if primary != master => {
                    let address = primary_address.or_else(|| {
                        known
                            .iter()
                            .find(|(name, _)| *name == primary)
                            .map(|(_, address)| *address)
                    });
                    if let Some(address) = address {
                        candidates.push_front((primary, address));
                    }
                }
                Ok(Message::PrimaryIs { .. }) => {
                    errors.push(format!(
                        "{master} knows no primary (an election is going on)"
                    ));
                }
                // A master's gate refused the question: every master would (the refusal
                // names the role needed), so this is the answer.
                Ok(Message::Refused(refusal)) => {
                    return Err(format!(
                        "the master {master} refused {}: {refusal} ({} in {})",
                        message.kind(),
                        config.tls.cert.display(),
                        config.origin.display()
                    )
                    .into());
                }
                Ok(answer) => return Ok((answer, master, address)),
                Err(error) => errors.push(error.to_string()),
            }
        }
        Err::<(Message, String, SocketAddr), Error>(
            format!("no master answered: {}", errors.join("; ")).into(),
        )
    };
    let result = tokio::time::timeout(timeout, exchange).await;
    endpoint.close();
    // Bounded: the master may be gone.
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
    result.map_err(|_| format!("no master answered within {timeout:?}"))?
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
    reason: String,
    count: u64,
}

#[derive(Debug, Serialize)]
struct LinkView {
    peer: String,
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
        }
    }
}

impl From<&NodeStatus> for NodeView {
    fn from(node: &NodeStatus) -> Self {
        Self {
            name: node.name.clone(),
            role: role_name(node.role),
            state: state_name(node.state),
            address: node.address.map(|address| address.to_string()),
            links: node.report.as_ref().map(|report| {
                report
                    .links
                    .iter()
                    .map(|link| LinkView {
                        peer: link.peer.clone(),
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
                        peer: refusal.peer.clone(),
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
    use replicast_node::protocol::{LinkReport, NodeReport};

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
                    name: "client-1".into(),
                    role: NodeRole::Client,
                    state: NodeState::Running,
                    address: None,
                    report: Some(NodeReport {
                        links: vec![LinkReport {
                            peer: "storage-1".into(),
                            rtt_micros: Some(1250),
                            store_path: Some(StorePath::Unicast),
                        }],
                        ..NodeReport::default()
                    }),
                },
            ],
            partition_table: table,
        }
    }

    fn config(text: &str) -> NodeConfig {
        NodeConfig::parse(text, "/etc/replicast/node.toml").expect("a valid configuration")
    }

    const TLS: &str = "[tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\"\n";

    #[test]
    fn the_master_is_found_from_its_own_config_a_clients_or_a_storages() {
        let master = config(&format!(
            "[node]\nname = \"m1\"\nrole = \"master\"\nlisten = \"0.0.0.0:7000\"\n{TLS}\
             [cluster]\npartitions = 4\nreplicas = 1\nstorages = [\"s1\"]\n"
        ));
        assert_eq!(
            masters_of(&master)[0].clone(),
            ("m1".to_owned(), "127.0.0.1:7000".parse().expect("address")),
            "a wildcard listen address is reached on loopback"
        );
        let client = config(&format!(
            "[node]\nname = \"c1\"\nrole = \"client\"\nlisten = \"127.0.0.1:0\"\n{TLS}\
             [master]\nname = \"m1\"\naddress = \"10.0.0.1:7000\"\n"
        ));
        assert_eq!(
            masters_of(&client)[0].clone(),
            ("m1".to_owned(), "10.0.0.1:7000".parse().expect("address"))
        );
        let storage = config(&format!(
            "[node]\nname = \"s1\"\nrole = \"storage\"\nlisten = \"127.0.0.1:7001\"\n{TLS}\
             [master]\nname = \"m1\"\naddress = \"10.0.0.1:7000\"\n\
             [storage]\npath = \"s1.redb\"\n"
        ));
        assert_eq!(
            masters_of(&storage)[0].clone(),
            ("m1".to_owned(), "10.0.0.1:7000".parse().expect("address"))
        );
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
        let table = &json["partition_table"];
        assert_eq!(table["partitions"], 3);
        assert_eq!(table["replicas"], 2);
        assert_eq!(table["cells"][0][0]["state"], "up_to_date");
        // Cells are dealt round-robin: P1 is on storage-3, then storage-1.
        assert_eq!(table["cells"][1][0]["storage"], "storage-3");
        assert_eq!(table["cells"][1][0]["state"], "out_of_date");
    }

    #[test]
    fn human_form_has_nodes_links_and_the_grid() {
        let text = render(&status());
        assert!(text.starts_with("cluster operational; master master,"));
        assert!(
            text.contains("client-1  storage-1  1.25 ms  unicast"),
            "{text}"
        );
        // P1 is on storage-1 (up to date) and storage-3 (out of date).
        let grid_row = text
            .lines()
            .find(|line| line.starts_with("P1"))
            .expect("a row per partition");
        let letters: Vec<&str> = grid_row.split_whitespace().skip(1).collect();
        assert_eq!(letters, ["U", ".", "O"], "{text}");
    }
}
