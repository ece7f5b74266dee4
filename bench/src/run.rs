//! Running a sweep: one local cluster per cell, its writers, its figures, and the outputs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use crate::baseline::Baseline;
use crate::bound;
use crate::error::BenchError;
use crate::grid::{CellKnobs, Sweep};
use crate::record::{CellRecord, Figures, Results, SCHEMA_VERSION};
use crate::report;
use crate::workload::{self, WriterHost, WriterOutcome, WriterSetup};

/// Worker threads of the cluster's runtime (the master and the storages share them).
const CLUSTER_THREADS: usize = 2;

/// How a run is done.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The cells.
    pub sweep: Sweep,
    /// Where results.json, report.md and the plots go (created when missing).
    pub out: PathBuf,
    /// Seeds every emulated link and payload.
    pub seed: u64,
    /// Whether to draw a progress bar on standard error (when it is a terminal).
    pub progress: bool,
    /// Where the cells' clusters run.
    pub mode: Mode,
    /// Where the storages' redb files go (`None`: the system's temporary directory); a
    /// tmpfs such as /dev/shm takes the disk's fsync out of the commit latency.
    pub data_dir: Option<PathBuf>,
    /// An earlier run to compare with: comparison.md, and its cells in the plots.
    pub baseline: Option<Baseline>,
}

/// Where the cells' clusters run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// In this process, every node on loopback behind in-process emulated links.
    InProcess,
    /// The master and storages as `replicast node` processes (this binary), each in a network
    /// namespace of its own on one bridge, the writers in a namespace of theirs (root only).
    Netns {
        /// The `replicast` binary to start the nodes with.
        replicast: PathBuf,
    },
}

impl Mode {
    /// `in-process` or `netns`, as results.json names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InProcess => "in-process",
            Self::Netns { .. } => "netns",
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Everything measured.
    pub results: Results,
    /// The table printed on standard output.
    pub table: String,
    /// The files written.
    pub files: Vec<PathBuf>,
}

/// Runs every cell of the sweep and writes results.json, report.md and the SVG plots to
/// `options.out`.
pub fn run(options: &RunOptions) -> Result<RunOutput, BenchError> {
    let cells = options.sweep.cells();
    if cells.is_empty() {
        return Err(BenchError::Knobs(
            "the sweep has no cell (an empty list?)".into(),
        ));
    }
    for knobs in &cells {
        check(knobs)?;
        if let Mode::Netns { .. } = options.mode {
            crate::netns::check(knobs)?;
        }
    }
    if let Mode::Netns { .. } = options.mode {
        crate::netns::check_root()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CLUSTER_THREADS)
        .enable_all()
        .build()
        .map_err(|e| BenchError::setup("cluster runtime", e))?;
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let bar = progress_bar(cells.len(), options.progress);
    let data_dir = options.data_dir.as_deref();
    let mut records = Vec::new();
    let mut phases_csv = String::from(PHASES_HEADER);
    for (index, knobs) in cells.iter().enumerate() {
        bar.set_message(knobs.label());
        let started = Instant::now();
        let seed = options
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(index as u64 * 1_000);
        let outcome = match &options.mode {
            Mode::InProcess => run_cell(&runtime, index, knobs, seed, data_dir)?,
            Mode::Netns { replicast } => {
                crate::netns::run_cell(replicast, index, knobs, seed, data_dir)?
            }
        };
        let figures = figures(knobs, &outcome);
        append_phases(&mut phases_csv, index, knobs, &outcome);
        let line = format!(
            "cell {}/{} {}: p50 {:.1} ms p99 {:.1} ms, {:.1} commits/s ({:.1?})",
            index + 1,
            cells.len(),
            knobs.label(),
            figures.latency_p50_ms,
            figures.latency_p99_ms,
            figures.commits_per_s,
            started.elapsed()
        );
        if bar.is_hidden() {
            if options.progress {
                eprintln!("{line}");
            }
        } else {
            bar.println(line);
        }
        records.push(CellRecord {
            index,
            knobs: knobs.clone(),
            figures,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    runtime.shutdown_timeout(Duration::from_secs(5));
    let results = Results {
        schema_version: SCHEMA_VERSION,
        tool: "replicast bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        mode: options.mode.as_str().into(),
        started_unix_s,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        data_dir: options
            .data_dir
            .as_ref()
            .map(|dir| dir.display().to_string()),
        cells: records,
    };
    let mut files = write_outputs(&options.out, &results, options.baseline.as_ref())?;
    let phases_path = options.out.join("phases.csv");
    std::fs::write(&phases_path, phases_csv).map_err(|source| BenchError::Output {
        path: phases_path.clone(),
        source,
    })?;
    files.push(phases_path);
    Ok(RunOutput {
        table: report::table(&results),
        results,
        files,
    })
}

/// The columns of phases.csv: one row per measured commit, its steps in milliseconds.
const PHASES_HEADER: &str =
    "cell,label,total_ms,begin_ms,store_ms,vote_ms,finish_ms,nacks,repair_bytes,quic_lost\n";

/// Adds the cell's commits to phases.csv: where each commit's time went (begin, the stores
/// handed to the fan-out, vote with the stores' answers, finish), to tell a slow commit's
/// cause from the latency histogram alone.
fn append_phases(csv: &mut String, index: usize, knobs: &CellKnobs, outcome: &WriterOutcome) {
    use std::fmt::Write;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for phases in &outcome.phases {
        // Writing to a String cannot fail.
        let _ = writeln!(
            csv,
            "{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{},{},{}",
            index,
            knobs.label(),
            ms(phases.total),
            ms(phases.begin),
            ms(phases.store),
            ms(phases.vote),
            ms(phases.finish),
            phases.nacks,
            phases.repair_bytes,
            phases.quic_lost,
        );
    }
}

fn check(knobs: &CellKnobs) -> Result<(), BenchError> {
    let fail = |what: String| Err(BenchError::Knobs(what));
    if knobs.replicas == 0 {
        return fail("--replicas must be at least 1".into());
    }
    if knobs.clients == 0 {
        return fail("--clients must be at least 1".into());
    }
    if knobs.objects_per_txn == 0 {
        return fail("--objects-per-txn must be at least 1".into());
    }
    if knobs.object_size == 0 {
        return fail("--object-size must be at least 1 byte".into());
    }
    if !(0.0..1.0).contains(&knobs.loss) {
        return fail(format!("--loss {}% is not below 100%", knobs.loss * 100.0));
    }
    if knobs.rtt_ms < 0.0 || knobs.jitter_ms < 0.0 {
        return fail("--rtt and --jitter cannot be negative".into());
    }
    if knobs.rate_bits_per_s == Some(0) {
        return fail("--rate must be above 0".into());
    }
    Ok(())
}

fn progress_bar(cells: usize, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(cells as u64);
    // The template is a constant: a mistake in it shows in every run, not in the field.
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} cells, ETA {eta}: {wide_msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One cell: a fresh cluster on the cluster runtime, the writers on their own thread.
fn run_cell(
    runtime: &tokio::runtime::Runtime,
    index: usize,
    knobs: &CellKnobs,
    seed: u64,
    data_dir: Option<&Path>,
) -> Result<WriterOutcome, BenchError> {
    let cluster = runtime.block_on(crate::cluster::start(knobs, seed, data_dir))?;
    let setup = WriterSetup {
        knobs: knobs.clone(),
        cell: index,
        seed,
        ca: cluster.ca.clone(),
        directory: cluster.directory.clone(),
        storages: cluster.storage_names(),
        host: WriterHost::loopback(index, knobs.clients, knobs.one_group),
        fsyncs: Some(cluster.fsync_counter()),
        master_fsyncs: Some(cluster.master_fsync_counter()),
    };
    let outcome = workload::run(setup);
    runtime.block_on(cluster.stop());
    outcome
}

/// The figures of a cell from what its writers measured.
pub fn figures(knobs: &CellKnobs, outcome: &WriterOutcome) -> Figures {
    let ms = |micros: u64| micros as f64 / 1e3;
    let latencies = &outcome.latencies;
    let committed_bytes =
        outcome.commits * (knobs.objects_per_txn as u64) * (knobs.object_size as u64);
    let writer_bytes = outcome.quic_bytes + outcome.multicast_bytes;
    let per_committed = |bytes: u64| {
        if committed_bytes == 0 {
            0.0
        } else {
            bytes as f64 / committed_bytes as f64
        }
    };
    let bound_ms = bound::commit_latency(knobs).as_secs_f64() * 1e3;
    let p50 = ms(latencies.value_at_quantile(0.5));
    let p99 = ms(latencies.value_at_quantile(0.99));
    let over = |value: f64| (bound_ms > 0.0).then(|| value / bound_ms);
    let elapsed_s = outcome.elapsed.as_secs_f64();
    Figures {
        commits: outcome.commits,
        aborts: outcome.aborts,
        elapsed_s,
        commits_per_s: if elapsed_s > 0.0 {
            outcome.commits as f64 / elapsed_s
        } else {
            0.0
        },
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        latency_max_ms: ms(latencies.max()),
        latency_mean_ms: latencies.mean() / 1e3,
        committed_bytes,
        writer_bytes,
        writer_quic_bytes: outcome.quic_bytes,
        writer_multicast_bytes: outcome.multicast_bytes,
        writer_bytes_per_committed_byte: per_committed(writer_bytes),
        bound_bytes_per_committed_byte: knobs.strategy.copies(knobs.replicas) as f64,
        repair_bytes: outcome.repair_bytes,
        nacks_received: outcome.nacks,
        writer_cpu_s: outcome.cpu_s,
        bound_ms,
        p50_over_bound: over(p50),
        p99_over_bound: over(p99),
        fsyncs_per_commit: outcome
            .fsyncs
            .filter(|_| outcome.commits > 0 && knobs.replicas > 0)
            .map(|fsyncs| fsyncs as f64 / outcome.commits as f64 / knobs.replicas as f64),
        master_fsyncs_per_commit: outcome
            .master_fsyncs
            .filter(|_| outcome.commits > 0)
            .map(|fsyncs| fsyncs as f64 / outcome.commits as f64),
        master_commit_ms: master_commit_ms(knobs, outcome),
    }
}

/// The median of the commits' finish phase less the link's round trip: what the master
/// group spent deciding (its log write, and its peers' where there are several).
fn master_commit_ms(knobs: &CellKnobs, outcome: &WriterOutcome) -> Option<f64> {
    let mut finishes: Vec<f64> = outcome
        .phases
        .iter()
        .map(|phases| phases.finish.as_secs_f64() * 1e3)
        .collect();
    if finishes.is_empty() {
        return None;
    }
    finishes.sort_by(f64::total_cmp);
    let median = finishes[finishes.len() / 2];
    Some((median - knobs.rtt_ms).max(0.0))
}

/// Writes results.json, report.md and the plots (and comparison.md, given a `baseline`);
/// returns their paths.
pub fn write_outputs(
    out: &Path,
    results: &Results,
    baseline: Option<&Baseline>,
) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(out).map_err(|source| BenchError::Output {
        path: out.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    let mut write = |name: &str, text: String| -> Result<(), BenchError> {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|source| BenchError::Output {
            path: path.clone(),
            source,
        })?;
        files.push(path);
        Ok(())
    };
    write("results.json", results.to_json()?)?;
    write("report.md", report::report_markdown(results, baseline))?;
    if let Some(baseline) = baseline {
        write(
            "comparison.md",
            crate::baseline::comparison_table(results, baseline),
        )?;
    }
    for (name, svg) in crate::plot::plots(results, baseline) {
        write(&name, svg)?;
    }
    Ok(files)
}
