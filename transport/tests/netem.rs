//! WAN emulation: each knob does what it says, measured over many datagrams.

#![cfg(feature = "netem")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use replicast_transport::netem::{
    Bitrate, DataSize, GilbertElliot, ImpairedUdpSocket, LinkConditions, LinkEmulator, NetemConfig,
    Probability, RandomLoss,
};

const PEER: &str = "127.0.0.1:9";

fn peer() -> SocketAddr {
    PEER.parse().expect("a literal address")
}

/// Offers `count` numbered datagrams one millisecond apart and collects what the link releases,
/// with the (virtual) time of release since the first offer.
fn run_link(config: NetemConfig, count: u32, size: usize) -> Vec<(Duration, u32)> {
    let mut links = LinkEmulator::new(LinkConditions::new().with_link(peer(), config));
    let start = Instant::now();
    let mut released = Vec::new();
    let mut now = start;
    let mut drain = |links: &mut LinkEmulator<Vec<u8>>, now: Instant| {
        while let Some((to, datagram)) = links.poll_release(now) {
            assert_eq!(to, peer());
            let number = u32::from_be_bytes(datagram[..4].try_into().expect("4 bytes"));
            released.push((now - start, number));
        }
    };
    for number in 0..count {
        now = start + Duration::from_millis(u64::from(number));
        drain(&mut links, now);
        let mut datagram = number.to_be_bytes().to_vec();
        datagram.resize(size.max(4), 0);
        links.offer(now, peer(), datagram);
        drain(&mut links, now);
    }
    // Bounded: every queued datagram is released at its own deadline.
    for _ in 0..(count as usize * 4 + 16) {
        let Some(next) = links.next_release() else {
            break;
        };
        now = now.max(next);
        drain(&mut links, now);
    }
    assert!(links.next_release().is_none(), "the link kept datagrams");
    let stats = links.stats(peer()).expect("the link was used");
    assert_eq!(stats.offered, u64::from(count));
    assert_eq!(stats.released, released.len() as u64);
    released
}

/// Bounds of a binomial count at about 4.5 standard deviations.
fn binomial_bounds(trials: u32, p: f64) -> (f64, f64) {
    let mean = f64::from(trials) * p;
    let sd = (mean * (1.0 - p)).sqrt();
    (mean - 4.5 * sd, mean + 4.5 * sd)
}

#[test]
fn random_loss_rate_is_within_a_confidence_bound() {
    for (seed, p) in [(1, 0.01), (2, 0.05), (3, 0.2)] {
        let trials = 20_000;
        let config = NetemConfig::new()
            .loss(RandomLoss::new(Probability::new(p as f32)))
            .seed(seed);
        let delivered = run_link(config, trials, 64).len();
        let lost = f64::from(trials) - delivered as f64;
        let (low, high) = binomial_bounds(trials, p);
        assert!(
            (low..=high).contains(&lost),
            "loss {p}: lost {lost} of {trials}, expected within [{low:.0}, {high:.0}]"
        );
    }
}

#[test]
fn gilbert_elliott_loss_comes_in_bursts() {
    let config = NetemConfig::new()
        .loss(
            GilbertElliot::new()
                .good_duration(200.0)
                .bad_duration(8.0)
                .loss_in_bad(Probability::new(0.9)),
        )
        .seed(11);
    let released: Vec<u32> = run_link(config, 50_000, 64)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    let mut bursts = 0u32;
    let mut lost = 0u32;
    for pair in released.windows(2) {
        let gap = pair[1] - pair[0] - 1;
        if gap > 0 {
            bursts += 1;
            lost += gap;
        }
    }
    assert!(lost > 0, "the bad state never dropped anything");
    let mean_burst = f64::from(lost) / f64::from(bursts);
    // Independent loss at the same rate would give bursts of about 1.0.
    assert!(
        mean_burst > 2.0,
        "mean burst length {mean_burst:.2} is not bursty"
    );
}

#[test]
fn delay_and_jitter_stay_within_their_bounds_and_keep_order() {
    let latency = Duration::from_millis(20);
    let jitter = Duration::from_millis(5);
    let config = NetemConfig::new().latency(latency).jitter(jitter).seed(5);
    let mut links = LinkEmulator::new(LinkConditions::new().with_link(peer(), config));
    let start = Instant::now();
    let mut sent_at = Vec::new();
    for number in 0..2_000u32 {
        let now = start + Duration::from_micros(u64::from(number) * 500);
        links.offer(now, peer(), number.to_be_bytes().to_vec());
        sent_at.push(now);
    }
    let mut previous = None;
    let mut delays = Vec::new();
    for _ in 0..10_000 {
        let Some(due) = links.next_release() else {
            break;
        };
        while let Some((_, datagram)) = links.poll_release(due) {
            let number = u32::from_be_bytes(datagram[..4].try_into().expect("4 bytes"));
            if let Some(previous) = previous {
                assert!(number > previous, "{number} released after {previous}");
            }
            previous = Some(number);
            delays.push(due - sent_at[number as usize]);
        }
    }
    assert_eq!(delays.len(), 2_000);
    // FIFO release means a datagram can wait behind a later-jittered predecessor, never less
    // than latency - jitter, and never more than latency + jitter after the last send time.
    assert!(delays.iter().all(|d| *d >= latency - jitter));
    assert!(delays.iter().all(|d| *d <= latency + jitter));
    delays.sort();
    let median = delays[delays.len() / 2];
    assert!(median >= latency - jitter && median <= latency + jitter);
    assert!(delays[0] < delays[delays.len() - 1], "jitter had no effect");
}

#[test]
fn order_is_preserved_without_reordering_and_broken_with_it() {
    let in_order = |config| {
        let numbers: Vec<u32> = run_link(config, 5_000, 64)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        numbers.windows(2).all(|pair| pair[0] < pair[1])
    };
    let plain = NetemConfig::new().latency(Duration::from_millis(5)).seed(9);
    assert!(in_order(plain));
    let reordering = plain.reorder_gap(10);
    assert!(!in_order(reordering));
}

#[test]
fn duplication_rate_is_within_a_confidence_bound() {
    let trials = 20_000;
    let p = 0.05;
    let config = NetemConfig::new()
        .duplicate(Probability::new(p as f32))
        .seed(21);
    let released = run_link(config, trials, 64).len();
    let duplicates = released as f64 - f64::from(trials);
    let (low, high) = binomial_bounds(trials, p);
    assert!(
        (low..=high).contains(&duplicates),
        "{duplicates} duplicates, expected within [{low:.0}, {high:.0}]"
    );
}

#[test]
fn rate_limit_paces_datagrams_and_a_full_queue_drops_the_tail() {
    // 8 Mbit/s: a 1000-byte datagram takes exactly 1 ms on the wire.
    let config = NetemConfig::new()
        .link(Bitrate::mbps(8), DataSize::bytes(20_000))
        .seed(4);
    let mut links = LinkEmulator::new(LinkConditions::new().with_link(peer(), config));
    let start = Instant::now();
    // 100 datagrams offered at once: 20 fit the queue, the rest are tail-dropped.
    for number in 0..100u32 {
        let mut datagram = number.to_be_bytes().to_vec();
        datagram.resize(1000, 0);
        links.offer(start, peer(), datagram);
    }
    let mut release_times = Vec::new();
    for _ in 0..1_000 {
        let Some(due) = links.next_release() else {
            break;
        };
        while links.poll_release(due).is_some() {
            release_times.push(due);
        }
    }
    assert_eq!(release_times.len(), 20, "the queue bound was not enforced");
    for pair in release_times.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_millis(1));
    }
}

/// Offers 20 datagrams of 1000 bytes at once, alternating between two destinations, on an
/// 8 Mbit/s link (1 ms per datagram); returns when the last one is released, and the releases
/// per destination.
fn pace_two_destinations(conditions: LinkConditions) -> (Duration, Vec<SocketAddr>) {
    let other: SocketAddr = "127.0.0.1:10".parse().expect("a literal address");
    let mut links = LinkEmulator::new(conditions);
    let start = Instant::now();
    for number in 0..20u32 {
        let destination = if number % 2 == 0 { peer() } else { other };
        let mut datagram = number.to_be_bytes().to_vec();
        datagram.resize(1000, 0);
        links.offer(start, destination, datagram);
    }
    let mut last = start;
    let mut destinations = Vec::new();
    for _ in 0..1_000 {
        let Some(due) = links.next_release() else {
            break;
        };
        while let Some((destination, _)) = links.poll_release(due) {
            destinations.push(destination);
            last = due;
        }
    }
    assert_eq!(links.queued(), 0);
    assert_eq!(links.total_stats().offered, 20);
    assert_eq!(links.total_stats().released, 20);
    (last - start, destinations)
}

#[test]
fn a_shared_link_paces_all_destinations_together() {
    let rate = NetemConfig::new()
        .link(Bitrate::mbps(8), DataSize::bytes(100_000))
        .seed(5);
    // One link per destination: each paces its own 10 datagrams, in parallel.
    let (separate, _) = pace_two_destinations(LinkConditions::new().with_default(rate));
    assert_eq!(separate, Duration::from_millis(9));
    // One shared link (a sender's NIC): 20 datagrams one after another.
    let shared_conditions = LinkConditions::new().with_shared_default(rate);
    let (shared, destinations) = pace_two_destinations(shared_conditions.clone());
    assert_eq!(shared, Duration::from_millis(19));
    // Each datagram keeps its own destination, in the order offered.
    let other: SocketAddr = "127.0.0.1:10".parse().expect("a literal address");
    for (number, destination) in destinations.iter().enumerate() {
        assert_eq!(*destination, if number % 2 == 0 { peer() } else { other });
    }
    // Both destinations report the one link's counters.
    let mut links: LinkEmulator<Vec<u8>> = LinkEmulator::new(shared_conditions);
    links.offer(Instant::now(), peer(), vec![0; 10]);
    assert_eq!(links.stats(other), links.stats(peer()));
}

#[test]
fn the_same_seed_repeats_the_same_run() {
    let config = NetemConfig::new()
        .latency(Duration::from_millis(3))
        .jitter(Duration::from_millis(2))
        .loss(RandomLoss::new(Probability::new(0.1)))
        .seed(1234);
    assert_eq!(run_link(config, 3_000, 64), run_link(config, 3_000, 64));
    let other = config.seed(4321);
    assert_ne!(run_link(config, 3_000, 64), run_link(other, 3_000, 64));
}

/// The quinn socket wrapper delays real datagrams by the configured latency (on tokio's paused
/// clock, so the measurement is exact) and splits GSO batches into single datagrams.
#[tokio::test(start_paused = true)]
async fn impaired_quinn_socket_delays_and_splits_real_datagrams() {
    let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let destination = receiver.local_addr().expect("local address");
    let latency = Duration::from_millis(40);
    let inner = quinn::default_runtime()
        .expect("inside tokio")
        .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .expect("wrap");
    let socket = ImpairedUdpSocket::new(
        inner,
        LinkConditions::new().with_link(destination, NetemConfig::new().latency(latency)),
    );

    // One transmit of three 100-byte segments, as quinn hands over with GSO.
    let mut contents = Vec::new();
    for segment in 0..3u8 {
        contents.extend(std::iter::repeat_n(segment, 100));
    }
    let sent_at = tokio::time::Instant::now();
    quinn::AsyncUdpSocket::try_send(
        &*socket,
        &quinn::udp::Transmit {
            destination,
            ecn: None,
            contents: &contents,
            segment_size: Some(100),
            src_ip: None,
        },
    )
    .expect("queued");

    let mut buffer = [0u8; 2048];
    for segment in 0..3u8 {
        let (len, _) =
            tokio::time::timeout(Duration::from_secs(60), receiver.recv_from(&mut buffer))
                .await
                .expect("the datagram arrives")
                .expect("recv");
        assert_eq!(len, 100, "GSO batch was not split");
        assert!(buffer[..len].iter().all(|byte| *byte == segment));
        assert_eq!(sent_at.elapsed(), latency);
    }
    let stats = socket.link_stats(destination).expect("link used");
    assert_eq!((stats.offered, stats.released), (3, 3));
    assert_eq!(socket.refused(), 0);
}
