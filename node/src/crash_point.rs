//! Crash points: exact moments of the protocol at which a process test stops a node, to
//! SIGKILL it there (a primary that decided a commit and told no storage yet, say), where a
//! signal sent from outside at a random time would almost never land.
//!
//! The code that stops the node is compiled in only with the `crash-points` feature, which
//! nothing but the root package's tests turns on (a feature of its dev-dependency on this
//! crate: the `replicast` binary that `cargo test` or nextest builds for those tests has it,
//! the one `cargo build` makes does not). Without it there is no crash point at all; with it,
//! none fires unless a test arms it:
//!
//! - every node started with [`DIRECTORY_VARIABLE`] set looks for armed crash points in that
//!   directory; a crash point `NAME` is armed by creating the file `NAME` there;
//! - the first process to reach an armed crash point removes the file (so it fires once, in
//!   one process, although every node of a test cluster shares the directory), prints
//!   [`LINE_PREFIX`]` NAME` on its standard output and stops itself with SIGSTOP: nothing after
//!   the point runs, and the test, seeing the line, SIGKILLs it.
//!
//! The crash points are in the drivers, never in the sans-IO roles, each a constant here:
//! - [`PRIMARY_DECIDED`]: the primary's driver is about to send a storage the finish of a
//!   commit, which the master releases only once its decision is in the group's log (its
//!   client may have been answered already, from the same log entry).

/// The environment variable naming the directory of armed crash points.
pub const DIRECTORY_VARIABLE: &str = "REPLICAST_CRASH_POINTS";

/// The start of the line a node prints on its standard output when it stops at a crash point:
/// `crash-point NAME`.
pub const LINE_PREFIX: &str = "crash-point";

/// A primary's commit decision is in its group's log, and the first [`Finish`] of it is about
/// to go to a voter: no storage has heard of the decision yet.
///
/// [`Finish`]: crate::protocol::Message::Finish
pub const PRIMARY_DECIDED: &str = "primary-decided";

/// The driver is about to send `message`: stops at the crash point it reaches, if armed.
#[cfg(feature = "crash-points")]
pub fn sending(message: &crate::protocol::Message) {
    use crate::protocol::Message;
    if let Message::FromPrimary { message, .. } = message
        && matches!(*message.0, Message::Finish { .. })
    {
        reached(PRIMARY_DECIDED);
    }
}

/// Stops this process at crash point `name` if a test armed it (see the [module
/// documentation](self)); returns at once otherwise.
#[cfg(feature = "crash-points")]
pub fn reached(name: &str) {
    use std::io::Write as _;
    use std::sync::OnceLock;

    static DIRECTORY: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let Some(directory) = DIRECTORY
        .get_or_init(|| std::env::var_os(DIRECTORY_VARIABLE).map(std::path::PathBuf::from))
    else {
        return;
    };
    // Removing the file is the claim: of the processes that reach the point, one succeeds.
    if std::fs::remove_file(directory.join(name)).is_err() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    // The test waits for this line; without it, it fails on its bound, naming the point.
    let _ = writeln!(stdout, "{LINE_PREFIX} {name}").and_then(|()| stdout.flush());
    drop(stdout);
    // SAFETY: raise only signals this process; SIGSTOP stops every thread of it at once.
    unsafe { libc::raise(libc::SIGSTOP) };
}
