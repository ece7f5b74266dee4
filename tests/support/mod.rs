//! What the process tests share: starting `replicast node` processes, a local cluster of them,
//! and running `replicast client`.
//!
//! Each test file that needs it declares `mod support;`; not every file uses every item.
#![allow(dead_code, unused_imports)]

mod clients;
mod cluster;
pub mod peer;
mod process;
pub mod replicas;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

pub use clients::{
    CALL_WAIT, client_driver_config, client_endpoint, connect, fanout_section, multicast_section,
    random_group, random_u64, strategy_name,
};
pub use cluster::{ClusterSpec, LocalCluster, common_sections, free_port, write_config};
pub use process::NodeProcess;

/// The `replicast` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_replicast");
/// Bounds every single wait on a process.
pub const WAIT: Duration = Duration::from_secs(60);

/// Runs `replicast ARGS` (bounded by [`WAIT`]); returns its standard output, trimmed, or its
/// standard error when it failed.
pub fn replicast(args: &[&str]) -> Result<String, String> {
    run(Command::new(BIN).args(args), &format!("replicast {args:?}"))
}

/// Runs `replicast client --timeout 20 --config CONFIG ARGS` (bounded by [`WAIT`]); returns its
/// output, trimmed, or its standard error when it failed.
pub fn client(config: &Path, args: &[&str]) -> Result<String, String> {
    run(
        Command::new(BIN)
            .args(["client", "--timeout", "20", "--config"])
            .arg(config)
            .args(args),
        &format!("replicast client {args:?}"),
    )
}

/// What a finished command gave: its exit code, standard output and standard error.
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
pub fn output(command: &mut Command, what: &str) -> Outcome {
    let mut child = command
        .stdin(Stdio::null())
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
pub fn put(config: &Path, oid: u64, data: &str) -> String {
    let tid = client(config, &["put", &oid.to_string(), data])
        .unwrap_or_else(|error| panic!("put {oid} {data}: {error}"));
    assert!(
        tid.len() == 16 && u64::from_str_radix(&tid, 16).is_ok(),
        "put prints a TID: {tid:?}"
    );
    tid
}

/// `replicast client get OID`; returns `(serial, data)`.
pub fn get(config: &Path, oid: u64) -> (String, String) {
    let line = client(config, &["get", &oid.to_string()])
        .unwrap_or_else(|error| panic!("get {oid}: {error}"));
    let (serial, data) = line.split_once(' ').expect("get prints SERIAL DATA");
    (serial.to_owned(), data.to_owned())
}
