//! `replicast backup --follow --to DIR`: a standing backup, and `replicast backup status DIR`.
//!
//! Every `--interval` the follower reports where the backup is to the primary master
//! ([`Message::ReportBackup`]), which answers with its status (the last commit and the
//! `complete_tid` every readable cell holds); whenever `complete_tid` is past the backup's TID
//! (or an interrupted run left `partial.json`) it runs one incremental round, as `replicast
//! backup` does, at the pace of `--rate`, reporting every interval meanwhile and once more when
//! the round is done. Polling, not the master's invalidations: those go to clients only (a
//! follower with an `admin` certificate is no client, and should not hold one), and one
//! question a second is as prompt for a backup, costs the master nothing it does not do for
//! `replicast status`, and tells the follower `complete_tid`, which invalidations do not.
//! The follower keeps one endpoint for the whole run ([`MasterClient`]): a question is one
//! request stream on the connection it already has, not a new handshake.
//!
//! Where the backup is shows in two places:
//! - `replicast status`, from the primary: the backup's TID, how far behind the last commit
//!   it is, its last error, and STALE when its reports stopped coming (see the master's
//!   `backups` module: kept in memory only, not in the masters' log);
//! - `DIR/follow.json` (replaced atomically after every question and round), which
//!   `replicast backup status DIR` prints: it needs no master, so it still says how far the
//!   backup got while the cluster is down, which is when one wants to know.
//!
//! SIGTERM or SIGINT stops it at once: a round in progress is dropped (its finished partitions
//! stay in `partial.json`, which the next run resumes; its temporary files are removed), the
//! master is told it stopped, and the manifest, only ever replaced whole, describes the last
//! complete round.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use replicast_node::ids::Tid;
use replicast_node::protocol::{BackupReport, BackupState, ClusterStatus, Message};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};

use super::Error;
use super::backup::{Run, hex_tid};
use super::master_client::MasterClient;
use super::status::{answered_status, request_id};

/// The status file in the backup directory.
const STATUS: &str = "follow.json";
/// The longest wait for the master to take the report that the follower stopped (and the
/// shortest for a report during a round).
const STOP_REPORT_WAIT: Duration = Duration::from_secs(2);

/// `follow.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct FollowStatus {
    /// The follower's process id.
    pid: u32,
    /// `following`, `fetching`, `retrying` (the last question or round failed: `error`
    /// says why) or `stopped`.
    state: String,
    /// The TID the backup is consistent at (16 hex digits).
    backup_tid: String,
    /// The cluster's last commit when last asked.
    cluster_last_tid: String,
    /// Whether the backup holds every commit of the cluster when last asked.
    caught_up: bool,
    /// How far behind the cluster's last commit the backup is, in seconds of the TIDs' clock.
    seconds_behind: f64,
    /// When the master was last asked (seconds since the Unix epoch).
    checked_at: f64,
    /// Rounds done (each adds the transactions after the previous TID).
    rounds: u64,
    /// Partition transactions and bytes the last round fetched.
    last_round_transactions: u64,
    last_round_bytes: u64,
    /// The bandwidth bound, bytes per second.
    rate: Option<u64>,
    /// Why the last question or round failed.
    error: Option<String>,
    /// The backup's TID (as `backup_tid`).
    #[serde(skip)]
    backup: Tid,
}

impl FollowStatus {
    /// Records what the master said against the backup's TID.
    fn observe(&mut self, backup: Tid, cluster: &ClusterStatus) {
        let last = Tid(cluster.last_tid);
        self.backup = backup;
        self.backup_tid = hex_tid(backup);
        self.cluster_last_tid = hex_tid(last);
        self.caught_up = backup >= last;
        self.seconds_behind = if backup >= last {
            0.0
        } else {
            last.system_time()
                .duration_since(backup.system_time())
                .map_or(0.0, |lag| lag.as_secs_f64())
        };
        self.checked_at = unix_seconds(SystemTime::now());
    }
}

impl FollowStatus {
    /// What the master is told ([`Message::ReportBackup`]).
    fn report(&self, reporting: &Reporting) -> BackupReport {
        BackupReport {
            directory: reporting.directory.clone(),
            backup_tid: self.backup.0,
            state: match self.state.as_str() {
                "fetching" => BackupState::Fetching,
                "retrying" => BackupState::Retrying,
                "stopped" => BackupState::Stopped,
                _ => BackupState::Following,
            },
            interval_millis: u64::try_from(reporting.interval.as_millis()).unwrap_or(u64::MAX),
            rate: self.rate,
            rounds: self.rounds,
            last_round_bytes: self.last_round_bytes,
            error: self.error.clone(),
        }
    }
}

/// What the follower tells the master who it is and how often it reports.
struct Reporting {
    /// The backup directory, absolute: which backup of the certificate's name this is.
    directory: String,
    interval: Duration,
}

/// Reports `status` to the primary on `master`'s connection, bounded by `timeout`; returns
/// the status the primary answered with.
async fn report(
    master: &mut MasterClient,
    status: &FollowStatus,
    reporting: &Reporting,
    timeout: Duration,
) -> Result<ClusterStatus, Error> {
    let request = request_id();
    let message = Message::ReportBackup {
        request,
        report: status.report(reporting),
    };
    let (answer, _, _) = master.ask(&message, timeout).await?;
    answered_status(answer, request, "ReportBackup")
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// Writes `status` to `DIR/follow.json` (a temporary file renamed over it: a reader never sees
/// half of it).
fn write_status(dir: &Path, status: &FollowStatus) -> Result<(), Error> {
    let path = dir.join(STATUS);
    let temporary = dir.join(".follow.json.tmp");
    let text = serde_json::to_string_pretty(status)
        .map_err(|e| format!("cannot write the follow status: {e}"))?;
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// Runs the standing backup of `run` until SIGTERM or SIGINT, asking the master every
/// `interval`. The first question or round failing ends it (a wrong certificate or address
/// shows at once); later failures (a master failover, a storage down) are retried at the next
/// interval, and `follow.json` says why meanwhile.
pub(super) async fn follow(run: &Run, interval: Duration) -> Result<(), Error> {
    // Installed before any work: a signal sent at any later point stops the follower.
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| format!("cannot install the SIGINT handler: {e}"))?;
    let mut status = FollowStatus {
        pid: std::process::id(),
        state: "following".into(),
        rate: rate_of(run),
        ..FollowStatus::default()
    };
    let directory = std::path::absolute(&run.dir)
        .map_err(|e| format!("cannot name {}: {e}", run.dir.display()))?;
    let reporting = Reporting {
        directory: directory.display().to_string(),
        interval,
    };
    let mut master = MasterClient::new(&run.config)?;
    let mut first = true;
    // Bounded by the signals: one question (and maybe one round) per interval.
    loop {
        let step = step(run, &mut master, &mut status, &reporting);
        let outcome = tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            outcome = step => outcome,
        };
        match outcome {
            Ok(()) => {
                status.state = "following".into();
                status.error = None;
            }
            Err(error) if first => {
                status.state = "stopped".into();
                status.error = Some(error.to_string());
                write_status(&run.dir, &status)?;
                master.close().await;
                return Err(error);
            }
            Err(error) => {
                let message = error.to_string();
                if status.error.as_deref() != Some(message.as_str()) {
                    tracing::warn!("backup --follow: {message}; retrying every {interval:?}");
                }
                status.state = "retrying".into();
                status.error = Some(message);
            }
        }
        first = false;
        write_status(&run.dir, &status)?;
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    run.remove_temporaries()?;
    status.state = "stopped".into();
    status.backup = run.backup_tid()?;
    status.backup_tid = hex_tid(status.backup);
    write_status(&run.dir, &status)?;
    // The master shows it stopped rather than, a few intervals later, stale. Best effort and
    // bounded: the master may be the reason it was stopped.
    if let Err(error) = report(&mut master, &status, &reporting, STOP_REPORT_WAIT).await {
        tracing::info!("backup --follow: could not tell the master it stopped: {error}");
    }
    master.close().await;
    writeln!(
        std::io::stdout().lock(),
        "stopped following; backup at {}",
        status.backup_tid
    )
    .map_err(|e| format!("cannot write the report: {e}"))?;
    Ok(())
}

fn rate_of(run: &Run) -> Option<u64> {
    run.pacer.as_ref().map(|pacer| {
        pacer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .rate()
    })
}

/// One report to the master (answered with its status), and a round when the cluster is
/// ahead of the backup, reported every interval while it runs and once when it is done.
async fn step(
    run: &Run,
    master: &mut MasterClient,
    status: &mut FollowStatus,
    reporting: &Reporting,
) -> Result<(), Error> {
    status.backup = run.backup_tid()?;
    let cluster = report(master, status, reporting, run.timeout).await?;
    let backup = run.backup_tid()?;
    status.observe(backup, &cluster);
    if Tid(cluster.complete_tid) > backup || run.has_partial() {
        status.state = "fetching".into();
        write_status(&run.dir, status)?;
        let round = run.round(&cluster);
        tokio::pin!(round);
        // Bounded by the round: one report per interval while it runs, so that the master
        // does not count a follower busy with a long round as gone.
        let round = loop {
            tokio::select! {
                round = &mut round => break round?,
                () = tokio::time::sleep(reporting.interval) => {
                    // A report that fails here is not the round's failure: the next one
                    // tries again, and the master shows the follower stale meanwhile.
                    let wait = reporting.interval.clamp(STOP_REPORT_WAIT, run.timeout);
                    if let Err(error) = report(master, status, reporting, wait).await {
                        tracing::debug!("backup --follow: a report during a round: {error}");
                    }
                }
            }
        };
        status.rounds += 1;
        status.last_round_transactions = round.transactions;
        status.last_round_bytes = round.bytes;
        status.state = "following".into();
        status.error = None;
        status.observe(round.tid, &cluster);
        // The master learns the new position at once, not an interval later.
        let cluster = report(master, status, reporting, run.timeout).await?;
        status.observe(round.tid, &cluster);
    }
    Ok(())
}

/// Prints `DIR/follow.json` for an operator (`replicast backup status DIR`); exits 1 when
/// there is none or the follower's last question failed.
pub(super) fn print_status(dir: &Path) -> Result<(), Error> {
    let path = dir.join(STATUS);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (no standing backup ran on this directory)",
            path.display()
        )
    })?;
    let status: FollowStatus =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let ago = unix_seconds(SystemTime::now()) - status.checked_at;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} (pid {}): backup at {}, cluster at {} ({}), {:.1} s behind; asked {:.1} s ago; \
         {} rounds, the last {} transactions, {} bytes{}",
        status.state,
        status.pid,
        status.backup_tid,
        status.cluster_last_tid,
        if status.caught_up {
            "caught up"
        } else {
            "behind"
        },
        status.seconds_behind,
        ago.max(0.0),
        status.rounds,
        status.last_round_transactions,
        status.last_round_bytes,
        status
            .rate
            .map(|rate| format!("; rate {rate} B/s"))
            .unwrap_or_default()
    )
    .map_err(|e| format!("cannot write the report: {e}"))?;
    if let Some(error) = &status.error {
        writeln!(out, "last error: {error}")
            .map_err(|e| format!("cannot write the report: {e}"))?;
        return Err(format!("the standing backup's last attempt failed: {error}").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_is_the_tids_clock_difference_and_none_once_caught_up() {
        let backup = Tid::from_system_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let last = Tid::from_system_time(UNIX_EPOCH + Duration::from_secs(1_700_000_090));
        let mut status = FollowStatus::default();
        let table =
            replicast_node::partition::PartitionTable::new(1, 1, &["s1".into()]).expect("a table");
        let cluster = ClusterStatus {
            master: "m".into(),
            term: 1,
            masters: Vec::new(),
            operational: true,
            last_tid: last.0,
            complete_tid: last.0,
            nodes: Vec::new(),
            partition_table: table,
            backups: Vec::new(),
        };
        status.observe(backup, &cluster);
        assert!(!status.caught_up);
        assert!((status.seconds_behind - 90.0).abs() < 0.01, "{status:?}");
        status.observe(last, &cluster);
        assert!(status.caught_up);
        assert_eq!(status.seconds_behind, 0.0);
        assert_eq!(status.backup_tid, status.cluster_last_tid);
    }
}
