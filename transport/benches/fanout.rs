//! The fan-out API under a sender link rate limit and an emulated RTT: the same sequence of
//! objects to N replicas (N = 1, 2, 4, 8) with each strategy, one object at a time, reporting
//! per cell the p50/p99 time until every replica acknowledged, the bytes the writer put on
//! its link, and the process's CPU seconds, each next to its lower bound. Every cell runs
//! loss-free and again with 1% loss on the path from the writer to each replica.
//!
//! Run with `cargo bench -p replicast-transport --bench fanout`. `FANOUT_BENCH_OBJECTS` sets
//! the objects per cell (default 30, each 256 KiB).
//!
//! # Emulation (in-process, see `netem`)
//!
//! Every datagram, QUIC or multicast, crosses one emulated one-way delay of RTT/2 on the
//! sender's side, so every round trip takes one RTT whatever path it uses:
//! - the writer's QUIC socket: RTT/2 and the link rate, on one *shared* link for all its
//!   destinations (one queue, as a NIC has), so N unicast copies share the rate;
//! - the writer's multicast socket: RTT/2 and the link rate on its own send link (the
//!   multicast sender also paces itself at that rate, as a deployment would);
//! - each replica's QUIC socket and multicast control socket (NACKs, status reports): RTT/2.
//!
//! The writer's two sockets each have a link of the full rate: they are not one NIC. The
//! strategies here put their data on one of the two, so this matters only to `Auto` with
//! replicas on both paths (not in these cells).
//!
//! With loss, 1% of the datagrams from the writer to each replica are lost independently:
//! on the writer's QUIC link (each datagram goes to one replica) and on each replica's
//! multicast receive link (each replica loses its own 1% of the group's datagrams).
//!
//! # Lower bounds
//!
//! A bound is what a perfect transport would need on the emulated link, loss aside:
//! - `Unicast`: N copies through the link, then the object's last byte travels RTT/2 and the
//!   replica's acknowledgement RTT/2 back: `N x size / rate + RTT`.
//! - `Multicast` and `Auto` (all replicas on the group): one copy through the link, its last
//!   datagram one way (RTT/2), the replica's acknowledgement over QUIC back (RTT/2); the
//!   digest announcement travels over QUIC alongside the data, so it adds no round trip:
//!   `size / rate + RTT`.
//!
//! Sender bytes: copies x size (UDP payloads: QUIC's and the multicast protocol's headers,
//! acknowledgements and repairs are the overhead above it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use replicast_certs::ClusterCa;
use replicast_testkit::endpoint::EndpointSpec;
use replicast_testkit::plot::{LatencyPlot, Layout, Panel, Point, Series};
use replicast_transport::fanout::{
    Fanout, FanoutConfig, FanoutReceiver, FanoutReceiverConfig, Strategy,
};
use replicast_transport::multicast::driver::{
    ImpairmentConfig, MulticastSenderConfig, MulticastSocketConfig,
};
use replicast_transport::multicast::proto::RateLimit;
use replicast_transport::netem::{
    Bitrate, DataSize, LinkConditions, NetemConfig, Probability, RandomLoss,
};
use replicast_transport::quic::Endpoint;

type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// The writer's link: 400 Mbit/s.
const RATE_BITS: u64 = 400_000_000;
const RATE_BYTES: u64 = RATE_BITS / 8;
const RTT: Duration = Duration::from_millis(20);
const OBJECT_SIZE: usize = 256 * 1024;
/// Objects sent before measuring: connections open, windows grow, `Auto` sees its replicas
/// prove reachable.
const WARM_UP: u64 = 4;

fn group(cell: u16) -> SocketAddr {
    let port = 30_000 + cell * 11 + (std::process::id() % 2000) as u16 * 7 % 8000;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(239, 255, 78, cell as u8 + 1)),
        port,
    )
}

fn endpoint(
    ca: &ClusterCa,
    name: &str,
    conditions: LinkConditions,
) -> Result<Endpoint, BenchError> {
    let spec = EndpointSpec::default().with_conditions(Some(conditions));
    Ok(replicast_testkit::endpoint::bind(ca, name, &spec)?)
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0;
    if !ok {
        return f64::NAN;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

struct Row {
    loss: f64,
    strategy: Strategy,
    replicas: usize,
    p50: Duration,
    p99: Duration,
    bound: Duration,
    bytes: u64,
    bytes_bound: u64,
    cpu: f64,
    cwnd: u64,
}

async fn link_bytes(endpoint: &Endpoint, names: &[String]) -> u64 {
    names
        .iter()
        .filter_map(|name| endpoint.known_link(name))
        .filter_map(|link| link.connection_stats())
        .map(|stats| stats.udp_tx.bytes)
        .sum()
}

/// The writer's link: RTT/2, the link rate, a queue of one bandwidth-delay product.
fn writer_link(seed: u64) -> NetemConfig {
    let queue = (RATE_BYTES as f64 * RTT.as_secs_f64()).max(64.0 * 1024.0) as i64;
    NetemConfig::new()
        .latency(RTT / 2)
        .link(Bitrate::bps(RATE_BITS), DataSize::bytes(queue))
        .seed(seed)
}

fn random_loss(loss: f64, seed: u64) -> NetemConfig {
    NetemConfig::new()
        .loss(RandomLoss::new(Probability::new(loss as f32)))
        .seed(seed)
}

async fn cell(
    index: u16,
    strategy: Strategy,
    n: usize,
    loss: f64,
    objects: u64,
) -> Result<Row, BenchError> {
    let ca = ClusterCa::generate("fanout-bench")?;
    let seed = u64::from(index);
    let mut writer_quic = writer_link(seed);
    if loss > 0.0 {
        writer_quic = writer_quic.loss(RandomLoss::new(Probability::new(loss as f32)));
    }
    let writer_endpoint = endpoint(
        &ca,
        "writer",
        LinkConditions::new().with_shared_default(writer_quic),
    )?;
    let mut multicast = MulticastSenderConfig::new(MulticastSocketConfig::new(group(index)), 1);
    multicast.protocol.rate_limit = Some(RateLimit::link(RATE_BITS));
    multicast.impairment = Some(ImpairmentConfig::none().with_send(writer_link(seed + 500)));
    let mut config = FanoutConfig::new(multicast);
    config.strategy = strategy;
    let writer = Fanout::bind(writer_endpoint.clone(), config)?;

    let mut names = Vec::new();
    let mut drains = Vec::new();
    for replica in 0..n {
        let name = format!("replica-{replica}");
        let replica_seed = 1000 * (seed + 1) + replica as u64;
        let one_way = NetemConfig::new().latency(RTT / 2).seed(replica_seed);
        let endpoint = endpoint(&ca, &name, LinkConditions::new().with_default(one_way))?;
        let addr = endpoint.local_addr()?;
        let mut impairment = ImpairmentConfig::none().with_send(one_way);
        if loss > 0.0 {
            impairment = impairment.with_receive(random_loss(loss, replica_seed + 7));
        }
        let config = FanoutReceiverConfig {
            impairment: Some(impairment),
            ..FanoutReceiverConfig::default()
        };
        let mut receiver = FanoutReceiver::start(endpoint, config);
        drains.push(tokio::spawn(async move {
            let mut count = 0u64;
            while receiver.recv().await.is_some() {
                count += 1;
            }
            count
        }));
        writer.add_replica(&name, addr).await?;
        names.push(name);
    }

    // Random bytes: QUIC links compress objects, and a constant payload would vanish.
    let payload = |id: u64| {
        let mut data = vec![0; OBJECT_SIZE];
        StdRng::seed_from_u64(id).fill_bytes(&mut data);
        Bytes::from(data)
    };
    for id in 0..WARM_UP {
        let report = writer.send(id, payload(id)).await?.wait().await;
        if !report.all_delivered() {
            return Err(format!("warm-up object {id} not delivered: {report:?}").into());
        }
    }

    let bytes_before = link_bytes(&writer_endpoint, &names).await
        + writer.multicast_stats().await?.protocol.bytes_sent;
    let cpu_before = cpu_seconds();
    let mut histogram = Histogram::<u64>::new(3)?;
    for id in WARM_UP..WARM_UP + objects {
        let report = writer.send(id, payload(id)).await?.wait().await;
        let completion = report
            .completion()
            .ok_or_else(|| format!("object {id} not delivered: {report:?}"))?;
        histogram.record(completion.as_micros() as u64)?;
    }
    let cpu = cpu_seconds() - cpu_before;
    // The congestion window explains the unicast times: closed-loop objects leave QUIC
    // application-limited, so the window may not grow to the bandwidth-delay product.
    let cwnd = names
        .first()
        .and_then(|name| writer_endpoint.known_link(name))
        .and_then(|link| link.connection_stats())
        .map_or(0, |stats| stats.path.cwnd);
    let bytes = link_bytes(&writer_endpoint, &names).await
        + writer.multicast_stats().await?.protocol.bytes_sent
        - bytes_before;

    let copies = match strategy {
        Strategy::Unicast => n as u64,
        Strategy::Multicast | Strategy::Auto => 1,
    };
    let bound =
        Duration::from_secs_f64((copies * OBJECT_SIZE as u64) as f64 / RATE_BYTES as f64) + RTT;
    drop(writer);
    for drain in drains {
        drain.abort();
    }
    Ok(Row {
        loss,
        strategy,
        replicas: n,
        p50: Duration::from_micros(histogram.value_at_quantile(0.5)),
        p99: Duration::from_micros(histogram.value_at_quantile(0.99)),
        bound,
        bytes,
        bytes_bound: copies * OBJECT_SIZE as u64 * objects,
        cpu,
        cwnd,
    })
}

fn main() -> Result<(), BenchError> {
    let objects: u64 = std::env::var("FANOUT_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    eprintln!(
        "fan-out: {objects} objects of {} KiB per cell, link {} Mbit/s, RTT {} ms",
        OBJECT_SIZE / 1024,
        RATE_BITS / 1_000_000,
        RTT.as_millis()
    );
    let mut rows = Vec::new();
    let mut index = 0u16;
    for loss in [0.0, 0.01] {
        for n in [1usize, 2, 4, 8] {
            for strategy in [Strategy::Unicast, Strategy::Multicast, Strategy::Auto] {
                let started = Instant::now();
                let row = runtime.block_on(cell(index, strategy, n, loss, objects))?;
                eprintln!(
                    "  {strategy:?} to {n}, loss {}%: p50 {:.1} ms, QUIC cwnd to replica-0 {} KiB ({:.1?})",
                    loss * 100.0,
                    row.p50.as_secs_f64() * 1e3,
                    row.cwnd / 1024,
                    started.elapsed()
                );
                rows.push(row);
                index += 1;
            }
        }
    }
    println!("| loss | strategy | N | p50 ms | p99 ms | bound ms | sender MB | bound MB | CPU s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {}% | {:?} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} |",
            row.loss * 100.0,
            row.strategy,
            row.replicas,
            row.p50.as_secs_f64() * 1e3,
            row.p99.as_secs_f64() * 1e3,
            row.bound.as_secs_f64() * 1e3,
            row.bytes as f64 / 1e6,
            row.bytes_bound as f64 / 1e6,
            row.cpu,
        );
    }
    if let Some(path) = std::env::var_os("FANOUT_BENCH_SVG") {
        std::fs::write(&path, latency_plot(&rows))?;
        eprintln!("plot: {}", std::path::Path::new(&path).display());
    }
    Ok(())
}

/// An SVG of time until every replica acknowledged against the number of replicas: one panel
/// per loss rate, one colour per strategy, p50 solid and p99 dashed, the lower bound dotted.
fn latency_plot(rows: &[Row]) -> String {
    let strategies = [
        (Strategy::Unicast, "#d62728"),
        (Strategy::Multicast, "#1f77b4"),
        (Strategy::Auto, "#2ca02c"),
    ];
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    let mut panels: Vec<Panel> = Vec::new();
    for row in rows {
        let title = format!("loss {}%", row.loss * 100.0);
        let point = Point {
            series: strategies
                .iter()
                .position(|(strategy, _)| *strategy == row.strategy)
                .unwrap_or(0),
            x: row.replicas as f64,
            p50: ms(row.p50),
            p99: ms(row.p99),
            bound: ms(row.bound),
        };
        match panels.iter_mut().find(|panel| panel.title == title) {
            Some(panel) => panel.points.push(point),
            None => panels.push(Panel {
                title,
                points: vec![point],
            }),
        }
    }
    LatencyPlot {
        title: format!(
            "Time until every replica acknowledged ({} KiB objects, {} Mbit/s, RTT {} ms)",
            OBJECT_SIZE / 1024,
            RATE_BITS / 1_000_000,
            RTT.as_millis()
        ),
        x_label: "replicas".to_owned(),
        y_label: "ms".to_owned(),
        note: "solid p50, dashed p99, dotted lower bound".to_owned(),
        series: strategies
            .iter()
            .map(|(strategy, colour)| Series {
                name: format!("{strategy:?}"),
                colour,
            })
            .collect(),
        layout: Layout {
            panel_width: 420.0,
            panel_height: 300.0,
            margin: 60.0,
            columns: panels.len().max(1),
            font_size: 12,
        },
        panels,
    }
    .to_svg()
}
