//! Multicast fan-out on loopback: one sender, three receivers (each on its own thread and
//! tokio runtime), at 0%, 1% and 5% loss injected at the receivers; beside it, raw
//! unencrypted UDP multicast of the same datagrams as the ceiling, once with one system call
//! per datagram and once with GSO/GRO (which the driver itself uses).
//!
//! A third ceiling is the AEAD itself: AES-256-GCM seal plus open of the same datagrams on
//! one core (ring), which every datagram costs once at the sender and once per receiver.
//!
//! Run with `cargo bench -p replicast-transport --bench multicast`.
//! `MULTICAST_BENCH_MB` sets the payload per cell (default 64, MB = 10^6 bytes);
//! `MULTICAST_BENCH_ROUNDS` how many rounds of the three cells run in turn (default 3; each
//! cell reports its median round, so that load drifting on the machine touches every cell);
//! `MULTICAST_BENCH_PROACTIVE` the proactive Reed-Solomon parity per datagram (default 0:
//! on loopback the receivers' decode costs more CPU than the round trip it saves; parity on
//! demand is always on). `MULTICAST_BENCH_WINDOW_MIB` and `MULTICAST_BENCH_FLIGHT_MIB` replace
//! the driver's transmit window and flight limit (defaults 32 and 4; 4 and 4 is the flow
//! control before the flight limit existed: the window alone). `MULTICAST_BENCH_ADAPTIVE`
//! replaces the target of the parity sized by the receivers' loss
//! (`SenderConfig::adaptive_parity`, default 0.05; `off` sends none). `MULTICAST_BENCH_IDLE_MS`
//! makes each cell's sender idle that long before its first object (default 0), so that it
//! announces the idle path's RTT when its first flight starts.
//!
//! Beside each lossy cell's mean repair delay (from a receiver detecting a missing datagram to
//! filling it), the second table gives its p50, p90, p99 and max over the three receivers, and
//! an SVG plots their cumulative distribution per loss: by default
//! `target/tmp/multicast-repair-delay-cdf.svg`, or where `MULTICAST_BENCH_SVG` says (the bench
//! prints where it went).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use replicast_testkit::plot::{CdfPanel, CdfPlot, Curve, Layout, Series};
use replicast_transport::multicast::driver::{
    DEFAULT_FLIGHT_BYTES, DEFAULT_WINDOW_BYTES, ImpairmentConfig, MulticastReceiver,
    MulticastReceiverConfig, MulticastSender, MulticastSenderConfig, MulticastSocketConfig,
    Received, receiver_sockets, sender_socket,
};
use replicast_transport::multicast::proto::{DelayHistogram, FecConfig, GroupKey, ReceiverKey};

const RECEIVERS: u32 = 3;
const OBJECT_SIZE: usize = 256 * 1024;
/// A receiver that hears nothing for this long is done (raw) or stuck (protocol).
const IDLE_BOUND: Duration = Duration::from_secs(30);
const RAW_IDLE: Duration = Duration::from_millis(300);

type BenchError = Box<dyn std::error::Error + Send + Sync>;

fn group(cell: u8) -> SocketAddr {
    let port = 40_000 + u16::from(cell) * 7 + (std::process::id() % 1000) as u16 * 13 % 9000;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 255, 77, cell)), port)
}

fn group_key() -> GroupKey {
    GroupKey {
        epoch: 1,
        secret: [0x42; 32],
    }
}

fn receiver_key(receiver_id: u32) -> ReceiverKey {
    ReceiverKey {
        receiver_id,
        secret: [receiver_id as u8; 32],
    }
}

struct CellResult {
    loss: f64,
    /// MB/s per receiver: payload bytes over the time from the first send to its last object.
    goodput: Vec<f64>,
    repair_per_delivered: f64,
    proactive_per_delivered: f64,
    nacks_per_lost: f64,
    seqs_nacked_per_lost: f64,
    latency: Histogram<u64>,
    data_datagrams: u64,
    datagram_size: usize,
    /// Seconds from the first send to the last object at the last receiver.
    seconds: f64,
    /// Seconds the sender's objects waited for room in the transmit window.
    window_full_seconds: f64,
    /// Of which the window itself was full (datagrams awaiting acknowledgement).
    window_held_seconds: f64,
    /// Seconds new data waited for the flight limit.
    flight_limited_seconds: f64,
    /// Mean time from detecting a missing datagram to filling it, over every receiver.
    mean_gap_fill: Duration,
    /// The distribution of those times, over every receiver.
    repair_delays: DelayHistogram,
    /// UDP datagrams the kernel dropped for a full receive buffer during the cell (the whole
    /// machine's `RcvbufErrors` in /proc/net/snmp; `None` where it cannot be read).
    kernel_drops: Option<u64>,
    /// CPU seconds (user and system) the process spent during the cell: the sender and
    /// the three receivers share the machine's cores, so this is the cost of the cell's
    /// bytes whatever else loads the machine.
    cpu_seconds: Option<f64>,
    /// Repairs sent by unicast and to the group, and parity sent on demand.
    repairs_unicast: u64,
    repairs_multicast: u64,
    parity_on_demand: u64,
    /// Datagrams the receivers rebuilt from parity, over all receivers.
    parity_recovered: u64,
    /// Missing datagrams filled after their fast NACK retries ran out, over all receivers:
    /// without the late retries, each would have lost its object.
    gaps_filled_late: u64,
}

/// CPU seconds (user and system) of the whole process so far.
fn process_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given, which is valid and
    // large enough.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: getrusage succeeded, so it initialised the struct.
    let usage = unsafe { usage.assume_init() };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// The machine's UDP `RcvbufErrors` (datagrams dropped for a full socket receive buffer).
fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
}

/// What a receiver thread brings back: when each object arrived, and its counters.
struct ReceiverRun {
    arrivals: Vec<Option<Instant>>,
    nacks_sent: u64,
    nacked_datagrams: u64,
    impairment_dropped: u64,
    gaps_filled: u64,
    gap_fill_us: u64,
    repair_delays: DelayHistogram,
    parity_recovered: u64,
    gaps_filled_late: u64,
}

fn run_receiver(
    socket: MulticastSocketConfig,
    receiver_id: u32,
    loss: f64,
    objects: usize,
    ready: std::sync::mpsc::Sender<()>,
    mut sender_done: tokio::sync::watch::Receiver<bool>,
) -> Result<ReceiverRun, BenchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut config = MulticastReceiverConfig::new(socket);
        // Every cell, the loss-free one too, reads through the emulated link (which copies each
        // datagram), so that the ratios compare the protocol's cost of loss, not the
        // emulator's.
        config.impairment = Some(ImpairmentConfig::loss(loss, u64::from(receiver_id)));
        let mut receiver = MulticastReceiver::bind(config, receiver_key(receiver_id))?;
        receiver.add_session(1, group_key()).await?;
        ready.send(())?;
        let mut arrivals = vec![None; objects];
        let mut received = 0;
        while received < objects {
            match tokio::time::timeout(IDLE_BOUND, receiver.recv()).await? {
                Some(Received::Object(object)) => {
                    let slot = arrivals
                        .get_mut(object.object_id as usize)
                        .ok_or("unknown object id")?;
                    if slot.replace(Instant::now()).is_none() {
                        received += 1;
                    }
                    if object.data.len() != OBJECT_SIZE {
                        return Err("object of the wrong size".into());
                    }
                }
                Some(Received::Lost { object_id, .. }) => {
                    // Why, for whoever reads the failed run's output.
                    if let Ok(stats) = receiver.stats().await {
                        eprintln!(
                            "  receiver {receiver_id} lost object {object_id}: {:?}",
                            stats.protocol
                        );
                    }
                    return Err(format!("object {object_id} lost").into());
                }
                None => return Err("receiver stopped".into()),
            }
        }
        let stats = receiver.stats().await?;
        // Keep acknowledging until the sender has heard from everyone.
        tokio::time::timeout(IDLE_BOUND, sender_done.wait_for(|done| *done)).await??;
        Ok(ReceiverRun {
            arrivals,
            nacks_sent: stats.protocol.nacks_sent,
            nacked_datagrams: stats.protocol.nacked_datagrams,
            impairment_dropped: stats.socket.impairment.dropped(),
            gaps_filled: stats.protocol.gaps_filled,
            gap_fill_us: stats.protocol.gap_fill_us,
            repair_delays: stats.protocol.repair_delays,
            parity_recovered: stats.protocol.parity_recovered,
            gaps_filled_late: stats.protocol.gaps_filled_late,
        })
    })
}

/// What a cell varies besides the loss.
#[derive(Debug, Clone, Copy)]
struct Settings {
    objects: usize,
    proactive: f64,
    /// Rounds of the three cells (each cell reports its median round).
    rounds: usize,
    /// Transmit window and flight limit in bytes (`None`: the driver's defaults).
    window_bytes: Option<u64>,
    flight_bytes: Option<u64>,
    /// Replaces `adaptive_parity` (`Some(None)`: off).
    adaptive_parity: Option<Option<f64>>,
    /// How long the sender idles between its receivers' attachment and its first object.
    idle_before: Duration,
}

fn run_cell(cell: u8, loss: f64, settings: Settings) -> Result<CellResult, BenchError> {
    let Settings {
        objects, proactive, ..
    } = settings;
    let socket = MulticastSocketConfig::new(group(cell));
    let kernel_drops_before = udp_rcvbuf_errors();
    let cpu_before = process_cpu_seconds();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let receivers: Vec<_> = (1..=RECEIVERS)
        .map(|id| {
            let socket = socket.clone();
            let ready = ready_tx.clone();
            let done = done_rx.clone();
            thread::spawn(move || run_receiver(socket, id, loss, objects, ready, done))
        })
        .collect();
    for _ in 0..RECEIVERS {
        ready_rx.recv_timeout(IDLE_BOUND)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let accepted = Arc::new(Mutex::new(vec![None::<Instant>; objects]));
    let (start, sender_stats) = runtime.block_on({
        let accepted = Arc::clone(&accepted);
        async move {
            let mut config = MulticastSenderConfig::new(socket, 1);
            config.protocol.fec = Some(FecConfig {
                max_block: 64,
                proactive,
            });
            if let Some(adaptive) = settings.adaptive_parity {
                config.protocol.adaptive_parity = adaptive;
            }
            if let Some(window) = settings.window_bytes {
                config.protocol.window_bytes = window;
            }
            if let Some(flight) = settings.flight_bytes {
                config.protocol.flight_bytes = flight;
            }
            let sender = MulticastSender::bind(config, group_key())?;
            for id in 1..=RECEIVERS {
                sender.add_receiver(receiver_key(id)).await?;
            }
            // A sender that idles first (the default: none) announces the RTT of the idle
            // path, which its burst then queues far beyond (docs/BENCH.md, issue 18).
            tokio::time::sleep(settings.idle_before).await;
            let payload = Bytes::from(vec![0xab; OBJECT_SIZE]);
            let start = Instant::now();
            let mut handles = Vec::with_capacity(objects);
            for object_id in 0..objects {
                handles.push(sender.send(object_id as u64, payload.clone()).await?);
                accepted.lock().map_err(|_| "poisoned")?[object_id] = Some(Instant::now());
            }
            for handle in handles {
                let report = tokio::time::timeout(IDLE_BOUND, handle.wait()).await?;
                if !report.all_delivered() {
                    // Why (detached receivers, repairs refused by the budget), for whoever
                    // reads the failed run's output.
                    if let Ok(stats) = sender.stats().await {
                        eprintln!("  sender's counters: {:?}", stats.protocol);
                    }
                    return Err(format!("not delivered: {report:?}").into());
                }
            }
            let stats = sender.close().await?;
            done_tx.send_replace(true);
            Ok::<_, BenchError>((start, stats))
        }
    })?;
    let accepted = accepted.lock().map_err(|_| "poisoned")?.clone();
    let mut latency = Histogram::<u64>::new(3)?;
    let mut goodput = Vec::new();
    let (mut nacks, mut nacked, mut lost) = (0, 0, 0);
    let (mut gaps_filled, mut gap_fill_us, mut parity_recovered) = (0, 0, 0);
    let mut gaps_filled_late = 0;
    let mut repair_delays = DelayHistogram::default();
    let mut end = start;
    for receiver in receivers {
        let run = receiver.join().map_err(|_| "receiver thread panicked")??;
        let mut last = start;
        for (arrival, accepted) in run.arrivals.iter().zip(&accepted) {
            let (Some(arrival), Some(accepted)) = (arrival, accepted) else {
                return Err("an object without arrival or acceptance time".into());
            };
            last = last.max(*arrival);
            latency.record(arrival.saturating_duration_since(*accepted).as_micros() as u64)?;
        }
        end = end.max(last);
        gaps_filled += run.gaps_filled;
        gap_fill_us += run.gap_fill_us;
        repair_delays.merge(&run.repair_delays);
        parity_recovered += run.parity_recovered;
        gaps_filled_late += run.gaps_filled_late;
        let seconds = last.duration_since(start).as_secs_f64();
        goodput.push((objects * OBJECT_SIZE) as f64 / seconds / 1e6);
        nacks += run.nacks_sent;
        nacked += run.nacked_datagrams;
        lost += run.impairment_dropped;
    }
    let cpu_seconds = process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let protocol = &sender_stats.protocol;
    let data_datagrams = protocol.data_datagrams_sent;
    Ok(CellResult {
        loss,
        goodput,
        repair_per_delivered: protocol.repair_bytes_sent as f64 / (objects * OBJECT_SIZE) as f64,
        proactive_per_delivered: protocol.parity_proactive_bytes as f64
            / (objects * OBJECT_SIZE) as f64,
        nacks_per_lost: nacks as f64 / lost.max(1) as f64,
        seqs_nacked_per_lost: nacked as f64 / lost.max(1) as f64,
        latency,
        data_datagrams,
        datagram_size: (sender_stats.socket.bytes_sent / sender_stats.socket.datagrams_sent.max(1))
            as usize,
        seconds: end.duration_since(start).as_secs_f64(),
        window_full_seconds: protocol.window_full_us as f64 / 1e6,
        window_held_seconds: protocol.window_held_us as f64 / 1e6,
        flight_limited_seconds: protocol.flight_limited_us as f64 / 1e6,
        mean_gap_fill: Duration::from_micros(gap_fill_us / gaps_filled.max(1)),
        repair_delays,
        kernel_drops: udp_rcvbuf_errors()
            .zip(kernel_drops_before)
            .map(|(after, before)| after.saturating_sub(before)),
        cpu_seconds,
        repairs_unicast: protocol.repairs_unicast,
        repairs_multicast: protocol.repairs_multicast,
        parity_on_demand: protocol.parity_sent - protocol.parity_proactive,
        parity_recovered,
        gaps_filled_late,
    })
}

struct RawResult {
    send_mbps: f64,
    per_receiver_mbps: Vec<f64>,
    received_fraction: Vec<f64>,
}

/// Raw UDP multicast, no protocol, no encryption: `count` datagrams of `size` bytes blasted
/// at the group; each receiver counts what arrives until the group is quiet. With `offload`,
/// the sender batches datagrams with GSO and the receivers read with GRO, as the driver does.
fn run_raw(cell: u8, count: u64, size: usize, offload: bool) -> Result<RawResult, BenchError> {
    let socket = MulticastSocketConfig::new(group(cell));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receivers: Vec<_> = (0..RECEIVERS)
        .map(|_| {
            let socket = socket.clone();
            let ready = ready_tx.clone();
            thread::spawn(move || -> Result<(u64, Option<Instant>), BenchError> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let (group, _control) = receiver_sockets(&socket)?;
                    // Enables GRO (best effort), as the driver's sockets have it.
                    let _offload = offload
                        .then(|| quinn::udp::UdpSocketState::new((&group.socket).into()))
                        .transpose()?;
                    ready.send(())?;
                    let mut buffer = vec![0; 65_536];
                    let (mut bytes, mut last) = (0u64, None);
                    // The first datagram may take a while; after it, a quiet group means done.
                    let mut idle = IDLE_BOUND;
                    while let Ok(received) =
                        tokio::time::timeout(idle, group.socket.recv(&mut buffer)).await
                    {
                        bytes += received? as u64;
                        last = Some(Instant::now());
                        idle = RAW_IDLE;
                    }
                    Ok((bytes, last))
                })
            })
        })
        .collect();
    for _ in 0..RECEIVERS {
        ready_rx.recv_timeout(IDLE_BOUND)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (start, sent) = runtime.block_on(async {
        let sender = sender_socket(&socket)?;
        let state = quinn::udp::UdpSocketState::new((&sender.socket).into())?;
        let per_batch = if offload {
            state
                .max_gso_segments()
                .min((64 * 1024 - 1024) / size.max(1))
                .max(1)
        } else {
            1
        };
        let batch = vec![0x5a; size * per_batch];
        let start = Instant::now();
        let mut remaining = count as usize;
        while remaining > 0 {
            let datagrams = remaining.min(per_batch);
            let transmit = quinn::udp::Transmit {
                destination: socket.group,
                ecn: None,
                contents: &batch[..datagrams * size],
                segment_size: (datagrams > 1).then_some(size),
                src_ip: None,
            };
            sender
                .socket
                .async_io(tokio::io::Interest::WRITABLE, || {
                    state.try_send((&sender.socket).into(), &transmit)
                })
                .await?;
            remaining -= datagrams;
        }
        Ok::<_, BenchError>((start, start.elapsed()))
    })?;
    let total = count * size as u64;
    let mut result = RawResult {
        send_mbps: total as f64 / sent.as_secs_f64() / 1e6,
        per_receiver_mbps: Vec::new(),
        received_fraction: Vec::new(),
    };
    for receiver in receivers {
        let (bytes, last) = receiver.join().map_err(|_| "receiver thread panicked")??;
        let seconds = last.map_or(f64::INFINITY, |last| {
            last.duration_since(start).as_secs_f64()
        });
        result.per_receiver_mbps.push(bytes as f64 / seconds / 1e6);
        result.received_fraction.push(bytes as f64 / total as f64);
    }
    Ok(result)
}

/// MB/s of object payload that one core seals and opens with AES-256-GCM (ring), in datagrams of
/// `size` bytes with the protocol's 22-byte header as associated data and its 16-byte tag.
fn crypto_ceiling(count: u64, size: usize) -> Result<f64, BenchError> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).map_err(|_| "key")?);
    let header = [1u8; 22];
    let body_len = size.saturating_sub(22 + 16);
    let mut body = vec![0x5a; body_len];
    let nonce = |n: u64| {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&n.to_be_bytes());
        Nonce::assume_unique_for_key(bytes)
    };
    let start = Instant::now();
    for n in 0..count {
        let tag = key
            .seal_in_place_separate_tag(nonce(n), Aad::from(&header), &mut body)
            .map_err(|_| "seal")?;
        key.open_in_place_separate_tag(nonce(n), Aad::from(&header), tag, &mut body, 0..)
            .map_err(|_| "open")?;
    }
    let seconds = start.elapsed().as_secs_f64();
    // Object bytes, as the goodput counts them: the body less the data header.
    let payload = body_len.saturating_sub(40);
    Ok((count as usize * payload) as f64 / seconds / 1e6)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn main() -> Result<(), BenchError> {
    // `cargo bench` passes `--bench`; a filter argument is not supported and ignored.
    let megabytes: usize = std::env::var("MULTICAST_BENCH_MB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(64);
    let proactive: f64 = std::env::var("MULTICAST_BENCH_PROACTIVE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    let mebibytes = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse::<u64>().ok())
            .map(|mib| mib << 20)
    };
    let objects = (megabytes * 1_000_000).div_ceil(OBJECT_SIZE);
    let rounds = std::env::var("MULTICAST_BENCH_ROUNDS")
        .ok()
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(3)
        .clamp(1, 60);
    let settings = Settings {
        rounds,
        objects,
        proactive,
        window_bytes: mebibytes("MULTICAST_BENCH_WINDOW_MIB"),
        flight_bytes: mebibytes("MULTICAST_BENCH_FLIGHT_MIB"),
        adaptive_parity: std::env::var("MULTICAST_BENCH_ADAPTIVE")
            .ok()
            .map(|value| value.parse::<f64>().ok()),
        idle_before: Duration::from_millis(
            std::env::var("MULTICAST_BENCH_IDLE_MS")
                .ok()
                .and_then(|value| value.parse().ok())
                .unwrap_or(0),
        ),
    };
    eprintln!(
        "multicast fan-out: 1 sender -> {RECEIVERS} receivers on loopback, {objects} objects of {} KiB, proactive parity {proactive} (adaptive {:?}), window {} MiB, flight {} MiB",
        OBJECT_SIZE / 1024,
        settings.adaptive_parity.unwrap_or(Some(0.05)),
        settings.window_bytes.unwrap_or(DEFAULT_WINDOW_BYTES) >> 20,
        settings.flight_bytes.unwrap_or(DEFAULT_FLIGHT_BYTES) >> 20,
    );
    // Rounds of the three cells in turn: a load that drifts (other work on the machine) then
    // touches every cell alike, and each cell reports its median round.
    let losses = [0.0, 0.01, 0.05];
    let mut rounds: Vec<Vec<CellResult>> = losses.iter().map(|_| Vec::new()).collect();
    for round in 0..settings.rounds {
        for (index, loss) in losses.iter().enumerate() {
            let cell = (1 + round * losses.len() + index) as u8;
            eprintln!(
                "  round {}/{}: running loss {:>4.1}% ...",
                round + 1,
                settings.rounds,
                loss * 100.0
            );
            let result = run_cell(cell, *loss, settings)?;
            eprintln!(
                "  loss {:>4.1}%: {:.1} MB/s per receiver (mean), p50 {} us, p99 {} us, {} gaps filled after the fast NACK retries",
                loss * 100.0,
                mean(&result.goodput),
                result.latency.value_at_quantile(0.5),
                result.latency.value_at_quantile(0.99),
                result.gaps_filled_late
            );
            rounds[index].push(result);
        }
    }
    let mut per_round = Vec::new();
    let mut cells = Vec::new();
    for mut results in rounds {
        results.sort_by(|a, b| mean(&a.goodput).total_cmp(&mean(&b.goodput)));
        per_round.push(
            results
                .iter()
                .map(|result| format!("{:.1}", mean(&result.goodput)))
                .collect::<Vec<_>>()
                .join(" / "),
        );
        let median = results.len() / 2;
        cells.push(results.swap_remove(median));
    }
    let (count, size) = (cells[0].data_datagrams, cells[0].datagram_size);
    let mut raws = Vec::new();
    for (cell, offload, name) in [
        (200u8, false, "raw UDP, one datagram per send"),
        (201, true, "raw UDP, GSO send + GRO receive"),
    ] {
        eprintln!("  running {name}: {count} datagrams of {size} B ...");
        let raw = run_raw(cell, count, size, offload)?;
        eprintln!(
            "  {name}: send {:.1} MB/s, {:.1} MB/s per receiver, received {:?}",
            raw.send_mbps,
            mean(&raw.per_receiver_mbps),
            raw.received_fraction
        );
        raws.push((name, raw));
    }
    eprintln!("  running AES-256-GCM seal + open of {count} datagrams of {size} B on one core ...");
    let crypto = crypto_ceiling(count, size)?;
    eprintln!("  AES-256-GCM seal + open: {crypto:.1} MB/s of payload");
    let per_datagram = mean(&raws[0].1.per_receiver_mbps);
    let offloaded = mean(&raws[1].1.per_receiver_mbps);
    let ratio = |goodput: f64, ceiling: f64| goodput / ceiling;
    let per_lost = |value: f64, lost: bool| {
        if lost {
            format!("{value:.2}")
        } else {
            "-".to_owned()
        }
    };

    println!();
    println!(
        "| loss | goodput MB/s per receiver (r1 / r2 / r3) | mean | x loss-free | x raw | x raw GSO/GRO | x AES-GCM core | repair B per delivered B | proactive parity B per delivered B | NACK datagrams per lost datagram | seqs NACKed per lost datagram | p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let loss_free = mean(&cells[0].goodput);
    for cell in &cells {
        let per: Vec<String> = cell.goodput.iter().map(|g| format!("{g:.1}")).collect();
        let goodput = mean(&cell.goodput);
        println!(
            "| {:.0}% | {} | {goodput:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.4} | {:.4} | {} | {} | {:.1} | {:.1} |",
            cell.loss * 100.0,
            per.join(" / "),
            ratio(goodput, loss_free),
            ratio(goodput, per_datagram),
            ratio(goodput, offloaded),
            ratio(goodput, crypto),
            cell.repair_per_delivered,
            cell.proactive_per_delivered,
            per_lost(cell.nacks_per_lost, cell.loss > 0.0),
            per_lost(cell.seqs_nacked_per_lost, cell.loss > 0.0),
            cell.latency.value_at_quantile(0.5) as f64 / 1000.0,
            cell.latency.value_at_quantile(0.99) as f64 / 1000.0,
        );
    }
    for (name, raw) in &raws {
        let per: Vec<String> = raw
            .per_receiver_mbps
            .iter()
            .map(|g| format!("{g:.1}"))
            .collect();
        let goodput = mean(&raw.per_receiver_mbps);
        println!(
            "| {name} | {} | {goodput:.1} | - | {:.2} | {:.2} | {:.2} | - | - | - | - | - | - |",
            per.join(" / "),
            ratio(goodput, per_datagram),
            ratio(goodput, offloaded),
            ratio(goodput, crypto),
        );
    }
    println!(
        "| AES-256-GCM seal + open, one core | - | {crypto:.1} | - | {:.2} | {:.2} | 1.00 | - | - | - | - | - | - |",
        ratio(crypto, per_datagram),
        ratio(crypto, offloaded),
    );
    println!();
    println!(
        "| loss | goodput per round, sorted (the median is above) | run s | process CPU s (x loss-free) | sender waited for window s (share; of it, window full) | new data held by flight limit s (share) | repair delay ms: mean / p50 / p90 / p99 / max (gaps filled) | repairs unicast / multicast / parity on demand (datagrams rebuilt) | gaps filled after the fast NACK retries | kernel receive-buffer drops |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let loss_free_cpu = cells[0].cpu_seconds;
    for (cell, per_round) in cells.iter().zip(&per_round) {
        let cpu = match (cell.cpu_seconds, loss_free_cpu) {
            (Some(cpu), Some(loss_free)) => {
                format!("{cpu:.2} ({:.2})", cpu / loss_free.max(f64::EPSILON))
            }
            _ => "-".to_owned(),
        };
        println!(
            "| {:.0}% | {per_round} | {:.2} | {cpu} | {:.2} ({:.0}%; {:.2}) | {:.2} ({:.0}%) | {} | {} / {} / {} ({}) | {} | {} |",
            cell.loss * 100.0,
            cell.seconds,
            cell.window_full_seconds,
            100.0 * cell.window_full_seconds / cell.seconds.max(f64::EPSILON),
            cell.window_held_seconds,
            cell.flight_limited_seconds,
            100.0 * cell.flight_limited_seconds / cell.seconds.max(f64::EPSILON),
            repair_delay_summary(cell),
            cell.repairs_unicast,
            cell.repairs_multicast,
            cell.parity_on_demand,
            cell.parity_recovered,
            cell.gaps_filled_late,
            cell.kernel_drops
                .map_or_else(|| "-".to_owned(), |drops| drops.to_string()),
        );
    }
    println!();
    for (name, raw) in &raws {
        let fraction: Vec<String> = raw
            .received_fraction
            .iter()
            .map(|f| format!("{:.1}%", f * 100.0))
            .collect();
        println!(
            "{name}: {count} datagrams of {size} B, sender {:.1} MB/s, received {} per receiver",
            raw.send_mbps,
            fraction.join(" / ")
        );
    }
    let svg_path = std::env::var_os("MULTICAST_BENCH_SVG").map_or_else(
        || std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("multicast-repair-delay-cdf.svg"),
        std::path::PathBuf::from,
    );
    std::fs::write(&svg_path, repair_delay_plot(&cells, settings))?;
    println!("repair delay CDF per loss (SVG): {}", svg_path.display());
    Ok(())
}

fn ms(delay: Duration) -> f64 {
    delay.as_secs_f64() * 1000.0
}

/// A cell's repair delays in ms: mean, p50, p90, p99 and max (the quantiles the upper bounds
/// of their histogram buckets, at most a quarter above), and how many gaps were filled.
fn repair_delay_summary(cell: &CellResult) -> String {
    let delays = &cell.repair_delays;
    if delays.count() == 0 {
        return "-".to_owned();
    }
    let quantile = |q: f64| delays.quantile(q).map_or(0.0, ms);
    format!(
        "{:.2} / {:.2} / {:.2} / {:.2} / {:.2} ({})",
        ms(cell.mean_gap_fill),
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(1.0),
        delays.count()
    )
}

/// An SVG of the repair delays' cumulative distribution: one curve per lossy cell (its
/// median round, as in the tables), the three receivers' delays together.
fn repair_delay_plot(cells: &[CellResult], settings: Settings) -> String {
    const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let lossy: Vec<&CellResult> = cells
        .iter()
        .filter(|cell| cell.repair_delays.count() > 0)
        .collect();
    CdfPlot {
        title: format!(
            "Multicast repair delay, from a gap's detection to its fill: 1 sender, {RECEIVERS} receivers, loopback"
        ),
        x_label: "repair delay, ms (log scale)".to_owned(),
        note: "share of the gaps filled within x (each step at a histogram bucket's upper bound)"
            .to_owned(),
        series: lossy
            .iter()
            .zip(COLOURS.into_iter().cycle())
            .map(|(cell, colour)| Series {
                name: format!("{:.0}% loss", cell.loss * 100.0),
                colour,
            })
            .collect(),
        panels: vec![CdfPanel {
            title: format!(
                "{} objects of {} KiB, median round of each cell; gaps filled: {}",
                settings.objects,
                OBJECT_SIZE / 1024,
                lossy
                    .iter()
                    .map(|cell| format!(
                        "{} at {:.0}%",
                        cell.repair_delays.count(),
                        cell.loss * 100.0
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            curves: lossy
                .iter()
                .enumerate()
                .map(|(series, cell)| Curve {
                    series,
                    buckets: cell
                        .repair_delays
                        .buckets()
                        .map(|(bound, count)| (ms(bound), count))
                        .collect(),
                })
                .collect(),
        }],
        layout: Layout {
            panel_width: 720.0,
            panel_height: 360.0,
            margin: 64.0,
            columns: 1,
            font_size: 12,
        },
    }
    .to_svg()
}
