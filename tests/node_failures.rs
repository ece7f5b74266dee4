//! Commits go on while storages fail (issue 14), once per fan-out strategy: one master and
//! three storages as `replicast node` processes (P = 12, R = 2), two in-process writers
//! committing transfers all along and `replicast client transfers` beside them, as a user
//! runs it. storage-1 is killed with SIGKILL, the writers commit while it is down, it is
//! restarted and the writers commit while it catches up; then storage-2 is killed, and the
//! same. With two replicas per partition every transaction keeps a live replica, so the
//! writers must go on through every phase (each phase waits for a number of commits, not for
//! time). At the end every committed transfer is visible and no other, the sums are kept,
//! the command committed all its transfers, and every partition's replicas hold the same
//! history.
//!
//! The gaps between commits in each phase (from the commits' TIDs) and the command's own
//! summary are printed, not asserted: speed goals live in benchmarks.

use std::time::{Duration, SystemTime};

use replicast_node::ids::Tid;
use replicast_testkit::process::replicas::{
    Writers, all_up_to_date, settle, stop_and_compare, wait_for_table,
};
use replicast_testkit::process::{
    CliTransfers, ClusterSpec, LocalCluster, fanout_section, multicast_section, random_group,
    strategy_name,
};
use replicast_testkit::workload::gaps::CommitGaps;
use replicast_testkit::workload::transfers::INITIAL_BALANCE;
use replicast_transport::fanout::Strategy;

const STORAGES: [&str; 3] = ["storage-1", "storage-2", "storage-3"];
/// Rounds of the writers (one transfer each) every phase waits for.
const ROUNDS: usize = 15;
/// Transfers of `replicast client transfers`, and its accounts.
const CLI_TRANSFERS: usize = 300;
const CLI_ACCOUNTS: u32 = 10;
/// Bounds the command's run after the last phase.
const CLI_LIMIT: Duration = Duration::from_secs(600);

/// One phase of the run: its name and when it began.
struct Phase {
    name: String,
    from: SystemTime,
}

/// Prints, per phase, the writers' commits, commits per second and gaps between commits
/// (counting the gap from the last commit before the phase).
fn print_phases(strategy: Strategy, phases: &[Phase], tids: &[Tid]) {
    let end = SystemTime::now();
    for (index, phase) in phases.iter().enumerate() {
        let to = phases.get(index + 1).map_or(end, |next| next.from);
        let inside: Vec<Tid> = tids
            .iter()
            .copied()
            .filter(|tid| (phase.from..to).contains(&tid.system_time()))
            .collect();
        // The gap a failure opens starts at the last commit before it.
        let before = tids
            .iter()
            .copied()
            .filter(|tid| tid.system_time() < phase.from)
            .max();
        let seconds = to
            .duration_since(phase.from)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        println!(
            "{}: {:<28} {:>4} commits in {seconds:>6.1} s ({:>6.1}/s), {}",
            strategy_name(strategy),
            phase.name,
            inside.len(),
            inside.len() as f64 / seconds.max(0.001),
            CommitGaps::of(before.into_iter().chain(inside.iter().copied())).summary()
        );
    }
}

fn failures_under(strategy: Strategy) {
    let group = random_group();
    let spec = ClusterSpec {
        storage_sections: multicast_section(group),
        ..ClusterSpec::default()
    };
    let mut cluster = LocalCluster::start(&spec);
    let status_config = cluster.client_config("client-4", "");
    let cli_config = cluster.client_config(
        "client-3",
        &format!("{}\n{}", fanout_section(strategy), multicast_section(group)),
    );
    let mut writers = Writers::start(&cluster);
    let cli = CliTransfers::start(&cli_config, CLI_ACCOUNTS, CLI_TRANSFERS, 14);
    let mut phases = vec![Phase {
        name: "all running".to_owned(),
        from: SystemTime::now(),
    }];
    writers.wait_rounds(ROUNDS, "before the first kill");

    for victim in ["storage-1", "storage-2"] {
        phases.push(Phase {
            name: format!("{victim} killed"),
            from: SystemTime::now(),
        });
        cluster.storage(victim).kill();
        writers.wait_rounds(ROUNDS, &format!("while {victim} is down"));
        let survivors: Vec<&str> = STORAGES
            .iter()
            .copied()
            .filter(|name| *name != victim)
            .collect();
        cluster.master_node.wait_running(&survivors);
        writers.wait_rounds(ROUNDS, &format!("after the master ran without {victim}"));

        phases.push(Phase {
            name: format!("{victim} back, catching up"),
            from: SystemTime::now(),
        });
        cluster.start_storage(victim);
        cluster.master_node.wait_running(&STORAGES);
        writers.wait_rounds(ROUNDS, &format!("while {victim} catches up"));
        wait_for_table(&status_config, "every cell up to date", all_up_to_date);
    }
    phases.push(Phase {
        name: "all running again".to_owned(),
        from: SystemTime::now(),
    });
    writers.wait_rounds(ROUNDS, "after both came back");
    let table = wait_for_table(&status_config, "every cell up to date", all_up_to_date);

    let output = cli
        .wait(CLI_LIMIT)
        .unwrap_or_else(|| panic!("replicast client transfers did not end within {CLI_LIMIT:?}"));
    assert!(
        output.status.success(),
        "replicast client transfers failed: {}",
        output.stderr
    );
    println!(
        "{}: replicast client transfers: {}",
        strategy_name(strategy),
        output.stdout.trim()
    );
    let expected_sum = format!("sum {}", INITIAL_BALANCE * i64::from(CLI_ACCOUNTS));
    assert!(
        output
            .stdout
            .starts_with(&format!("committed {CLI_TRANSFERS}, "))
            && output.stdout.trim_end().ends_with(&expected_sum),
        "the command committed every transfer and checked the sum: {:?}",
        output.stdout
    );

    let (commits, accounts) = writers.stop_and_check();
    let tids: Vec<Tid> = commits.iter().map(|commit| commit.tid).collect();
    print_phases(strategy, &phases, &tids);
    let table = settle(&status_config, &table);
    stop_and_compare(cluster, &table, &commits, &accounts);
}

#[test]
fn transfers_go_on_across_killed_storages_with_unicast_stores() {
    failures_under(Strategy::Unicast);
}

#[test]
fn transfers_go_on_across_killed_storages_with_multicast_stores() {
    failures_under(Strategy::Multicast);
}

#[test]
fn transfers_go_on_across_killed_storages_with_auto_stores() {
    failures_under(Strategy::Auto);
}
