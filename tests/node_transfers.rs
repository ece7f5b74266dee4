//! Transfers against a cluster of processes, once per fan-out strategy: a master and three
//! storages (`replicast node`, P = 12, R = 2, storages joining groups on 127.0.0.1), four
//! concurrent clients each committing 1,000 transfers between random accounts. Three clients
//! run in this process on shared accounts (so they conflict) and are checked together; the
//! fourth is `replicast client transfers`, which checks its own accounts. The sum of the
//! balances is unchanged, every committed transfer is visible and no aborted one is.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use replicast_testkit::process::{
    CliTransfers, CliTransfersOutput, ClusterSpec, LocalCluster, connect, fanout_section,
    multicast_section, random_group, strategy_name,
};
use replicast_testkit::workload::transfers::{self, Commit};
use replicast_transport::fanout::Strategy;

/// Transfers each client commits.
const TRANSFERS: usize = 1_000;
/// Accounts the in-process clients share.
const ACCOUNTS: u32 = 20;
/// Bounds a whole run of transfers (one strategy).
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// Three in-process clients on shared accounts, checked together.
async fn in_process_transfers(cluster: &LocalCluster, strategy: Strategy, group: SocketAddr) {
    let certs = cluster.root().join("certs");
    let mut checker = connect(&certs, "client-1", cluster.master, strategy, group).await;
    let accounts = transfers::create_accounts(&mut checker, ACCOUNTS)
        .await
        .expect("create the accounts");
    let mut clients = vec![checker];
    for name in ["client-2", "client-3"] {
        clients.push(connect(&certs, name, cluster.master, strategy, group).await);
    }
    let mut tasks = Vec::new();
    for (seed, mut client) in clients.into_iter().enumerate() {
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            let run = transfers::run(&mut client, &accounts, TRANSFERS, seed as u64 + 1).await;
            (client, run)
        }));
    }
    let mut clients = Vec::new();
    let mut commits: Vec<Commit> = Vec::new();
    for task in tasks {
        let (client, run) = task.await.expect("transfer task");
        let run = run.expect("every transfer commits within the retry bound");
        println!("{}: {}", strategy_name(strategy), run.summary());
        assert_eq!(run.commits.len(), TRANSFERS);
        commits.extend(run.commits);
        let deliveries = client.fanout_deliveries();
        println!("{}: deliveries {deliveries:?}", strategy_name(strategy));
        let delivered_by = |pick: fn(&replicast_node::driver::FanoutDeliveries) -> u64| -> u64 {
            deliveries.values().map(pick).sum()
        };
        match strategy {
            Strategy::Unicast => {
                assert!(delivered_by(|d| d.unicast) > 0);
                assert_eq!(delivered_by(|d| d.multicast), 0);
            }
            Strategy::Multicast => {
                assert!(delivered_by(|d| d.multicast) > 0);
                assert_eq!(delivered_by(|d| d.unicast), 0);
            }
            Strategy::Auto => assert!(delivered_by(|d| d.multicast) > 0),
        }
        clients.push(client);
    }
    let sum = transfers::check(&mut clients[0], &accounts, &commits)
        .await
        .expect("every committed transfer is visible, no aborted one, the sum is unchanged");
    assert_eq!(sum, transfers::INITIAL_BALANCE * i64::from(ACCOUNTS));
    for client in clients {
        client.close().await.expect("close client");
    }
}

fn transfers_under(strategy: Strategy) {
    let group = random_group();
    let spec = ClusterSpec {
        storage_sections: multicast_section(group),
        ..ClusterSpec::default()
    };
    let cluster = LocalCluster::start(&spec);
    let started = Instant::now();
    // The command's client paces its multicast sender, as a client across a WAN would
    // (`multicast.rate_mbit`: a paced sender also sends parity); the in-process ones do not.
    let cli_config = cluster.client_config(
        "client-4",
        &format!(
            "{}\n{}rate_mbit = 1000\n",
            fanout_section(strategy),
            multicast_section(group)
        ),
    );
    let cli = CliTransfers::start(&cli_config, 10, TRANSFERS, 4);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(RUN_LIMIT, in_process_transfers(&cluster, strategy, group))
            .await
            .expect("the in-process transfers finish in time")
    });
    println!(
        "{}: in-process clients done after {:?}",
        strategy_name(strategy),
        started.elapsed()
    );

    let remaining = RUN_LIMIT.saturating_sub(started.elapsed());
    let Some(CliTransfersOutput {
        status,
        stdout: out,
        stderr: err,
    }) = cli.wait(remaining)
    else {
        panic!("replicast client transfers did not finish within {RUN_LIMIT:?}");
    };
    assert!(status.success(), "replicast client transfers failed: {err}");
    println!(
        "{}: replicast client transfers: {} after {:?}",
        strategy_name(strategy),
        out.trim(),
        started.elapsed()
    );
    let expected_sum = format!("sum {}", transfers::INITIAL_BALANCE * 10);
    assert!(
        out.starts_with(&format!("committed {TRANSFERS}, "))
            && out.trim_end().ends_with(&expected_sum),
        "the command committed every transfer and checked the sum: {out:?}"
    );
    cluster.stop();
}

#[test]
fn transfers_with_unicast_stores() {
    transfers_under(Strategy::Unicast);
}

#[test]
fn transfers_with_multicast_stores() {
    transfers_under(Strategy::Multicast);
}

#[test]
fn transfers_with_auto_stores() {
    transfers_under(Strategy::Auto);
}
