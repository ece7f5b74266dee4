//! The process harness: `replicast` run as a child process — one-shot commands
//! ([`replicast`], [`client`], [`put`], [`get`]), nodes ([`NodeProcess`]), a local cluster of
//! them on 127.0.0.1 ([`LocalCluster`]), in-process clients of that cluster ([`clients`]) and
//! the replication checks the process tests share ([`replicas`]), and `replicast client
//! transfers` run beside a cluster ([`CliTransfers`]).
//!
//! The binary is found by [`binary`]. These helpers are for tests: every wait is bounded by
//! [`WAIT`] and a failure panics with the reason, except [`NodeProcess`]'s methods that return
//! a `Result` (for the bench).
//!
//! ```no_run
//! use replicast_testkit::process::{ClusterSpec, LocalCluster, get, put};
//!
//! let cluster = LocalCluster::start(&ClusterSpec::default());
//! let config = cluster.client_config("client-1", "");
//! let tid = put(&config, 7, "hello");
//! assert_eq!(get(&config, 7), (tid, "hello".to_owned()));
//! cluster.stop();
//! ```

pub mod clients;
mod crash_points;
mod local_cluster;
pub mod masters;
mod node;
pub mod peer;
pub mod replicas;
mod transfers_cli;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::Duration;

pub use clients::{
    CALL_WAIT, client_driver_config, client_endpoint, connect, connect_masters, fanout_section,
    multicast_section, random_group, random_u64, strategy_name,
};
pub use local_cluster::{ClusterSpec, LocalCluster, common_sections, free_port, write_config};
pub use node::NodeProcess;
pub use transfers_cli::{CliTransfers, CliTransfersOutput};

/// Bounds every single wait on a process.
pub const WAIT: Duration = Duration::from_secs(60);

/// The environment variable that names the `replicast` binary to run, overriding the search of
/// [`binary`].
pub const BINARY_VARIABLE: &str = "REPLICAST_BIN";

/// The `replicast` binary the harness runs: `$REPLICAST_BIN` when set, else the one Cargo
/// (or nextest) built for the running integration test, found from what they set at run time
/// or beside the test executable (`target/PROFILE/replicast` for
/// `target/PROFILE/deps/TEST-HASH`).
///
/// Cargo builds the binary for the integration tests of the root package only: other tests
/// (of the member crates) must not start processes.
///
/// # Panics
/// When no binary is found, naming where it looked.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| find_binary().unwrap_or_else(|error| panic!("{error}")))
}

fn find_binary() -> Result<PathBuf, String> {
    for variable in [
        BINARY_VARIABLE,
        "NEXTEST_BIN_EXE_replicast",
        "CARGO_BIN_EXE_replicast",
    ] {
        if let Some(path) = std::env::var_os(variable) {
            return Ok(PathBuf::from(path));
        }
    }
    let test = std::env::current_exe().map_err(|e| format!("locating the test executable: {e}"))?;
    let mut dir = test.parent();
    if dir.is_some_and(|dir| dir.ends_with("deps")) {
        dir = dir.and_then(Path::parent);
    }
    let candidate = dir
        .map(|dir| dir.join(format!("replicast{}", std::env::consts::EXE_SUFFIX)))
        .ok_or_else(|| format!("{} has no directory", test.display()))?;
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(format!(
            "no replicast binary at {}: run the root package's integration tests with cargo \
             test or cargo nextest (which build it), build it with `cargo build --bin \
             replicast`, or name one in ${BINARY_VARIABLE}",
            candidate.display()
        ))
    }
}

/// Runs `replicast ARGS` (bounded by [`WAIT`]); returns its standard output, trimmed, or its
/// standard error when it failed.
pub fn replicast(args: &[&str]) -> Result<String, String> {
    run(
        Command::new(binary()).args(args),
        &format!("replicast {args:?}"),
    )
}

/// Runs `replicast client --timeout 20 --config CONFIG ARGS` (bounded by [`WAIT`]); returns its
/// output, trimmed, or its standard error when it failed.
pub fn client(config: &Path, args: &[&str]) -> Result<String, String> {
    run(
        Command::new(binary())
            .args(["client", "--timeout", "20", "--config"])
            .arg(config)
            .args(args),
        &format!("replicast client {args:?}"),
    )
}

/// What a finished command gave: its exit code, standard output and standard error.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `command` to its end, bounded by [`WAIT`] (killed after it); returns its standard
/// output, trimmed, or its standard error when it failed.
pub fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let outcome = output(command, what);
    if outcome.code == Some(0) {
        Ok(outcome.stdout.trim_end().to_owned())
    } else {
        Err(outcome.stderr)
    }
}

/// Runs `command` to its end, bounded by [`WAIT`] (killed after it); returns what it gave.
///
/// # Panics
/// When it cannot be started or does not finish in time.
pub fn output(command: &mut Command, what: &str) -> Outcome {
    output_with_input(command, Stdio::null(), what)
}

/// As [`output`], with `input` as the command's standard input (e.g. a file:
/// `Stdio::from(File::open(path)?)`).
///
/// # Panics
/// When the command cannot be started or does not finish within [`WAIT`].
pub fn output_with_input(command: &mut Command, input: Stdio, what: &str) -> Outcome {
    let mut child = command
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("start {what}: {error}"));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (sender, outputs) = mpsc::channel();
    thread::spawn(move || {
        let read = |pipe: &mut dyn std::io::Read| {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        };
        let out = read(&mut stdout);
        let err = read(&mut stderr);
        let _ = sender.send((out, err));
    });
    let Ok((stdout, stderr)) = outputs.recv_timeout(WAIT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not finish within {WAIT:?}");
    };
    let status = child.wait().expect("reap the child");
    Outcome {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// `replicast client put OID DATA`; returns the TID it prints (checked to be 16 hex digits).
///
/// # Panics
/// When the command fails or prints no TID.
pub fn put(config: &Path, oid: u64, data: &str) -> String {
    let tid = client(config, &["put", &oid.to_string(), data])
        .unwrap_or_else(|error| panic!("put {oid} {data}: {error}"));
    assert!(
        tid.len() == 16 && u64::from_str_radix(&tid, 16).is_ok(),
        "put prints a TID: {tid:?}"
    );
    tid
}

/// [`put`], again while its transaction aborts (an attempt may fall on a failover of the
/// master: its transaction then aborts, and a writer retries); the TID it prints.
///
/// # Panics
/// When the command fails otherwise, or aborts five times in a row.
pub fn put_retrying(config: &Path, oid: u64, data: &str) -> String {
    let mut last = String::new();
    for _ in 0..5 {
        match client(config, &["put", &oid.to_string(), data]) {
            Ok(tid) => return tid,
            Err(error) if error.contains("transaction aborted") => last = error,
            Err(error) => panic!("put {oid} {data}: {error}"),
        }
    }
    panic!("put {oid} {data} aborted 5 times: {last}");
}

/// `replicast client get OID`; returns `(serial, data)`.
///
/// # Panics
/// When the command fails or prints no `SERIAL DATA`.
pub fn get(config: &Path, oid: u64) -> (String, String) {
    let line = client(config, &["get", &oid.to_string()])
        .unwrap_or_else(|error| panic!("get {oid}: {error}"));
    let (serial, data) = line.split_once(' ').expect("get prints SERIAL DATA");
    (serial.to_owned(), data.to_owned())
}
