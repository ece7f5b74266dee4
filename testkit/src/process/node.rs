//! [`NodeProcess`]: one `replicast node` child process, its output read line by line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{WAIT, binary};
use crate::TestkitError;

/// How often [`NodeProcess::shutdown`] looks whether the process exited.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// A running `replicast node`: its standard output, line by line, comes out of an internal
/// channel that disconnects when the process closes its output (it exited). Killed when
/// dropped while still running, never left behind.
///
/// The methods returning `Result` are for harnesses that report errors (the bench); the
/// others are for tests, bounded by [`WAIT`], and panic with the reason.
pub struct NodeProcess {
    /// The node's name, as in its configuration.
    pub name: String,
    /// The process.
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Where its standard error goes, when a file: an early exit is reported with the end of
    /// it (the only account of why, when the harness that ran the test kept nothing else).
    stderr_file: Option<PathBuf>,
}

/// How much of the end of a node's standard error file an early exit reports.
const STDERR_TAIL: usize = 4000;

impl NodeProcess {
    /// Starts `command` (a `replicast node`, run directly or some other way, e.g. under
    /// `ip netns exec`) with no standard input and its standard output piped to
    /// [`next_line`](Self::next_line); its standard error is what `command` says (inherited
    /// unless set).
    pub fn spawn(name: &str, command: &mut Command) -> Result<Self, TestkitError> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| TestkitError::setup(format!("starting {name}"), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| TestkitError::setup(format!("starting {name}"), "no standard output"))?;
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            stderr_file: None,
        })
    }

    /// The next line of output that `accept` takes, waiting at most `bound`.
    pub fn next_line<T>(
        &self,
        what: &str,
        bound: Duration,
        accept: impl Fn(&str) -> Option<T>,
    ) -> Result<T, TestkitError> {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(value) = accept(&line) {
                        return Ok(value);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(TestkitError::timeout(
                        format!("{} printed no {what}", self.name),
                        bound,
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(TestkitError::setup(
                        format!("{} printed no {what}", self.name),
                        format!("it closed its output (exited){}", self.stderr_tail()),
                    ));
                }
            }
        }
    }

    /// Records that the node's standard error goes to `path` (see [`stderr_tail`](Self::stderr_tail)).
    pub fn with_stderr_file(mut self, path: PathBuf) -> Self {
        self.stderr_file = Some(path);
        self
    }

    /// The end of the node's standard error file, as a suffix for an error message (empty when
    /// its standard error is not a file or the file cannot be read).
    pub fn stderr_tail(&self) -> String {
        let Some(path) = &self.stderr_file else {
            return String::new();
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return String::new();
        };
        let mut start = text.len().saturating_sub(STDERR_TAIL);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        format!(
            "; the end of its standard error ({}):\n{}",
            path.display(),
            &text[start..]
        )
    }

    /// SIGTERM, then a wait bounded by `bound` for the exit, then SIGKILL: whatever happens,
    /// the process is gone when this returns.
    pub fn shutdown(mut self, bound: Duration) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill only signals the child this process started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            // A pause between two looks at the child, bounded by the deadline.
            thread::sleep(EXIT_POLL);
        }
        // Drop kills it.
    }

    /// Starts `replicast node --config CONFIG` (the binary of [`binary`]).
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn start(name: &str, config: &Path) -> Self {
        Self::start_command(
            name,
            Command::new(binary())
                .args(["node", "--config"])
                .arg(config),
        )
    }

    /// Starts `command` as [`spawn`](Self::spawn) does.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn start_command(name: &str, command: &mut Command) -> Self {
        Self::spawn(name, command).unwrap_or_else(|error| panic!("{error}"))
    }

    /// The next line of output that `accept` takes, bounded by [`WAIT`].
    ///
    /// # Panics
    /// When none comes in time.
    pub fn wait_for<T>(&self, what: &str, accept: impl Fn(&str) -> Option<T>) -> T {
        self.next_line(what, WAIT, accept)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Waits for the `ready NAME ADDRESS` line; returns the address.
    ///
    /// # Panics
    /// When none comes in time or its address does not parse.
    pub fn wait_ready(&self) -> SocketAddr {
        let prefix = format!("ready {} ", self.name);
        self.wait_for("ready line", |line| {
            line.strip_prefix(&prefix)
                .map(|address| address.parse().expect("the ready line ends in an address"))
        })
    }

    /// Waits for the master's `running ...` line naming exactly `storages` (sorted).
    ///
    /// # Panics
    /// When it does not come in time.
    pub fn wait_running(&self, storages: &[&str]) {
        let mut sorted = storages.to_vec();
        sorted.sort_unstable();
        let expected = format!("running {}", sorted.join(","));
        self.wait_for(&format!("line {expected:?}"), |line| {
            (line == expected).then_some(())
        });
    }

    /// Sends `signal` (as `kill` takes it: `-TERM`, `-KILL`, ...).
    ///
    /// # Panics
    /// When `kill` fails.
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
    ///
    /// # Panics
    /// When it does not exit in time.
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

    /// SIGTERM, then waits for the exit.
    ///
    /// # Panics
    /// Unless the node exits 0 in time.
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
    ///
    /// # Panics
    /// Unless the node ends abnormally in time.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        let status = self.wait_exit();
        assert!(!status.success(), "SIGKILL ends {} abnormally", self.name);
    }
}

impl Drop for NodeProcess {
    /// A node still running when its owner drops it (test passed or failed) is killed.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
