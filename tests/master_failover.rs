//! Failover under load: three masters, three storages (P = 12, R = 2) as processes, one
//! `replicast client transfers` writer per fan-out strategy (unicast, multicast, auto) running
//! at once, and the primary SIGKILLed again and again (at least 10 times; at whatever point of
//! the two-phase commits it is), each time restarted as a follower before the next kill so that
//! a majority stays. Every writer ends with its own check: the sum of its balances is
//! unchanged, every transfer it was told committed is visible and no aborted one is. Then every
//! node stops and each partition's replicas hold the same history.
//!
//! Each failover is timed from the SIGKILL to the first commit after it (the last TID moving
//! on, seen through `replicast status`); the distribution is printed (it includes the status
//! command's own round trips, so it is an upper bound).

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use replicast_transport::fanout::Strategy;
use support::replicas::{all_up_to_date, stop_and_compare, wait_for_table};
use support::{BIN, ClusterSpec, LocalCluster, fanout_section, multicast_section, random_group};

/// Failovers per run.
const FAILOVERS: usize = 10;

/// The last committed TID as the primary reports it, if a master answers.
fn last_tid(config: &std::path::Path) -> Option<u64> {
    let outcome = support::output(
        Command::new(BIN)
            .args(["status", "--json", "--timeout", "4", "--config"])
            .arg(config),
        "replicast status",
    );
    let status: serde_json::Value = serde_json::from_str(&outcome.stdout).ok()?;
    // Only a primary's answer counts (a follower without a leader answers its own view).
    let primary = status["masters"]
        .as_array()?
        .iter()
        .any(|master| master["role"] == "primary" && master["name"] == status["master"]);
    if !primary {
        return None;
    }
    u64::from_str_radix(status["last_tid"].as_str()?, 16).ok()
}

/// Runs `replicast client transfers` with `config` again and again until `stop`: each run
/// creates its accounts, commits `count` transfers (retrying aborts) and checks itself (the
/// sum kept, every transfer it was told committed visible, no aborted one). Returns the runs'
/// summaries.
fn write_until(
    config: std::path::PathBuf,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut runs = Vec::new();
        let mut round = 0u64;
        // Bounded: the failovers take a few minutes at most.
        while !stop.load(Ordering::Relaxed) && round < 1000 {
            let outcome = support::output(
                Command::new(BIN)
                    .args(["client", "--timeout", "30", "--config"])
                    .arg(&config)
                    .args(["transfers", "--accounts", "6", "--count", "40", "--seed"])
                    .arg((seed << 32 | round).to_string())
                    .stdin(Stdio::null()),
                "replicast client transfers",
            );
            assert_eq!(
                outcome.code,
                Some(0),
                "a writer's run across failovers: {} {}",
                outcome.stdout,
                outcome.stderr
            );
            assert!(
                outcome.stdout.starts_with("committed 40"),
                "{}",
                outcome.stdout
            );
            runs.push(outcome.stdout.trim().to_owned());
            round += 1;
        }
        runs
    })
}

#[test]
fn primary_killed_again_and_again_under_load_loses_nothing() {
    let group = random_group();
    let spec = ClusterSpec {
        storage_sections: multicast_section(group),
        ..ClusterSpec::three_masters()
    };
    let mut cluster = LocalCluster::start(&spec);
    let status = cluster.client_config("client-4", "");
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (seed, (name, strategy)) in [
        ("client-1", Strategy::Unicast),
        ("client-2", Strategy::Multicast),
        ("client-3", Strategy::Auto),
    ]
    .into_iter()
    .enumerate()
    {
        let config = cluster.client_config(
            name,
            &format!("{}{}", fanout_section(strategy), multicast_section(group)),
        );
        writers.push((name, write_until(config, seed as u64 + 1, stop.clone())));
    }

    let mut failovers = Vec::new();
    for round in 0..FAILOVERS {
        // Commits flow (the last TID moves) before each kill.
        let deadline = Instant::now() + support::WAIT;
        let before = loop {
            if let Some(tid) = last_tid(&status) {
                break tid;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no primary answers"
            );
        };
        let moved = loop {
            match last_tid(&status) {
                Some(tid) if tid > before => break tid,
                _ => assert!(Instant::now() < deadline, "round {round}: no commit"),
            }
        };
        let primary = cluster.wait_primary();
        let killed_at = Instant::now();
        cluster.master_process(&primary).kill();
        let next = loop {
            match last_tid(&status) {
                Some(tid) if tid > moved => break tid,
                _ => assert!(
                    Instant::now() < deadline,
                    "round {round}: no commit after {primary} was killed"
                ),
            }
        };
        let took = killed_at.elapsed();
        eprintln!("failover {round}: {primary} killed, next commit {took:?} later ({next:x})");
        failovers.push(took);
        cluster.restart_master(&primary);
    }
    failovers.sort();
    eprintln!(
        "failover time over {} SIGKILLs of the primary: min {:?}, median {:?}, max {:?}",
        failovers.len(),
        failovers[0],
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1]
    );

    stop.store(true, Ordering::Relaxed);
    for (name, writer) in writers {
        let runs = writer
            .join()
            .unwrap_or_else(|_| panic!("{name}'s runs checked out"));
        assert!(
            !runs.is_empty(),
            "{name} completed runs across the failovers"
        );
        eprintln!("{name}: {} runs, e.g. {}", runs.len(), runs[runs.len() - 1]);
    }
    let table = wait_for_table(&status, "every cell up to date", all_up_to_date);
    stop_and_compare(cluster, &table, &[], &[]);
}
