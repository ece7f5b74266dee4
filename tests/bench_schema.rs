//! `replicast bench` as a user runs it, on a tiny sweep: results.json parses with the
//! documented schema, every figure is present and consistent, multicast puts fewer bytes on
//! the writer's link than unicast for 4 replicas, and report.md and the plots are written.

use std::process::Command;
use std::time::Duration;

use replicast_bench::{Results, SCHEMA_VERSION, StrategyName};

/// Bounds the whole run (it takes seconds in a debug build).
const RUN_LIMIT: Duration = Duration::from_secs(240);

fn run_bench(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_replicast"));
    command
        .args([
            "bench",
            "--quiet",
            "--replicas",
            "1,4",
            "--object-size",
            "64KiB",
            "--transactions",
            "5",
            "--warmup",
            "1",
            "--loss",
            "0",
            "--rate",
            "1Gbit",
            "--out",
        ])
        .arg(out)
        .args(extra);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("replicast starts");
    // Wait on the child in a thread so the test can bound the run.
    let (done, finished) = std::sync::mpsc::channel();
    let pid = child.id();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    if finished.recv_timeout(RUN_LIMIT).is_err() {
        // SAFETY: kill only signals the child this test started (SIGKILL).
        unsafe { kill(pid as i32, 9) };
        panic!("replicast bench did not finish within {RUN_LIMIT:?}");
    }
    waiter
        .join()
        .expect("waiter thread")
        .expect("replicast output")
}

unsafe extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
    fn geteuid() -> u32;
}

#[test]
fn tiny_sweep_writes_a_consistent_results_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bench");
    let output = run_bench(&out, &["--rtt", "1"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "replicast bench failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("| strategy |"),
        "the table is printed: {stdout}"
    );

    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let results = Results::from_json(&text).expect("results.json has the documented schema");
    assert_eq!(results.schema_version, SCHEMA_VERSION);
    assert_eq!(results.tool, "replicast bench");
    // 2 replica counts x 3 strategies.
    assert_eq!(results.cells.len(), 6);
    // Every documented figure is written for every cell (an absent ratio is `null`, not
    // missing), so scripts comparing runs can rely on the keys.
    for field in DOCUMENTED_FIGURES {
        let key = format!("\"{field}\":");
        assert_eq!(
            text.matches(&key).count(),
            results.cells.len(),
            "figure {field} in every cell"
        );
    }
    for (index, cell) in results.cells.iter().enumerate() {
        let f = &cell.figures;
        assert_eq!(cell.index, index);
        assert_eq!(f.commits, 5, "every client commits its transactions");
        assert!(f.latency_p50_ms > 0.0);
        assert!(f.latency_p50_ms <= f.latency_p99_ms, "{f:?}");
        assert!(f.latency_p99_ms <= f.latency_max_ms, "{f:?}");
        assert!(f.commits_per_s > 0.0);
        assert_eq!(f.committed_bytes, 5 * 64 * 1024);
        assert_eq!(
            f.writer_bytes,
            f.writer_quic_bytes + f.writer_multicast_bytes
        );
        assert!(
            f.writer_bytes_per_committed_byte >= 1.0,
            "the writer sends at least the committed bytes once: {f:?}"
        );
        assert!(f.bound_ms > 0.0);
        let p99_over = f.p99_over_bound.expect("a bound above 0 gives a ratio");
        assert!((p99_over - f.latency_p99_ms / f.bound_ms).abs() < 1e-9);
        assert!(f.writer_cpu_s > 0.0, "the writer thread used CPU: {f:?}");
    }
    let bytes = |strategy: StrategyName, replicas: usize| {
        results
            .cells
            .iter()
            .find(|c| c.knobs.strategy == strategy && c.knobs.replicas == replicas)
            .map(|c| c.figures.writer_bytes)
            .expect("cell ran")
    };
    assert!(
        bytes(StrategyName::Multicast, 4) < bytes(StrategyName::Unicast, 4),
        "multicast sends fewer bytes than unicast to 4 replicas: {} vs {}",
        bytes(StrategyName::Multicast, 4),
        bytes(StrategyName::Unicast, 4)
    );
    assert!(
        bytes(StrategyName::Unicast, 4) > 3 * 64 * 1024 * 5,
        "unicast sends a copy per replica"
    );

    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(report.contains("| strategy |"));
    assert!(report.contains("within 10% of unicast"));
    for plot in ["latency-vs-replicas.svg", "latency-vs-loss.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).expect("plot written");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<polyline"), "{plot} has lines");
    }
}

/// As root, `--netns` runs the cells across network namespaces with the nodes as processes;
/// otherwise it says that it needs root and fails.
#[test]
fn netns_mode_runs_as_root_and_explains_itself_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("netns");
    let output = run_bench(
        &out,
        &["--netns", "--rtt", "0", "--strategies", "unicast,multicast"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        assert!(!output.status.success());
        assert!(
            stderr.contains("--netns needs root"),
            "a clear message: {stderr}"
        );
        return;
    }
    assert!(output.status.success(), "replicast bench --netns: {stderr}");
    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let results = Results::from_json(&text).expect("results.json has the documented schema");
    assert_eq!(results.mode, "netns");
    assert_eq!(results.cells.len(), 4);
    for cell in &results.cells {
        assert_eq!(cell.figures.commits, 5);
    }
    let bytes = |strategy: StrategyName| {
        results
            .cells
            .iter()
            .find(|c| c.knobs.strategy == strategy && c.knobs.replicas == 4)
            .map(|c| c.figures.writer_multicast_bytes + c.figures.writer_quic_bytes)
            .expect("cell ran")
    };
    assert!(
        bytes(StrategyName::Multicast) < bytes(StrategyName::Unicast),
        "multicast crossed the bridge once: {} vs {}",
        bytes(StrategyName::Multicast),
        bytes(StrategyName::Unicast)
    );
}

/// Every figure docs/BENCH.md documents.
const DOCUMENTED_FIGURES: [&str; 20] = [
    "commits",
    "aborts",
    "elapsed_s",
    "commits_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "latency_mean_ms",
    "committed_bytes",
    "writer_bytes",
    "writer_quic_bytes",
    "writer_multicast_bytes",
    "writer_bytes_per_committed_byte",
    "bound_bytes_per_committed_byte",
    "repair_bytes",
    "nacks_received",
    "writer_cpu_s",
    "bound_ms",
    "p50_over_bound",
    "p99_over_bound",
];
