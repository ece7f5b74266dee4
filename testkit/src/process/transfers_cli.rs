//! [`CliTransfers`]: `replicast client transfers` as a child process, the way a user runs it
//! beside a cluster, its output collected once it exits.

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::binary;

/// A running `replicast client --timeout 30 --config CONFIG transfers --accounts K --count N
/// --seed S`.
pub struct CliTransfers {
    child: Child,
    output: mpsc::Receiver<(String, String)>,
}

/// What the command printed, and how it exited.
#[derive(Debug)]
pub struct CliTransfersOutput {
    /// How the process exited.
    pub status: ExitStatus,
    /// Its standard output (the summary line).
    pub stdout: String,
    /// Its standard error (the log).
    pub stderr: String,
}

impl CliTransfers {
    /// Starts `replicast client transfers` with `config`, `accounts` accounts, `count`
    /// transfers and `seed`.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn start(config: &Path, accounts: u32, count: usize, seed: u64) -> Self {
        let mut child = Command::new(binary())
            .args(["client", "--timeout", "30", "--config"])
            .arg(config)
            .args([
                "transfers",
                "--accounts",
                &accounts.to_string(),
                "--count",
                &count.to_string(),
                "--seed",
                &seed.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start replicast client transfers");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (sender, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = String::new();
            let mut err = String::new();
            // A pipe that fails to read leaves what was read: the test sees it.
            let _ = stdout.read_to_string(&mut out);
            let _ = stderr.read_to_string(&mut err);
            // The test may have given up waiting.
            let _ = sender.send((out, err));
        });
        Self { child, output }
    }

    /// Waits up to `limit` for the command to exit and returns its output; `None` (the
    /// process killed) when it did not exit in time.
    pub fn wait(mut self, limit: Duration) -> Option<CliTransfersOutput> {
        let Ok((stdout, stderr)) = self.output.recv_timeout(limit) else {
            // Killed so that it does not outlive the test; it may have just exited.
            let _ = self.child.kill();
            let _ = self.child.wait();
            return None;
        };
        let status = self.child.wait().expect("reap replicast client transfers");
        Some(CliTransfersOutput {
            status,
            stdout,
            stderr,
        })
    }
}

impl Drop for CliTransfers {
    /// A command still running when the test ends (passed or failed) is killed.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
