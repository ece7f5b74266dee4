//! The writers of a cell: `clients` clients on one thread with a runtime of its own (so its CPU
//! time is theirs alone), each running transactions of K new objects of S random bytes
//! (begin, K pipelined stores, vote, finish) through the fan-out with the cell's strategy.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use replicast_certs::ClusterCa;
use replicast_node::client::{Client, ClientConfig};
use replicast_node::driver::{ClientError, ClientHandle, DriverConfig};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::transaction::TransactionInfo;
use replicast_testkit::endpoint::EndpointSpec;
use replicast_transport::fanout::{Fanout, FanoutConfig};
use replicast_transport::multicast::driver::{
    MulticastInterface, MulticastSenderConfig, MulticastSocketConfig,
};
use replicast_transport::multicast::proto::RateLimit;
use replicast_transport::quic::{Endpoint, LinkConfig};
use tokio::sync::Barrier;

use crate::cluster::{FsyncCounter, MASTER, group};
use crate::cpu::thread_cpu_seconds;
use crate::emulation;
use crate::error::BenchError;
use crate::grid::{Amount, CellKnobs};

/// Bounds every single client call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Consecutive aborts after which a client gives up on the cell.
const MAX_ABORTS_IN_A_ROW: u32 = 20;
/// Object ids asked from the master at once (fewer round trips outside the measurement).
const OID_BATCH: u32 = 256;

/// What the cluster tells the writers.
#[derive(Clone)]
pub struct WriterSetup {
    /// The cell.
    pub knobs: CellKnobs,
    /// The cell's index in the run (picks the multicast groups).
    pub cell: usize,
    /// Seeds the emulated links and the payloads.
    pub seed: u64,
    /// The cell's CA.
    pub ca: Arc<ClusterCa>,
    /// The master's and the storages' addresses.
    pub directory: HashMap<String, SocketAddr>,
    /// The storages' names.
    pub storages: Vec<String>,
    /// Where the writers run.
    pub host: WriterHost,
    /// The storages' fsyncs so far, when the cluster can count them.
    pub fsyncs: Option<FsyncCounter>,
    /// The master's log fsyncs so far, when the cluster can count them.
    pub master_fsyncs: Option<FsyncCounter>,
}

/// Where the writers run: their address, multicast interface and network namespace.
#[derive(Debug, Clone)]
pub struct WriterHost {
    /// The address their endpoints bind to.
    pub address: Ipv4Addr,
    /// The interface their multicast senders send on.
    pub interface: MulticastInterface,
    /// A network namespace (`/run/netns/NAME`) the writer thread enters before making any
    /// socket; `None`: this process's.
    pub namespace: Option<PathBuf>,
    /// The multicast group of each client, by index.
    pub groups: Vec<SocketAddr>,
}

impl WriterHost {
    /// The writers of an in-process cell: on loopback, groups spread by cell and process;
    /// with `one_group`, every client on its cell's first group.
    pub fn loopback(cell: usize, clients: usize, one_group: bool) -> Self {
        Self {
            address: Ipv4Addr::LOCALHOST,
            interface: MulticastInterface::Loopback,
            namespace: None,
            groups: (0..clients)
                .map(|client| group(cell, if one_group { 0 } else { client }))
                .collect(),
        }
    }
}

/// What the writers measured after their warm-up.
#[derive(Debug, Clone)]
pub struct WriterOutcome {
    /// Commit latencies in microseconds, all clients.
    pub latencies: Histogram<u64>,
    /// Committed transactions.
    pub commits: u64,
    /// Aborted attempts.
    pub aborts: u64,
    /// Wall-clock time of the measured part.
    pub elapsed: Duration,
    /// UDP payload bytes over QUIC, all writers, all peers.
    pub quic_bytes: u64,
    /// Multicast bytes, all writers.
    pub multicast_bytes: u64,
    /// Multicast repair payload bytes.
    pub repair_bytes: u64,
    /// NACKs the multicast senders received.
    pub nacks: u64,
    /// CPU seconds of the writer thread.
    pub cpu_s: f64,
    /// The storages' fsyncs during the measured part, when counted.
    pub fsyncs: Option<u64>,
    /// The master's log fsyncs during the measured part, when counted.
    pub master_fsyncs: Option<u64>,
    /// The steps of every measured commit, all clients (in the order they were joined).
    pub phases: Vec<PhaseTimes>,
}

/// One writing client: its handle, endpoint (for byte counts) and fan-out (for multicast
/// counts).
struct Writer {
    index: usize,
    handle: ClientHandle,
    endpoint: Endpoint,
    fanout: Fanout,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    quic_bytes: u64,
    quic_lost: u64,
    multicast_bytes: u64,
    repair_bytes: u64,
    nacks: u64,
}

/// Runs the writers of a cell on a thread of their own and returns what they measured.
pub fn run(setup: WriterSetup) -> Result<WriterOutcome, BenchError> {
    let thread = std::thread::Builder::new()
        .name("bench-writer".into())
        .spawn(move || {
            if let Some(namespace) = &setup.host.namespace {
                replicast_testkit::netns::enter(namespace)?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| BenchError::setup("writer runtime", e))?;
            runtime.block_on(writers(setup))
        })
        .map_err(|e| BenchError::Writer(format!("cannot start the thread: {e}")))?;
    thread
        .join()
        .map_err(|_| BenchError::Writer("the thread panicked".into()))?
}

async fn connect(setup: &WriterSetup, index: usize) -> Result<Writer, BenchError> {
    let knobs = &setup.knobs;
    let name = format!("client-{}", index + 1);
    let seed = setup.seed + 10_000 + index as u64;
    let host = &setup.host;
    let endpoint = replicast_testkit::endpoint::bind(
        &setup.ca,
        &name,
        &EndpointSpec::at(host.address)
            .with_link(LinkConfig {
                message_copies: knobs.message_copies,
                congestion: knobs.congestion,
                ..LinkConfig::default()
            })
            .with_conditions(emulation::writer_quic(knobs, seed)),
    )?;
    let group = host
        .groups
        .get(index)
        .copied()
        .ok_or_else(|| BenchError::Setup(format!("no multicast group for {name}")))?;
    // A session id drawn at random, as a node client draws its own (driver/connect.rs): the
    // writers on one group must hold different ids (a storage refuses a session id another
    // writer holds).
    let session_id = StdRng::seed_from_u64(seed ^ 0x5e55_1011_u64).next_u64();
    let mut multicast = MulticastSenderConfig::new(
        MulticastSocketConfig::new(group).with_interface(host.interface.clone()),
        session_id,
    );
    if let Some(bits) = knobs.rate_bits_per_s {
        multicast.protocol.rate_limit = Some(RateLimit::link(bits));
    }
    multicast.impairment = if host.namespace.is_some() {
        // Storages in other processes cannot lose datagrams on read: the loss is the writer's.
        emulation::writer_multicast_lossy(knobs, seed ^ 0xface)
    } else {
        emulation::writer_multicast(knobs, seed ^ 0xface)
    };
    let mut config = FanoutConfig::new(multicast);
    config.strategy = knobs.strategy.transport();
    let fanout = Fanout::bind(endpoint.clone(), config)
        .map_err(|e| BenchError::setup(format!("fan-out of {name}"), e))?;
    let driver = DriverConfig {
        directory: setup.directory.clone(),
        ..DriverConfig::default()
    };
    let handle = ClientHandle::connect_with_fanout(
        Client::new(&name, MASTER, ClientConfig::default()),
        endpoint.clone(),
        driver,
        CALL_TIMEOUT,
        fanout.clone(),
    )
    .await
    .map_err(|source| BenchError::Client {
        client: index,
        what: "connect",
        source,
    })?;
    Ok(Writer {
        index,
        handle,
        endpoint,
        fanout,
    })
}

async fn writers(setup: WriterSetup) -> Result<WriterOutcome, BenchError> {
    let knobs = setup.knobs.clone();
    let mut writers = Vec::new();
    for index in 0..knobs.clients {
        writers.push(connect(&setup, index).await?);
    }
    let mut peers = setup.storages.clone();
    peers.push(MASTER.to_owned());

    // Warm-up, then every client waits at the barrier while the counters are read, then
    // the measured part starts for all at once.
    let barrier = Arc::new(Barrier::new(knobs.clients + 1));
    let start_line = Arc::new(Barrier::new(knobs.clients + 1));
    let measure_start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = tokio::task::JoinSet::new();
    let mut monitors = Vec::new();
    for writer in writers {
        monitors.push((writer.endpoint.clone(), writer.fanout.clone()));
        let knobs = knobs.clone();
        let barrier = barrier.clone();
        let start_line = start_line.clone();
        let measure_start = measure_start.clone();
        let seed = setup.seed;
        let peers = peers.clone();
        tasks.spawn(async move {
            let Writer {
                index,
                mut handle,
                endpoint,
                fanout,
            } = writer;
            let monitor = [(endpoint, fanout)];
            let mut txns = Transactions::new(&knobs, seed + index as u64, index);
            let result = async {
                for _ in 0..knobs.warmup_transactions {
                    txns.commit(&mut handle).await?;
                }
                Ok::<(), BenchError>(())
            }
            .await;
            barrier.wait().await;
            start_line.wait().await;
            result?;
            let started = *measure_start.get_or_init(Instant::now);
            let mut histogram = new_histogram();
            let mut commits = 0u64;
            let mut phases = Vec::new();
            loop {
                let done = match knobs.amount() {
                    Amount::Transactions(count) => {
                        commits >= count
                            || (commits > 0
                                && knobs
                                    .time_limit_s
                                    .is_some_and(|limit| started.elapsed().as_secs_f64() >= limit))
                    }
                    Amount::Duration(duration) => commits > 0 && started.elapsed() >= duration,
                };
                if done {
                    break;
                }
                let counted = read_counters(&monitor, &peers).await;
                let (latency, mut steps) = txns.commit(&mut handle).await?;
                let after = read_counters(&monitor, &peers).await;
                steps.nacks = after.nacks.saturating_sub(counted.nacks);
                steps.repair_bytes = after.repair_bytes.saturating_sub(counted.repair_bytes);
                steps.quic_lost = after.quic_lost.saturating_sub(counted.quic_lost);
                phases.push(steps);
                let micros = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                histogram.saturating_record(micros);
                commits += 1;
            }
            // Closed by the coordinator once it has read the links' byte counts.
            Ok::<_, BenchError>((histogram, commits, txns.aborts, handle, phases))
        });
    }
    barrier.wait().await;
    let before = read_counters(&monitors, &peers).await;
    let fsyncs_before = reading(&setup.fsyncs);
    let master_fsyncs_before = reading(&setup.master_fsyncs);
    let cpu_before = thread_cpu_seconds();
    let started = Instant::now();
    let _ = measure_start.set(started);
    start_line.wait().await;

    let mut latencies = new_histogram();
    let mut phases = Vec::new();
    let mut commits = 0;
    let mut aborts = 0;
    let mut failure = None;
    let mut handles = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((histogram, count, aborted, handle, steps))) => {
                handles.push(handle);
                phases.extend(steps);
                let _ = latencies.add(&histogram);
                commits += count;
                aborts += aborted;
            }
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(join) => {
                failure = failure.or(Some(BenchError::Writer(format!(
                    "a client task failed: {join}"
                ))))
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu_s = thread_cpu_seconds() - cpu_before;
    let after = read_counters(&monitors, &peers).await;
    let fsyncs = since(&setup.fsyncs, fsyncs_before);
    let master_fsyncs = since(&setup.master_fsyncs, master_fsyncs_before);
    for handle in handles {
        let _ = handle.close().await;
    }
    for (_, fanout) in monitors {
        let _ = fanout.close().await;
    }
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(WriterOutcome {
        latencies,
        commits,
        aborts,
        elapsed,
        quic_bytes: after.quic_bytes.saturating_sub(before.quic_bytes),
        multicast_bytes: after.multicast_bytes.saturating_sub(before.multicast_bytes),
        repair_bytes: after.repair_bytes.saturating_sub(before.repair_bytes),
        nacks: after.nacks.saturating_sub(before.nacks),
        cpu_s,
        fsyncs,
        master_fsyncs,
        phases,
    })
}

/// What `counter` reads now, when there is one.
fn reading(counter: &Option<FsyncCounter>) -> Option<u64> {
    counter.as_ref().map(|count| count())
}

/// How far `counter` went since it read `before`.
fn since(counter: &Option<FsyncCounter>, before: Option<u64>) -> Option<u64> {
    reading(counter)
        .zip(before)
        .map(|(now, before)| now.saturating_sub(before))
}

async fn read_counters(monitors: &[(Endpoint, Fanout)], peers: &[String]) -> Counters {
    let mut total = Counters::default();
    for (endpoint, fanout) in monitors {
        for stats in peers
            .iter()
            .filter_map(|peer| endpoint.known_link(peer))
            .filter_map(|link| link.connection_stats())
        {
            total.quic_bytes += stats.udp_tx.bytes;
            total.quic_lost += stats.path.lost_packets;
        }
        if let Ok(stats) = fanout.multicast_stats().await {
            total.multicast_bytes += stats.protocol.bytes_sent;
            total.repair_bytes += stats.protocol.repair_bytes_sent;
            total.nacks += stats.protocol.nacks_received;
        }
    }
    total
}

fn new_histogram() -> Histogram<u64> {
    // One microsecond to one hour, three significant digits: the bounds are constants.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// One client's transactions: fresh object ids (so transactions never conflict) and random
/// payloads (so QUIC's compression cannot shrink them).
struct Transactions {
    knobs: CellKnobs,
    client: usize,
    oids: VecDeque<Oid>,
    payload: Vec<u8>,
    next_offset: usize,
    aborts: u64,
}

/// Distinct offsets into the payload buffer, so consecutive objects differ.
const OFFSETS: usize = 61;

impl Transactions {
    fn new(knobs: &CellKnobs, seed: u64, client: usize) -> Self {
        let mut payload = vec![0; knobs.object_size + OFFSETS];
        StdRng::seed_from_u64(seed).fill_bytes(&mut payload);
        Self {
            knobs: knobs.clone(),
            client,
            oids: VecDeque::new(),
            payload,
            next_offset: 0,
            aborts: 0,
        }
    }

    fn object(&mut self) -> ObjectData {
        let offset = self.next_offset % OFFSETS;
        self.next_offset += 1;
        ObjectData::from(self.payload[offset..offset + self.knobs.object_size].to_vec())
    }

    async fn oids(&mut self, handle: &mut ClientHandle) -> Result<Vec<Oid>, BenchError> {
        let wanted = self.knobs.objects_per_txn;
        while self.oids.len() < wanted {
            let batch = OID_BATCH.max(wanted as u32);
            let fresh = handle
                .new_oids(batch)
                .await
                .map_err(|source| BenchError::Client {
                    client: self.client,
                    what: "new_oids",
                    source,
                })?;
            if fresh.is_empty() {
                return Err(BenchError::Writer(
                    "the master handed out no object ids".into(),
                ));
            }
            self.oids.extend(fresh);
        }
        Ok(self.oids.drain(..wanted).collect())
    }

    /// Commits one transaction, retrying aborted attempts; returns the commit latency of the
    /// attempt that committed (begin to finish) and its steps.
    async fn commit(
        &mut self,
        handle: &mut ClientHandle,
    ) -> Result<(Duration, PhaseTimes), BenchError> {
        let mut in_a_row = 0;
        loop {
            let oids = self.oids(handle).await?;
            let objects: Vec<ObjectData> = (0..oids.len()).map(|_| self.object()).collect();
            let started = Instant::now();
            match attempt(handle, &oids, objects).await {
                Ok(mut phases) => {
                    phases.total = started.elapsed();
                    return Ok((phases.total, phases));
                }
                Err((_, ClientError::Aborted(reason))) => {
                    self.aborts += 1;
                    in_a_row += 1;
                    let _ = handle.abort().await;
                    if in_a_row >= MAX_ABORTS_IN_A_ROW {
                        return Err(BenchError::Aborting {
                            client: self.client,
                            aborts: in_a_row,
                            last: format!("{reason:?}"),
                        });
                    }
                }
                Err((what, source)) => {
                    return Err(BenchError::Client {
                        client: self.client,
                        what,
                        source,
                    });
                }
            }
        }
    }
}

/// How long each step of a committed attempt took: begin, the stores (handed to the
/// fan-out), vote (every store answered, then the votes), finish.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseTimes {
    /// `begin` (a round trip to the master).
    pub begin: Duration,
    /// The `store` calls.
    pub store: Duration,
    /// `vote`: the stores' answers, then the storages' votes.
    pub vote: Duration,
    /// `finish`: the master's commit round.
    pub finish: Duration,
    /// The whole commit (begin to finish), as the latency histogram has it.
    pub total: Duration,
    /// NACK datagrams the writer's multicast sender received meanwhile.
    pub nacks: u64,
    /// Multicast repair payload bytes sent meanwhile.
    pub repair_bytes: u64,
    /// Packets the writer's QUIC connections declared lost meanwhile.
    pub quic_lost: u64,
}

async fn attempt(
    handle: &mut ClientHandle,
    oids: &[Oid],
    objects: Vec<ObjectData>,
) -> Result<PhaseTimes, (&'static str, ClientError)> {
    let mut phases = PhaseTimes::default();
    let mut mark = Instant::now();
    let mut lap = |slot: &mut Duration| {
        let now = Instant::now();
        *slot = now - mark;
        mark = now;
    };
    handle.begin().await.map_err(|e| ("begin", e))?;
    lap(&mut phases.begin);
    for (oid, data) in oids.iter().zip(objects) {
        handle
            .store(*oid, Tid::ZERO, data)
            .await
            .map_err(|e| ("store", e))?;
    }
    lap(&mut phases.store);
    handle
        .vote(TransactionInfo::default())
        .await
        .map_err(|e| ("vote", e))?;
    lap(&mut phases.vote);
    handle.finish().await.map_err(|e| ("finish", e))?;
    lap(&mut phases.finish);
    Ok(phases)
}
