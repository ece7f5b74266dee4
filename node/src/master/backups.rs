//! The standing backups (`replicast backup --follow`) that report to the primary, for
//! `replicast status`: where each backup is, how far behind the last commit, and whether its
//! reports stopped coming.
//!
//! This is soft state, like the nodes' link reports: it lives in the primary's memory only,
//! never in the masters' raft log. A report is worth nothing once the next one comes, losing
//! them all costs one report interval (a new primary hears from every follower at its next
//! report), and writing them to the log would cost a consensus round per report for state
//! nobody decides anything on. A master that stops being primary forgets them.
//!
//! Bounded: at most [`MAX_BACKUPS`] backups (a new one past that replaces the one heard from
//! longest ago), texts cut at [`MAX_TEXT`] bytes, and a backup not heard from for
//! [`FORGET_AFTER`] is dropped.
//!
//! ```
//! use replicast_node::master::{Master, MasterConfig};
//! use replicast_node::partition::PartitionTable;
//! use replicast_node::protocol::{BackupReport, BackupState, Message};
//! use std::time::{Duration, SystemTime};
//!
//! let table = PartitionTable::new(1, 1, &["s1".into()])?;
//! let mut master = Master::new(table, MasterConfig::default())?;
//! let now = SystemTime::now();
//! let report = BackupReport {
//!     directory: "/backups/nightly".into(),
//!     backup_tid: 0,
//!     state: BackupState::Following,
//!     interval_millis: 1000,
//!     rate: None,
//!     rounds: 0,
//!     last_round_bytes: 0,
//!     error: None,
//! };
//! master.answer(now, "admin", Message::ReportBackup { request: 1, report })?;
//! let backups = master.cluster_status().backups;
//! assert_eq!(backups.len(), 1);
//! assert!(backups[0].caught_up && !backups[0].stale, "nothing committed yet");
//! // Three reports missed: stale.
//! master.handle_timeout(now + Duration::from_millis(3500))?;
//! assert!(master.cluster_status().backups[0].stale);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::ids::Tid;
use crate::partition::NodeName;
use crate::protocol::{BackupReport, BackupState, BackupStatus, STALE_AFTER_MISSED};

/// The most standing backups the master keeps reports of.
pub const MAX_BACKUPS: usize = 64;
/// The longest directory name or error text kept of a report, in bytes.
pub const MAX_TEXT: usize = 512;
/// A backup not heard from for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// The shortest report interval the staleness rule assumes (a follower asking more often
/// than this is not counted stale sooner).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A report and when it came.
#[derive(Debug)]
struct Received {
    report: BackupReport,
    at: SystemTime,
}

/// The latest report of each standing backup, by the sender's name and the backup's
/// directory (one operator certificate may run several).
#[derive(Debug)]
pub(super) struct Backups {
    reports: BTreeMap<(NodeName, String), Received>,
    /// The latest time the master was given: what report ages are counted against.
    clock: SystemTime,
}

impl Default for Backups {
    fn default() -> Self {
        Self {
            reports: BTreeMap::new(),
            clock: SystemTime::UNIX_EPOCH,
        }
    }
}

/// `text` cut to at most [`MAX_TEXT`] bytes, at a character boundary.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl Backups {
    /// The master was given `now` (a message, a request or a tick): report ages count from
    /// the latest such time. A clock going back is ignored.
    pub(super) fn saw(&mut self, now: SystemTime) {
        if now > self.clock {
            self.clock = now;
        }
    }

    /// Keeps `report` as the latest of backup `report.directory` of `from`. `from` is the
    /// certificate's name, with or without the process's session (`NAME#SESSION`): a follower
    /// restarted on the same directory replaces its earlier report.
    pub(super) fn record(&mut self, now: SystemTime, from: &str, mut report: BackupReport) {
        self.saw(now);
        report.directory = bounded(report.directory);
        report.error = report.error.map(bounded);
        let clock = self.clock;
        self.reports
            .retain(|_, received| age(clock, received.at) < FORGET_AFTER);
        let name = replicast_transport::quic::node_name(from);
        let key = (name.to_owned(), report.directory.clone());
        if !self.reports.contains_key(&key) && self.reports.len() >= MAX_BACKUPS {
            let oldest = self
                .reports
                .iter()
                .min_by_key(|(_, received)| received.at)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.reports.remove(&oldest);
            }
        }
        self.reports.insert(key, Received { report, at: now });
    }

    /// Forgets every report (this master stopped being the primary).
    pub(super) fn forget(&mut self) {
        self.reports.clear();
    }

    /// Each backup heard from within [`FORGET_AFTER`], measured against `last_tid`, the last
    /// commit.
    pub(super) fn status(&self, last_tid: Tid) -> Vec<BackupStatus> {
        self.reports
            .iter()
            .filter(|(_, received)| age(self.clock, received.at) < FORGET_AFTER)
            .map(|((name, _), received)| {
                let report = &received.report;
                let backup = Tid(report.backup_tid);
                let behind = if backup >= last_tid {
                    Duration::ZERO
                } else {
                    age(last_tid.system_time(), backup.system_time())
                };
                let since = age(self.clock, received.at);
                let interval = Duration::from_millis(report.interval_millis).max(MIN_INTERVAL);
                BackupStatus {
                    name: name.clone(),
                    report: report.clone(),
                    caught_up: backup >= last_tid,
                    behind_millis: millis(behind),
                    report_age_millis: millis(since),
                    // A stopped follower sends no more reports: it is stopped, not stale.
                    stale: report.state != BackupState::Stopped
                        && since > interval.saturating_mul(STALE_AFTER_MISSED),
                }
            })
            .collect()
    }
}

/// How long after `earlier` `later` is (zero when it is not later).
fn age(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(directory: &str, backup_tid: Tid, state: BackupState) -> BackupReport {
        BackupReport {
            directory: directory.into(),
            backup_tid: backup_tid.0,
            state,
            interval_millis: 1000,
            rate: Some(50_000),
            rounds: 2,
            last_round_bytes: 10,
            error: None,
        }
    }

    #[test]
    fn the_lag_is_measured_against_the_last_commit_and_a_silent_follower_goes_stale() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let backup = Tid::from_system_time(start);
        let last = Tid::from_system_time(start + Duration::from_millis(2500));
        let mut backups = Backups::default();
        backups.record(start, "admin", report("/b", backup, BackupState::Following));
        let [shown] = backups.status(last).try_into().expect("one backup");
        assert_eq!(shown.name, "admin");
        assert!(!shown.caught_up);
        assert_eq!(shown.behind_millis, 2500);
        assert!(!shown.stale);
        // Caught up: no lag.
        let [shown] = backups.status(backup).try_into().expect("one backup");
        assert!(shown.caught_up);
        assert_eq!(shown.behind_millis, 0);
        // Three intervals without a report: stale, and the age says how long.
        backups.saw(start + Duration::from_millis(3001));
        let [shown] = backups.status(backup).try_into().expect("one backup");
        assert!(shown.stale);
        assert_eq!(shown.report_age_millis, 3001);
        // A stopped follower is not stale, only stopped.
        backups.record(
            start + Duration::from_millis(3001),
            "admin",
            report("/b", backup, BackupState::Stopped),
        );
        backups.saw(start + Duration::from_secs(60));
        let [shown] = backups.status(backup).try_into().expect("one backup");
        assert!(!shown.stale);
        assert_eq!(shown.report.state, BackupState::Stopped);
        // Not heard from for FORGET_AFTER: gone.
        backups.saw(start + FORGET_AFTER + Duration::from_secs(4));
        assert!(backups.status(backup).is_empty());
    }

    #[test]
    fn reports_are_kept_per_name_and_directory_and_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut backups = Backups::default();
        backups.record(now, "admin", report("/a", Tid(1), BackupState::Following));
        backups.record(now, "admin", report("/b", Tid(1), BackupState::Following));
        backups.record(now, "ops", report("/a", Tid(1), BackupState::Following));
        backups.record(now, "admin", report("/a", Tid(2), BackupState::Fetching));
        // Another process of the same certificate, on the same directory: the same backup.
        backups.record(
            now,
            "admin#00000000000000ab",
            report("/b", Tid(2), BackupState::Following),
        );
        let shown = backups.status(Tid(2));
        assert_eq!(shown.len(), 3);
        assert!(shown.iter().all(|backup| !backup.name.contains('#')));
        let a = shown
            .iter()
            .find(|backup| backup.name == "admin" && backup.report.directory == "/a")
            .expect("admin's /a");
        assert_eq!(
            a.report.backup_tid, 2,
            "the latest report of a backup replaces the last"
        );
        for i in 0..(MAX_BACKUPS + 5) {
            let at = now + Duration::from_millis(u64::try_from(i).expect("small") + 1);
            let mut long = report(&format!("/many/{i}"), Tid(1), BackupState::Retrying);
            long.error = Some("é".repeat(MAX_TEXT));
            backups.record(at, "admin", long);
        }
        let shown = backups.status(Tid(2));
        assert_eq!(shown.len(), MAX_BACKUPS);
        assert!(
            shown.iter().all(|backup| backup
                .report
                .error
                .as_ref()
                .is_none_or(|e| e.len() <= MAX_TEXT)),
            "texts are cut"
        );
        assert!(
            shown
                .iter()
                .any(|backup| backup.report.directory == format!("/many/{}", MAX_BACKUPS + 4)),
            "the newest is kept, the oldest went"
        );
        assert!(!shown.iter().any(|backup| backup.report.directory == "/b"));
    }
}
