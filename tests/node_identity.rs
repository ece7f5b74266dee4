//! One identity per process, and a binary-safe command (issue 14), against a cluster of
//! processes (one master, three storages, P = 12, R = 2):
//!
//! - 64 MiB of random bytes go through `replicast client put --file F` and `put --file -`
//!   (standard input) and come back byte-exact through `get --output F`; `get --hex` prints
//!   bytes that are not text; `new-oid` hands out ids that are new.
//! - Eight `replicast client transfers` processes with one configuration (one certificate)
//!   run at once: each is a session of its own, all commit every transfer and keep their sums;
//!   once they exited, `replicast status` lists none of them within a few seconds.
//! - A second process started with storage-1's configuration (on another port and file) is
//!   refused, exits naming the running storage-1, and the running one is not disturbed.
//! - The same for a master: tests/master_identity.rs.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use replicast_testkit::process::{
    CliTransfers, ClusterSpec, LocalCluster, WAIT, binary, client, free_port, get, output,
    output_with_input, put, write_config,
};
use replicast_testkit::workload::transfers::INITIAL_BALANCE;

/// 64 MiB.
const BIG: usize = 64 << 20;
/// Client processes sharing one configuration.
const CLIENTS: usize = 8;
/// Transfers of each, and its accounts.
const TRANSFERS: usize = 30;
const ACCOUNTS: u32 = 4;

/// `replicast client --timeout 120 --config CONFIG ARGS` with `input` as standard input;
/// its standard output, trimmed.
fn client_with_input(config: &Path, args: &[&str], input: Stdio) -> String {
    let outcome = output_with_input(
        Command::new(binary())
            .args(["client", "--timeout", "120", "--config"])
            .arg(config)
            .args(args),
        input,
        &format!("replicast client {args:?}"),
    );
    assert_eq!(
        outcome.code,
        Some(0),
        "replicast client {args:?}: {}",
        outcome.stderr
    );
    outcome.stdout.trim_end().to_owned()
}

/// `count` random bytes (from the kernel).
fn random_bytes(count: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; count];
    use std::io::Read as _;
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes
}

#[test]
fn sixty_four_mib_of_random_bytes_round_trip_through_a_file_and_standard_input() {
    let cluster = LocalCluster::start(&ClusterSpec::default());
    let config = cluster.client_config("client-1", "");
    let oids: Vec<u64> = client(&config, &["new-oid", "--count", "2"])
        .unwrap_or_else(|error| panic!("new-oid: {error}"))
        .lines()
        .map(|line| line.parse().expect("new-oid prints decimal ids"))
        .collect();
    assert_eq!(oids.len(), 2, "two new ids");
    assert_ne!(oids[0], oids[1], "new ids differ");

    let data = random_bytes(BIG);
    let source = cluster.root().join("big.bin");
    std::fs::write(&source, &data).expect("write the source file");
    let source_text = source.to_string_lossy().into_owned();

    // Through a file.
    let first = oids[0].to_string();
    let tid = client_with_input(
        &config,
        &["put", &first, "--file", &source_text],
        Stdio::null(),
    );
    assert_eq!(tid.len(), 16, "put prints a TID: {tid:?}");
    let copy = cluster.root().join("copy-1.bin");
    let serial = client_with_input(
        &config,
        &["get", &first, "--output", &copy.to_string_lossy()],
        Stdio::null(),
    );
    assert_eq!(serial, tid, "get --output prints the serial");
    assert!(
        std::fs::read(&copy).expect("read the copy") == data,
        "the bytes read back through a file are those written"
    );

    // Through standard input.
    let second = oids[1].to_string();
    let input = File::open(&source).expect("open the source file");
    client_with_input(
        &config,
        &["put", &second, "--file", "-"],
        Stdio::from(input),
    );
    let copy = cluster.root().join("copy-2.bin");
    client_with_input(
        &config,
        &["get", &second, "--output", &copy.to_string_lossy()],
        Stdio::null(),
    );
    assert!(
        std::fs::read(&copy).expect("read the copy") == data,
        "the bytes read back from standard input are those written"
    );

    // Bytes that are not text: refused as text, printed in hexadecimal with --hex.
    let small = cluster.root().join("small.bin");
    std::fs::write(&small, [0x00, 0xff, 0xfe, 0x41]).expect("write a small file");
    let tid = client_with_input(
        &config,
        &["put", &first, "--file", &small.to_string_lossy()],
        Stdio::null(),
    );
    assert_eq!(
        client(&config, &["get", &first, "--hex"]).expect("get --hex"),
        format!("{tid} 00fffe41")
    );
    let error = client(&config, &["get", &first]).expect_err("binary bytes are not text");
    assert!(
        error.contains("--output"),
        "the error points to --output: {error}"
    );
    cluster.stop();
}

/// Whether `replicast status --json` shows a node or a link named after `client`.
fn status_shows(status_config: &Path, client_name: &str) -> bool {
    let outcome = output(
        Command::new(binary())
            .args(["status", "--json", "--config"])
            .arg(status_config),
        "replicast status --json",
    );
    assert_eq!(outcome.code, Some(0), "status: {}", outcome.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&outcome.stdout).expect("status prints JSON");
    let named = |value: &serde_json::Value| {
        value
            .as_str()
            .is_some_and(|name| name == client_name || name.starts_with(&format!("{client_name}#")))
    };
    json["nodes"].as_array().into_iter().flatten().any(|node| {
        named(&node["name"])
            || node["links"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|link| named(&link["peer"]))
    })
}

#[test]
fn eight_client_processes_with_one_configuration_all_commit_and_leave_no_link() {
    let cluster = LocalCluster::start(&ClusterSpec::default());
    let config = cluster.client_config("client-1", "");
    let status_config = cluster.client_config("client-4", "");
    let runs: Vec<CliTransfers> = (0..CLIENTS)
        .map(|seed| CliTransfers::start(&config, ACCOUNTS, TRANSFERS, seed as u64 + 1))
        .collect();
    let expected_sum = format!("sum {}", INITIAL_BALANCE * i64::from(ACCOUNTS));
    for (index, run) in runs.into_iter().enumerate() {
        let output = run
            .wait(WAIT * 5)
            .unwrap_or_else(|| panic!("client process {index} did not end in time"));
        assert!(
            output.status.success(),
            "client process {index} failed: {}",
            output.stderr
        );
        assert!(
            output
                .stdout
                .starts_with(&format!("committed {TRANSFERS}, "))
                && output.stdout.trim_end().ends_with(&expected_sum),
            "client process {index} committed every transfer and kept its sum: {:?}",
            output.stdout
        );
    }

    // Every process exited: their links go with their connections.
    let deadline = Instant::now() + WAIT;
    while status_shows(&status_config, "client-1") {
        assert!(
            Instant::now() < deadline,
            "status still lists client-1 {WAIT:?} after its processes exited"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    cluster.stop();
}

#[test]
fn a_second_process_with_a_running_storages_name_is_refused_and_the_first_goes_on() {
    let cluster = LocalCluster::start(&ClusterSpec::default());
    let config = cluster.client_config("client-1", "");
    let before = put(&config, 1_000_001, "before");

    let running = cluster.storage_address("storage-1");
    let original =
        std::fs::read_to_string(cluster.config("storage-1")).expect("read storage-1's config");
    let elsewhere = format!("127.0.0.1:{}", free_port());
    let second = original
        .replace(
            &format!("listen = \"{running}\""),
            &format!("listen = \"{elsewhere}\""),
        )
        .replace("data/storage-1.redb", "data/storage-1-second.redb");
    assert_ne!(second, original, "the second process listens elsewhere");
    let second = write_config(cluster.root(), "storage-1-second", &second);
    let outcome = output(
        Command::new(binary())
            .args(["node", "--config"])
            .arg(&second)
            .current_dir(cluster.root()),
        "a second storage-1",
    );
    assert_ne!(outcome.code, Some(0), "the second process must not run");
    assert!(
        outcome.stderr.contains("storage-1 is already running at")
            && outcome.stderr.contains(&running.to_string()),
        "the refusal names the running storage-1 at {running}: {}",
        outcome.stderr
    );

    // The running storage-1 was not disturbed: the cluster commits and reads as before.
    assert_eq!(get(&config, 1_000_001), (before, "before".to_owned()));
    let after = put(&config, 1_000_002, "after");
    assert_eq!(get(&config, 1_000_002), (after, "after".to_owned()));
    cluster.stop();
}
