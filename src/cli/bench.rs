//! `replicast bench`: the unicast-versus-multicast commit latency comparison on a local
//! cluster with an emulated WAN. The harness is the `replicast-bench` crate; this is its
//! command line.
//!
//! Every list flag takes comma-separated values and replaces the preset's list; the table goes
//! to standard output, the progress to standard error, and results.json, report.md and the SVG
//! plots to `--out`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use replicast_bench::units::{parse_millis, parse_percent, parse_rate, parse_size};
use replicast_bench::{Amount, Mode, RunOptions, StrategyName, Sweep};
use replicast_transport::quic::Congestion;

use super::Error;

/// Which grid the flags start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 1, 4, 8 replicas x 64 KiB, 1 MiB x RTT 20 ms x loss 0, 1% x 100 Mbit/s (under two
    /// minutes on two cores, release build).
    Default,
    /// The node benchmark (issues 5 and 11): 3 replicas, 1/10/100 objects of 1 KiB and
    /// 64 KiB, 1, 8, 32 and 64 concurrent writers, plain loopback, fsync on.
    Node,
    /// The whole grid (replicas 1..16, 1 KiB..1 MiB, RTT 1/20/80 ms, loss 0/1/5%, two rates).
    Full,
}

/// Arguments of `replicast bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The grid to start from; the flags below replace its lists.
    #[arg(long, value_enum, default_value_t = Preset::Default)]
    preset: Preset,
    /// The whole grid (same as --preset full).
    #[arg(long, conflicts_with = "preset")]
    full: bool,
    /// Replica counts (one storage per replica), e.g. 1,4,8.
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    replicas: Vec<usize>,
    /// Object sizes, e.g. 64KiB,1MiB.
    #[arg(long, value_delimiter = ',', value_name = "SIZE,..", value_parser = parse_size)]
    object_size: Vec<usize>,
    /// Objects stored per transaction, e.g. 1,10,100.
    #[arg(long, value_delimiter = ',', value_name = "K,..")]
    objects_per_txn: Vec<usize>,
    /// Round-trip times between nodes, e.g. 1,20,80 (milliseconds) or 20ms.
    #[arg(long, value_delimiter = ',', value_name = "MS,..", value_parser = parse_millis)]
    rtt: Vec<f64>,
    /// Loss on the writer's paths to each node, in percent, e.g. 0,1,5.
    #[arg(long, value_delimiter = ',', value_name = "PERCENT,..", value_parser = parse_percent)]
    loss: Vec<f64>,
    /// The writer's link rate, e.g. 100Mbit,1Gbit or unlimited.
    #[arg(long, value_delimiter = ',', value_name = "RATE,..", value_parser = parse_rate)]
    rate: Vec<Option<u64>>,
    /// One-way delay variation on every hop (milliseconds).
    #[arg(long, value_name = "MS", value_parser = parse_millis)]
    jitter: Option<f64>,
    /// Concurrent writing clients, e.g. 1,8.
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    clients: Vec<usize>,
    /// Every client of a cell sends to one multicast group, as the clients of a node cluster
    /// do (one `[multicast]` section), instead of a group each.
    #[arg(long)]
    one_group: bool,
    /// The writers' tail probes carry no copies of their last channel messages: a lost
    /// message waits for QUIC's recovery (to compare against the default, copies on).
    #[arg(long)]
    no_message_copies: bool,
    /// The writers' QUIC congestion controller: cubic (the default: keeps its window through
    /// losses without a queue, as on the emulated lossy links), strict-cubic (shrinks it at
    /// every loss) or bbr.
    #[arg(long, value_name = "NAME", value_parser = congestion)]
    congestion: Option<Congestion>,
    /// Strategies to compare: unicast, multicast, auto.
    #[arg(long, value_delimiter = ',', value_name = "NAME,..")]
    strategies: Vec<StrategyName>,
    /// Committed transactions per client and cell, after the warm-up.
    #[arg(long, conflicts_with = "duration")]
    transactions: Option<u64>,
    /// Seconds of transactions per cell, after the warm-up (instead of a count).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Transactions per client before measuring.
    #[arg(long)]
    warmup: Option<u64>,
    /// Seconds after which a cell stops counting transactions early (after one commit);
    /// 0 for no limit. Default: the preset's (4 s default, 8 s node, none full), none when
    /// --transactions is given.
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<f64>,
    /// Seed of the emulated links and payloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the storages' redb files go (default: the system's temporary directory); a tmpfs
    /// such as /dev/shm takes the disk's fsync out of the commit latency.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where results.json, report.md and the plots go.
    #[arg(long, value_name = "DIR", default_value = "target/replicast-bench")]
    out: PathBuf,
    /// The `--out` directory of an earlier run (e.g. a build of the commit before a change)
    /// to compare with: its p50 and p99 beside this run's, cell by cell, with their ratio
    /// (printed, and in comparison.md and report.md), and its cells in the plots.
    #[arg(long, value_name = "DIR")]
    baseline: Option<PathBuf>,
    /// No progress bar or per-cell lines on standard error.
    #[arg(long)]
    quiet: bool,
    /// Run across real network namespaces joined by a bridge, master and storages as
    /// `replicast node` processes (root only). Only the writer's link is emulated (rate,
    /// loss); --rtt defaults to 0 and must be 0.
    #[arg(long)]
    netns: bool,
}

impl BenchArgs {
    fn sweep(&self) -> Result<Sweep, Error> {
        let preset = if self.full { Preset::Full } else { self.preset };
        let mut sweep = match preset {
            Preset::Default => Sweep::default_grid(),
            Preset::Node => Sweep::node_grid(),
            Preset::Full => Sweep::full_grid(),
        };
        fn replace<T: Clone>(list: &mut Vec<T>, given: &[T]) {
            if !given.is_empty() {
                *list = given.to_vec();
            }
        }
        replace(&mut sweep.replicas, &self.replicas);
        replace(&mut sweep.object_sizes, &self.object_size);
        replace(&mut sweep.objects_per_txn, &self.objects_per_txn);
        replace(&mut sweep.rtts_ms, &self.rtt);
        replace(&mut sweep.losses, &self.loss);
        replace(&mut sweep.rates, &self.rate);
        replace(&mut sweep.clients, &self.clients);
        replace(&mut sweep.strategies, &self.strategies);
        sweep.one_group = self.one_group;
        sweep.message_copies = !self.no_message_copies;
        if let Some(congestion) = self.congestion {
            sweep.congestion = congestion;
        }
        if let Some(jitter) = self.jitter {
            sweep.jitter_ms = jitter;
        }
        if let Some(count) = self.transactions {
            sweep.amount = Amount::Transactions(count);
            sweep.time_limit_s = None;
        }
        if let Some(seconds) = self.time_limit {
            if !(seconds >= 0.0 && seconds.is_finite()) {
                return Err(format!("--time-limit {seconds} is not a number of seconds").into());
            }
            sweep.time_limit_s = (seconds > 0.0).then_some(seconds);
        }
        if let Some(seconds) = self.duration {
            if !(seconds > 0.0 && seconds.is_finite()) {
                return Err(
                    format!("--duration {seconds} is not a positive number of seconds").into(),
                );
            }
            sweep.amount = Amount::Duration(Duration::from_secs_f64(seconds));
        }
        if let Some(warmup) = self.warmup {
            sweep.warmup_transactions = warmup;
        }
        Ok(sweep)
    }
}

/// Runs `replicast bench`.
pub fn run(args: BenchArgs) -> Result<(), Error> {
    let mut sweep = args.sweep()?;
    let mode = if args.netns {
        replicast_bench::netns::check_root()?;
        // The node processes cannot be delayed (no netem): only the writer's link is emulated.
        if args.rtt.is_empty() {
            sweep.rtts_ms = vec![0.0];
        }
        Mode::Netns {
            replicast: replicast_bench::netns::replicast_binary()?,
        }
    } else {
        Mode::InProcess
    };
    // Read before the run: a wrong directory must not cost a sweep.
    let baseline = args
        .baseline
        .as_deref()
        .map(replicast_bench::baseline::Baseline::load)
        .transpose()?;
    let output = replicast_bench::run(&RunOptions {
        sweep,
        out: args.out.clone(),
        seed: args.seed,
        progress: !args.quiet,
        mode,
        data_dir: args.data_dir.clone(),
        baseline: baseline.clone(),
    })?;
    print!("{}", output.table);
    println!();
    if let Some(baseline) = &baseline {
        println!("Against {}:\n", baseline.label);
        print!(
            "{}",
            replicast_bench::baseline::comparison_table(&output.results, baseline)
        );
        println!();
    }
    for check in replicast_bench::report::checks(&output.results) {
        println!("{}: {}", check.verdict.as_str(), check.expectation);
    }
    if !args.quiet {
        eprintln!("wrote {}", args.out.display());
    }
    Ok(())
}

/// `--congestion`: a controller by its name.
fn congestion(name: &str) -> Result<Congestion, String> {
    Congestion::from_name(name).ok_or_else(|| {
        format!(
            "unknown congestion controller {name:?} ({})",
            Congestion::expected()
        )
    })
}
