//! What a run measures: the knobs of one cell ([`CellKnobs`]) and the sweep that lists them
//! ([`Sweep`]), with the presets `replicast bench` starts from.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use replicast_transport::quic::Congestion;
use serde::{Deserialize, Serialize};

/// How the writer hands stored objects to the replicas; the transport's
/// [`Strategy`](replicast_transport::fanout::Strategy) under the names of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyName {
    /// One QUIC stream to each replica.
    Unicast,
    /// One send to the multicast group; digests and acknowledgements over QUIC.
    Multicast,
    /// Multicast to the replicas proven reachable on the group, unicast to the rest.
    Auto,
}

impl StrategyName {
    /// Every strategy, in table order.
    pub const ALL: [StrategyName; 3] = [Self::Unicast, Self::Multicast, Self::Auto];

    /// The name as written on the command line and in results.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unicast => "unicast",
            Self::Multicast => "multicast",
            Self::Auto => "auto",
        }
    }

    /// The transport's strategy.
    pub fn transport(self) -> replicast_transport::fanout::Strategy {
        use replicast_transport::fanout::Strategy;
        match self {
            Self::Unicast => Strategy::Unicast,
            Self::Multicast => Strategy::Multicast,
            Self::Auto => Strategy::Auto,
        }
    }

    /// How many copies of each object a perfect transport puts on the writer's link.
    pub fn copies(self, replicas: usize) -> u64 {
        match self {
            Self::Unicast => replicas as u64,
            // Auto sends multicast to every replica that proved reachable: on loopback, all.
            Self::Multicast | Self::Auto => 1,
        }
    }
}

impl fmt::Display for StrategyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A strategy name that is none of `unicast`, `multicast`, `auto`.
#[derive(Debug, thiserror::Error)]
#[error("unknown strategy {0:?}: expected unicast, multicast or auto")]
pub struct UnknownStrategy(String);

impl FromStr for StrategyName {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unicast" => Ok(Self::Unicast),
            "multicast" => Ok(Self::Multicast),
            "auto" => Ok(Self::Auto),
            other => Err(UnknownStrategy(other.to_owned())),
        }
    }
}

/// How much of the workload a cell runs after its warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// This many committed transactions per client.
    Transactions(u64),
    /// Transactions for this long.
    Duration(Duration),
}

/// The knobs of one cell: one local cluster, one strategy, one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellKnobs {
    /// How the writers hand objects to the replicas.
    pub strategy: StrategyName,
    /// Storages, each holding a replica of every object (R = N).
    pub replicas: usize,
    /// Bytes of each stored object (incompressible).
    pub object_size: usize,
    /// Objects stored per transaction.
    pub objects_per_txn: usize,
    /// Emulated round-trip time between any two nodes, in milliseconds (0: none).
    pub rtt_ms: f64,
    /// Emulated one-way delay variation, in milliseconds (0: none).
    pub jitter_ms: f64,
    /// Fraction of the writer's datagrams lost on the way to each node (0.01 is 1%).
    pub loss: f64,
    /// The writer's link rate in bits per second; `None`: not limited (loopback speed).
    pub rate_bits_per_s: Option<u64>,
    /// Concurrent writing clients, each on its own endpoint.
    pub clients: usize,
    /// Committed transactions per client after the warm-up, when the cell runs by count.
    pub transactions: Option<u64>,
    /// Seconds of transactions after the warm-up, when the cell runs by time.
    pub duration_s: Option<f64>,
    /// Transactions per client before measuring (connections open, windows grow, `auto` sees
    /// its replicas prove reachable).
    pub warmup_transactions: u64,
    /// When counting transactions, a client stops early (after at least one commit) once the
    /// measured part ran this many seconds, so that one slow cell cannot hold up a sweep.
    #[serde(default)]
    pub time_limit_s: Option<f64>,
    /// Every client sends to one multicast group, as the clients of a node cluster do (one
    /// `[multicast]` section), instead of a group each: each storage then receives all the
    /// writers' sessions on one group.
    #[serde(default)]
    pub one_group: bool,
    /// Whether the writers' tail probes carry copies of their last channel messages
    /// (`LinkConfig::message_copies`, on by default); off compares the plain QUIC recovery.
    #[serde(default = "copies_on")]
    pub message_copies: bool,
    /// The writers' QUIC congestion controller (`LinkConfig::congestion`: `cubic`, the
    /// default, or `bbr`); cells written before the knob ran with CUBIC.
    #[serde(default)]
    pub congestion: Congestion,
}

/// Cells of results written before [`CellKnobs::message_copies`] ran with copies on, or
/// before copies existed (then the knob did not matter).
fn copies_on() -> bool {
    true
}

impl CellKnobs {
    /// The emulated round-trip time.
    pub fn rtt(&self) -> Duration {
        Duration::from_secs_f64(self.rtt_ms.max(0.0) / 1e3)
    }

    /// The emulated one-way delay variation.
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter_ms.max(0.0) / 1e3)
    }

    /// Whether any emulation applies (otherwise sockets are plain loopback).
    pub fn emulated(&self) -> bool {
        self.rtt_ms > 0.0
            || self.jitter_ms > 0.0
            || self.loss > 0.0
            || self.rate_bits_per_s.is_some()
    }

    /// How much of the workload runs after the warm-up.
    pub fn amount(&self) -> Amount {
        match (self.transactions, self.duration_s) {
            (_, Some(seconds)) => Amount::Duration(Duration::from_secs_f64(seconds.max(0.0))),
            (Some(count), None) => Amount::Transactions(count),
            (None, None) => Amount::Transactions(1),
        }
    }

    /// A short label for progress lines: `multicast N=4 64KiBx1 rtt 20ms loss 1% 100Mbit/s
    /// c=1`, with ` one group`, ` no copies` or the congestion controller when not the
    /// default.
    pub fn label(&self) -> String {
        let rate = self
            .rate_bits_per_s
            .map_or_else(|| "unlimited".to_owned(), format_rate);
        let congestion = match self.congestion {
            Congestion::Cubic => String::new(),
            other => format!(" {}", other.name()),
        };
        format!(
            "{} N={} {}x{} rtt {}ms loss {}% {} c={}{}{}{}",
            self.strategy,
            self.replicas,
            format_size(self.object_size),
            self.objects_per_txn,
            self.rtt_ms,
            self.loss * 100.0,
            rate,
            self.clients,
            if self.one_group { " one group" } else { "" },
            if self.message_copies {
                ""
            } else {
                " no copies"
            },
            congestion,
        )
    }
}

/// `64KiB`, `1MiB`, `1000B`.
pub fn format_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{}MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{}KiB", bytes >> 10)
    } else {
        format!("{bytes}B")
    }
}

/// `100Mbit/s`, `1Gbit/s`.
pub fn format_rate(bits: u64) -> String {
    if bits >= 1_000_000_000 && bits.is_multiple_of(1_000_000_000) {
        format!("{}Gbit/s", bits / 1_000_000_000)
    } else if bits >= 1_000_000 && bits.is_multiple_of(1_000_000) {
        format!("{}Mbit/s", bits / 1_000_000)
    } else {
        format!("{bits}bit/s")
    }
}

/// A sweep: every combination of its lists is one cell per strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Replica counts.
    pub replicas: Vec<usize>,
    /// Object sizes in bytes.
    pub object_sizes: Vec<usize>,
    /// Objects per transaction.
    pub objects_per_txn: Vec<usize>,
    /// Round-trip times in milliseconds.
    pub rtts_ms: Vec<f64>,
    /// Loss fractions.
    pub losses: Vec<f64>,
    /// Writer link rates in bits per second (`None`: unlimited).
    pub rates: Vec<Option<u64>>,
    /// Concurrent client counts.
    pub clients: Vec<usize>,
    /// Strategies, each run on the same workload.
    pub strategies: Vec<StrategyName>,
    /// One-way jitter in milliseconds, for every cell.
    pub jitter_ms: f64,
    /// How much each cell runs after its warm-up.
    pub amount: Amount,
    /// Warm-up transactions per client.
    pub warmup_transactions: u64,
    /// Seconds after which a cell counting transactions stops early (`None`: never).
    pub time_limit_s: Option<f64>,
    /// Every client of a cell sends to one multicast group ([`CellKnobs::one_group`]).
    pub one_group: bool,
    /// The writers' tail probes carry message copies ([`CellKnobs::message_copies`]).
    pub message_copies: bool,
    /// The writers' congestion controller ([`CellKnobs::congestion`]).
    pub congestion: Congestion,
}

impl Sweep {
    /// The default of `replicast bench`: 1, 4 and 8 replicas x 64 KiB and 1 MiB objects x
    /// 20 ms RTT x 0 and 1% loss on a 100 Mbit/s writer link, all three strategies, 10
    /// transactions of one object per cell (a cell stops counting after 4 s: unicast of 1 MiB
    /// under loss takes seconds per transaction). Under two minutes on two cores (release
    /// build).
    pub fn default_grid() -> Self {
        Self {
            replicas: vec![1, 4, 8],
            object_sizes: vec![64 << 10, 1 << 20],
            objects_per_txn: vec![1],
            rtts_ms: vec![20.0],
            losses: vec![0.0, 0.01],
            rates: vec![Some(100_000_000)],
            clients: vec![1],
            strategies: StrategyName::ALL.to_vec(),
            jitter_ms: 0.0,
            amount: Amount::Transactions(8),
            warmup_transactions: 1,
            time_limit_s: Some(4.0),
            one_group: false,
            message_copies: true,
            congestion: Congestion::Cubic,
        }
    }

    /// `--full`: issue 6's whole grid (replicas 1, 2, 4, 8, 16 x 1 KiB, 64 KiB, 1 MiB x RTT 1,
    /// 20, 80 ms x loss 0, 1, 5% x 100 Mbit/s and 1 Gbit/s). Hours, not minutes.
    pub fn full_grid() -> Self {
        Self {
            replicas: vec![1, 2, 4, 8, 16],
            object_sizes: vec![1 << 10, 64 << 10, 1 << 20],
            objects_per_txn: vec![1],
            rtts_ms: vec![1.0, 20.0, 80.0],
            losses: vec![0.0, 0.01, 0.05],
            rates: vec![Some(100_000_000), Some(1_000_000_000)],
            clients: vec![1],
            strategies: StrategyName::ALL.to_vec(),
            jitter_ms: 0.0,
            amount: Amount::Transactions(20),
            warmup_transactions: 2,
            time_limit_s: None,
            one_group: false,
            message_copies: true,
            congestion: Congestion::Cubic,
        }
    }

    /// `--preset node`: the node benchmark of issues 5 and 11 on plain loopback (no
    /// emulation), fsync on: 1, 10 and 100 objects of 1 KiB and 64 KiB per transaction, 1, 8,
    /// 32 and 64 concurrent writing clients, per strategy, on 3 replicas; 20 transactions per
    /// client, a cell stops counting after 8 s.
    pub fn node_grid() -> Self {
        Self {
            replicas: vec![3],
            object_sizes: vec![1 << 10, 64 << 10],
            objects_per_txn: vec![1, 10, 100],
            rtts_ms: vec![0.0],
            losses: vec![0.0],
            rates: vec![None],
            clients: vec![1, 8, 32, 64],
            strategies: StrategyName::ALL.to_vec(),
            jitter_ms: 0.0,
            amount: Amount::Transactions(20),
            warmup_transactions: 2,
            time_limit_s: Some(8.0),
            one_group: false,
            message_copies: true,
            congestion: Congestion::Cubic,
        }
    }

    /// Every cell, the strategies of one workload next to each other.
    pub fn cells(&self) -> Vec<CellKnobs> {
        let (transactions, duration_s) = match self.amount {
            Amount::Transactions(count) => (Some(count), None),
            Amount::Duration(duration) => (None, Some(duration.as_secs_f64())),
        };
        let mut cells = Vec::new();
        for &rate in &self.rates {
            for &rtt_ms in &self.rtts_ms {
                for &loss in &self.losses {
                    for &object_size in &self.object_sizes {
                        for &objects_per_txn in &self.objects_per_txn {
                            for &clients in &self.clients {
                                for &replicas in &self.replicas {
                                    for &strategy in &self.strategies {
                                        cells.push(CellKnobs {
                                            strategy,
                                            replicas,
                                            object_size,
                                            objects_per_txn,
                                            rtt_ms,
                                            jitter_ms: self.jitter_ms,
                                            loss,
                                            rate_bits_per_s: rate,
                                            clients,
                                            transactions,
                                            duration_s,
                                            warmup_transactions: self.warmup_transactions,
                                            time_limit_s: self.time_limit_s,
                                            one_group: self.one_group,
                                            message_copies: self.message_copies,
                                            congestion: self.congestion,
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_grid_has_every_strategy_per_workload() {
        let cells = Sweep::default_grid().cells();
        assert_eq!(cells.len(), 3 * 2 * 2 * 3);
        for triple in cells.chunks(3) {
            let names: Vec<_> = triple.iter().map(|c| c.strategy).collect();
            assert_eq!(names, StrategyName::ALL.to_vec());
            assert_eq!(triple[0].replicas, triple[2].replicas);
        }
    }

    #[test]
    fn sizes_and_rates_print_in_units() {
        assert_eq!(format_size(64 << 10), "64KiB");
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_rate(100_000_000), "100Mbit/s");
        assert_eq!(format_rate(1_000_000_000), "1Gbit/s");
    }

    #[test]
    fn strategies_parse_by_name() {
        for strategy in StrategyName::ALL {
            assert_eq!(
                strategy.as_str().parse::<StrategyName>().ok(),
                Some(strategy)
            );
        }
        assert!("broadcast".parse::<StrategyName>().is_err());
    }

    #[test]
    fn the_congestion_controller_shows_in_the_label_and_old_results_read_as_cubic() {
        let mut sweep = Sweep::default_grid();
        sweep.congestion = Congestion::Bbr;
        let bbr = sweep.cells().remove(0);
        assert_eq!(bbr.congestion, Congestion::Bbr);
        assert_eq!(
            serde_json::to_value(&bbr).expect("knobs serialize")["congestion"],
            "bbr"
        );
        assert!(bbr.label().ends_with(" bbr"), "{}", bbr.label());
        let cubic = Sweep::default_grid().cells().remove(0);
        assert!(!cubic.label().contains("cubic"), "{}", cubic.label());
        // A cell written before the knob existed: the field is absent.
        let mut json = serde_json::to_value(&cubic).expect("knobs serialize");
        json.as_object_mut()
            .expect("an object")
            .remove("congestion");
        let old: CellKnobs = serde_json::from_value(json).expect("old knobs read");
        assert_eq!(old, cubic);
    }
}
