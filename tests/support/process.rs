//! [`NodeProcess`]: one `replicast node` child process, its output read line by line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use super::{BIN, WAIT};

/// A running `replicast node`: its standard output, line by line, comes out of `lines`; the
/// channel disconnects when the process closes its output (it exited).
pub struct NodeProcess {
    /// The node's name, as in its configuration.
    pub name: String,
    /// The process.
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl NodeProcess {
    /// Starts `replicast node --config CONFIG`.
    pub fn start(name: &str, config: &Path) -> Self {
        Self::start_command(
            name,
            Command::new(BIN).args(["node", "--config"]).arg(config),
        )
    }

    /// Starts `command` (a `replicast node` run some other way, e.g. under `ip netns exec`),
    /// with its standard output piped to [`lines`](Self::wait_for).
    pub fn start_command(name: &str, command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("start {name}: {error}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// The next line of output that `accept` takes, bounded by [`WAIT`].
    pub fn wait_for<T>(&self, what: &str, accept: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(value) = accept(&line) {
                        return value;
                    }
                }
                Err(error) => panic!("{}: no {what} ({error})", self.name),
            }
        }
    }

    /// Waits for the `ready NAME ADDRESS` line; returns the address.
    pub fn wait_ready(&self) -> SocketAddr {
        let prefix = format!("ready {} ", self.name);
        self.wait_for("ready line", |line| {
            line.strip_prefix(&prefix)
                .map(|address| address.parse().expect("the ready line ends in an address"))
        })
    }

    /// Waits for the master's `running ...` line naming exactly `storages` (sorted).
    pub fn wait_running(&self, storages: &[&str]) {
        let mut sorted = storages.to_vec();
        sorted.sort_unstable();
        let expected = format!("running {}", sorted.join(","));
        self.wait_for(&format!("line {expected:?}"), |line| {
            (line == expected).then_some(())
        });
    }

    /// Sends `signal` (as `kill` takes it: `-TERM`, `-KILL`, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded by [`WAIT`]) for the process to close its output, then reaps it.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{} did not exit within {WAIT:?}", self.name)
                }
            }
        }
        self.child.wait().expect("reap the node")
    }

    /// SIGTERM, then waits for the exit; panics unless the node exits 0.
    pub fn stop(&mut self) {
        self.signal("-TERM");
        let status = self.wait_exit();
        assert!(
            status.success(),
            "{} exits 0 on SIGTERM: {status}",
            self.name
        );
    }

    /// SIGKILL, then waits for the exit.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        let status = self.wait_exit();
        assert!(!status.success(), "SIGKILL ends {} abnormally", self.name);
    }
}

impl Drop for NodeProcess {
    /// A node still running when its test ends (passed or failed) is killed, never left behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
