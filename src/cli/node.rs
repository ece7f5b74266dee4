//! `replicast node --config FILE`: runs a master or a storage node until SIGTERM or SIGINT.
//!
//! Once its QUIC endpoint listens, the node prints one line `ready NAME ADDRESS` on standard
//! output, so that scripts and tests can wait for it instead of sleeping. The master also
//! prints `running NAME,NAME,...` (sorted; nothing after `running` when none) each time the
//! set of storages that announced themselves to it changes.
//!
//! On SIGHUP it loads its revocation list (`tls.crl`) again: later handshakes check the new
//! list, the connections of peers it revokes are closed, and the node prints
//! `crl NUMBER closed NAME,...` (a list it cannot load is logged and the old one stays).
//!
//! On SIGTERM or SIGINT the node stops its driver, closes its endpoint, closes its database
//! and exits with 0.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;
use replicast_certs::{Revocation, RevocationList};
use replicast_node::config::{NodeConfig, RoleConfig};
use replicast_node::consensus::{GroupSettings, RaftLog};
use replicast_node::driver::{
    Bound, DriverConfig, DriverHandle, FailureTimeouts, Role, bind, driver_config,
    multicast_interface, spawn, spawn_storage,
};
use replicast_node::engine::Engine;
use replicast_node::master::{GroupConfig, Master, MasterConfig, MasterEvent};
use replicast_node::partition::PartitionTable;
use replicast_node::persist::{PersistConfig, ThreadedStorage};
use replicast_node::storage::{StorageConfig, StorageEvent};
use replicast_transport::fanout::FanoutReceiverConfig;
use replicast_transport::multicast::driver::MulticastInterface;
use replicast_transport::quic::{Endpoint, LinkError};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::Error;

/// How long a stopping node waits for its peers to acknowledge the closed connections.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How often the master's set of running storages is checked for a change to report.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Arguments of `replicast node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's configuration file (TOML; see docs/examples/).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

impl NodeArgs {
    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }
}

/// `log.level` of the configuration file at `path`, for the log filter; `None` when the file
/// cannot be read or checked (the subcommand then reports why).
pub(super) fn config_log_level(path: &Path) -> Option<&'static str> {
    NodeConfig::load(path)
        .ok()
        .map(|config| config.log.as_str())
}

/// Runs `replicast node`.
pub fn run(args: NodeArgs) -> Result<(), Error> {
    let config = NodeConfig::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    runtime.block_on(serve(config))
}

/// Loads `tls.crl` again and makes it the list in force, then closes the connections of peers
/// it revokes; on an error the list in force stays. Prints `crl NUMBER closed NAME,...` (the
/// peers whose connections were closed) once done.
fn reload_crl(name: &str, crl: Option<&Path>, revocation: &Revocation, endpoint: &Endpoint) {
    let Some(path) = crl else {
        tracing::info!(
            node = name,
            "SIGHUP: no `tls.crl` configured, nothing to reload"
        );
        return;
    };
    let list = match RevocationList::load(path, revocation.trusted_cas()) {
        Ok(list) => list,
        Err(error) => {
            tracing::error!(node = name, %error, "SIGHUP: the revocation list in force stays");
            return;
        }
    };
    let number = list.number();
    if let Err(error) = revocation.replace(Some(list)) {
        tracing::error!(node = name, %error, "SIGHUP: the revocation list in force stays");
        return;
    }
    let closed = endpoint.close_connections("certificate revoked", |_, certificate| {
        revocation.is_revoked(certificate)
    });
    tracing::info!(
        node = name,
        number,
        ?closed,
        "SIGHUP: revocation list reloaded"
    );
    if let Err(error) = announce(&format!("crl {number} closed {}", closed.join(","))) {
        tracing::warn!(node = name, %error, "cannot report the reload");
    }
}

/// How often a node asks a peer again to take its name.
const CLAIM_RETRY: Duration = Duration::from_millis(200);

/// Makes sure `peer` (a master) takes this process as `name` before it serves: a second
/// process claiming a running storage's or master's name is refused by the masters that know
/// the running one, with its address, and stops here without disturbing it. A node that
/// restarted may find its predecessor's connection still open at the peer until the peer
/// notices it is gone (the link's idle timeout, or at once where the host reports the dead
/// port), so a refusal is taken as final only after `wait`. A peer that cannot be reached now
/// is no reason to stop: the driver keeps trying.
async fn claim_name(
    endpoint: &Endpoint,
    name: &str,
    peer: &str,
    address: SocketAddr,
    wait: Duration,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match endpoint.link(peer, address).await {
            Err(LinkError::NameInUse { reason, .. }) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "the master {peer} refuses this process as {name}: {reason}"
                    )
                    .into());
                }
                tracing::info!(node = name, %peer, %reason, "the master does not take this process yet");
                tokio::time::sleep(CLAIM_RETRY).await;
            }
            Ok(_) => return Ok(()),
            Err(error) => {
                tracing::warn!(node = name, %peer, %error, "the master cannot be reached now");
                return Ok(());
            }
        }
    }
}

/// How long a refusal of this node's name may last before it is final: three idle timeouts
/// (a predecessor's connection is gone by then), at least 3 s.
fn claim_wait(config: &NodeConfig) -> Duration {
    (config.link.idle_timeout * 3).max(Duration::from_secs(3))
}

/// [`claim_name`] at every other master of the group at once (a master's name is held by one
/// process of the group: the others refuse a second one while the first runs); the first
/// refusal stops this process.
async fn claim_master_name(
    endpoint: &Endpoint,
    name: &str,
    peers: &[(String, SocketAddr)],
    wait: Duration,
) -> Result<(), Error> {
    let mut claims = tokio::task::JoinSet::new();
    for (peer, address) in peers.iter().cloned() {
        let endpoint = endpoint.clone();
        let name = name.to_owned();
        claims.spawn(async move { claim_name(&endpoint, &name, &peer, address, wait).await });
    }
    while let Some(claim) = claims.join_next().await {
        claim.map_err(|e| format!("the claim of the name {name} failed: {e}"))??;
    }
    Ok(())
}

/// A storage's fan-out receiver joins writers' groups on `[multicast] interface`; without
/// `[multicast]` on loopback, where no remote writer's group arrives, so stores come by
/// unicast (a writer under `auto` falls back to it).
/// Its waits for multicast objects follow the links' failure detection ([`FailureTimeouts`]).
fn fanout_receiver_config(config: &NodeConfig) -> FanoutReceiverConfig {
    FailureTimeouts::after(config.link.idle_timeout).receiver(FanoutReceiverConfig {
        interface: config
            .multicast
            .as_ref()
            .map_or(MulticastInterface::Loopback, multicast_interface),
        max_sessions: usize::try_from(config.limits.fanout_sessions).unwrap_or(usize::MAX),
        ..FanoutReceiverConfig::default()
    })
}

async fn serve(config: NodeConfig) -> Result<(), Error> {
    let name = config.node.name.as_str().to_owned();
    match &config.role {
        RoleConfig::Client { .. } => Err(format!(
            "{}: a client is not a daemon; run its transactions with `replicast client --config FILE`",
            config.origin.display()
        )
        .into()),
        RoleConfig::Admin { .. } => Err(format!(
            "{}: an admin is not a daemon; use it with `replicast status --config FILE` and \
             `replicast admin --config FILE`",
            config.origin.display()
        )
        .into()),
        RoleConfig::Master { cluster } => {
            if config.cluster_storages.is_empty() {
                return Err(format!(
                    "{}: `cluster.storages` is missing: the master places the partitions' cells \
                     on these storages, e.g. storages = [\"storage-1\", \"storage-2\"]",
                    config.origin.display()
                )
                .into());
            }
            let storages: Vec<String> = config
                .cluster_storages
                .iter()
                .map(|storage| storage.as_str().to_owned())
                .collect();
            let table = PartitionTable::new(cluster.partitions, cluster.replicas, &storages)
                .map_err(|e| {
                    format!(
                        "{}: `cluster.replicas` and `cluster.storages` make no partition table: {e}",
                        config.origin.display()
                    )
                })?;
            // The identity is checked before the log is touched: a master refused for its
            // certificate leaves no files behind.
            let Bound {
                endpoint,
                revocation,
            } = bind(&config, false)?;
            // The name too: a second process with a running master's name is refused by the
            // group before it opens a log or disturbs anyone.
            let peers: Vec<(String, SocketAddr)> = config
                .masters
                .iter()
                .filter(|master| master.name.as_str() != name)
                .map(|master| (master.name.as_str().to_owned(), master.address))
                .collect();
            claim_master_name(&endpoint, &name, &peers, claim_wait(&config)).await?;
            let settings = config
                .master_settings
                .clone()
                .ok_or_else(|| format!("{}: no [master] settings", config.origin.display()))?;
            if let Some(parent) = settings.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    format!(
                        "cannot create the directory of `master.path` {}: {e}",
                        settings.path.display()
                    )
                })?;
            }
            let group = GroupConfig {
                name: name.clone(),
                masters: config
                    .masters
                    .iter()
                    .map(|master| (master.name.as_str().to_owned(), Some(master.address)))
                    .collect(),
                settings: GroupSettings {
                    tick: settings.tick,
                    election_ticks: settings.election_ticks,
                    max_election_ticks: settings.election_ticks * 2,
                    heartbeat_ticks: settings.heartbeat_ticks,
                    ..GroupSettings::default()
                },
            };
            let log = RaftLog::open(&settings.path, &group.voters())
                .map_err(|e| format!("cannot open `master.path`: {e}"))?;
            let mut role = Master::open(
                table,
                MasterConfig {
                    // A dead or frozen voter is noticed by its link; the finish timeout is for
                    // one that is connected but silent.
                    finish_timeout: FailureTimeouts::after(config.link.idle_timeout).finish,
                    ..MasterConfig::default()
                },
                group,
                log,
                SystemTime::now(),
            )
            .map_err(|e| format!("cannot start the master role: {e}"))?;
            // Its log's fsyncs go to a thread of their own, a batch of decisions each.
            role.write_log_behind(None)
                .map_err(|e| format!("cannot start the master's log writer: {e}"))?;
            // A wildcard listen address names no host: the status then shows none.
            let address = Some(config.node.listen).filter(|a| !a.ip().is_unspecified());
            role.identify(&name, address);
            let running = |master: &Master| -> Vec<String> {
                let mut names: Vec<String> =
                    master.running_storages().map(str::to_owned).collect();
                names.sort();
                let role = if master.is_primary() {
                    "primary"
                } else {
                    "follower"
                };
                vec![
                    format!("running {}", names.join(",")),
                    format!("role {role} {}", master.term()),
                ]
            };
            // The other masters are dialed at their configured addresses.
            let directory = config
                .masters
                .iter()
                .filter(|master| master.name.as_str() != name)
                .map(|master| (master.name.as_str().to_owned(), master.address))
                .collect();
            let driver_config = DriverConfig {
                directory,
                revocation: Some(revocation.clone()),
                ..driver_config(&config)
            };
            let (driver, events) = spawn(role, endpoint.clone(), driver_config);
            let reload = Reload {
                crl: config.tls.crl.clone(),
                revocation,
            };
            let node = Node {
                name: &name,
                reload,
                running,
                notable: notable_master_event,
            };
            run_until_signal(node, driver, events, endpoint).await?;
            Ok(())
        }
        RoleConfig::Storage { master, storage } => {
            // The identity is checked before the database is touched: a node refused for its
            // certificate leaves no files behind.
            let Bound {
                endpoint,
                revocation,
            } = bind(&config, false)?;
            // The file is created when missing; so is its directory, as a user of a fresh
            // deployment expects.
            if let Some(parent) = storage.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    format!(
                        "cannot create the directory of `storage.path` {}: {e}",
                        storage.path.display()
                    )
                })?;
            }
            let store = Engine::open_with(&storage.path, &storage.engine).map_err(|e| {
                format!("cannot open `storage.path` {}: {e}", storage.path.display())
            })?;
            let masters: Vec<String> = config
                .masters
                .iter()
                .map(|master| master.name.as_str().to_owned())
                .collect();
            let mut role = ThreadedStorage::start_with_masters(
                SystemTime::now(),
                &name,
                masters,
                store,
                // A voter waits for a live writer's slowest replica before it asks the master.
                FailureTimeouts::after(config.link.idle_timeout).storage(StorageConfig::default()),
                PersistConfig::default(),
            )
            .map_err(|e| format!("cannot start the storage role: {e}"))?;
            // The master hands this address to clients. A wildcard address names no host a
            // client could dial: such clients list the storage in their own [storages].
            if config.node.listen.ip().is_unspecified() {
                tracing::warn!(
                    node = %name,
                    listen = %config.node.listen,
                    "`node.listen` is a wildcard address: clients need this storage in their [storages]"
                );
            } else {
                role.role_mut().announce_address(config.node.listen);
            }
            claim_name(
                &endpoint,
                &name,
                master.name.as_str(),
                master.address,
                claim_wait(&config),
            )
            .await?;
            let driver_config = DriverConfig {
                directory: config
                    .masters
                    .iter()
                    .map(|master| (master.name.as_str().to_owned(), master.address))
                    .collect::<HashMap<_, _>>(),
                // The master shows what this storage measures of its links (`replicast status`).
                report_to: Some(master.name.as_str().to_owned()),
                revocation: Some(revocation.clone()),
                ..driver_config(&config)
            };
            // Stored objects arrive through the fan-out (clients choose the path).
            let (driver, events) = spawn_storage(
                role,
                endpoint.clone(),
                driver_config,
                fanout_receiver_config(&config),
            );
            let reload = Reload {
                crl: config.tls.crl.clone(),
                revocation,
            };
            let node = Node {
                name: &name,
                reload,
                running: |_| Vec::new(),
                notable: notable_storage_event,
            };
            let role = run_until_signal(node, driver, events, endpoint).await?;
            // The writer executes what is queued and syncs; dropping the engine closes the
            // database.
            drop(role.stop());
            Ok(())
        }
    }
}

/// What SIGHUP reloads: the revocation list.
struct Reload {
    /// `tls.crl`.
    crl: Option<PathBuf>,
    /// The list in force.
    revocation: Revocation,
}

/// A running node as [`run_until_signal`] serves it.
struct Node<'a, R: Role> {
    name: &'a str,
    reload: Reload,
    /// The status lines of the role (the storages a master knows to run).
    running: fn(&R) -> Vec<String>,
    /// Which of the role's events are logged at info (see [`log_events`]).
    notable: fn(&R::Event) -> bool,
}

/// Announces readiness of the running `driver`, reports changes of the node's `running`
/// lines and reloads the revocation list on SIGHUP until SIGTERM or SIGINT, then stops the
/// driver and closes the endpoint. Returns the role for its owner to close.
async fn run_until_signal<R>(
    node: Node<'_, R>,
    driver: DriverHandle<R>,
    events: mpsc::UnboundedReceiver<R::Event>,
    endpoint: Endpoint,
) -> Result<R, Error>
where
    R: Role,
    R::Event: std::fmt::Debug,
{
    let Node {
        name,
        reload,
        running,
        notable,
    } = node;
    let address = endpoint
        .local_addr()
        .map_err(|e| format!("cannot read the endpoint's address: {e}"))?;
    // Both handlers are installed before the ready line: a signal sent right after it must
    // find them, not the default action.
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| format!("cannot install the SIGINT handler: {e}"))?;
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    let logger = tokio::spawn(log_events(events, notable));
    tracing::info!(node = name, %address, "listening");
    announce(&format!("ready {name} {address}"))?;

    // The watch borrows the driver: it ends before the driver is stopped.
    let mut watch_failed = None;
    {
        let watch = async {
            let mut reported: Vec<String> = Vec::new();
            let mut ticks = tokio::time::interval(WATCH_INTERVAL);
            loop {
                ticks.tick().await;
                let Ok(lines) = driver.call(move |role, _| running(role)).await else {
                    return Err::<(), Error>(format!("the driver of {name} stopped").into());
                };
                for (index, line) in lines.iter().enumerate() {
                    if reported.get(index) != Some(line) {
                        tracing::info!(node = name, %line, "status changed");
                        // A status line nobody reads any more is no reason to stop serving.
                        if let Err(error) = announce(line) {
                            tracing::warn!(node = name, %error, "cannot report a status line");
                        }
                    }
                }
                reported = lines;
            }
        };
        tokio::pin!(watch);
        loop {
            tokio::select! {
                result = &mut watch => {
                    // The driver stopped on its own: the role may say why, below.
                    watch_failed = result.err();
                    break;
                }
                _ = terminate.recv() => {
                    tracing::info!(node = name, "SIGTERM: stopping");
                    break;
                }
                _ = interrupt.recv() => {
                    tracing::info!(node = name, "SIGINT: stopping");
                    break;
                }
                _ = hangup.recv() => {
                    reload_crl(name, reload.crl.as_deref(), &reload.revocation, &endpoint);
                }
            }
        }
    }
    let role = driver
        .stop()
        .await
        .map_err(|e| format!("the driver of {name} failed: {e}"))?;
    if let Some(failure) = role.failure() {
        return Err(format!("{name} stopped: {failure}").into());
    }
    if let Some(error) = watch_failed {
        return Err(error);
    }
    // Bounded: a peer that vanished never acknowledges the close.
    if tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle())
        .await
        .is_err()
    {
        tracing::debug!(node = name, "peers did not acknowledge the close in time");
    }
    logger.abort();
    Ok(role)
}

/// Writes one status line to standard output, at once (it is a pipe in scripts).
fn announce(line: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write {line:?} to standard output: {e}"))?;
    Ok(())
}

/// Logs the role's events: the `notable` ones (what an operator follows: replication, cells
/// changing state, elections) at info, the others (one per transaction) at debug.
async fn log_events<E: std::fmt::Debug>(
    mut events: mpsc::UnboundedReceiver<E>,
    notable: fn(&E) -> bool,
) {
    while let Some(event) = events.recv().await {
        if notable(&event) {
            tracing::info!(?event, "role event");
        } else {
            tracing::debug!(?event, "role event");
        }
    }
}

/// Every master event but a transaction's end.
fn notable_master_event(event: &MasterEvent) -> bool {
    !matches!(
        event,
        MasterEvent::Committed { .. } | MasterEvent::Aborted { .. }
    )
}

/// A storage's replication and engine events.
fn notable_storage_event(event: &StorageEvent) -> bool {
    matches!(
        event,
        StorageEvent::ReplicationStarted { .. }
            | StorageEvent::PartitionReplicated { .. }
            | StorageEvent::ReplicationFailed { .. }
            | StorageEvent::EngineError { .. }
    )
}
