//! QUIC links on loopback: request round trips and object throughput, beside a plain TCP
//! transfer of the same bytes as the ceiling.
//!
//! Run with `cargo bench -p replicast-transport --bench quic_links`. Every figure is the
//! median of a few repetitions; MB = 10^6 bytes, throughput counts payload bytes before
//! compression. Knobs for exploring (environment variables): `QUIC_BENCH_REPS` (default 5),
//! `QUIC_BENCH_MTU` (path MTU discovery upper bound), `QUIC_BENCH_GSO` (0 disables GSO).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use replicast_certs::ClusterCa;
use replicast_testkit::endpoint::EndpointSpec;
use replicast_testkit::payload::{self, compressible};
use replicast_transport::quic::{Endpoint, Incoming, Link, LinkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1 << 20;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn link_config() -> LinkConfig {
    let defaults = LinkConfig::default();
    LinkConfig {
        mtu_upper_bound: env_or("QUIC_BENCH_MTU", defaults.mtu_upper_bound),
        segmentation_offload: env_or("QUIC_BENCH_GSO", 1u8) != 0,
        ..defaults
    }
}

fn endpoint(ca: &ClusterCa, name: &str) -> Endpoint {
    let spec = EndpointSpec::default().with_link(link_config());
    replicast_testkit::endpoint::bind(ca, name, &spec).expect("bind")
}

/// Answers every request with its own body and every object with its length.
fn serve(endpoint: Endpoint) {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                match incoming {
                    Incoming::Request(request) => {
                        if let Ok(n) = request.decode::<u64>() {
                            let _ = request.respond(&n).await;
                        }
                    }
                    Incoming::Object(mut object) => {
                        if let Ok(payload) = object.receive().await {
                            let _ = object.respond(&(payload.len() as u64)).await;
                        }
                    }
                    Incoming::Message(_) | Incoming::ChannelEnded(_) => {}
                }
            });
        }
    });
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Requests per second with `in_flight` concurrent callers, `per_caller` requests each.
async fn round_trips(link: &Link, in_flight: usize, per_caller: u64) -> f64 {
    let start = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..in_flight as u64 {
        let link = link.clone();
        callers.spawn(async move {
            for i in 0..per_caller {
                let n = caller << 32 | i;
                let answer: u64 = link.request(&n).await.expect("request");
                assert_eq!(answer, n);
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done.expect("caller");
    }
    (in_flight as u64 * per_caller) as f64 / start.elapsed().as_secs_f64()
}

/// MB/s of sending `count` objects one after the other.
async fn quic_objects(link: &Link, payload: &Bytes, count: usize) -> f64 {
    let start = Instant::now();
    for oid in 0..count as u64 {
        let len: u64 = link
            .send_object(&oid, payload.clone())
            .await
            .expect("object");
        assert_eq!(len, payload.len() as u64);
    }
    (payload.len() * count) as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// A plain TCP receiver: for each object, a length, the bytes into one buffer, a 1-byte ack.
async fn tcp_server() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("tcp bind");
    let addr = listener.local_addr().expect("tcp addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                loop {
                    let Ok(len) = stream.read_u64().await else {
                        return;
                    };
                    let mut buf = vec![0u8; len as usize];
                    if stream.read_exact(&mut buf).await.is_err()
                        || stream.write_u8(1).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn tcp_objects(stream: &mut TcpStream, payload: &Bytes, count: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..count {
        stream
            .write_u64(payload.len() as u64)
            .await
            .expect("tcp write");
        stream.write_all(payload).await.expect("tcp write");
        assert_eq!(stream.read_u8().await.expect("tcp ack"), 1);
    }
    (payload.len() * count) as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// The bench's incompressible payload (one seed for every run).
fn incompressible(len: usize) -> Bytes {
    payload::incompressible(len, 0x2545_F491_4F6C_DD1D)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let reps: usize = env_or("QUIC_BENCH_REPS", 5);
    let config = link_config();
    println!(
        "quic_links: loopback, {reps} repetitions, median; MTU upper bound {}, GSO {}",
        config.mtu_upper_bound, config.segmentation_offload
    );

    let ca = ClusterCa::generate("bench").expect("CA");
    let server = endpoint(&ca, "server");
    let client = endpoint(&ca, "client");
    serve(server.clone());
    let link = client
        .link("server", server.local_addr().expect("addr"))
        .await
        .expect("link");
    let tcp_addr = tcp_server().await;
    let mut tcp = TcpStream::connect(tcp_addr).await.expect("tcp connect");
    tcp.set_nodelay(true).expect("nodelay");

    // Warm up: congestion window, MTU discovery, allocator.
    quic_objects(&link, &incompressible(8 * MIB), 4).await;
    tcp_objects(&mut tcp, &incompressible(8 * MIB), 4).await;

    println!();
    println!("{:<34} {:>14}", "small requests", "round trips/s");
    for (in_flight, per_caller) in [(1usize, 4000u64), (64, 250)] {
        let mut samples = Vec::new();
        for _ in 0..reps {
            samples.push(round_trips(&link, in_flight, per_caller).await);
        }
        println!(
            "{:<34} {:>14.0}",
            format!("{in_flight} in flight"),
            median(samples)
        );
    }

    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "objects (one at a time)", "QUIC MB/s", "TCP MB/s", "QUIC/TCP"
    );
    let cases = [
        ("1 MiB incompressible", incompressible(MIB), 64),
        ("1 MiB compressible", compressible(MIB), 64),
        ("64 MiB incompressible", incompressible(64 * MIB), 2),
        ("64 MiB compressible", compressible(64 * MIB), 2),
    ];
    for (name, payload, count) in cases {
        let mut quic = Vec::new();
        let mut plain = Vec::new();
        for _ in 0..reps {
            quic.push(quic_objects(&link, &payload, count).await);
            plain.push(tcp_objects(&mut tcp, &payload, count).await);
        }
        let (quic, plain) = (median(quic), median(plain));
        println!(
            "{name:<34} {quic:>10.0} {plain:>10.0} {:>8.2}",
            quic / plain
        );
    }
    let stats = client.stats();
    println!();
    let path = link.connection_stats().map(|s| s.path);
    println!(
        "connections dialed: {}, rtt {:?}, path MTU {}, lost packets {}",
        stats.connections_dialed,
        link.rtt().unwrap_or(Duration::ZERO),
        path.map_or(0, |p| p.current_mtu),
        path.map_or(0, |p| p.lost_packets)
    );
    client.close();
    server.close();
}
